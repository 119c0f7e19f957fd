//! Server restarts: while a private cluster is stopped and started, appends
//! fail with transient errors and are retried with the same event ids, and
//! a subscription follows the feed; no acknowledged append is lost,
//! duplicated or delivered twice. A command whose reply was lost in a
//! restart, sent again, takes effect once.
//!
//! Each test stops and starts a cluster of its own (`local::private`), also
//! when `DATABASE_URL` names a server: that one is never stopped, and no
//! test here is skipped.

mod common;

use common::{read_feed, runtime, stream, wait_until};

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use es_core::testing::hooked::{Hooked, Hooks};
use es_core::{
    Aggregate, AppendResult, CommandContext, CommandError, Decide, Event, EventStore,
    ExpectedVersion, FeedFilter, NewEvent, On, Position, RecordedEvent, Repository, StoreError,
    StreamId,
};
use es_postgres::{PgEventStore, PgStoreOptions};
use es_postgres_local as local;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
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

#[derive(Debug, Serialize, Deserialize)]
struct Deposited {
    cents: u64,
}

#[derive(Debug, Event)]
enum AccountEvent {
    Deposited(Deposited),
}

#[derive(Debug, Default, Aggregate)]
#[es(category = "Account", event = AccountEvent)]
struct Account {
    balance: u64,
}

impl On<Deposited> for Account {
    fn on(&mut self, event: Deposited) {
        self.balance += event.cents;
    }
}

struct Deposit(u64);

impl Decide<Deposit> for Account {
    type Error = std::convert::Infallible;

    fn decide(&self, command: &Deposit) -> Result<Vec<AccountEvent>, Self::Error> {
        Ok(vec![AccountEvent::Deposited(Deposited {
            cents: command.0,
        })])
    }
}

/// Loses the reply of every append that commits: the server is stopped
/// right after the commit and the caller gets a transient error, as when a
/// connection drops between the commit and its acknowledgement.
struct LoseReply(Arc<local::LocalPostgres>);

#[async_trait::async_trait]
impl Hooks<PgEventStore> for LoseReply {
    async fn after_append(
        &self,
        _: &PgEventStore,
        result: Result<AppendResult, StoreError>,
    ) -> Result<AppendResult, StoreError> {
        let result = result?;
        assert!(!result.idempotent_replay, "the first append writes");
        self.0.stop().await.expect("stopping the server");
        Err(StoreError::backend(
            "append",
            "the connection closed before the reply",
        ))
    }
}

/// A command whose append committed but whose reply was lost (the server
/// stopped right after the commit) is sent again after the restart, by a
/// new process: it takes effect once and gets the first outcome, also
/// after later commands.
#[test]
fn a_command_whose_reply_was_lost_takes_effect_once_after_a_restart() {
    runtime().block_on(async {
        let server = Arc::new(local::private().await.expect("a private cluster"));
        let url = server.create_database().await.expect("a database");
        let store = PgEventStore::connect(&url, PgStoreOptions::default())
            .await
            .expect("connecting");
        store.migrate().await.expect("migrating");
        let account = Account::stream_id("1").expect("a valid id");
        let context = CommandContext::for_command(Uuid::now_v7());

        let losing = Repository::<Account, _>::new(Hooked::new(
            store.clone(),
            LoseReply(Arc::clone(&server)),
        ));
        let lost = losing.execute(&account, &Deposit(5), &context).await;
        match lost {
            Err(CommandError::Store(error)) => assert!(error.is_transient(), "{error:?}"),
            other => panic!("expected a lost reply, got {other:?}"),
        }

        server.start().await.expect("starting the server again");
        // A new process: no cache, the same command id.
        let retried = Repository::<Account, _>::new(store.clone());
        let deadline = Instant::now() + Duration::from_secs(20);
        let first = loop {
            match retried.execute(&account, &Deposit(5), &context).await {
                Ok(outcome) => break outcome,
                Err(CommandError::Store(error)) if error.is_transient() => {
                    assert!(Instant::now() < deadline, "the server never came back");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("the retry failed: {error}"),
            }
        };
        assert!(first.already_applied, "{first:?}");
        assert_eq!(first.stream_version, 1);
        assert_eq!(
            first.event_ids,
            [es_core::command_event_id(
                context.command_id().expect("keyed"),
                &account,
                0
            )]
        );

        retried
            .execute(
                &account,
                &Deposit(1),
                &CommandContext::for_command(Uuid::now_v7()),
            )
            .await
            .expect("a later command");
        let again = retried
            .execute(&account, &Deposit(5), &context)
            .await
            .expect("sent once more");
        assert!(again.already_applied);
        assert_eq!(
            (again.stream_version, &again.event_ids, &again.positions),
            (1, &first.event_ids, &first.positions)
        );
        let loaded = retried.load(&account).await.expect("loading");
        assert_eq!((loaded.version, loaded.state.balance), (2, 6));

        drop((losing, retried, store));
        let server = Arc::try_unwrap(server).expect("the last handle");
        tokio::task::spawn_blocking(move || drop(server))
            .await
            .expect("removing the cluster");
    });
}
