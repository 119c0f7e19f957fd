//! The `es` tool: inspect and operate an [`es_postgres`] event store from
//! the command line (`es status`, `es streams`, `es tail`, `es rebuild`,
//! `es parked`, ...) or in a web console (`es console`).
//!
//! Everything goes through the store's public API ([`es_postgres::PgEventStore`]
//! and [`es_core::EventStore`]): the tool holds no SQL of its own. Every
//! command prints a readable table, or JSON with `--json`. Exit codes: 0 on
//! success, 1 when the operation failed (an unknown stream or projection, a
//! store error), 2 for bad usage or when the database cannot be reached.

pub mod args;
mod commands;
pub mod console;
pub mod error;
pub mod output;
pub mod query;
pub mod view;

pub use commands::run;
