//! Versioned rebuilds: a new version of a projection builds alongside the
//! one served, takes over once caught up, and the old one's data is
//! dropped; readers never see a model that is partly built.

mod common;

use common::{count, runtime, start, stream, wait_until};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use es_core::{
    BoxError, Event, EventStore, ExpectedVersion, Handle, NewEvent, Projection, RecordedEvent,
    Reset,
};
use es_postgres::{PgEventStore, ProjectionRunner, RunnerOptions, projection_key};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{PgConnection, PgPool};

const EVENTS: u64 = 20_000;
const STREAMS: u64 = 40;

#[derive(Debug, Serialize, Deserialize)]
struct Counted {
    amount: i64,
}

#[derive(Debug, Event)]
enum CounterEvent {
    Counted(Counted),
}

/// Version 1 of `totals`: the number of events per stream.
#[derive(Projection)]
#[es(name = "totals", handles(CounterEvent::Counted))]
struct TotalsV1;

/// Version 2 of `totals`: the sum of the amounts per stream, in a table of
/// its own.
#[derive(Projection)]
#[es(name = "totals", version = 2, handles(CounterEvent::Counted))]
struct TotalsV2;

/// What each version adds for one event.
trait Model: Projection {
    fn add(counted: &Counted) -> i64;
}

impl Model for TotalsV1 {
    fn add(_: &Counted) -> i64 {
        1
    }
}

impl Model for TotalsV2 {
    fn add(counted: &Counted) -> i64 {
        counted.amount
    }
}

fn table<P: Projection>() -> String {
    format!("totals_v{}", P::VERSION)
}

/// Both versions write `totals_v{VERSION}`; readers read the view `totals`,
/// which the switch points at the version served.
macro_rules! versioned_totals {
    ($projection:ty) => {
        impl Handle<Counted, PgConnection> for $projection {
            async fn handle(
                &self,
                counted: Counted,
                envelope: &RecordedEvent,
                tx: &mut PgConnection,
            ) -> Result<(), BoxError> {
                let table = table::<Self>();
                sqlx::query(&format!(
                    "INSERT INTO {table} (stream_id, total) VALUES ($1, $2) \
                     ON CONFLICT (stream_id) DO UPDATE SET total = {table}.total + $2"
                ))
                .bind(envelope.stream_id.as_str())
                .bind(<Self as Model>::add(&counted))
                .execute(tx)
                .await?;
                Ok(())
            }
        }

        impl Reset<PgConnection> for $projection {
            async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
                sqlx::query(&format!("TRUNCATE {}", table::<Self>()))
                    .execute(tx)
                    .await?;
                Ok(())
            }

            async fn switch(
                &self,
                _previous: Option<u32>,
                tx: &mut PgConnection,
            ) -> Result<(), BoxError> {
                sqlx::query(&format!(
                    "CREATE OR REPLACE VIEW totals AS SELECT stream_id, total FROM {}",
                    table::<Self>()
                ))
                .execute(tx)
                .await?;
                Ok(())
            }

            async fn retire(&self, version: u32, tx: &mut PgConnection) -> Result<(), BoxError> {
                sqlx::query(&format!("DROP TABLE totals_v{version}"))
                    .execute(tx)
                    .await?;
                Ok(())
            }
        }
    };
}

versioned_totals!(TotalsV1);
versioned_totals!(TotalsV2);

fn amount(n: u64) -> i64 {
    i64::try_from(n % 7 + 1).expect("small")
}

/// Appends the events; returns the complete models of both versions.
async fn fill(store: &PgEventStore) -> (Totals, Totals) {
    let (mut old, mut new) = (BTreeMap::new(), BTreeMap::new());
    for s in 0..STREAMS {
        let id = stream(&format!("Counter-{s}"));
        let per = EVENTS / STREAMS;
        let events = (0..per)
            .map(|i| NewEvent::new("Counted", json!({ "amount": amount(i) })))
            .collect();
        store
            .append(&id, ExpectedVersion::NoStream, events)
            .await
            .expect("appending");
        let per_i = i64::try_from(per).expect("small");
        old.insert(id.as_str().to_owned(), per_i);
        new.insert(id.as_str().to_owned(), (0..per).map(amount).sum());
    }
    (old, new)
}

type Totals = BTreeMap<String, i64>;

async fn read_model(pool: &PgPool) -> Result<Totals, sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT stream_id, total FROM totals")
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().collect())
}

/// What the readers saw: answers equal to the old model, then to the new
/// one, and the longest read.
#[derive(Debug, Default)]
struct Seen {
    old: usize,
    new: usize,
    longest: Duration,
}

/// The stream a writer appends to during the rebuild (amounts of 1, which
/// both versions count alike).
const LIVE: &str = "Counter-live";

