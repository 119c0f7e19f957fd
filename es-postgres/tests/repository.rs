//! The command path against PostgreSQL: a long stream loads from its latest
//! snapshot plus a short tail, a cached aggregate costs no replay, and a
//! command id costs no round trip. The
//! repository rules every store shares are in the conformance suite
//! (`conformance.rs`).

mod common;

use common::runtime;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use es_core::testing::hooked::{Hooked, Hooks};
use es_core::{
    Aggregate, CommandContext, Decide, Event, EventStore, ExpectedVersion, NewEvent, On,
    RecordedEvent, Repository, SnapshotStore,
};
use es_postgres::{PgEventStore, PgStoreOptions};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Recorded {
    amount: u64,
}

#[derive(Debug, Clone, PartialEq, Event)]
enum MeterEvent {
    #[es(name = "MeterReadingRecorded")]
    Recorded(Recorded),
}

#[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
#[es(category = "Meter", event = MeterEvent, snapshot(every = 100, version = 1))]
struct Meter {
    readings: u64,
    total: u64,
}

impl On<Recorded> for Meter {
    fn on(&mut self, event: Recorded) {
        self.readings += 1;
        self.total += event.amount;
    }
}

/// Records `count` readings of 1 to `count`.
struct RecordReadings {
    count: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("never refused")]
struct Never;

impl Decide<RecordReadings> for Meter {
    type Error = Never;

    fn decide(&self, command: &RecordReadings) -> Result<Vec<MeterEvent>, Never> {
        Ok((1..=command.count)
            .map(|amount| MeterEvent::Recorded(Recorded { amount }))
            .collect())
    }
}

/// Counts the events the store hands out from streams.
#[derive(Clone, Default)]
struct CountReads(Arc<AtomicUsize>);

impl Hooks<PgEventStore> for CountReads {
    fn after_read_stream(&self, events: &[RecordedEvent]) {
        self.0.fetch_add(events.len(), Ordering::SeqCst);
    }
}

type Counting = Hooked<PgEventStore, CountReads>;

/// The events read from streams since the last call.
fn take_count(store: &Counting) -> usize {
    store.hooks.0.swap(0, Ordering::SeqCst)
}

/// The sum of 1..=n.
fn triangle(n: u64) -> u64 {
    n * (n + 1) / 2
}

#[test]
fn a_long_stream_loads_from_its_snapshot_and_a_short_tail() {
    runtime().block_on(async {
        let store = Hooked::new(common::fresh_store().await, CountReads::default());
        let writer = Repository::<Meter, _>::new(store.clone());
        let meter = Meter::stream_id(Uuid::now_v7()).expect("valid id");
        let context = CommandContext::new().with_correlation_id("readings");

        // 1,000 events in commands of 10 (99) and of 1 (10).
        for _ in 0..99 {
            writer
                .execute(&meter, &RecordReadings { count: 10 }, &context)
                .await
                .expect("command");
        }
        for _ in 0..10 {
            let outcome = writer
                .execute(&meter, &RecordReadings { count: 1 }, &context)
                .await
                .expect("command");
            assert_eq!(outcome.events_read, 0, "a cached state reads nothing");
        }
        assert_eq!(take_count(&store), 0, "the writer never replayed");
        let snapshot = store
            .load_snapshot(&meter)
            .await
            .expect("snapshot")
            .expect("a snapshot was taken");
        assert_eq!(snapshot.version, 1000);

        // A fresh process: snapshot at 1,000 plus nothing.
        let reader = Repository::<Meter, _>::new(store.clone());
        let loaded = reader.load(&meter).await.expect("load");
        assert_eq!(loaded.snapshot_version, Some(1000));
        assert_eq!(loaded.version, 1000);
        assert_eq!(loaded.events_read, 0);
        assert_eq!(take_count(&store), 0);
        assert_eq!(loaded.state.readings, 1000);
        assert_eq!(loaded.state.total, 99 * triangle(10) + 10);

        // 99 more events from elsewhere: the load reads just those.
        let more: Vec<NewEvent> = (1..=99)
            .map(|amount| {
                MeterEvent::Recorded(Recorded { amount })
                    .encode()
                    .expect("encodes")
            })
            .collect();
        store
            .inner
            .append(&meter, ExpectedVersion::Exact(1000), more)
            .await
            .expect("append");
        let loaded = reader.load(&meter).await.expect("load");
        assert_eq!(loaded.snapshot_version, Some(1000));
        assert_eq!(loaded.version, 1099);
        assert_eq!(loaded.events_read, 99);
        assert!(take_count(&store) <= 100);
        assert_eq!(loaded.state.total, 99 * triangle(10) + 10 + triangle(99));

        // A command on a fresh repository: snapshot, then the 99-event tail.
        let fresh = Repository::<Meter, _>::new(store.clone());
        let outcome = fresh
            .execute(&meter, &RecordReadings { count: 1 }, &context)
            .await
            .expect("command");
        assert_eq!(outcome.stream_version, 1100);
        assert!(outcome.events_read <= 100, "{}", outcome.events_read);
        assert!(take_count(&store) <= 100);
        // The append crossed 1,100: a new snapshot.
        let snapshot = store.load_snapshot(&meter).await.expect("snapshot");
        assert_eq!(snapshot.map(|s| s.version), Some(1100));

        // The stale writer's cache is caught up by its tail read, not
        // trusted blindly.
        let outcome = writer
            .execute(&meter, &RecordReadings { count: 1 }, &context)
            .await
            .expect("command");
        assert_eq!(outcome.stream_version, 1101);
        assert_eq!(outcome.events_read, 100);
    });
}

