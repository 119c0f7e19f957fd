//! Test support: a fresh database per test on the shared local server, and
//! helpers the test files share.

#![allow(dead_code, reason = "each test binary uses a different part")]

pub(crate) mod proxy;

use std::time::{Duration, Instant};

use es_core::{EventStore, FeedFilter, Position, Projection, RecordedEvent};
use es_postgres::{PgEventStore, PgStoreOptions, ProjectionError, ProjectionRunner};
use es_postgres_local as local;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// Holds some append transactions open 1 to 50 ms after their inserts, just
/// before commit: a deferred constraint trigger runs at commit time.
pub(crate) const SLOW_COMMITS: &str = "
CREATE FUNCTION es.slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF random() < 0.1 THEN
        PERFORM pg_sleep(0.001 + random() * 0.049);
    END IF;
    RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON es.events
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION es.slow_commit();
";

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

/// Whether the tests run on the server `DATABASE_URL` names rather than on
/// clusters of their own.
pub(crate) fn database_url_is_set() -> bool {
    std::env::var("DATABASE_URL").is_ok_and(|url| !url.trim().is_empty())
}

/// Polls `condition` every 10 ms until it holds; fails with `what` after
/// `within`.
pub(crate) async fn wait_until<F, Fut>(within: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The single integer `sql` selects, in `store`'s database.
pub(crate) async fn count(store: &PgEventStore, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(store.pool())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Reads the feed from the start until it holds `expected` events, for up
/// to 10 s (another test's transaction may hold the horizon back for a
/// moment).
pub(crate) async fn read_feed<S: EventStore>(
    store: &S,
    filter: &FeedFilter,
    expected: usize,
) -> Vec<RecordedEvent> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = store
            .read_all(Position::START, filter, expected + 100)
            .await
            .expect("reading the feed");
        if events.len() >= expected || Instant::now() >= deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `runner` in a task until the returned sender fires or is dropped.
pub(crate) fn start<P, D>(
    runner: ProjectionRunner<P, D>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), ProjectionError>>,
)
where
    P: Projection,
    D: es_postgres::projection::Delivery<P>,
{
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        runner
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    (stop, task)
}
