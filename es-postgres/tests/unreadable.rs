//! Values at the edges of what PostgreSQL keeps, and rows it keeps that
//! cannot be read back (written with SQL behind the store's back): each is
//! a typed error naming where it is, one that a reader can step over, and
//! the projection runner parks or stops at it as configured.

mod common;

use std::time::Duration;

use common::{runtime, stream};
use es_core::json::MAX_JSON_DEPTH;
use es_core::store::MAX_STREAM_VERSION;
use es_core::{
    BoxError, Dispatch, EventStore, ExpectedVersion, FeedFilter, InvalidEventKind, NewEvent,
    Position, Projection, RecordedEvent, Reset, StoreError, StoreLimits, StreamRead,
    UnstorableJson,
};
use es_postgres::{
    ErrorPolicy, PgEventStore, PgStoreOptions, ProjectionError, ProjectionRunner, ProjectionState,
    RunnerOptions,
};
use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

fn nested(depth: usize) -> Value {
    (0..depth).fold(json!(1), |inner, _| json!([inner]))
}

/// With the depth limit at its ceiling (or above it, which counts as the
/// ceiling), the deepest accepted payload reads back through every path.
#[test]
fn the_deepest_accepted_payload_reads_back() {
    runtime().block_on(async {
        for asked in [MAX_JSON_DEPTH, 500] {
            let limits = StoreLimits::default().max_json_depth(asked);
            let store = common::fresh_store_with(PgStoreOptions::default().limits(limits), 4).await;
            let s = stream("Deep-1");
            let deepest = nested(MAX_JSON_DEPTH);
            store
                .append(
                    &s,
                    ExpectedVersion::NoStream,
                    vec![NewEvent::new("Deep", deepest.clone())],
                )
                .await
                .expect("the deepest payload is accepted");
            let read = store.read_stream(&s, StreamRead::forward()).await.unwrap();
            assert_eq!(read[0].data, deepest);
            let feed = store
                .read_all(Position::START, &FeedFilter::all(), 10)
                .await
                .unwrap();
            assert_eq!(feed[0].data, deepest);
            let deeper = store
                .append(
                    &s,
                    ExpectedVersion::Any,
                    vec![NewEvent::new("Deep", nested(MAX_JSON_DEPTH + 1))],
                )
                .await;
            assert!(
                matches!(
                    deeper,
                    Err(StoreError::InvalidEvent {
                        kind: InvalidEventKind::Unstorable {
                            reason: UnstorableJson::TooDeep {
                                max: MAX_JSON_DEPTH
                            },
                            ..
                        },
                        ..
                    })
                ),
                "{deeper:?}"
            );
        }
    });
}

/// A stream at the highest version a `bigint` holds refuses a batch that
/// would pass it with a typed error, not a storage error; expectations past
/// it fail with the actual version.
#[test]
fn a_stream_at_the_highest_version_refuses_to_overflow() {
    runtime().block_on(async {
        let store = common::fresh_store().await;
        let s = stream("Full-1");
        let max = i64::try_from(MAX_STREAM_VERSION).unwrap();
        sqlx::query(
            "INSERT INTO es.events (seq, event_id, stream_id, version, event_type, schema_version, data) \
             VALUES (1, $1, 'Full-1', $2, 'Filled', 1, '{}')",
        )
        .bind(Uuid::new_v4())
        .bind(max - 1)
        .execute(store.pool())
        .await
        .unwrap();
        let two = vec![NewEvent::new("E", json!(1)), NewEvent::new("E", json!(2))];
        let overflow = |r: Result<_, StoreError>| {
            matches!(r, Err(StoreError::StreamVersionOverflow { ref stream, events, max: m })
                if stream == &s && events > 0 && m == MAX_STREAM_VERSION)
        };
        assert!(overflow(store.append(&s, ExpectedVersion::Any, two.clone()).await));
        let last = store
            .append(&s, ExpectedVersion::Exact(MAX_STREAM_VERSION - 1), vec![NewEvent::new("E", json!(0))])
            .await
            .expect("the last version is writable");
        assert_eq!(last.stream_version, MAX_STREAM_VERSION);
        assert!(overflow(store.append(&s, ExpectedVersion::Any, two).await));
        let check = store
            .append(&s, ExpectedVersion::Exact(MAX_STREAM_VERSION), Vec::new())
            .await
            .expect("an empty batch only checks the version");
        assert_eq!(check.stream_version, MAX_STREAM_VERSION);
        let beyond = store
            .append(&s, ExpectedVersion::Exact(u64::MAX), vec![NewEvent::new("E", json!(3))])
            .await;
        assert!(
            matches!(beyond, Err(StoreError::WrongExpectedVersion { actual, .. }) if actual == MAX_STREAM_VERSION),
            "{beyond:?}"
        );
        let back = store
            .read_stream(&s, StreamRead::backward().limit(1))
            .await
            .unwrap();
        assert_eq!(back[0].version, MAX_STREAM_VERSION);
    });
}

