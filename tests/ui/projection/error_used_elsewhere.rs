// A projection with an error: its `Handle` implementation and the code that
// runs it add no error of their own.
use es_core::{BoxError, Dispatch, Event, Handle, Projection, RecordedEvent};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Opened {}

#[derive(Event)]
enum AccountEvent {
    Opened(Opened),
}

#[derive(Projection)]
#[es(nmae = "accounts", handles(AccountEvent::Opened))]
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
    let _ = (run::<Accounts>, Accounts::NAME, Accounts::filter());
}