/// Reads `totals` in a loop until `done`; every answer (but for the stream
/// written meanwhile) must be the complete old model or the complete new
/// one, and once the new one is seen the old one never is again.
async fn reader(pool: PgPool, old: Arc<Totals>, new: Arc<Totals>, done: Arc<AtomicBool>) -> Seen {
    let mut seen = Seen::default();
    while !done.load(Ordering::Relaxed) {
        let asked = Instant::now();
        let mut answer = read_model(&pool).await.expect("reading the view");
        answer.remove(LIVE);
        seen.longest = seen.longest.max(asked.elapsed());
        if answer == *old {
            assert_eq!(seen.new, 0, "the old model after the new one");
            seen.old += 1;
        } else if answer == *new {
            seen.new += 1;
        } else {
            panic!(
                "a partial model: {} streams, after {} old and {} new answers",
                answer.len(),
                seen.old,
                seen.new
            );
        }
    }
    seen
}

fn options() -> RunnerOptions {
    RunnerOptions::default().standby_interval(Duration::from_millis(50))
}

#[test]
fn a_new_version_builds_alongside_and_takes_over_once_caught_up() {
    runtime().block_on(async {
        let store = common::fresh_store().await;
        sqlx::raw_sql(
            "CREATE TABLE totals_v1 (stream_id text PRIMARY KEY, total bigint NOT NULL); \
             CREATE TABLE totals_v2 (stream_id text PRIMARY KEY, total bigint NOT NULL);",
        )
        .execute(store.pool())
        .await
        .expect("creating the tables");
        let (old, new) = fill(&store).await;
        assert_eq!(projection_key::<TotalsV1>(), "totals");
        assert_eq!(projection_key::<TotalsV2>(), "totals@v2");

        // Version 1 serves first: its switch creates the view.
        let (stop_v1, v1) = start(ProjectionRunner::new(store.clone(), TotalsV1, options()));
        wait_until(Duration::from_secs(60), "version 1 to catch up", || async {
            read_model(store.pool()).await.is_ok_and(|m| m == old)
        })
        .await;

        let (old, new) = (Arc::new(old), Arc::new(new));
        let done = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let args = (store.pool().clone(), old.clone(), new.clone(), done.clone());
                tokio::spawn(reader(args.0, args.1, args.2, args.3))
            })
            .collect();
        let writer = tokio::spawn(write_live(store.clone(), done.clone()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let (stop_v2, v2) = start(ProjectionRunner::new(store.clone(), TotalsV2, options()));
        let switched = take_over(&store, v1).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        done.store(true, Ordering::Relaxed);
        let written = writer.await.expect("the writer");
        wait_until(
            Duration::from_secs(30),
            "version 2 to have every event",
            || async {
                read_model(store.pool())
                    .await
                    .is_ok_and(|m| m.get(LIVE) == Some(&written))
            },
        )
        .await;
        let mut longest = Duration::ZERO;
        let (mut olds, mut news) = (0, 0);
        for reader in readers {
            let seen = reader.await.expect("a reader");
            longest = longest.max(seen.longest);
            olds += seen.old;
            news += seen.new;
        }
        eprintln!(
            "versioned rebuild over {EVENTS} events: switched after {:?}; \
             readers saw the old model {olds} times, the new one {news} times; \
             the longest read took {longest:?}",
            switched - started
        );
        assert!(olds > 0 && news > 0, "old {olds}, new {news}");
        after_the_switch(&store, &new).await;
        drop(stop_v1);
        let _ = stop_v2.send(());
        v2.await
            .expect("the task")
            .expect("version 2 stops cleanly");
    });
}

