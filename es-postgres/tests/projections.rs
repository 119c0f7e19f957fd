//! The projection runner against a real server: crash recovery, the lease,
//! the error policy, filter pushdown and live delivery.

mod common;

use common::runtime;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use es_core::{
    BoxError, Dispatch, Event, EventStore, ExpectedVersion, Handle, NewEvent, Projection,
    RecordedEvent, Reset, StreamId,
};
use es_postgres::{
    ErrorPolicy, PgEventStore, PgStoreOptions, ProjectionError, ProjectionRunner, ProjectionState,
    RunnerOptions,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

const CHILD_URL: &str = "ES_PROJECTION_CHILD_URL";

#[derive(Debug, Serialize, Deserialize)]
struct Added {
    amount: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Poisoned {}

#[derive(Debug, Event)]
enum LedgerEvent {
    Added(Added),
    #[es(name = "Poison")]
    Poison(Poisoned),
}

/// Sums `Added` events per stream into `tally`, and logs every application
/// in `applied` (without a unique key, so a double application shows).
#[derive(Projection)]
#[es(name = "tally", handles(LedgerEvent::Added, LedgerEvent::Poison))]
struct Tally {
    runner: &'static str,
}

impl Handle<Added, PgConnection> for Tally {
    async fn handle(
        &self,
        added: Added,
        envelope: &RecordedEvent,
        tx: &mut PgConnection,
    ) -> Result<(), BoxError> {
        sqlx::query(
            "INSERT INTO tally (stream_id, events, total) VALUES ($1, 1, $2) \
             ON CONFLICT (stream_id) DO UPDATE \
             SET events = tally.events + 1, total = tally.total + EXCLUDED.total",
        )
        .bind(envelope.stream_id.as_str())
        .bind(added.amount)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO applied (runner, event_id) VALUES ($1, $2)")
            .bind(self.runner)
            .bind(envelope.event_id)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

impl Handle<Poisoned, PgConnection> for Tally {
    async fn handle(
        &self,
        _: Poisoned,
        envelope: &RecordedEvent,
        _: &mut PgConnection,
    ) -> Result<(), BoxError> {
        Err(format!(
            "cannot tally {}: the payload is poisoned",
            envelope.event_id
        )
        .into())
    }
}

impl Reset<PgConnection> for Tally {
    async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query("TRUNCATE tally, applied").execute(tx).await?;
        Ok(())
    }
}

const READ_MODEL: &str = "
CREATE TABLE tally (stream_id text PRIMARY KEY, events bigint NOT NULL, total bigint NOT NULL);
CREATE TABLE applied (id bigserial PRIMARY KEY, runner text NOT NULL, event_id uuid NOT NULL);
";

async fn setup(config: PgStoreOptions) -> (String, PgEventStore) {
    let (url, pool) = common::fresh_pool(10).await;
    let store = PgEventStore::new(pool, config);
    store.migrate().await.expect("migrating");
    sqlx::raw_sql(READ_MODEL)
        .execute(store.pool())
        .await
        .expect("creating the read model");
    (url, store)
}

fn fast() -> RunnerOptions {
    RunnerOptions::default()
        .batch_size(100)
        .standby_interval(Duration::from_millis(100))
        .error_policy(ErrorPolicy::stop_after(2).backoff(Duration::from_millis(10)))
}

fn added(amount: i64) -> NewEvent {
    NewEvent::new("Added", json!({ "amount": amount }))
}

async fn append(store: &PgEventStore, stream: &str, events: Vec<NewEvent>) {
    let id = StreamId::new(stream).expect("stream id");
    store
        .append(&id, ExpectedVersion::Any, events)
        .await
        .expect("append");
}

async fn applied_count(store: &PgEventStore) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM applied")
        .fetch_one(store.pool())
        .await
        .expect("counting")
}

async fn wait_for_applied(store: &PgEventStore, n: i64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let count = applied_count(store).await;
        if count >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {count} of {n} events applied in {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn read_model(store: &PgEventStore) -> Vec<(String, i64, i64)> {
    sqlx::query_as("SELECT stream_id, events, total FROM tally ORDER BY stream_id")
        .fetch_all(store.pool())
        .await
        .expect("reading the read model")
}

async fn duplicates(store: &PgEventStore) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT event_id FROM applied GROUP BY event_id HAVING count(*) > 1) d",
    )
    .fetch_one(store.pool())
    .await
    .expect("counting duplicates")
}

/// The body of the child process that the crash test kills: runs the
/// projection against the database in `ES_PROJECTION_CHILD_URL` forever.
#[test]
#[ignore = "run as a child process by projection_survives_sigkill"]
fn projection_child_process() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    runtime().block_on(async {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .expect("child connects");
        let store = PgEventStore::new(pool, PgStoreOptions::default());
        let runner: ProjectionRunner<Tally> =
            ProjectionRunner::new(store, Tally { runner: "child" }, fast());
        runner
            .run(futures::future::pending())
            .await
            .expect("child runner");
    });
}

