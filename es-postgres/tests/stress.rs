//! Concurrency and round-trip properties of `PgEventStore` under load, each
//! bounded to seconds.

mod common;

use common::{runtime, stream};

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use es_core::{
    EventStore, ExpectedVersion, FeedFilter, NewEvent, Position, StoreError, StreamId, StreamRead,
};
use es_postgres::{PgEventStore, PgStoreOptions};
use futures::StreamExt;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

/// 8 writers append 2,000 events each to random streams while some commits
/// are late; a subscriber that follows the feed from the start meanwhile
/// receives every committed event exactly once, each stream in version order.
#[test]
fn late_commits_are_never_skipped_by_a_subscriber() {
    const WRITERS: usize = 8;
    const EVENTS_PER_WRITER: usize = 2_000;
    const STREAMS: usize = 40;
    runtime().block_on(async {
        let store = common::fresh_store_with(
            PgStoreOptions::default().poll_interval(Duration::from_millis(50)),
            12,
        )
        .await;
        sqlx::raw_sql(common::SLOW_COMMITS)
            .execute(store.pool())
            .await
            .expect("installing the slow-commit trigger");

        let mut subscription = store.subscribe(Position::START, FeedFilter::all());
        let started = Instant::now();
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut sent = Vec::with_capacity(EVENTS_PER_WRITER);
                    let mut n = 0;
                    while n < EVENTS_PER_WRITER {
                        let seed = (w * 7919 + n * 104_729) % 1_000_003;
                        let s = stream(&format!("Load-{}", seed % STREAMS));
                        let size = (1 + seed % 4).min(EVENTS_PER_WRITER - n);
                        let batch: Vec<NewEvent> = (0..size)
                            .map(|i| NewEvent::new("Loaded", json!({ "writer": w, "n": n + i })))
                            .collect();
                        let ids: Vec<Uuid> = batch.iter().map(|e| e.event_id).collect();
                        store
                            .append(&s, ExpectedVersion::Any, batch)
                            .await
                            .unwrap_or_else(|e| panic!("writer {w} append failed: {e}"));
                        sent.extend(ids);
                        n += size;
                    }
                    sent
                })
            })
            .collect();

        let mut committed = HashSet::new();
        for writer in writers {
            committed.extend(writer.await.expect("writer task"));
        }
        let write_time = started.elapsed();
        let total = WRITERS * EVENTS_PER_WRITER;
        assert_eq!(committed.len(), total);
        println!(
            "late-commit stress: {total} events by {WRITERS} writers in {write_time:.2?} \
             ({:.0} events/s, 10% of rows delayed 1-50 ms at commit)",
            f64::from(u32::try_from(total).unwrap_or(u32::MAX)) / write_time.as_secs_f64()
        );

        let mut seen = HashSet::with_capacity(total);
        let mut last_version: HashMap<StreamId, u64> = HashMap::new();
        let mut last_position = Position::START;
        while seen.len() < total {
            let event = tokio::time::timeout(Duration::from_secs(30), subscription.next())
                .await
                .unwrap_or_else(|_| panic!("subscriber stalled after {} of {total}", seen.len()))
                .expect("the subscription ended")
                .expect("the subscription failed");
            assert!(
                seen.insert(event.event_id),
                "event {} delivered twice",
                event.event_id
            );
            assert!(
                committed.contains(&event.event_id),
                "unknown event delivered"
            );
            assert!(event.position > last_position, "feed order went backwards");
            last_position = event.position;
            let previous = last_version.insert(event.stream_id.clone(), event.version);
            assert_eq!(
                event.version,
                previous.unwrap_or(0) + 1,
                "stream {} out of version order",
                event.stream_id
            );
        }
        if let Ok(Some(extra)) =
            tokio::time::timeout(Duration::from_millis(500), subscription.next()).await
        {
            panic!("an event beyond the committed ones was delivered: {extra:?}");
        }
        println!(
            "subscriber received all {total} events {:.2?} after the writers started",
            started.elapsed()
        );
    });
}

