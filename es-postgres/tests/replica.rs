//! A store that reads from a real streaming replica: a primary and a hot
//! standby (`pg_basebackup -R`) started by the test support for this file.

mod common;

use common::{runtime, stream};

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;
use std::time::Duration;

use es_core::{
    Aggregate, BoxError, CommandContext, Decide, Event, EventStore, ExpectedVersion, FeedFilter,
    Handle, NewEvent, On, Position, Projection, RecordedEvent, Repository, RepositoryOptions,
    Reset, StreamId, StreamRead,
};
use es_postgres::{
    PgEventStore, PgPools, PgServers, PgStoreOptions, ProjectionRunner, RunnerOptions,
};
use es_postgres_local::Replicated;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

/// The primary and its standby, shared by the tests of this file.
fn pair() -> &'static Replicated {
    static PAIR: OnceLock<Replicated> = OnceLock::new();
    // Started on a thread of its own: the tests call this from inside
    // their runtime.
    PAIR.get_or_init(|| {
        std::thread::spawn(|| runtime().block_on(es_postgres_local::replicated()))
            .join()
            .expect("starting the pair")
            .expect("a primary and a hot standby")
    })
}

/// Two stores on a fresh database: one on the primary alone, one reading
/// from the standby.
async fn stores(options: PgStoreOptions) -> (PgEventStore, PgEventStore) {
    let (_, primary, replicated) = stores_at(options).await;
    (primary, replicated)
}

/// As [`stores`], with the primary's URL of the database.
async fn stores_at(options: PgStoreOptions) -> (String, PgEventStore, PgEventStore) {
    let pair = pair();
    let url = pair
        .primary()
        .create_database()
        .await
        .expect("a test database");
    let primary = PgEventStore::connect(&url, options.clone())
        .await
        .expect("connecting to the primary");
    primary.migrate().await.expect("migrating");
    sqlx::raw_sql(common::SLOW_COMMITS)
        .execute(primary.pool())
        .await
        .expect("installing the slow-commit trigger");
    pair.wait_for_replay().await.expect("the standby replays");
    let servers = PgServers::new(&url).replica(pair.standby_url(&url));
    let replicated = PgEventStore::connect_servers(&servers, options)
        .await
        .expect("connecting to the primary and the standby");
    assert!(replicated.reads_from_replica() && replicated.reads_may_lag());
    (url, primary, replicated)
}

/// Appends `per_writer` events from each of `writers` tasks to 20 streams
/// through `store`; returns the ids.
async fn write(store: &PgEventStore, writers: usize, per_writer: usize) -> HashSet<Uuid> {
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut ids = Vec::with_capacity(per_writer);
                for n in 0..per_writer {
                    let event = NewEvent::new("Written", json!({ "writer": w, "n": n }));
                    ids.push(event.event_id);
                    let to = stream(&format!("Load-{}", (w * 31 + n * 7) % 20));
                    store
                        .append(&to, ExpectedVersion::Any, vec![event])
                        .await
                        .unwrap_or_else(|e| panic!("writer {w}: {e}"));
                }
                ids
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for task in tasks {
        ids.extend(task.await.expect("writer task"));
    }
    ids
}

/// One more append once the writers are done. Concurrent appends send one
/// NOTIFY among them (the poll is the backstop for the rest); this one is
/// alone, so its NOTIFY wakes followers for every event before it.
async fn last_word(store: &PgEventStore) -> Uuid {
    let event = NewEvent::new("Written", json!({ "writer": 99, "n": 0 }));
    let id = event.event_id;
    store
        .append(&stream("Load-last"), ExpectedVersion::NoStream, vec![event])
        .await
        .expect("the last append");
    id
}

/// A subscriber on the replica receives every event once, in feed order
/// and each stream in version order, while commits on the primary land
/// late; once the standby has replayed, its feed equals the primary's.
///
/// The poll interval is a minute: only the wake-up after replay (not the
/// poll) can deliver the live events in time.
#[test]
fn the_replica_feed_never_skips_and_ends_equal_to_the_primarys() {
    runtime().block_on(async {
        let options = PgStoreOptions::default().poll_interval(Duration::from_secs(60));
        let (primary, replicated) = stores(options).await;
        let mut subscription = replicated.subscribe(Position::START, FeedFilter::all());
        let mut written = write(&primary, 4, 500).await;
        written.insert(last_word(&primary).await);

        let mut seen = HashSet::new();
        let mut versions: HashMap<StreamId, u64> = HashMap::new();
        let mut last = Position::START;
        while seen.len() < written.len() {
            let event = tokio::time::timeout(Duration::from_secs(30), subscription.next())
                .await
                .unwrap_or_else(|_| panic!("stalled after {} events", seen.len()))
                .expect("the subscription ended")
                .expect("the subscription failed");
            assert!(seen.insert(event.event_id), "delivered twice: {event:?}");
            assert!(written.contains(&event.event_id), "unknown event");
            assert!(event.position > last, "feed order went backwards");
            last = event.position;
            let previous = versions.insert(event.stream_id.clone(), event.version);
            assert_eq!(event.version, previous.unwrap_or(0) + 1, "version order");
        }

        pair().wait_for_replay().await.expect("the standby replays");
        let on_primary = common::read_feed(&primary, &FeedFilter::all(), written.len()).await;
        let on_replica = common::read_feed(&replicated, &FeedFilter::all(), written.len()).await;
        assert_eq!(on_primary.len(), written.len());
        assert_eq!(
            on_replica, on_primary,
            "the replica's feed is the primary's"
        );
    });
}

