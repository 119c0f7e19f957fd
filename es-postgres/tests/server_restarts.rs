//! Server restarts: while a private cluster is stopped and started, appends
//! fail with transient errors and are retried with the same event ids, and
//! a subscription follows the feed; no acknowledged append is lost,
//! duplicated or delivered twice.

mod common;

use common::{database_url_is_set, read_feed, runtime, stream, wait_until};

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use es_core::{
    EventStore, ExpectedVersion, FeedFilter, NewEvent, Position, RecordedEvent, StreamId,
};
use es_postgres::{PgEventStore, PgStoreOptions};
use es_postgres_local as local;
use futures::StreamExt;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

/// A writer appends and a subscriber follows the feed while the server is
/// stopped and started twice. Appends fail with transient errors while it is
/// down and succeed after; the writer retries each failed batch with the
/// same event ids. In the end the feed holds every acknowledged event
/// exactly once and the subscriber received each exactly once.
#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, checked end to end")]
fn server_restarts_lose_no_acknowledged_append() {
    if database_url_is_set() {
        println!(
            "skipped: DATABASE_URL is set, so there is no private local cluster this test may \
             stop and start; unset DATABASE_URL to run it"
        );
        return;
    }
    runtime().block_on(async {
        let server = local::private().await.expect("a private cluster");
        let url = server.create_database().await.expect("a database");
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_millis(500))
            .connect(&url)
            .await
            .expect("connecting");
        let store = PgEventStore::new(
            pool,
            PgStoreOptions::default().poll_interval(Duration::from_millis(50)),
        );
        store.migrate().await.expect("migrating");

        let received = Arc::new(Mutex::new(Vec::<RecordedEvent>::new()));
        let subscriber = {
            let received = Arc::clone(&received);
            let mut subscription = store.subscribe(Position::START, FeedFilter::all());
            tokio::spawn(async move {
                while let Some(item) = subscription.next().await {
                    match item {
                        Ok(event) => received.lock().unwrap().push(event),
                        Err(error) => return Err(error),
                    }
                }
                Ok(())
            })
        };

        let acked = Arc::new(Mutex::new(Vec::<Uuid>::new()));
        let failures = Arc::new(AtomicUsize::new(0));
        let replays = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (store, acked, failures, replays, stop) = (
                store.clone(),
                Arc::clone(&acked),
                Arc::clone(&failures),
                Arc::clone(&replays),
                Arc::clone(&stop),
            );
            tokio::spawn(async move {
                let mut errors = HashSet::new();
                let mut n = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let s = stream(&format!("Restart-{}", n % 5));
                    let batch: Vec<NewEvent> = (0..=n % 3)
                        .map(|i| NewEvent::new("Written", json!({ "n": n, "i": i })))
                        .collect();
                    let ids: Vec<Uuid> = batch.iter().map(|e| e.event_id).collect();
                    let deadline = Instant::now() + Duration::from_secs(30);
                    loop {
                        match store.append(&s, ExpectedVersion::Any, batch.clone()).await {
                            Ok(result) => {
                                if result.idempotent_replay {
                                    replays.fetch_add(1, Ordering::SeqCst);
                                }
                                assert_eq!(result.positions.len(), ids.len());
                                acked.lock().unwrap().extend(&ids);
                                break;
                            }
                            Err(error) => {
                                assert!(error.is_transient(), "a non-transient error: {error:?}");
                                errors.insert(format!("{error}"));
                                failures.fetch_add(1, Ordering::SeqCst);
                                assert!(Instant::now() < deadline, "batch {n} never got through");
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                    n += 1;
                }
                errors
            })
        };

        let acked_count = || acked.lock().unwrap().len();
        for round in 0..2 {
            let before = acked_count();
            wait_until(Duration::from_secs(15), "appends succeed", || async {
                acked_count() >= before + 30
            })
            .await;
            let failures_before = failures.load(Ordering::SeqCst);
            server.stop().await.expect("stopping the server");
            wait_until(
                Duration::from_secs(10),
                "appends fail while the server is down",
                || async { failures.load(Ordering::SeqCst) >= failures_before + 3 },
            )
            .await;
            let while_down = acked_count();
            server.start().await.expect("starting the server again");
            wait_until(
                Duration::from_secs(15),
                "appends succeed after the restart",
                || async { acked_count() >= while_down + 30 },
            )
            .await;
            println!(
                "restart {round}: {} appends acknowledged so far",
                acked_count()
            );
        }
        stop.store(true, Ordering::SeqCst);
        let errors = writer.await.expect("the writer");
        let sentinel = NewEvent::new("Sentinel", json!({}));
        let sentinel_id = sentinel.event_id;
        store
            .append(
                &stream("Restart-end"),
                ExpectedVersion::NoStream,
                vec![sentinel],
            )
            .await
            .expect("a last append");
        wait_until(
            Duration::from_secs(20),
            "the subscriber receives the last append",
            || async {
                received
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|e| e.event_id == sentinel_id)
            },
        )
        .await;

        let acked = acked.lock().unwrap().clone();
        let mut expected: Vec<Uuid> = acked.clone();
        expected.push(sentinel_id);
        let unique: HashSet<Uuid> = expected.iter().copied().collect();
        assert_eq!(unique.len(), expected.len(), "every batch has fresh ids");

        let got = received.lock().unwrap().clone();
        let got_ids: Vec<Uuid> = got.iter().map(|e| e.event_id).collect();
        let got_set: HashSet<Uuid> = got_ids.iter().copied().collect();
        assert_eq!(got_set.len(), got_ids.len(), "an event was delivered twice");
        assert_eq!(
            got_set, unique,
            "delivered events differ from acknowledged ones"
        );
        assert!(
            got.windows(2).all(|w| w[0].position < w[1].position),
            "delivery went backwards in the feed"
        );
        let mut versions: HashMap<StreamId, u64> = HashMap::new();
        for event in &got {
            let last = versions
                .insert(event.stream_id.clone(), event.version)
                .unwrap_or(0);
            assert_eq!(
                event.version,
                last + 1,
                "{} skipped a version",
                event.stream_id
            );
        }
        let feed = read_feed(&store, &FeedFilter::all(), expected.len()).await;
        let feed_ids: Vec<Uuid> = feed.iter().map(|e| e.event_id).collect();
        assert_eq!(
            feed_ids, got_ids,
            "the feed holds exactly what was delivered"
        );
        assert!(!subscriber.is_finished(), "the subscription ended");
        subscriber.abort();
        println!(
            "{} events acknowledged across 2 restarts; {} failed appends ({} distinct errors: \
             {errors:?}), {} retries found their batch already written",
            acked.len(),
            failures.load(Ordering::SeqCst),
            errors.len(),
            replays.load(Ordering::SeqCst)
        );
        drop(store);
        tokio::task::spawn_blocking(move || drop(server))
            .await
            .expect("removing the cluster");
    });
}
