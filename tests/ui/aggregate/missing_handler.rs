use es_core::{Aggregate, Event, On};

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
#[es(event = AccountEvent)]
struct Account {
    open: bool,
}

impl On<Opened> for Account {
    fn on(&mut self, _: Opened) {
        self.open = true;
    }
}

fn main() {}
