// An aggregate with an error: its `Decide` implementation and the code that
// uses it add no error of their own.
use es_core::testing::given::given;
use es_core::{Aggregate, Decide, Event, On};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Opened {}

#[derive(Debug, PartialEq, Event)]
enum AccountEvent {
    Opened(Opened),
}

#[derive(Default, Aggregate)]
#[es(event = AccountEvent, categroy = "Account")]
struct Account;

impl On<Opened> for Account {
    fn on(&mut self, _: Opened) {}
}

struct Open;

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("already open")]
struct AlreadyOpen;

impl Decide<Open> for Account {
    type Error = AlreadyOpen;

    fn decide(&self, _: &Open) -> Result<Vec<AccountEvent>, AlreadyOpen> {
        Ok(vec![AccountEvent::Opened(Opened {})])
    }
}

fn stream<A: Aggregate>(id: &str) -> String {
    A::stream_id(id).map(|id| id.to_string()).unwrap_or_default()
}

fn main() {
    given::<Account>([])
        .when(&Open)
        .then([AccountEvent::Opened(Opened {})]);
    stream::<Account>("1");
}
