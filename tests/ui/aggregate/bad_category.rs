use es_core::{Aggregate, Event};

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Opened {}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Closed {}

#[derive(Event)]
enum AccountEvent {
    Opened(Opened),
    Closed(Closed),
}

#[derive(Default, Aggregate)]
#[es(category = "Bank-Account", event = AccountEvent, category = "Account")]
struct Account {
    open: bool,
}

fn main() {}
