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
//!   configurable schema ([`PgStoreConfig`]).
//!
//! With the `local` feature (on by default), [`local`] starts a throwaway
//! PostgreSQL cluster for tests and examples when `DATABASE_URL` is unset.

mod config;
mod error;
mod lag;
#[cfg(feature = "local")]
pub mod local;
pub mod migrate;
mod notify;
pub mod projection;
mod store;

pub use config::{InvalidSchemaName, PgStoreConfig};
pub use lag::{FeedLag, OldestTransaction};
pub use migrate::MigrateError;
pub use projection::{
    AtLeastOnce, ErrorPolicy, ExactlyOnce, OnFailure, ProjectionError, ProjectionRunner,
    ProjectionStatus, RunnerConfig, projection_status, request_rebuild,
};
pub use store::PgEventStore;