#[derive(Debug, Serialize, Deserialize)]
struct Written {
    writer: usize,
    n: usize,
}

#[derive(Debug, Event)]
enum LoadEvent {
    Written(Written),
}

/// Logs every application in `applied`, without a unique key, so that a
/// double application shows.
#[derive(Projection)]
#[es(name = "applied", handles(LoadEvent::Written))]
struct Applied;

impl Handle<Written, PgConnection> for Applied {
    async fn handle(
        &self,
        _: Written,
        envelope: &RecordedEvent,
        tx: &mut PgConnection,
    ) -> Result<(), BoxError> {
        sqlx::query("INSERT INTO applied (event_id) VALUES ($1)")
            .bind(envelope.event_id)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

impl Reset<PgConnection> for Applied {
    async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query("TRUNCATE applied").execute(tx).await?;
        Ok(())
    }
}

/// A projection that reads the feed from the replica (and keeps its read
/// model, checkpoint and lease on the primary) applies each event exactly
/// once, also across a restart of its runner.
#[test]
fn a_projection_reading_the_replica_applies_each_event_once() {
    runtime().block_on(async {
        let (primary, replicated) = stores(PgStoreOptions::default()).await;
        sqlx::query("CREATE TABLE applied (id bigserial PRIMARY KEY, event_id uuid NOT NULL)")
            .execute(primary.pool())
            .await
            .expect("creating the read model");
        let options = RunnerOptions::default().batch_size(50);
        let mut written = HashSet::new();
        for round in 0..2 {
            let runner = ProjectionRunner::new(replicated.clone(), Applied, options);
            let (stop, task) = common::start(runner);
            written.extend(write(&primary, 3, 200).await);
            let expected = i64::try_from(written.len()).expect("small");
            common::wait_until(Duration::from_secs(30), "every event applied", || async {
                common::count(&primary, "SELECT count(*) FROM applied").await >= expected
            })
            .await;
            drop(stop);
            task.await
                .expect("runner task")
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
        let applied: Vec<Uuid> = sqlx::query_scalar("SELECT event_id FROM applied")
            .fetch_all(primary.pool())
            .await
            .expect("reading the read model");
        assert_eq!(applied.len(), written.len(), "applied once each");
        assert_eq!(applied.into_iter().collect::<HashSet<_>>(), written);
    });
}

#[derive(Debug, Serialize, Deserialize)]
struct Deposited {
    cents: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Withdrawn {
    cents: u64,
}

#[derive(Debug, Event)]
enum AccountEvent {
    Deposited(Deposited),
    Withdrawn(Withdrawn),
}

#[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
#[es(category = "Account", event = AccountEvent)]
struct Account {
    balance: u64,
}

impl On<Deposited> for Account {
    fn on(&mut self, event: Deposited) {
        self.balance += event.cents;
    }
}

impl On<Withdrawn> for Account {
    fn on(&mut self, event: Withdrawn) {
        self.balance -= event.cents;
    }
}

struct WithdrawAll;

#[derive(Debug, thiserror::Error)]
#[error("nothing to withdraw")]
struct Empty;

impl Decide<WithdrawAll> for Account {
    type Error = Empty;
    fn decide(&self, _: &WithdrawAll) -> Result<Vec<AccountEvent>, Empty> {
        if self.balance == 0 {
            return Err(Empty);
        }
        Ok(vec![AccountEvent::Withdrawn(Withdrawn {
            cents: self.balance,
        })])
    }
}

/// The standby's replay, paused so that it stays behind for certain, until
/// [`Paused::resume`]. One test at a time pauses it.
struct Paused {
    url: String,
    resumed: bool,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

async fn pause_replay(url: &str) -> Paused {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let turn = TURN.lock().await;
    set_replay(url, true).await;
    Paused {
        url: url.to_owned(),
        resumed: false,
        _turn: turn,
    }
}

impl Paused {
    async fn resume(mut self) {
        set_replay(&self.url, false).await;
        self.resumed = true;
    }
}

impl Drop for Paused {
    /// A test that failed while replay was paused resumes it, so that the
    /// other tests of the file report their own outcome.
    fn drop(&mut self) {
        if !self.resumed {
            let url = self.url.clone();
            let _ = std::thread::spawn(move || runtime().block_on(set_replay(&url, false))).join();
        }
    }
}

async fn set_replay(url: &str, pause: bool) {
    let standby = pair().standby_url(url);
    let mut session = <PgConnection as sqlx::Connection>::connect(&standby)
        .await
        .expect("connecting to the standby");
    let sql = if pause {
        "SELECT pg_wal_replay_pause()"
    } else {
        "SELECT pg_wal_replay_resume()"
    };
    sqlx::query(sql)
        .execute(&mut session)
        .await
        .expect("pausing or resuming replay");
}

/// Right after a deposit on the primary, a repository reading the replica
/// withdraws it: never refused on a replica that has not replayed the
/// deposit yet (every other round, replay is paused meanwhile), never
/// withdrawing an old balance.
#[test]
fn a_repository_on_the_replica_decides_on_the_newest_version() {
    runtime().block_on(async {
        let (url, primary, replicated) = stores_at(PgStoreOptions::default()).await;
        let account = Account::stream_id("7").expect("stream id");
        let uncached = RepositoryOptions::default().cache_capacity(0);
        let repository = Repository::<Account, _>::with_options(replicated.clone(), uncached);
        let mut retried = 0;
        for round in 1..=40_u64 {
            let paused = if round % 2 == 0 {
                Some(pause_replay(&url).await)
            } else {
                None
            };
            let deposit = NewEvent::new("Deposited", json!({ "cents": round }));
            primary
                .append(&account, ExpectedVersion::Any, vec![deposit])
                .await
                .expect("a deposit on the primary");
            if paused.is_some() {
                let seen = replicated
                    .read_stream(&account, StreamRead::forward())
                    .await
                    .expect("reading the replica");
                // Round r's deposit is the stream's event 2r - 1.
                let deposit = usize::try_from(round * 2 - 1).expect("small");
                assert!(seen.len() < deposit, "the replica has the deposit");
            }
            let outcome = repository
                .execute(&account, &WithdrawAll, &CommandContext::new())
                .await;
            if let Some(paused) = paused {
                paused.resume().await;
            }
            let outcome = outcome.unwrap_or_else(|e| panic!("round {round}: {e}"));
            retried += outcome.attempts - 1;
            assert_eq!(outcome.stream_version, round * 2);
        }
        let newest = primary
            .read_stream(&account, StreamRead::backward().limit(1))
            .await
            .expect("reading the stream");
        assert_eq!(newest[0].data, json!({ "cents": 40 }));
        println!(
            "40 withdrawals after deposits on the primary: {retried} retried on the newest version"
        );
    });
}

/// A follower of the replica is woken once the replica has replayed the
/// events that woke it: with replay paused, the wake-up waits, and the
/// event arrives as soon as replay resumes (the poll interval is a minute).
#[test]
fn a_follower_of_the_replica_is_woken_once_the_replica_has_replayed() {
    runtime().block_on(async {
        let options = PgStoreOptions::default().poll_interval(Duration::from_secs(60));
        let (url, primary, replicated) = stores_at(options).await;
        let mut subscription = replicated.subscribe(Position::START, FeedFilter::all());
        let id = stream("Woken-1");
        for n in 0..3 {
            let paused = pause_replay(&url).await;
            let event = NewEvent::new("Written", json!({ "writer": 0, "n": n }));
            let sent = event.event_id;
            primary
                .append(&id, ExpectedVersion::Any, vec![event])
                .await
                .expect("appending");
            tokio::time::sleep(Duration::from_millis(200)).await;
            paused.resume().await;
            let got = tokio::time::timeout(Duration::from_secs(20), subscription.next())
                .await
                .unwrap_or_else(|_| panic!("event {n} was not delivered after replay resumed"))
                .expect("the subscription ended")
                .expect("the subscription failed");
            assert_eq!(got.event_id, sent);
        }
    });
}

/// A store given its pools: a `latest` stream read sees what the replica
/// has not replayed yet, because it is served by the primary.
#[test]
fn a_latest_stream_read_is_served_by_the_primary() {
    runtime().block_on(async {
        let (url, primary, _) = stores_at(PgStoreOptions::default()).await;
        let standby = PgPoolOptions::new()
            .max_connections(2)
            .connect(&pair().standby_url(&url))
            .await
            .expect("connecting to the standby");
        let store = PgEventStore::with_pools(
            PgPools::new(primary.pool().clone()).replica(standby.clone()),
            PgStoreOptions::default(),
        );
        let paused = pause_replay(&url).await;
        let id = stream("Paused-1");
        let appended = NewEvent::new("Written", json!({ "writer": 0, "n": 0 }));
        primary
            .append(&id, ExpectedVersion::NoStream, vec![appended])
            .await
            .expect("appending");
        let stale = store.read_stream(&id, StreamRead::forward()).await;
        let latest = store.read_stream(&id, StreamRead::forward().latest()).await;
        paused.resume().await;
        assert_eq!(
            stale.expect("a replica read").len(),
            0,
            "the replica is behind"
        );
        assert_eq!(latest.expect("a latest read").len(), 1);
    });
}
