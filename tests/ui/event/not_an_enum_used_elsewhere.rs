// A struct cannot be an event enum; the aggregate and the projection that
// name it add no error of their own.
use es_core::{Aggregate, BoxError, Dispatch, Event, Handle, Projection, RecordedEvent};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
struct AccountOpened {
    owner: String,
}

#[derive(Default, Aggregate)]
#[es(event = AccountOpened)]
struct Account;

#[derive(Projection)]
#[es(handles(AccountOpened::Opened))]
struct Accounts;

impl Handle<AccountOpened, ()> for Accounts {
    async fn handle(&self, _: AccountOpened, _: &RecordedEvent, (): &mut ()) -> Result<(), BoxError> {
        Ok(())
    }
}

async fn run<P: Dispatch<()>>(projection: &P, event: &RecordedEvent) -> Result<(), BoxError> {
    projection.dispatch(event, &mut ()).await
}

fn main() {
    let _ = run::<Accounts>;
    let _ = (Account::CATEGORY, Accounts::NAME);
}
