//! A fresh database per test, on `DATABASE_URL` or the throwaway cluster,
//! and requests to the HTTP API.

#![allow(dead_code, reason = "each test binary uses a different part")]

pub(crate) mod api;

use es_postgres::{PgEventStore, PgStoreOptions};
use es_postgres_local as local;

/// A store in a new, empty database (not yet migrated).
pub(crate) async fn fresh_store() -> PgEventStore {
    let server = local::shared().await.expect("a local PostgreSQL");
    let url = server
        .create_database()
        .await
        .expect("creating a test database");
    PgEventStore::connect(&url, PgStoreOptions::default())
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}