/// 50 concurrent `Exact(v)` appends to one stream, round after round: one
/// winner per version; every loser reports the true actual version.
#[test]
fn exact_appends_race_with_one_winner_per_version() {
    const CONTENDERS: usize = 50;
    const ROUNDS: u64 = 10;
    runtime().block_on(async {
        let store = common::fresh_store_with(PgStoreOptions::default(), 20).await;
        let s = stream("Race-1");
        for version in 0..ROUNDS {
            let tasks: Vec<_> = (0..CONTENDERS)
                .map(|i| {
                    let store = store.clone();
                    let s = s.clone();
                    tokio::spawn(async move {
                        let event = NewEvent::new("Raced", json!({ "round": version, "task": i }));
                        store
                            .append(&s, ExpectedVersion::Exact(version), vec![event])
                            .await
                    })
                })
                .collect();
            let mut winners = 0;
            for task in tasks {
                match task.await.expect("task") {
                    Ok(result) => {
                        winners += 1;
                        assert_eq!(result.stream_version, version + 1);
                    }
                    Err(StoreError::WrongExpectedVersion {
                        expected, actual, ..
                    }) => {
                        assert_eq!(expected, ExpectedVersion::Exact(version));
                        assert_eq!(actual, version + 1, "losers see the winner's version");
                    }
                    Err(other) => panic!("unexpected error: {other}"),
                }
            }
            assert_eq!(winners, 1, "round {version}: exactly one winner");
        }
        let events = store.read_stream(&s, StreamRead::forward()).await.unwrap();
        assert_eq!(
            events.iter().map(|e| e.version).collect::<Vec<_>>(),
            (1..=ROUNDS).collect::<Vec<_>>()
        );
    });
}

/// The same batch sent twice (a retry after a lost reply) is one write; the
/// second call returns the first call's versions and positions. Retries
/// racing each other, and retries after a cancelled call whose outcome is
/// unknown, also leave exactly one copy.
#[test]
fn retry_after_lost_reply_writes_once() {
    runtime().block_on(async {
        let store = common::fresh_store().await;
        let s = stream("Retry-1");
        store
            .append(
                &s,
                ExpectedVersion::Any,
                vec![NewEvent::new("Seed", json!({}))],
            )
            .await
            .unwrap();

        // Sequential retry.
        let batch: Vec<NewEvent> = (0..5)
            .map(|i| NewEvent::new("Paid", json!({ "i": i })))
            .collect();
        let first = store
            .append(&s, ExpectedVersion::Exact(1), batch.clone())
            .await
            .unwrap();
        let second = store
            .append(&s, ExpectedVersion::Exact(1), batch.clone())
            .await
            .unwrap();
        assert!(!first.idempotent_replay && second.idempotent_replay);
        assert_eq!(second.versions(), first.versions());
        assert_eq!(second.positions, first.positions);
        assert_eq!(
            store
                .read_stream(&s, StreamRead::forward())
                .await
                .unwrap()
                .len(),
            6
        );

        // Two copies of one batch in flight at once.
        for round in 0..20 {
            let batch: Vec<NewEvent> = (0..3)
                .map(|i| NewEvent::new("Dup", json!({ "round": round, "i": i })))
                .collect();
            let (a, b) = tokio::join!(
                store.append(&s, ExpectedVersion::Any, batch.clone()),
                store.append(&s, ExpectedVersion::Any, batch.clone()),
            );
            let (a, b) = (a.unwrap(), b.unwrap());
            assert_ne!(
                a.idempotent_replay, b.idempotent_replay,
                "one write, one replay"
            );
            assert_eq!(a.positions, b.positions);
        }

        // A call whose reply is lost: the caller gives up while the server is
        // still executing it (commits are slowed by 20 ms), then retries.
        sqlx::raw_sql(
            "CREATE FUNCTION es.slow() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN PERFORM pg_sleep(0.02); RETURN NULL; END $$; \
             CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON es.events \
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW \
             WHEN (NEW.event_type = 'Cut') EXECUTE FUNCTION es.slow();",
        )
        .execute(store.pool())
        .await
        .expect("installing the slow trigger");
        let mut replays = 0;
        for round in 0..10u64 {
            let batch: Vec<NewEvent> = (0..2)
                .map(|i| NewEvent::new("Cut", json!({ "round": round, "i": i })))
                .collect();
            let cut = Duration::from_millis(5 + round % 3);
            let attempt =
                tokio::time::timeout(cut, store.append(&s, ExpectedVersion::Any, batch.clone()))
                    .await;
            assert!(
                attempt.is_err(),
                "round {round}: the call was cut before its reply"
            );
            let retry = store
                .append(&s, ExpectedVersion::Any, batch.clone())
                .await
                .unwrap();
            if retry.idempotent_replay {
                replays += 1;
            }
            let ids: Vec<Uuid> = batch.iter().map(|e| e.event_id).collect();
            let stored = store.read_stream(&s, StreamRead::forward()).await.unwrap();
            let copies = stored.iter().filter(|e| ids.contains(&e.event_id)).count();
            assert_eq!(copies, 2, "round {round}: each event stored exactly once");
        }
        assert!(
            replays > 0,
            "some cut calls had been written, and their retry was a replay"
        );
        println!("cut calls whose retry found them written: {replays} of 10");
        let stored = store.read_stream(&s, StreamRead::forward()).await.unwrap();
        let versions: Vec<u64> = stored.iter().map(|e| e.version).collect();
        assert_eq!(versions, (1..=stored.len() as u64).collect::<Vec<_>>());
    });
}