/// Defines a projection that logs each event it is handed, without
/// decoding it, in a table of the same name.
macro_rules! journal {
    ($projection:ident, $name:literal) => {
        struct $projection;

        impl Projection for $projection {
            const NAME: &'static str = $name;
            const EVENT_TYPES: &'static [&'static str] = &[];
        }

        impl Dispatch<PgConnection> for $projection {
            async fn dispatch(
                &self,
                event: &RecordedEvent,
                tx: &mut PgConnection,
            ) -> Result<(), BoxError> {
                sqlx::query(concat!("INSERT INTO ", $name, " (event_id) VALUES ($1)"))
                    .bind(event.event_id)
                    .execute(&mut *tx)
                    .await?;
                Ok(())
            }
        }

        impl Reset<PgConnection> for $projection {
            async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
                sqlx::query(concat!("TRUNCATE ", $name)).execute(tx).await?;
                Ok(())
            }
        }
    };
}

journal!(Journal, "journal");
journal!(JournalStop, "journal_stop");

/// A store holding, in feed order: a good event, a row nested 200 levels
/// deep, a row holding the number 1e400 (both inserted with SQL, which
/// `append` would refuse or never write), and another good event.
struct Poisoned {
    store: PgEventStore,
    good: [RecordedEvent; 2],
    bad: [(Uuid, Position); 2],
}

async fn poisoned() -> Poisoned {
    let store = common::fresh_store().await;
    sqlx::raw_sql("CREATE TABLE journal (event_id uuid PRIMARY KEY)")
        .execute(store.pool())
        .await
        .unwrap();
    let append = |id: &'static str| {
        let store = store.clone();
        async move {
            store
                .append(
                    &stream(id),
                    ExpectedVersion::NoStream,
                    vec![NewEvent::new("Noted", json!({"ok": id}))],
                )
                .await
                .unwrap();
            store
                .read_stream(&stream(id), StreamRead::forward())
                .await
                .unwrap()
                .remove(0)
        }
    };
    let first = append("Good-1").await;
    let mut bad = Vec::new();
    for (id, data) in [
        ("Bad-1", nested(200).to_string()),
        ("Bad-2", r#"{"amount": 1e400}"#.to_owned()),
    ] {
        let event_id = Uuid::new_v4();
        let (tx, seq): (i64, i64) = sqlx::query_as(
            "INSERT INTO es.events (seq, event_id, stream_id, version, event_type, schema_version, data) \
             VALUES (1, $1, $2, 1, 'Noted', 1, $3::jsonb) RETURNING tx_id::text::bigint, seq",
        )
        .bind(event_id)
        .bind(id)
        .bind(data)
        .fetch_one(store.pool())
        .await
        .unwrap();
        let position =
            Position::from_parts(u64::try_from(tx).unwrap(), u64::try_from(seq).unwrap());
        bad.push((event_id, position));
    }
    let second = append("Good-2").await;
    Poisoned {
        store,
        good: [first, second],
        bad: [bad[0], bad[1]],
    }
}

#[track_caller]
fn assert_corrupt_at<T: std::fmt::Debug>(result: Result<T, StoreError>, at: Position) {
    match result {
        Err(StoreError::CorruptEvent {
            position: Some(p),
            location,
            ..
        }) if p == at => {
            assert!(location.contains(&at.to_string()), "{location}");
        }
        other => panic!("expected CorruptEvent at {at}, got {other:?}"),
    }
}