/// A new command with a command id costs what one without does: one
/// statement, its append, on a cached state. Recognizing it when it is sent
/// again costs the append's replay and one read by id. Counted on the wire.
#[test]
fn a_new_keyed_command_costs_no_extra_round_trip() {
    runtime().block_on(async {
        let (url, pool) = common::fresh_pool(2).await;
        let store = PgEventStore::new(pool, PgStoreOptions::default());
        store.migrate().await.expect("migrating");
        let (options, counts) = common::proxy::start(&url).await;
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .expect("connecting through the proxy");
        let repo = Repository::<Meter, _>::new(PgEventStore::new(pool, PgStoreOptions::default()));
        let meter = Meter::stream_id(Uuid::now_v7()).expect("valid id");
        let record = RecordReadings { count: 2 };
        // Warm up: the state in the cache, every statement prepared.
        repo.execute(&meter, &record, &CommandContext::new())
            .await
            .expect("a first command");
        repo.store()
            .read_events(&[Uuid::nil()])
            .await
            .expect("a read by id");
        // Statements on the wire, each its own round trip. (The proxy's
        // count of `Sync` messages is not used: sqlx sends one of them after
        // the reply, so it can fall on either side of a reset.)
        let wire = || {
            let (executes, _, queries) = counts.get();
            executes + queries
        };

        // The first append also started the store's sweep of ended
        // listeners, in a task of its own (then not again for a minute):
        // wait until the wire is quiet.
        let mut seen = wire();
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            if wire() == seen {
                break;
            }
            seen = wire();
        }

        counts.reset();
        for _ in 0..10 {
            repo.execute(&meter, &record, &CommandContext::new())
                .await
                .expect("a command without an id");
        }
        let unkeyed = wire();
        assert_eq!(unkeyed, 10, "one statement per command: its append");

        counts.reset();
        let mut last = CommandContext::new();
        for _ in 0..10 {
            last = CommandContext::for_command(Uuid::now_v7());
            let outcome = repo
                .execute(&meter, &record, &last)
                .await
                .expect("a keyed command");
            assert!(!outcome.already_applied);
        }
        assert_eq!(
            wire(),
            unkeyed,
            "a command id adds no statement and no round trip"
        );

        counts.reset();
        repo.store()
            .read_events(&[Uuid::nil()])
            .await
            .expect("a read by id");
        let read_by_id = wire();
        counts.reset();
        let again = repo
            .execute(&meter, &record, &last)
            .await
            .expect("sent again");
        assert!(again.already_applied);
        assert_eq!(read_by_id, 1);
        // The append runs twice, as every replay does (its first run skips
        // the id lookup and meets the unique index), then one read by id.
        assert_eq!(
            wire(),
            3,
            "sent again: the append's replay, then a read by id"
        );
    });
}
