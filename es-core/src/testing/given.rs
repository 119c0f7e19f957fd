//! A given/when/then harness for aggregates, without a store.
//!
//! ```
//! # use es_core::{Aggregate, Decide, Event, On};
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! # struct Deposited { cents: u64 }
//! # #[derive(Debug, PartialEq, Event)]
//! # enum AccountEvent { Deposited(Deposited) }
//! # #[derive(Default, Aggregate)]
//! # #[es(category = "Account", event = AccountEvent)]
//! # struct Account { balance: u64 }
//! # impl On<Deposited> for Account { fn on(&mut self, e: Deposited) { self.balance += e.cents } }
//! # struct Deposit { cents: u64 }
//! # #[derive(Debug, PartialEq, thiserror::Error)]
//! # #[error("a deposit must be positive")]
//! # struct NotPositive;
//! # impl Decide<Deposit> for Account {
//! #     type Error = NotPositive;
//! #     fn decide(&self, c: &Deposit) -> Result<Vec<AccountEvent>, NotPositive> {
//! #         if c.cents == 0 { return Err(NotPositive) }
//! #         Ok(vec![AccountEvent::Deposited(Deposited { cents: c.cents })])
//! #     }
//! # }
//! use es_core::testing::given::given;
//!
//! given::<Account>([AccountEvent::Deposited(Deposited { cents: 5 })])
//!     .when(&Deposit { cents: 7 })
//!     .then([AccountEvent::Deposited(Deposited { cents: 7 })]);
//!
//! given::<Account>([]).when(&Deposit { cents: 0 }).then_error(&NotPositive);
//! ```

use std::fmt::Debug;

use crate::{Aggregate, Decide, Event};

/// Starts a test: the aggregate after `events`, applied in order to its
/// default state.
///
/// Each event is also encoded, so a payload that cannot be stored fails the
/// test here rather than in production.
///
/// # Panics
///
/// When an event cannot be encoded.
#[track_caller]
pub fn given<A: Aggregate>(events: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let mut state = A::default();
    for event in events {
        if let Err(e) = event.encode() {
            panic!("given event {} cannot be encoded: {e}", event.event_type());
        }
        state.apply(event);
    }
    Given { state }
}

/// An aggregate in a known state, waiting for a command.
#[derive(Debug)]
pub struct Given<A> {
    state: A,
}

impl<A: Aggregate> Given<A> {
    /// Decides `command` in the given state.
    pub fn when<C>(self, command: &C) -> When<A, C>
    where
        A: Decide<C>,
    {
        let result = self.state.decide(command);
        When {
            state: self.state,
            result,
        }
    }

    /// The state the given events led to.
    pub fn state(&self) -> &A {
        &self.state
    }
}

/// The aggregate's decision on a command, to check.
pub struct When<A: Decide<C>, C> {
    state: A,
    result: Result<Vec<A::Event>, A::Error>,
}

impl<A: Decide<C>, C> Debug for When<A, C>
where
    A::Event: Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("When")
            .field("result", &self.result)
            .finish_non_exhaustive()
    }
}

impl<A: Decide<C>, C> When<A, C> {
    /// Asserts that the command was accepted with exactly `expected`, in
    /// order; returns the state after applying them.
    ///
    /// # Panics
    ///
    /// When the command was refused, or decided other events, or an event
    /// cannot be encoded.
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = A::Event>) -> A
    where
        A::Event: PartialEq + Debug,
    {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        let events = match self.result {
            Ok(events) => events,
            Err(e) => panic!("expected events {expected:?}, but the command was refused: {e}"),
        };
        assert_eq!(events, expected, "the command decided other events");
        let mut state = self.state;
        for event in events {
            if let Err(e) = event.encode() {
                panic!(
                    "decided event {} cannot be encoded: {e}",
                    event.event_type()
                );
            }
            state.apply(event);
        }
        state
    }

    /// Asserts that the command was refused with `expected`.
    ///
    /// # Panics
    ///
    /// When the command was accepted or refused with another error.
    #[track_caller]
    pub fn then_error(self, expected: &A::Error)
    where
        A::Event: Debug,
        A::Error: PartialEq + Debug,
    {
        match self.result {
            Ok(events) => {
                panic!("expected the error {expected:?}, but the command decided {events:?}")
            }
            Err(e) => assert_eq!(&e, expected, "the command was refused with another error"),
        }
    }

    /// Asserts that the command was refused with an error for which `check`
    /// holds.
    ///
    /// # Panics
    ///
    /// When the command was accepted, or `check` returns `false`.
    #[track_caller]
    pub fn then_error_matches(self, check: impl FnOnce(&A::Error) -> bool)
    where
        A::Event: Debug,
        A::Error: Debug,
    {
        match self.result {
            Ok(events) => panic!("expected an error, but the command decided {events:?}"),
            Err(e) => assert!(
                check(&e),
                "the command was refused with an unexpected error: {e:?}"
            ),
        }
    }

    /// The decision, for checks the other methods do not cover.
    pub fn result(&self) -> &Result<Vec<A::Event>, A::Error> {
        &self.result
    }
}