/// The feed hands out the events before an unreadable row, then reports
/// the row with its position; reading on after that position steps over
/// exactly that row. Subscriptions do the same; other streams read
/// normally.
#[test]
fn unreadable_rows_are_reported_at_their_position_and_stepped_over() {
    runtime().block_on(async {
        let Poisoned { store, good, bad } = poisoned().await;
        let all = FeedFilter::all();
        let before = store.read_all(Position::START, &all, 100).await.unwrap();
        assert_eq!(before, [good[0].clone()]);
        assert_corrupt_at(store.read_all(good[0].position, &all, 100).await, bad[0].1);
        assert_corrupt_at(store.read_feed(good[0].position, &all, 100).await, bad[0].1);
        assert_corrupt_at(store.read_all(bad[0].1, &all, 100).await, bad[1].1);
        let after = store.read_all(bad[1].1, &all, 100).await.unwrap();
        assert_eq!(after, [good[1].clone()]);
        // Filtered reads (by category, by type) meet the same rows.
        let category = FeedFilter::all().category("Bad");
        assert_corrupt_at(
            store.read_all(Position::START, &category, 100).await,
            bad[0].1,
        );
        let by_type = FeedFilter::all().event_types(["Noted"]);
        assert_corrupt_at(
            store.read_all(good[0].position, &by_type, 100).await,
            bad[0].1,
        );

        let mut subscription = store.subscribe(Position::START, all.clone());
        assert_eq!(subscription.next().await.unwrap().unwrap(), good[0]);
        assert_corrupt_at(subscription.next().await.unwrap(), bad[0].1);
        assert!(subscription.next().await.is_none(), "the subscription ends");
        let mut resumed = store.subscribe(bad[1].1, all);
        assert_eq!(resumed.next().await.unwrap().unwrap(), good[1]);

        for (id, event) in [("Good-1", &good[0]), ("Good-2", &good[1])] {
            let read = store
                .read_stream(&stream(id), StreamRead::forward())
                .await
                .unwrap();
            assert_eq!(read, std::slice::from_ref(event));
        }
        assert_corrupt_at(
            store
                .read_stream(&stream("Bad-2"), StreamRead::forward())
                .await,
            bad[1].1,
        );
    });
}

/// Under the park policy the runner parks each unreadable row with its
/// stored text and position and goes on; under the stop policy it stops at
/// the first, and its status says where and why.
#[test]
fn the_runner_parks_or_stops_at_an_unreadable_row() {
    runtime().block_on(async {
        let Poisoned { store, good, bad } = poisoned().await;
        let park = RunnerOptions::default().error_policy(ErrorPolicy::park_after(3));
        let runner: ProjectionRunner<Journal> = ProjectionRunner::new(store.clone(), Journal, park);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move { runner.run(async { drop(stopped.await) }).await });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM journal")
                .fetch_one(store.pool())
                .await
                .unwrap();
            if seen == 2 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the runner applies both good events"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let parked: Vec<(Uuid, i64, i64, Option<String>, i64)> = sqlx::query_as(
            "SELECT event_id, tx_id, seq, raw_data, attempts FROM es.projection_dead_letters \
             WHERE projection = 'journal' ORDER BY tx_id, seq",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        assert_eq!(parked.len(), 2);
        for ((event_id, tx, seq, raw, attempts), (id, position)) in parked.iter().zip(bad) {
            assert_eq!(*event_id, id);
            assert_eq!(
                Position::from_parts(u64::try_from(*tx).unwrap(), u64::try_from(*seq).unwrap()),
                position
            );
            assert_eq!(*attempts, 0, "the handler never saw it");
            assert!(
                raw.as_ref().is_some_and(|r| !r.is_empty()),
                "the stored text is kept"
            );
        }
        assert!(parked[0].3.as_ref().unwrap().starts_with(&"[".repeat(200)));
        assert!(
            parked[1]
                .3
                .as_ref()
                .unwrap()
                .contains(&format!("1{}", "0".repeat(400)))
        );
        let status = store.projection_statuses().await.unwrap();
        assert_eq!(status[0].parked, 2);
        assert_eq!(status[0].position, good[1].position);
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();

        // The stop policy, from scratch under another name.
        sqlx::raw_sql("CREATE TABLE journal_stop (event_id uuid PRIMARY KEY)")
            .execute(store.pool())
            .await
            .unwrap();
        let stop = RunnerOptions::default().error_policy(ErrorPolicy::stop_after(3));
        let runner: ProjectionRunner<JournalStop> =
            ProjectionRunner::new(store.clone(), JournalStop, stop);
        let outcome = tokio::time::timeout(
            Duration::from_secs(20),
            runner.run(futures::future::pending()),
        )
        .await
        .expect("the runner stops by itself");
        match outcome {
            Err(ProjectionError::Store {
                source:
                    StoreError::CorruptEvent {
                        position: Some(at), ..
                    },
                ..
            }) => {
                assert_eq!(at, bad[0].1);
            }
            other => panic!("expected a stop at the unreadable row, got {other:?}"),
        }
        let status = store.projection_statuses().await.unwrap();
        let stopped = status.iter().find(|s| s.name == "journal_stop").unwrap();
        assert_eq!(stopped.state, ProjectionState::Failed);
        assert_eq!(
            stopped.position, good[0].position,
            "the checkpoint stays before it"
        );
        let error = stopped.last_error.as_deref().unwrap_or_default();
        assert!(error.contains(&bad[0].1.to_string()), "{error}");
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM journal_stop")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(seen, 1);
    });
}
