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

#[derive(Default, serde::Serialize, serde::Deserialize, Aggregate)]
#[es(event = AccountEvent, snapshot(version = 2, evry = 5))]
struct Account {
    open: bool,
}

fn main() {}
