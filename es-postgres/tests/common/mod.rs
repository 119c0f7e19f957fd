//! Test support: a fresh database per test on the shared local server.

#![allow(dead_code, reason = "each test binary uses a different part")]

pub(crate) mod proxy;

use es_postgres::{PgEventStore, PgStoreOptions};
use es_postgres_local as local;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// A multi-threaded runtime for one test (two workers, like the machine).
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A stream id the test knows is valid.
pub(crate) fn stream(id: &str) -> es_core::StreamId {
    es_core::StreamId::new(id).expect("valid stream id")
}

/// A new, empty database on the local server (or `DATABASE_URL`), and a pool
/// of `connections` to it.
pub(crate) async fn fresh_pool(connections: u32) -> (String, PgPool) {
    let server = local::shared().await.expect("local PostgreSQL");
    let url = server
        .create_database()
        .await
        .expect("creating a test database");
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    (url, pool)
}

/// A migrated store in a fresh database.
pub(crate) async fn fresh_store_with(config: PgStoreOptions, connections: u32) -> PgEventStore {
    let (_, pool) = fresh_pool(connections).await;
    let store = PgEventStore::new(pool, config);
    store.migrate().await.expect("migrating the test database");
    store
}

/// A migrated store with the default configuration in a fresh database.
pub(crate) async fn fresh_store() -> PgEventStore {
    fresh_store_with(PgStoreOptions::default(), 10).await
}
