//! Event sourcing for Rust on the database you already run.
//!
//! `es-core` holds the vocabulary and the contract of an event store, with no
//! database driver:
//!
//! - [`StreamId`], [`ExpectedVersion`], [`NewEvent`], [`RecordedEvent`],
//!   [`Metadata`], [`Position`], [`FeedFilter`], [`StreamRead`] and
//!   [`AppendResult`]: what goes in and out of a store;
//! - [`EventStore`]: append with optimistic concurrency and idempotency, read
//!   streams, read and follow the global feed;
//! - [`StoreError`]: every failure, naming what the caller can act on;
//! - [`MemoryStore`]: the whole contract in memory, for unit tests.
//!
//! On top of it, the typed layer:
//!
//! - [`Event`] (`#[derive(Event)]`): an enum of event types with stable
//!   stored names, schema versions and upcasting;
//! - [`Aggregate`] (`#[derive(Aggregate)]`), [`On`] and [`Decide`]: state
//!   folded from a stream, which decides on commands;
//! - [`Repository`]: runs commands with optimistic concurrency, a cache of
//!   recent states and snapshots;
//! - [`Projection`] (`#[derive(Projection)]`), [`Handle`] and [`Reset`]:
//!   read models built from the global feed, run by a store's projection
//!   runner (`es_postgres::ProjectionRunner`).
//!
//! The derives' attributes are documented on the traits: [`Event`] (names,
//! aliases, schema versions, upcasts), [`Aggregate`] (category, snapshots)
//! and [`Projection`] (name, handled events). `examples/orders` in the
//! repository puts them together in a small service.
//!
//! The PostgreSQL store lives in the `es-postgres` crate. With the `testing`
//! feature, [`testing`] holds the conformance suite every store passes and
//! a given/when/then harness for aggregates.
//!
//! ```
//! use es_core::{EventStore, ExpectedVersion, FeedFilter, MemoryStore, NewEvent, Position, StreamId};
//! use serde_json::json;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let store = MemoryStore::new();
//! let order = StreamId::new("Order-1")?;
//! store
//!     .append(&order, ExpectedVersion::NoStream, vec![NewEvent::new("OrderPlaced", json!({}))])
//!     .await?;
//! let conflict = store
//!     .append(&order, ExpectedVersion::NoStream, vec![NewEvent::new("OrderPlaced", json!({}))])
//!     .await;
//! assert!(matches!(conflict, Err(es_core::StoreError::WrongExpectedVersion { actual: 1, .. })));
//! let feed = store.read_all(Position::START, &FeedFilter::all(), 100).await?;
//! assert_eq!(feed.len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

extern crate self as es_core;

#[doc(hidden)]
pub mod __private;
pub mod aggregate;
pub mod backend;
pub mod command;
pub mod error;
pub mod event;
pub mod json;
pub mod memory;
pub mod observe;
pub mod position;
pub mod projection;
pub mod repository;
pub mod snapshot;
pub mod store;
pub mod stream_id;
mod subscription;
#[cfg(feature = "derive")]
pub mod system;
#[cfg(feature = "testing")]
pub mod testing;
pub mod typed;
mod validate;

pub use aggregate::{Aggregate, Decide, On, SnapshotPolicy};
pub use command::{CommandContext, command_event_id, reaction_command_id};
pub use error::{
    BoxError, IdempotencyConflictKind, InvalidEventKind, InvalidSnapshotKind, StoreError,
};
#[cfg(feature = "derive")]
pub use es_derive::{Aggregate, Event, Projection};
pub use event::{Metadata, NewEvent, RecordedEvent};
pub use json::UnstorableJson;
pub use memory::MemoryStore;
pub use position::Position;
pub use projection::{Dispatch, Handle, Projection, Reset};
pub use repository::{
    CommandError, CommandOutcome, DecideWith, Loaded, Repository, RepositoryOptions,
};
pub use snapshot::{Snapshot, SnapshotStore};
pub use store::{
    ARCHIVED_EVENT_TYPE, AppendResult, DELETED_EVENT_TYPE, EventStore, EventStream,
    ExpectedVersion, FeedFilter, FeedPage, ReadDirection, StoreLimits, StreamAppend, StreamRead,
    is_system_event_type,
};
pub use stream_id::{StreamId, StreamIdError};
pub use typed::{DecodeError, DecodeErrorKind, EncodeError, Event};
