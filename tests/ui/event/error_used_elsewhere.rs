// An event enum with an error: the aggregate, the projection and the code
// that use it add no error of their own.
use es_core::{Aggregate, BoxError, Dispatch, Event, Handle, On, Projection, RecordedEvent};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Opened {}

#[derive(Event)]
enum AccountEvent {
    #[es(versoin = 2)]
    Opened(Opened),
}

#[derive(Default, Aggregate)]
#[es(event = AccountEvent)]
struct Account;

impl On<Opened> for Account {
    fn on(&mut self, _: Opened) {}
}

#[derive(Projection)]
#[es(handles(AccountEvent::Opened))]
struct Accounts;

impl Handle<Opened, ()> for Accounts {
    async fn handle(&self, _: Opened, _: &RecordedEvent, (): &mut ()) -> Result<(), BoxError> {
        Ok(())
    }
}

fn decode(event: &RecordedEvent) -> Option<AccountEvent> {
    AccountEvent::decode(event).ok()
}

async fn run<P: Dispatch<()>>(projection: &P, event: &RecordedEvent) -> Result<(), BoxError> {
    projection.dispatch(event, &mut ()).await
}

fn main() {
    let _ = run::<Accounts>;
    let _ = (decode, AccountEvent::EVENT_TYPES, Account::CATEGORY);
}
