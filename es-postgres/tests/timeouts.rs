//! Pool exhaustion and statement timeouts: with every pooled connection
//! taken, or a statement running past `statement_timeout` (a slow trigger,
//! a stream lock held elsewhere), operations fail fast with `Timeout` and
//! write nothing.

mod common;

use common::{count, runtime, stream};

use std::time::{Duration, Instant};

use es_core::{
    EventStore, ExpectedVersion, FeedFilter, NewEvent, Position, StoreError, StreamRead,
};
use es_postgres::{PgEventStore, PgStoreOptions};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection};

fn assert_timeout<T: std::fmt::Debug>(
    what: &str,
    result: &Result<T, StoreError>,
    started: Instant,
    at_least: Duration,
) {
    let elapsed = started.elapsed();
    assert!(
        matches!(result, Err(StoreError::Timeout { .. })),
        "{what}: expected a timeout, got {result:?}"
    );
    assert!(
        elapsed >= at_least && elapsed < at_least + Duration::from_millis(1_500),
        "{what}: failed after {elapsed:?}"
    );
}

/// With every pooled connection taken, each operation fails with
/// `Timeout` once the pool's acquire timeout has passed; a statement that
/// runs past `statement_timeout` (a slow trigger, a stream lock held
/// elsewhere) fails with `Timeout` and writes nothing.
#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, checked end to end")]
fn pool_exhaustion_and_statement_timeouts_fail_fast() {
    runtime().block_on(async {
        let (url, setup_pool) = common::fresh_pool(2).await;
        let setup = PgEventStore::new(setup_pool, PgStoreOptions::default());
        setup.migrate().await.expect("migrating");

        let acquire = Duration::from_millis(300);
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(acquire)
            .connect(&url)
            .await
            .unwrap();
        let store = PgEventStore::new(pool, PgStoreOptions::default());
        let s = stream("Busy-1");
        let held = store.pool().acquire().await.unwrap();
        let started = Instant::now();
        let result = store
            .append(
                &s,
                ExpectedVersion::Any,
                vec![NewEvent::new("Busy", json!({}))],
            )
            .await;
        assert_timeout("append", &result, started, acquire);
        let started = Instant::now();
        let result = store.read_stream(&s, StreamRead::forward()).await;
        assert_timeout("read_stream", &result, started, acquire);
        let started = Instant::now();
        let result = store
            .read_all(Position::START, &FeedFilter::all(), 10)
            .await;
        assert_timeout("read_all", &result, started, acquire);
        let started = Instant::now();
        let result = store.feed_lag().await;
        assert_timeout("feed_lag", &result, started, acquire);
        assert_eq!(count(&setup, "SELECT count(*) FROM es.events").await, 0);
        drop(held);
        store
            .append(
                &s,
                ExpectedVersion::NoStream,
                vec![NewEvent::new("Busy", json!({}))],
            )
            .await
            .expect("the pool recovers");

        // statement_timeout on every connection of the pool.
        let limit = Duration::from_millis(200);
        let options = url
            .parse::<sqlx::postgres::PgConnectOptions>()
            .unwrap()
            .options([("statement_timeout", "200ms")]);
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .unwrap();
        let store = PgEventStore::new(pool, PgStoreOptions::default());
        sqlx::raw_sql(
            "CREATE FUNCTION es.slow() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN PERFORM pg_sleep(5); RETURN NEW; END $$; \
             CREATE TRIGGER slow BEFORE INSERT ON es.events FOR EACH ROW \
             WHEN (NEW.event_type = 'Slow') EXECUTE FUNCTION es.slow();",
        )
        .execute(setup.pool())
        .await
        .expect("installing the slow trigger");
        let slow = stream("Slow-1");
        store
            .append(
                &slow,
                ExpectedVersion::NoStream,
                vec![NewEvent::new("Fast", json!({}))],
            )
            .await
            .unwrap();
        let started = Instant::now();
        let result = store
            .append(
                &slow,
                ExpectedVersion::Exact(1),
                vec![
                    NewEvent::new("Fast", json!({})),
                    NewEvent::new("Slow", json!({})),
                ],
            )
            .await;
        assert_timeout("slow append", &result, started, limit);
        assert_eq!(
            store
                .read_stream(&slow, StreamRead::forward())
                .await
                .unwrap()
                .len(),
            1,
            "the timed-out batch left nothing"
        );

        // A stream lock held by a transaction elsewhere.
        let mut other = PgConnection::connect(&url).await.unwrap();
        sqlx::query("BEGIN").execute(&mut other).await.unwrap();
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('es:Locked-1', 7305))")
            .execute(&mut other)
            .await
            .unwrap();
        let locked = stream("Locked-1");
        let started = Instant::now();
        let result = store
            .append(
                &locked,
                ExpectedVersion::Any,
                vec![NewEvent::new("Waits", json!({}))],
            )
            .await;
        assert_timeout("append to a locked stream", &result, started, limit);
        sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
        store
            .append(
                &locked,
                ExpectedVersion::NoStream,
                vec![NewEvent::new("Free", json!({}))],
            )
            .await
            .expect("the stream is free again");
        assert_eq!(count(&setup, "SELECT count(*) FROM es.events").await, 3);
    });
}