/// Appends to [`LIVE`] until `done`, one event every few milliseconds;
/// returns how many.
async fn write_live(store: PgEventStore, done: Arc<AtomicBool>) -> i64 {
    let id = stream(LIVE);
    let mut written = 0;
    while !done.load(Ordering::Relaxed) {
        let event = NewEvent::new("Counted", json!({ "amount": 1 }));
        store
            .append(&id, ExpectedVersion::Any, vec![event])
            .await
            .expect("appending");
        written += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    written
}

/// Waits until version 2 serves, version 1's runner has ended and version
/// 1 is retired; returns when version 2 was seen serving.
async fn take_over(
    store: &PgEventStore,
    v1: tokio::task::JoinHandle<Result<(), es_postgres::ProjectionError>>,
) -> Instant {
    let serving = "SELECT serving FROM es.projection_versions WHERE name = 'totals'";
    wait_until(
        Duration::from_secs(120),
        "version 2 to take over",
        || async { count(store, serving).await == 2 },
    )
    .await;
    let switched = Instant::now();
    // The replaced version's runner ends by itself, then its data is
    // dropped.
    let ended = tokio::time::timeout(Duration::from_secs(30), v1)
        .await
        .expect("version 1's runner ends after the switch")
        .expect("the task");
    assert!(ended.is_ok(), "{ended:?}");
    let left = "SELECT count(*) FROM es.projections WHERE name = 'totals'";
    wait_until(
        Duration::from_secs(30),
        "version 1 to be retired",
        || async { count(store, left).await == 0 },
    )
    .await;
    switched
}

/// Version 1 is gone; the bare name addresses version 2, which follows the
/// feed; version 1, started again, ends at once.
async fn after_the_switch(store: &PgEventStore, new: &Totals) {
    let status = store.projection_status("totals").await.expect("status");
    assert_eq!(status.map(|s| s.name).as_deref(), Some("totals@v2"));
    let tables = "SELECT count(*) FROM pg_tables WHERE tablename = 'totals_v1'";
    assert_eq!(
        count(store, tables).await,
        0,
        "version 1's table is dropped"
    );
    let rows = "SELECT count(*) FROM es.projections WHERE name = 'totals'";
    assert_eq!(
        count(store, rows).await,
        0,
        "version 1's checkpoint is gone"
    );

    let id = stream("Counter-0");
    store
        .append(
            &id,
            ExpectedVersion::Any,
            vec![NewEvent::new("Counted", json!({ "amount": 100 }))],
        )
        .await
        .expect("appending");
    let expected = new[id.as_str()] + 100;
    wait_until(Duration::from_secs(30), "version 2 to follow", || async {
        read_model(store.pool())
            .await
            .is_ok_and(|m| m[id.as_str()] == expected)
    })
    .await;
    let again = ProjectionRunner::new(store.clone(), TotalsV1, options());
    let ran = tokio::time::timeout(Duration::from_secs(30), again.run(std::future::pending()))
        .await
        .expect("a retired version's runner ends");
    assert!(ran.is_ok(), "{ran:?}");
    assert_eq!(count(store, rows).await, 0, "and leaves no checkpoint");
}

/// Version 1 of `picky`: takes every event.
#[derive(Projection)]
#[es(name = "picky", handles(CounterEvent::Counted))]
struct PickyV1;

/// Version 2 of `picky`: fails on an amount of 13.
#[derive(Projection)]
#[es(name = "picky", version = 2, handles(CounterEvent::Counted))]
struct PickyV2;

impl Handle<Counted, PgConnection> for PickyV1 {
    async fn handle(
        &self,
        _: Counted,
        _: &RecordedEvent,
        _: &mut PgConnection,
    ) -> Result<(), BoxError> {
        Ok(())
    }
}

impl Handle<Counted, PgConnection> for PickyV2 {
    async fn handle(
        &self,
        counted: Counted,
        _: &RecordedEvent,
        _: &mut PgConnection,
    ) -> Result<(), BoxError> {
        if counted.amount == 13 {
            return Err("13 is refused".into());
        }
        Ok(())
    }
}

impl Reset<PgConnection> for PickyV1 {
    async fn reset(&self, _: &mut PgConnection) -> Result<(), BoxError> {
        Ok(())
    }
}

impl Reset<PgConnection> for PickyV2 {
    async fn reset(&self, _: &mut PgConnection) -> Result<(), BoxError> {
        Ok(())
    }
}

#[test]
fn a_new_version_with_parked_events_does_not_take_over() {
    runtime().block_on(async {
        let store = common::fresh_store().await;
        let id = stream("Counter-1");
        let events = [1, 13, 2]
            .map(|amount| NewEvent::new("Counted", json!({ "amount": amount })))
            .to_vec();
        store
            .append(&id, ExpectedVersion::NoStream, events)
            .await
            .expect("appending");
        let serving =
            "SELECT coalesce(max(serving), 0) FROM es.projection_versions WHERE name = 'picky'";
        let (stop_v1, v1) = start(ProjectionRunner::new(store.clone(), PickyV1, options()));
        wait_until(Duration::from_secs(30), "version 1 to serve", || async {
            count(&store, serving).await == 1
        })
        .await;
        let parking = options().error_policy(
            es_postgres::ErrorPolicy::park_after(0).backoff(Duration::from_millis(1)),
        );
        let (stop_v2, v2) = start(ProjectionRunner::new(store.clone(), PickyV2, parking));
        wait_until(Duration::from_secs(30), "version 2 to catch up", || async {
            store
                .projection_status("picky@v2")
                .await
                .expect("status")
                .is_some_and(|s| s.lag == 0 && s.parked == 1)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(count(&store, serving).await, 1, "version 1 still serves");

        let parked = store.parked_events("picky@v2").await.expect("parked");
        assert!(
            store
                .discard_parked("picky@v2", parked[0].id)
                .await
                .expect("discarding")
        );
        wait_until(
            Duration::from_secs(30),
            "version 2 to take over",
            || async { count(&store, serving).await == 2 },
        )
        .await;
        let ended = tokio::time::timeout(Duration::from_secs(30), v1)
            .await
            .expect("version 1's runner ends")
            .expect("the task");
        assert!(ended.is_ok(), "{ended:?}");
        drop(stop_v1);
        let _ = stop_v2.send(());
        v2.await
            .expect("the task")
            .expect("version 2 stops cleanly");
    });
}
