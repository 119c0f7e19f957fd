//! PostgreSQL storage for `es-core`.
//!
//! [`PgEventStore`] implements [`es_core::EventStore`] on PostgreSQL 13 or
//! later with the same semantics as the in-memory store (it passes the same
//! conformance suite):
//!
//! - appends are one round trip whatever the batch size, serialized per
//!   stream, idempotent by event id, and checked against the expected version
//!   on the server;
//! - the global feed is gap-free: it is ordered by (transaction id, sequence)
//!   and only shows transactions older than every running one, so an append
//!   that commits late is never skipped;
//! - the database enforces immutability: a trigger rejects `UPDATE`,
//!   `DELETE` and `TRUNCATE` of events;
//! - migrations are embedded and applied by [`PgEventStore::migrate`], into a
//!   configurable schema ([`PgStoreOptions`]).
//!
//! Tests and examples start a throwaway PostgreSQL cluster with the
//! `es-postgres-local` crate (test support, not published) when
//! `DATABASE_URL` is unset.
//!
//! Read models are kept by a [`ProjectionRunner`] per projection: it follows
//! the feed from a checkpoint stored in the store's schema, one runner per
//! projection name at a time (an advisory-lock lease), with an error policy
//! ([`ErrorPolicy`]), rebuilds on request ([`PgEventStore::request_rebuild`]) and an
//! observable position and lag ([`PgEventStore::projection_statuses`]); [`ProjectionRunner::spawn`]
//! returns a [`ProjectionHandle`] that stops, inspects and rebuilds it.
//!
//! Operators' questions have answers without knowing the tables: what the
//! store holds ([`PgEventStore::summary`], [`PgEventStore::streams`],
//! [`PgEventStore::head`], [`PgEventStore::recent_activity`]), what holds
//! the feed back ([`PgEventStore::feed_lag`]), which migrations are pending
//! ([`PgEventStore::pending_migrations`]). The `es` tool and its web
//! console (crate `es-cli`) are built on them.
//!
//! The command path works on [`PgEventStore`] as on any store: a
//! [`Repository`](es_core::Repository) over it loads aggregates from their
//! latest snapshot and tail, and appends with optimistic concurrency.
//!
//! ```no_run
//! use es_core::{Aggregate, CommandContext, Decide, Event, On, Repository};
//! use es_postgres::{PgEventStore, PgStoreOptions};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! struct Deposited { cents: u64 }
//!
//! #[derive(Debug, Event)]
//! enum AccountEvent { Deposited(Deposited) }
//!
//! #[derive(Default, Serialize, Deserialize, Aggregate)]
//! #[es(category = "Account", event = AccountEvent, snapshot(every = 100))]
//! struct Account { balance: u64 }
//!
//! impl On<Deposited> for Account {
//!     fn on(&mut self, event: Deposited) { self.balance += event.cents; }
//! }
//!
//! struct Deposit { cents: u64 }
//!
//! impl Decide<Deposit> for Account {
//!     type Error = std::convert::Infallible;
//!     fn decide(&self, command: &Deposit) -> Result<Vec<AccountEvent>, Self::Error> {
//!         Ok(vec![AccountEvent::Deposited(Deposited { cents: command.cents })])
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PgEventStore::connect("postgres://localhost/bank", PgStoreOptions::default()).await?;
//! store.migrate().await?;
//! let accounts = Repository::<Account, _>::new(store);
//! let context = CommandContext::new().with_correlation_id("request-7");
//! let outcome = accounts
//!     .execute(&Account::stream_id("42")?, &Deposit { cents: 500 }, &context)
//!     .await?;
//! println!("account 42 is at version {}", outcome.stream_version);
//! # Ok(())
//! # }
//! ```
//!
//! `examples/orders` in the repository is a complete service on this crate:
//! an aggregate, upcasting, snapshots, two read models and an HTTP API.

pub mod catalog;
mod convert;
mod data;
mod error;
mod lag;
pub mod migrate;
mod notify;
mod options;
pub mod projection;
mod route;
mod servers;
mod store;

pub use catalog::{Activity, CategorySummary, MinuteCount, StoreSummary, StreamSummary};
pub use lag::{FeedLag, OldestTransaction};
pub use migrate::MigrateError;
pub use options::{InvalidSchemaName, PgStoreOptions};
pub use projection::{
    AtLeastOnce, ErrorPolicy, ExactlyOnce, LeaseHolder, OnFailure, ParkedEvent, ProjectionError,
    ProjectionHandle, ProjectionRunner, ProjectionState, ProjectionStatus, RunnerOptions,
    projection_key,
};
pub use servers::{PgPools, PgServers, ready_pooled_connection};
pub use store::PgEventStore;
