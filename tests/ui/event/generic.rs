// Stored names belong to one type, so an event enum cannot be generic; the
// error is reported once, on the parameters.
use es_core::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Opened<T> {
    owner: T,
}

#[derive(Event)]
enum AccountEvent<T> {
    Opened(Opened<T>),
}

fn main() {
    let _ = AccountEvent::<String>::EVENT_TYPES;
}
