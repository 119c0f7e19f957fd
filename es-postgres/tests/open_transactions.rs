//! A transaction left open holds the feed back: reads return promptly
//! without the events committed after it began, the store reports the lag
//! and the session causing it, and once it commits the subscriber receives
//! everything, nothing lost.

mod common;

use common::{database_url_is_set, runtime, stream};

use std::time::{Duration, Instant};

use es_core::{EventStore, ExpectedVersion, FeedFilter, NewEvent, Position, StreamRead};
use es_postgres::{PgEventStore, PgStoreOptions};
use es_postgres_local as local;
use futures::StreamExt;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// A transaction left open (here: an append that has not committed) holds
/// back the events committed after it began. Reads return promptly without
/// them, the store reports how many are held back and by which session,
/// and once the transaction commits the subscriber receives everything,
/// the late append first.
#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, checked end to end")]
fn an_open_transaction_holds_the_feed_back_without_losing_anything() {
    runtime().block_on(async {
        // The horizon is cluster-wide: on the shared server this would stall
        // every other test's feed, so it runs on a cluster of its own.
        let private = if database_url_is_set() {
            None
        } else {
            Some(local::private().await.expect("a private cluster"))
        };
        let url = match &private {
            Some(server) => server.create_database().await,
            None => {
                local::shared()
                    .await
                    .expect("the server")
                    .create_database()
                    .await
            }
        }
        .expect("a database");
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .unwrap();
        let feed_wait = Duration::from_millis(100);
        let store = PgEventStore::new(
            pool,
            PgStoreOptions::default()
                .feed_wait(feed_wait)
                .poll_interval(Duration::from_millis(50)),
        );
        store.migrate().await.unwrap();

        let s = stream("Held-1");
        let first = NewEvent::new("Before", json!({}));
        let first_id = first.event_id;
        store
            .append(&s, ExpectedVersion::NoStream, vec![first])
            .await
            .unwrap();
        let mut subscription = store.subscribe(Position::START, FeedFilter::all());
        let got = tokio::time::timeout(Duration::from_secs(5), subscription.next())
            .await
            .expect("the first event")
            .unwrap()
            .unwrap();
        assert_eq!(got.event_id, first_id);
        let lag = store.feed_lag().await.unwrap();
        assert_eq!(lag.held_back, 0);

        // Another session appends and leaves its transaction open.
        let mut open = PgConnection::connect(&url).await.unwrap();
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut open)
            .await
            .unwrap();
        sqlx::query("BEGIN").execute(&mut open).await.unwrap();
        let late_id = Uuid::new_v4();
        let outcome: i16 = sqlx::query_scalar(
            "SELECT outcome FROM es.append_events('Late-1', 0::smallint, 0, ARRAY[$1]::uuid[], \
             ARRAY['Late'], ARRAY[1], '[{}]'::jsonb, ARRAY['{}'::jsonb], false)",
        )
        .bind(late_id)
        .fetch_one(&mut open)
        .await
        .unwrap();
        assert_eq!(outcome, 0, "the late append is written, not yet committed");

        // Appends that commit meanwhile succeed at once...
        let mut after = Vec::new();
        for i in 0..5 {
            let event = NewEvent::new("After", json!({ "i": i }));
            after.push(event.event_id);
            store
                .append(&s, ExpectedVersion::Exact(1 + i), vec![event])
                .await
                .unwrap();
        }
        // ...but the feed holds them back, and a read returns promptly.
        let started = Instant::now();
        let page = store
            .read_all(got.position, &FeedFilter::all(), 100)
            .await
            .unwrap();
        assert!(page.is_empty(), "{page:?}");
        assert!(started.elapsed() < feed_wait + Duration::from_millis(500));
        assert_eq!(
            store
                .read_stream(&s, StreamRead::forward())
                .await
                .unwrap()
                .len(),
            6
        );
        // The store reports the lag and who causes it.
        let mut lag = store.feed_lag().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while lag.oldest.as_ref().map(|o| o.pid) != Some(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
            lag = store.feed_lag().await.unwrap();
        }
        assert_eq!(lag.held_back, 5, "{lag:?}");
        let oldest = lag.oldest.clone().expect("the open transaction");
        assert_eq!(oldest.pid, pid, "{lag:?}");
        assert_eq!(oldest.state.as_deref(), Some("idle in transaction"));
        assert!(oldest.age > Duration::ZERO && oldest.age < Duration::from_secs(60));
        assert_eq!(
            oldest.database.as_deref(),
            url.rsplit('/').next(),
            "the database of the open transaction"
        );
        // The subscriber gets nothing while the transaction is open.
        let early = tokio::time::timeout(Duration::from_millis(300), subscription.next()).await;
        assert!(early.is_err(), "delivered while held back: {early:?}");

        sqlx::query("COMMIT").execute(&mut open).await.unwrap();
        let mut delivered = Vec::new();
        while delivered.len() < 6 {
            let event = tokio::time::timeout(Duration::from_secs(5), subscription.next())
                .await
                .unwrap_or_else(|_| panic!("delivery stalled after {delivered:?}"))
                .expect("the subscription goes on")
                .expect("an event");
            delivered.push(event.event_id);
        }
        let mut expected = vec![late_id];
        expected.extend(&after);
        assert_eq!(
            delivered, expected,
            "the late append comes first, nothing is lost"
        );
        let lag = store.feed_lag().await.unwrap();
        assert_eq!(lag.held_back, 0, "{lag:?}");
        drop(subscription);
        drop(store);
        if let Some(server) = private {
            tokio::task::spawn_blocking(move || drop(server))
                .await
                .unwrap();
        }
    });
}