fn spawn_child(url: &str) -> Child {
    Command::new(std::env::current_exe().expect("test binary path"))
        .args([
            "projection_child_process",
            "--exact",
            "--ignored",
            "--test-threads=1",
        ])
        .env(CHILD_URL, url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning the projection process")
}

/// A projection process killed with SIGKILL at random moments, 10 times,
/// while 5,000 events are appended: in the end the read model equals a
/// fresh rebuild and no event's effect was applied twice.
#[test]
fn projection_survives_sigkill() {
    runtime().block_on(async {
        let (url, store) = setup(PgStoreOptions::default()).await;
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                for batch in 0..500i64 {
                    let events = (0..10).map(|i| added(batch * 10 + i)).collect();
                    append(&store, &format!("Account-{}", batch % 17), events).await;
                    if batch % 25 == 0 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        };
        let mut kills = 0;
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        while kills < 10 {
            let mut child = spawn_child(&url);
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let alive = Duration::from_millis(150 + seed % 400);
            tokio::time::sleep(alive).await;
            child.kill().expect("SIGKILL");
            child.wait().expect("reaping the child");
            kills += 1;
        }
        writer.await.expect("writer");
        // A last run to completion.
        let mut child = spawn_child(&url);
        wait_for_applied(&store, 5_000, Duration::from_secs(60)).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reaping the child");

        assert_eq!(duplicates(&store).await, 0, "an event was applied twice");
        assert_eq!(applied_count(&store).await, 5_000);
        let survived = read_model(&store).await;
        let expected: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT stream_id, count(*), sum((data->>'amount')::bigint)::bigint \
             FROM es.events GROUP BY stream_id ORDER BY stream_id",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        assert_eq!(survived, expected, "the read model matches the events");

        // A rebuild from scratch gives the same read model.
        store.request_rebuild(Tally::NAME).await.unwrap();
        let runner: ProjectionRunner<Tally> =
            ProjectionRunner::new(store.clone(), Tally { runner: "rebuild" }, fast());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(async move {
            runner
                .run(async {
                    let _ = stopped.await;
                })
                .await
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let by_rebuild: i64 =
                sqlx::query_scalar("SELECT count(*) FROM applied WHERE runner = 'rebuild'")
                    .fetch_one(store.pool())
                    .await
                    .unwrap();
            if by_rebuild == 5_000 {
                break;
            }
            assert!(Instant::now() < deadline, "rebuild stalled at {by_rebuild}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = stop.send(());
        run.await.unwrap().unwrap();
        assert_eq!(
            applied_count(&store).await,
            5_000,
            "the reset removed the old rows"
        );
        assert_eq!(
            read_model(&store).await,
            survived,
            "rebuild equals the survivor"
        );
    });
}

/// Two runners of one projection: only one processes at any moment; the
/// second takes over when the first dies.
#[test]
fn second_runner_stands_by_then_takes_over() {
    runtime().block_on(async {
        let (url, store) = setup(PgStoreOptions::default()).await;
        let other_pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .unwrap();
        let other = PgEventStore::new(other_pool, PgStoreOptions::default());

        let first: ProjectionRunner<Tally> =
            ProjectionRunner::new(store.clone(), Tally { runner: "first" }, fast());
        let first = tokio::spawn(async move { first.run(futures::future::pending()).await });
        append(&store, "Account-1", (0..20).map(added).collect()).await;
        wait_for_applied(&store, 20, Duration::from_secs(10)).await;

        let second: ProjectionRunner<Tally> =
            ProjectionRunner::new(other, Tally { runner: "second" }, fast());
        let second = tokio::spawn(async move { second.run(futures::future::pending()).await });
        for round in 0..10 {
            append(&store, "Account-2", vec![added(round)]).await;
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        wait_for_applied(&store, 30, Duration::from_secs(10)).await;
        let by_second: i64 =
            sqlx::query_scalar("SELECT count(*) FROM applied WHERE runner = 'second'")
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!(
            by_second, 0,
            "the standby processed nothing while the first ran"
        );
        let status = store.projection_statuses().await.unwrap();
        assert!(status[0].active && status[0].state == ProjectionState::Running);

        // The first runner dies: its lease connection is dropped.
        first.abort();
        let _ = first.await;
        append(&store, "Account-3", (0..5).map(added).collect()).await;
        wait_for_applied(&store, 35, Duration::from_secs(10)).await;
        let order: Vec<String> = sqlx::query_scalar("SELECT runner FROM applied ORDER BY id")
            .fetch_all(store.pool())
            .await
            .unwrap();
        let switch = order
            .iter()
            .position(|r| r == "second")
            .expect("second took over");
        assert!(order[..switch].iter().all(|r| r == "first"));
        assert!(
            order[switch..].iter().all(|r| r == "second"),
            "no interleaving: {order:?}"
        );
        assert_eq!(duplicates(&store).await, 0);
        second.abort();
    });
}

/// In park mode, a poison event is set aside with its error and later events
/// are processed; the status shows it.
#[test]
fn poison_event_is_parked_and_later_events_applied() {
    runtime().block_on(async {
        let (_, store) = setup(PgStoreOptions::default()).await;
        append(&store, "Account-1", vec![added(1), added(2)]).await;
        let poison = NewEvent::new("Poison", json!({}));
        let poison_id = poison.event_id;
        append(&store, "Account-1", vec![poison]).await;
        append(&store, "Account-1", vec![added(3)]).await;

        let config = fast().error_policy(ErrorPolicy::park_after(2).backoff(Duration::from_millis(5)));
        let runner: ProjectionRunner<Tally> =
            ProjectionRunner::new(store.clone(), Tally { runner: "park" }, config);
        let run = tokio::spawn(async move { runner.run(futures::future::pending()).await });
        wait_for_applied(&store, 3, Duration::from_secs(10)).await;
        append(&store, "Account-1", vec![added(4)]).await;
        wait_for_applied(&store, 4, Duration::from_secs(10)).await;

        let (event_id, error, attempts): (Uuid, String, i64) = sqlx::query_as(
            "SELECT event_id, error, attempts FROM es.projection_dead_letters WHERE projection = 'tally'",
        )
        .fetch_one(store.pool())
        .await
        .expect("one dead letter");
        assert_eq!(event_id, poison_id);
        assert!(error.contains("poisoned"), "{error}");
        assert_eq!(attempts, 3, "the first try and two retries");
        assert_eq!(read_model(&store).await, [("Account-1".to_owned(), 4, 10)]);
        let status = store.projection_statuses()
            .await
            .unwrap();
        assert_eq!(status[0].parked, 1);
        assert_eq!(status[0].lag, 0);
        assert!(status[0].last_error.as_deref().unwrap_or("").contains("poisoned"));
        run.abort();
    });
}

/// In stop mode, the runner stops at a poison event and reports it; the
/// checkpoint stays before it, so nothing is skipped.
#[test]
fn poison_event_stops_the_runner_in_stop_mode() {
    runtime().block_on(async {
        let (_, store) = setup(PgStoreOptions::default()).await;
        append(&store, "Account-1", vec![added(1)]).await;
        let poison = NewEvent::new("Poison", json!({}));
        let poison_id = poison.event_id;
        append(&store, "Account-1", vec![poison, added(2)]).await;

        let runner: ProjectionRunner<Tally> =
            ProjectionRunner::new(store.clone(), Tally { runner: "stop" }, fast());
        let outcome = tokio::time::timeout(
            Duration::from_secs(10),
            runner.run(futures::future::pending()),
        )
        .await
        .expect("the runner stops by itself");
        match outcome {
            Err(ProjectionError::Stopped {
                event_id,
                attempts,
                error,
                ..
            }) => {
                assert_eq!(event_id, poison_id);
                assert_eq!(attempts, 3);
                assert!(error.contains("poisoned"));
            }
            other => panic!("expected Stopped, got {other:?}"),
        }
        assert_eq!(
            applied_count(&store).await,
            1,
            "events after the poison wait"
        );
        let status = store.projection_statuses().await.unwrap();
        assert_eq!(status[0].state, ProjectionState::Failed);
        assert_eq!(status[0].lag, 2, "the poison and the event after it");
        assert!(!status[0].active);
        assert!(
            status[0]
                .last_error
                .as_deref()
                .unwrap_or("")
                .contains(&poison_id.to_string())
        );
    });
}

/// Counts the rows it is given; reads 2 of 40 event types.
struct TwoOfForty {
    seen: Arc<Mutex<Vec<String>>>,
}

impl Projection for TwoOfForty {
    const NAME: &'static str = "two_of_forty";
    const EVENT_TYPES: &'static [&'static str] = &["Type07", "Type31"];
}

impl Dispatch<()> for TwoOfForty {
    async fn dispatch(&self, event: &RecordedEvent, (): &mut ()) -> Result<(), BoxError> {
        self.seen
            .lock()
            .map_err(|_| "poisoned lock")?
            .push(event.event_type.clone());
        Ok(())
    }
}

impl Reset<()> for TwoOfForty {
    async fn reset(&self, (): &mut ()) -> Result<(), BoxError> {
        Ok(())
    }
}

/// A projection over 2 of 40 event types reads only those rows: the server
/// sends the runner only the matching rows (counted on the wire).
#[test]
fn filter_pushdown_reads_only_the_projections_types() {
    runtime().block_on(async {
        let (url, store) = setup(PgStoreOptions::default()).await;
        for round in 0..25 {
            let events = (0..40)
                .map(|t| NewEvent::new(format!("Type{t:02}"), json!({ "round": round })))
                .collect();
            append(&store, &format!("Mixed-{}", round % 5), events).await;
        }
        let (options, counts) = common::proxy::start(&url).await;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .unwrap();
        let counted = PgEventStore::new(pool, PgStoreOptions::default());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let runner = ProjectionRunner::at_least_once(
            counted,
            TwoOfForty {
                seen: Arc::clone(&seen),
            },
            fast(),
        );
        counts.reset();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(async move {
            runner
                .run(async {
                    let _ = stopped.await;
                })
                .await
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen.lock().unwrap().len() < 50 {
            assert!(Instant::now() < deadline, "catch-up stalled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let rows = counts.rows();
        let _ = stop.send(());
        run.await.unwrap().unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 50);
        assert!(seen.iter().all(|t| t == "Type07" || t == "Type31"));
        println!("filter pushdown: 1,000 events stored, 50 match, {rows} rows sent to the runner");
        assert!(
            rows < 100,
            "the server sent {rows} rows for 50 matching events of 1,000"
        );
    });
}

/// An event appended while the runner is idle is applied well under a
/// second later.
#[test]
fn live_event_is_applied_promptly() {
    runtime().block_on(async {
        let (_, store) = setup(PgStoreOptions::default()).await;
        append(&store, "Account-1", vec![added(1)]).await;
        let runner: ProjectionRunner<Tally> =
            ProjectionRunner::new(store.clone(), Tally { runner: "live" }, fast());
        let run = tokio::spawn(async move { runner.run(futures::future::pending()).await });
        wait_for_applied(&store, 1, Duration::from_secs(10)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut worst = Duration::ZERO;
        for n in 2..=6 {
            let started = Instant::now();
            append(&store, "Account-1", vec![added(n)]).await;
            wait_for_applied(&store, n, Duration::from_secs(1)).await;
            worst = worst.max(started.elapsed());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!("live delivery: worst of 5 appends applied after {worst:?}");
        assert!(
            worst < Duration::from_millis(500),
            "live delivery took {worst:?}"
        );
        run.abort();
    });
}

/// A projection of rare types moves its stored checkpoint over the events it
/// passed over (at most once a second), so that a restart does not examine
/// them again.
#[test]
fn checkpoint_moves_over_events_of_other_types() {
    runtime().block_on(async {
        let (_, store) = setup(PgStoreOptions::default()).await;
        let fillers = |n: usize| -> Vec<NewEvent> {
            (0..n)
                .map(|i| NewEvent::new("Filler", json!({ "i": i })))
                .collect()
        };
        append(&store, "Mixed-1", vec![NewEvent::new("Type07", json!({}))]).await;
        for _ in 0..30 {
            append(&store, "Mixed-2", fillers(100)).await;
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let runner = ProjectionRunner::at_least_once(
            store.clone(),
            TwoOfForty {
                seen: Arc::clone(&seen),
            },
            fast(),
        );
        let run = tokio::spawn(async move { runner.run(futures::future::pending()).await });
        let status = || async { store.projection_statuses().await.unwrap().remove(0) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the rare event was not applied");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let rare = status().await.position;
        // A second on, the next wake-up stores how far the runner looked.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        append(&store, "Mixed-2", fillers(10)).await;
        let last = store
            .read_all(rare, &es_core::FeedFilter::all(), usize::MAX)
            .await
            .unwrap()
            .last()
            .map(|e| e.position)
            .expect("the fillers");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stored = status().await;
            if stored.position >= last {
                assert_eq!(stored.lag, 0);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the checkpoint stayed at {} (the rare event at {rare}, the feed ends at {last})",
                stored.position
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(seen.lock().unwrap().len(), 1);
        run.abort();
    });
}
