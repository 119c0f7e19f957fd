//! Aggregates: state rebuilt from a stream's events, which decides what
//! happens next.

use std::fmt;

use serde_json::Value;

use crate::{Event, StreamId, StreamIdError};

/// A consistency boundary whose state is the fold of one stream's events.
///
/// Derive it: `#[derive(Aggregate)]` with `#[es(event = MyEvent)]` generates
/// [`apply`](Self::apply), which hands each variant's payload to the
/// aggregate's [`On`] implementation for that payload type. A variant without
/// one is a compile error.
///
/// ```
/// use es_core::{Aggregate, Event, On};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// struct Deposited { cents: u64 }
///
/// #[derive(Debug, PartialEq, Event)]
/// enum AccountEvent {
///     Deposited(Deposited),
/// }
///
/// #[derive(Default, Aggregate)]
/// #[es(category = "Account", event = AccountEvent)]
/// struct Account { balance: u64 }
///
/// impl On<Deposited> for Account {
///     fn on(&mut self, event: Deposited) {
///         self.balance += event.cents;
///     }
/// }
///
/// let mut account = Account::default();
/// account.apply(AccountEvent::Deposited(Deposited { cents: 5 }));
/// assert_eq!(account.balance, 5);
/// assert_eq!(Account::stream_id("42")?.as_str(), "Account-42");
/// # Ok::<(), es_core::StreamIdError>(())
/// ```
///
/// # The derive's attributes
///
/// | Setting | Meaning |
/// |---|---|
/// | `event = EventEnum` | the stream's event enum (required) |
/// | `category = "Order"` | the stream category (default: the struct's name) |
/// | `snapshot(every = N, version = V)` | save a snapshot when an append crosses a multiple of `N` events; `V` (default 1) is the snapshot format's version |
/// | `crate = "path"` | the path of `es_core`, when re-exported elsewhere |
///
/// With `snapshot`, the state must be `Serialize + DeserializeOwned`: the
/// derive implements [`to_snapshot`](Self::to_snapshot) and
/// [`from_snapshot`](Self::from_snapshot) with serde. Raise `version` when
/// the state's serialized form changes; older snapshots are then ignored and
/// the stream replayed.
///
/// ```
/// # use es_core::{Aggregate, Event, On};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// # struct Deposited { cents: u64 }
/// # #[derive(Debug, PartialEq, Event)]
/// # enum AccountEvent { Deposited(Deposited) }
/// #[derive(Default, Serialize, Deserialize, Aggregate)]
/// #[es(category = "Account", event = AccountEvent, snapshot(every = 50, version = 1))]
/// struct Account { balance: u64 }
/// # impl On<Deposited> for Account { fn on(&mut self, e: Deposited) { self.balance += e.cents } }
///
/// assert_eq!(Account::SNAPSHOT.map(|policy| policy.every), Some(50));
/// ```
pub trait Aggregate: Default + Send + Sync + 'static {
    /// The events of the aggregate's stream.
    type Event: Event;

    /// The stream category: the aggregate's streams are named
    /// `{CATEGORY}-{id}`.
    const CATEGORY: &'static str;

    /// When to snapshot the aggregate's state, if at all.
    const SNAPSHOT: Option<SnapshotPolicy> = None;

    /// Applies one event to the state. Must not fail: an event is a fact.
    fn apply(&mut self, event: Self::Event);

    /// The state as a snapshot payload.
    ///
    /// # Errors
    ///
    /// When the state cannot be serialized, or the aggregate takes no
    /// snapshots.
    fn to_snapshot(&self) -> Result<Value, serde_json::Error> {
        Err(snapshots_disabled())
    }

    /// The state from a snapshot payload of the current
    /// [snapshot version](SnapshotPolicy::version).
    ///
    /// # Errors
    ///
    /// When the payload does not match the state, or the aggregate takes no
    /// snapshots.
    fn from_snapshot(data: &Value) -> Result<Self, serde_json::Error> {
        let _ = data;
        Err(snapshots_disabled())
    }

    /// The id of the aggregate's stream for `id`: `{CATEGORY}-{id}`.
    ///
    /// # Errors
    ///
    /// [`StreamIdError`] when the result is not a valid stream id.
    fn stream_id(id: impl fmt::Display) -> Result<StreamId, StreamIdError> {
        StreamId::from_parts(Self::CATEGORY, id)
    }
}

fn snapshots_disabled() -> serde_json::Error {
    serde::de::Error::custom("the aggregate takes no snapshots")
}

/// How an aggregate is snapshotted: `#[es(snapshot(every = N, version = V))]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SnapshotPolicy {
    /// A snapshot is taken when an append makes the stream's version cross a
    /// multiple of this number.
    pub every: u64,
    /// The version of the snapshot's format. Change it when the state's
    /// serialized form changes: snapshots of another version are ignored
    /// and the stream is replayed.
    pub version: u32,
}

/// The aggregate's handler for events with payload `E`.
///
/// `#[derive(Aggregate)]` requires one for the payload type of every variant
/// of the aggregate's event enum.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no handler for the event `{E}`",
    label = "missing `es_core::On<{E}>` for `{Self}`",
    note = "add `impl es_core::On<{E}> for {Self} {{ fn on(&mut self, event: {E}) {{ ... }} }}`"
)]
pub trait On<E> {
    /// Applies the event to the state.
    fn on(&mut self, event: E);
}

/// An aggregate's decision on a command `C`: the events that follow from it,
/// or a domain error.
///
/// ```
/// # use es_core::{Aggregate, Event, On};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// # struct Deposited { cents: u64 }
/// # #[derive(Debug, PartialEq, Event)]
/// # enum AccountEvent { Deposited(Deposited) }
/// # #[derive(Default, Aggregate)]
/// # #[es(category = "Account", event = AccountEvent)]
/// # struct Account { balance: u64 }
/// # impl On<Deposited> for Account { fn on(&mut self, e: Deposited) { self.balance += e.cents } }
/// use es_core::Decide;
///
/// struct Deposit { cents: u64 }
///
/// #[derive(Debug, PartialEq, thiserror::Error)]
/// #[error("a deposit must be positive")]
/// struct NotPositive;
///
/// impl Decide<Deposit> for Account {
///     type Error = NotPositive;
///
///     fn decide(&self, command: &Deposit) -> Result<Vec<AccountEvent>, NotPositive> {
///         if command.cents == 0 {
///             return Err(NotPositive);
///         }
///         Ok(vec![AccountEvent::Deposited(Deposited { cents: command.cents })])
///     }
/// }
/// ```
pub trait Decide<C>: Aggregate {
    /// Why the aggregate refuses the command.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The events that follow from `command` in the current state. May be
    /// called again after a concurrent write changed the state, so it must
    /// only read `self` and the command.
    ///
    /// # Errors
    ///
    /// The domain error refusing the command.
    fn decide(&self, command: &C) -> Result<Vec<Self::Event>, Self::Error>;
}
