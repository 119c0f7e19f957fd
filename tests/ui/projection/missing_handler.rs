// A handled variant whose payload has no handler for the sink the
// projection runs with.
use es_core::{BoxError, Dispatch, Event, Handle, Projection, RecordedEvent};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Opened {}

#[derive(Serialize, Deserialize)]
struct Closed {}

#[derive(Event)]
enum AccountEvent {
    Opened(Opened),
    Closed(Closed),
}

#[derive(Projection)]
#[es(name = "accounts", handles(AccountEvent::Opened, AccountEvent::Closed))]
struct Accounts;

impl Handle<Opened, ()> for Accounts {
    async fn handle(&self, _: Opened, _: &RecordedEvent, (): &mut ()) -> Result<(), BoxError> {
        Ok(())
    }
}

async fn run<P: Dispatch<()>>(projection: &P, event: &RecordedEvent) -> Result<(), BoxError> {
    projection.dispatch(event, &mut ()).await
}

fn main() {
    let _ = run::<Accounts>;
}