/// A 1,000-event append is one statement in one round trip, counted on the
/// wire by a proxy between the store and the server.
#[test]
fn a_thousand_event_append_is_one_statement() {
    runtime().block_on(async {
        let (url, setup_pool) = common::fresh_pool(1).await;
        let setup = PgEventStore::new(setup_pool, PgStoreOptions::default());
        setup.migrate().await.expect("migrating");
        let (options, counts) = common::proxy::start(&url).await;
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .expect("connecting through the proxy");
        let store = PgEventStore::new(pool, PgStoreOptions::default());
        let s = stream("Bulk-1");
        // The first call on a connection also prepares the statement.
        store
            .append(
                &s,
                ExpectedVersion::NoStream,
                vec![NewEvent::new("Warm", json!({}))],
            )
            .await
            .unwrap();

        // What the simplest statement costs through this pool: the pool adds
        // a liveness ping when a connection is released.
        let settle = || async {
            while store.pool().num_idle() < 1 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        sqlx::query("SELECT 1").execute(store.pool()).await.unwrap();
        settle().await;
        counts.reset();
        sqlx::query("SELECT 1").execute(store.pool()).await.unwrap();
        settle().await;
        let trivial = counts.get();
        println!("SELECT 1 through the pool: {trivial:?} (statements, syncs, simple queries)");
        assert_eq!(trivial.0, 1);

        let mut version = 1;
        for size in [1usize, 1_000] {
            let batch: Vec<NewEvent> = (0..size)
                .map(|i| NewEvent::new("Bulk", json!({ "i": i, "text": "x".repeat(64) })))
                .collect();
            counts.reset();
            let result = store
                .append(&s, ExpectedVersion::Exact(version), batch)
                .await
                .unwrap();
            settle().await;
            version = result.stream_version;
            let cost = counts.get();
            println!("{size}-event append: {cost:?} (statements, syncs, simple queries)");
            assert_eq!(result.positions.len(), size);
            assert_eq!(
                cost, trivial,
                "an append costs what SELECT 1 costs: one statement"
            );
        }
        let stored = store.read_stream(&s, StreamRead::forward()).await.unwrap();
        assert_eq!(stored.len(), 1_002);
    });
}

/// A subscriber on another store instance (as in another process) is woken
/// by NOTIFY, not by its poll: with a 30 s poll interval, each append still
/// arrives within seconds (milliseconds unless other transactions on the
/// cluster hold the feed back). Appends notify only while a listener is
/// registered, and the subscriber's listener registers itself.
#[test]
fn a_subscriber_elsewhere_is_woken_by_notify() {
    runtime().block_on(async {
        let (url, pool) = common::fresh_pool(4).await;
        let writer = PgEventStore::new(pool, PgStoreOptions::default());
        writer.migrate().await.expect("migrating");
        let reader_pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .expect("connecting");
        let reader = PgEventStore::new(
            reader_pool,
            // Other tests' transactions on this cluster may hold the feed
            // back briefly; the default feed wait rides that out.
            PgStoreOptions::default().poll_interval(Duration::from_secs(30)),
        );
        let mut subscription = reader.subscribe(Position::START, FeedFilter::all());
        // Wait until the reader's listener has registered.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let listeners: i64 = sqlx::query_scalar("SELECT count(*) FROM es.listeners")
                .fetch_one(writer.pool())
                .await
                .unwrap();
            if listeners > 0 {
                break;
            }
            assert!(Instant::now() < deadline, "the listener never registered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let s = stream("Wake-1");
        for n in 0..5u64 {
            let started = Instant::now();
            writer
                .append(
                    &s,
                    ExpectedVersion::Any,
                    vec![NewEvent::new("Woke", json!({ "n": n }))],
                )
                .await
                .unwrap();
            let event = tokio::time::timeout(Duration::from_secs(3), subscription.next())
                .await
                .expect("woken by NOTIFY, not by the 30 s poll")
                .expect("the subscription ended")
                .expect("the subscription failed");
            assert_eq!(event.version, n + 1);
            println!("cross-process wake-up after {:?}", started.elapsed());
        }
    });
}

/// The store's own pool hands out connections without a test round trip; an
/// append on a connection the server has dropped runs again on a fresh one
/// and lands exactly once.
#[test]
fn an_append_on_a_dropped_connection_runs_again() {
    runtime().block_on(async {
        let (url, admin) = common::fresh_pool(1).await;
        let store = PgEventStore::connect(&url, PgStoreOptions::default())
            .await
            .expect("connecting");
        store.migrate().await.expect("migrating");
        let s = stream("Dropped-1");
        for round in 0..3u64 {
            store
                .append(
                    &s,
                    ExpectedVersion::Exact(round),
                    vec![NewEvent::new("Kept", json!({}))],
                )
                .await
                .unwrap_or_else(|e| {
                    panic!("round {round}: {e} ({:?})", std::error::Error::source(&e))
                });
            // End every other session on the database: the store's idle
            // connections are now dead.
            let ended: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .fetch_all(&admin)
            .await
            .unwrap();
            assert!(!ended.is_empty(), "the store's connections were ended");
        }
        let stored = store.read_stream(&s, StreamRead::forward()).await;
        // A read on a dead connection may fail once; the next one works.
        let stored = match stored {
            Ok(events) => events,
            Err(_) => store.read_stream(&s, StreamRead::forward()).await.unwrap(),
        };
        assert_eq!(
            stored.iter().map(|e| e.version).collect::<Vec<_>>(),
            [1, 2, 3]
        );
    });
}

/// Several appends in one transaction (through the append function, as an
/// application's own transaction may do): each gets its own positions after
/// the previous one's, and category and type filters find each of them,
/// including when a page ends inside the transaction.
#[test]
fn appends_sharing_a_transaction_are_found_by_every_filter() {
    runtime().block_on(async {
        let store = common::fresh_store().await;
        store
            .append(&stream("Alpha-0"), ExpectedVersion::Any, vec![NewEvent::new("Before", json!({}))])
            .await
            .unwrap();
        let mut tx = store.pool().begin().await.unwrap();
        for (stream_id, event_type, n) in [("Alpha-1", "A", 3), ("Beta-1", "B", 2), ("Alpha-2", "A", 2)] {
            let ids: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
            let types = vec![event_type; ids.len()];
            let versions = vec![1i32; ids.len()];
            // The payloads travel as one JSON array.
            let data = json!(vec![json!({ "n": n }); ids.len()]).to_string();
            let metadata: Vec<Option<String>> = vec![None; ids.len()];
            let outcome: i16 = sqlx::query_scalar(
                "SELECT outcome FROM es.append_events($1, 0::smallint, 0, $2, $3, $4, $5::jsonb, $6::jsonb[], false)",
            )
            .bind(stream_id)
            .bind(&ids)
            .bind(&types)
            .bind(&versions)
            .bind(&data)
            .bind(&metadata)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
            assert_eq!(outcome, 0);
        }
        tx.commit().await.unwrap();
        store
            .append(&stream("Alpha-0"), ExpectedVersion::Any, vec![NewEvent::new("After", json!({}))])
            .await
            .unwrap();

        let feed = store.read_all(Position::START, &FeedFilter::all(), 100).await.unwrap();
        let summary: Vec<(&str, &str)> = feed
            .iter()
            .map(|e| (e.stream_id.as_str(), e.event_type.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("Alpha-0", "Before"),
                ("Alpha-1", "A"), ("Alpha-1", "A"), ("Alpha-1", "A"),
                ("Beta-1", "B"), ("Beta-1", "B"),
                ("Alpha-2", "A"), ("Alpha-2", "A"),
                ("Alpha-0", "After"),
            ]
        );
        // The shared transaction's events are numbered one after another.
        let shared: Vec<u64> = feed[1..8].iter().map(|e| e.position.sequence()).collect();
        assert_eq!(shared, [1, 2, 3, 4, 5, 6, 7]);
        assert!(feed[1..8].iter().all(|e| e.position.commit() == feed[1].position.commit()));

        let expect = |pred: &dyn Fn(&es_core::RecordedEvent) -> bool| -> Vec<Uuid> {
            feed.iter().filter(|e| pred(e)).map(|e| e.event_id).collect()
        };
        for (filter, wanted) in [
            (FeedFilter::all().category("Alpha"), expect(&|e| e.stream_id.category() == "Alpha")),
            (FeedFilter::all().category("Beta"), expect(&|e| e.stream_id.category() == "Beta")),
            (
                FeedFilter::all().category("Alpha").event_types(["A"]),
                expect(&|e| e.stream_id.category() == "Alpha" && e.event_type == "A"),
            ),
            (FeedFilter::all().event_types(["B", "After"]), expect(&|e| ["B", "After"].contains(&e.event_type.as_str()))),
            (
                FeedFilter::all().category("Beta").category("Alpha"),
                expect(&|e| ["Alpha", "Beta"].contains(&e.stream_id.category())),
            ),
        ] {
            // Pages of one event, each read from where the last one stopped.
            let mut after = Position::START;
            let mut seen = Vec::new();
            for _ in 0..100 {
                let page = store.read_feed(after, &filter, 1).await.unwrap();
                seen.extend(page.events.iter().map(|e| e.event_id));
                after = page.next;
                if !page.more {
                    break;
                }
            }
            assert_eq!(seen, wanted, "{filter:?}");
            let all: Vec<Uuid> = store
                .read_all(Position::START, &filter, 100)
                .await
                .unwrap()
                .iter()
                .map(|e| e.event_id)
                .collect();
            assert_eq!(all, wanted, "{filter:?}");
        }
    });
}

/// Requests across overlapping streams, naming them in different orders,
/// on a store that does not retry: a deadlock would fail a request instead
/// of being rerun quietly, so none happens (the locks are taken in key
/// order).
#[test]
fn appends_across_overlapping_streams_never_deadlock() {
    runtime().block_on(async {
        let options = PgStoreOptions::default().append_retries(0);
        let store = common::fresh_store_with(options, 20).await;
        es_core::testing::conformance::append_many_overlapping_requests_never_deadlock(store).await;
    });
}
