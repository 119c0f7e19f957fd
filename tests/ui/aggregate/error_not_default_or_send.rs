// The fallback asks nothing of the type at its impl: an aggregate with an
// error that is neither `Default` nor `Send` shows that error only.
use es_core::{Aggregate, Event, On};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Opened {}

#[derive(Event)]
enum AccountEvent {
    Opened(Opened),
}

#[derive(Aggregate)]
#[es(event = AccountEvent, categroy = "Account")]
struct Account {
    owner: std::rc::Rc<str>,
}

impl On<Opened> for Account {
    fn on(&mut self, _: Opened) {}
}

fn main() {}
