// With `crate = "..."`, the fallback names es-core by that path, so an
// application that re-exports it sees its own error only.
mod framework {
    pub use es_core as es;
}

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Opened {}

#[derive(framework::es::Event)]
#[es(crate = "crate::framework::es")]
enum AccountEvent {
    #[es(name = "AccountOpened", name = "Opened")]
    Opened(Opened),
}

#[derive(Default, framework::es::Aggregate)]
#[es(crate = "crate::framework::es", event = AccountEvent)]
struct Account;

impl framework::es::On<Opened> for Account {
    fn on(&mut self, _: Opened) {}
}

fn main() {}
