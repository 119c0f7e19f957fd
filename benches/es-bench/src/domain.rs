//! The aggregate the repository workloads load and command.

use es_core::{Aggregate, Decide, Event, On};
use serde::{Deserialize, Serialize};

/// Money paid into an account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Deposited {
    pub(crate) cents: u64,
    pub(crate) n: u64,
    pub(crate) note: String,
}

/// The events of an account.
#[derive(Debug, Clone, Event)]
pub(crate) enum AccountEvent {
    Deposited(Deposited),
}

/// An account with snapshots every 100 events.
#[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
#[es(category = "Account", event = AccountEvent, snapshot(every = 100, version = 1))]
pub(crate) struct Account {
    pub(crate) balance: u64,
    pub(crate) deposits: u64,
}

impl On<Deposited> for Account {
    fn on(&mut self, event: Deposited) {
        self.balance += event.cents;
        self.deposits += 1;
    }
}

/// The same account without snapshots: every load replays the stream.
#[derive(Debug, Default, Aggregate)]
#[es(category = "Ledger", event = AccountEvent)]
pub(crate) struct Ledger {
    pub(crate) balance: u64,
}

impl On<Deposited> for Ledger {
    fn on(&mut self, event: Deposited) {
        self.balance += event.cents;
    }
}

/// Pay money in.
pub(crate) struct Deposit {
    pub(crate) cents: u64,
}

/// A deposit of nothing.
#[derive(Debug, thiserror::Error)]
#[error("a deposit must be positive")]
pub(crate) struct NothingToDeposit;

impl Decide<Deposit> for Account {
    type Error = NothingToDeposit;

    fn decide(&self, command: &Deposit) -> Result<Vec<AccountEvent>, NothingToDeposit> {
        if command.cents == 0 {
            return Err(NothingToDeposit);
        }
        Ok(vec![AccountEvent::Deposited(Deposited {
            cents: command.cents,
            n: self.deposits + 1,
            note: "a typical small event".to_owned(),
        })])
    }
}

/// A deposit event as the store takes it.
pub(crate) fn deposit_event(n: u64) -> es_core::NewEvent {
    let event = AccountEvent::Deposited(Deposited {
        cents: 1_250,
        n,
        note: "a typical small event".to_owned(),
    });
    // Encoding a plain struct of numbers and a string cannot fail.
    event
        .encode()
        .unwrap_or_else(|_| es_core::NewEvent::new("Deposited", serde_json::Value::Null))
}
