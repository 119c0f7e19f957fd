//! Reliability under faults: corrupt stored data, bad input, hostile text,
//! server restarts, pool exhaustion and statement timeouts, a feed held back
//! by an open transaction, and a model-based comparison of `PgEventStore`
//! with `MemoryStore`. Each test is bounded to seconds.

mod common;

use common::{runtime, stream};

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use es_core::{
    Aggregate, BoxError, DecodeError, DecodeErrorKind, Dispatch, Event, EventStore,
    ExpectedVersion, FeedFilter, IdempotencyConflictKind, InvalidEventKind, MemoryStore, Metadata,
    NewEvent, On, Position, Projection, RecordedEvent, Repository, RepositoryOptions, Reset,
    StoreError, StoreLimits, StreamId, StreamIdError, StreamRead, UnstorableJson,
};
use es_postgres::{
    ErrorPolicy, PgEventStore, PgStoreOptions, ProjectionError, ProjectionRunner, ProjectionState,
    RunnerOptions,
};
use es_postgres_local as local;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

fn database_url_is_set() -> bool {
    std::env::var("DATABASE_URL").is_ok_and(|url| !url.trim().is_empty())
}

/// Polls `condition` every 10 ms until it holds; fails with `what` after
/// `within`.
async fn wait_until<F, Fut>(within: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn count(store: &PgEventStore, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(store.pool())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Reads the feed after `after` until it holds `expected` events (another
/// test's transaction may hold the horizon back for a moment).
async fn read_feed<S: EventStore>(
    store: &S,
    filter: &FeedFilter,
    expected: usize,
) -> Vec<RecordedEvent> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = store
            .read_all(Position::START, filter, expected + 100)
            .await
            .expect("reading the feed");
        if events.len() >= expected || Instant::now() >= deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------
// 1. Corrupt stored data
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Added {
    amount: i64,
}

mod upcasts {
    use serde_json::{Value, json};

    /// Version 1 called the amount `n`.
    pub(crate) fn n_to_amount(data: Value) -> Result<Value, String> {
        let Value::Object(mut fields) = data else {
            return Err("a version 1 payload is an object".to_owned());
        };
        let n = fields
            .remove("n")
            .and_then(|n| n.as_i64())
            .ok_or("a version 1 payload needs an integer `n`")?;
        Ok(json!({ "amount": n }))
    }
}

#[derive(Debug, Clone, PartialEq, Event)]
enum CounterEvent {
    #[es(version = 2, upcast(from = 1, with = upcasts::n_to_amount))]
    Added(Added),
}

#[derive(Debug, Default, Aggregate)]
#[es(category = "Counter", event = CounterEvent)]
struct Counter {
    total: i64,
    events: u64,
}

impl On<Added> for Counter {
    fn on(&mut self, event: Added) {
        self.total += event.amount;
        self.events += 1;
    }
}

fn added(amount: i64) -> NewEvent {
    NewEvent::new("Added", json!({ "amount": amount })).with_schema_version(2)
}

/// Sums the decoded `Added` amounts per stream; fails on an event it cannot
/// decode, so the runner's error policy decides.
struct Totals;

impl Projection for Totals {
    const NAME: &'static str = "totals";
    // Every event, so that unknown types reach the handler as well.
    const EVENT_TYPES: &'static [&'static str] = &[];
}

impl Dispatch<PgConnection> for Totals {
    async fn dispatch(&self, event: &RecordedEvent, tx: &mut PgConnection) -> Result<(), BoxError> {
        let CounterEvent::Added(added) = CounterEvent::decode(event)?;
        sqlx::query(
            "INSERT INTO totals (stream_id, total) VALUES ($1, $2) ON CONFLICT (stream_id) \
             DO UPDATE SET total = totals.total + EXCLUDED.total",
        )
        .bind(event.stream_id.as_str())
        .bind(added.amount)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

impl Reset<PgConnection> for Totals {
    async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query("TRUNCATE totals").execute(tx).await?;
        Ok(())
    }
}

/// The same projection under another name, for the stop policy.
struct TotalsStop;

impl Projection for TotalsStop {
    const NAME: &'static str = "totals_stop";
    const EVENT_TYPES: &'static [&'static str] = &[];
}

impl Dispatch<PgConnection> for TotalsStop {
    async fn dispatch(&self, event: &RecordedEvent, tx: &mut PgConnection) -> Result<(), BoxError> {
        let CounterEvent::Added(added) = CounterEvent::decode(event)?;
        sqlx::query("INSERT INTO stop_seen (event_id, amount) VALUES ($1, $2)")
            .bind(event.event_id)
            .bind(added.amount)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

impl Reset<PgConnection> for TotalsStop {
    async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query("TRUNCATE stop_seen").execute(tx).await?;
        Ok(())
    }
}

/// Logs every event without decoding it: corrupt payloads do not concern it.
struct Journal;

impl Projection for Journal {
    const NAME: &'static str = "journal";
    const EVENT_TYPES: &'static [&'static str] = &[];
}

impl Dispatch<PgConnection> for Journal {
    async fn dispatch(&self, event: &RecordedEvent, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query("INSERT INTO journal (event_id) VALUES ($1)")
            .bind(event.event_id)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

impl Reset<PgConnection> for Journal {
    async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query("TRUNCATE journal").execute(tx).await?;
        Ok(())
    }
}

/// Runs `runner` in a task until the returned sender fires or is dropped.
fn start<P, D>(
    runner: ProjectionRunner<P, D>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), ProjectionError>>,
)
where
    P: Projection,
    D: es_postgres::projection::Delivery<P>,
{
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        runner
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    (stop, task)
}

struct Corrupt {
    stream: StreamId,
    event_id: Uuid,
    position: Position,
    event_type: &'static str,
    schema_version: u32,
}

/// Four streams each hold a good event and then a corrupt one (a payload of
/// the wrong shape, an unknown type, an unknown schema version, a payload
/// its upcaster refuses), plus one row written by raw SQL. Loading names the
/// event precisely; the runner parks or stops as configured; a good stream
/// and a projection that does not decode are unaffected.
#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, checked end to end")]
fn corrupt_events_give_typed_errors_and_spare_the_rest() {
    runtime().block_on(async {
        let store = common::fresh_store().await;
        sqlx::raw_sql(
            "CREATE TABLE totals (stream_id text PRIMARY KEY, total bigint NOT NULL);
             CREATE TABLE stop_seen (event_id uuid PRIMARY KEY, amount bigint NOT NULL);
             CREATE TABLE journal (event_id uuid PRIMARY KEY);",
        )
        .execute(store.pool())
        .await
        .expect("creating the read models");

        let good = stream("Counter-good");
        store
            .append(&good, ExpectedVersion::NoStream, vec![added(1), added(2)])
            .await
            .unwrap();
        let cases: [(&str, NewEvent); 4] = [
            (
                "Counter-shape",
                NewEvent::new("Added", json!({ "amount": "ten" })).with_schema_version(2),
            ),
            (
                "Counter-type",
                NewEvent::new("Subtracted", json!({ "amount": 1 })),
            ),
            (
                "Counter-version",
                NewEvent::new("Added", json!({ "amount": 1 })).with_schema_version(3),
            ),
            (
                "Counter-upcast",
                NewEvent::new("Added", json!({ "m": 1 })).with_schema_version(1),
            ),
        ];
        let mut corrupt = Vec::new();
        for (id, bad) in cases {
            let s = stream(id);
            store
                .append(&s, ExpectedVersion::NoStream, vec![added(10)])
                .await
                .unwrap();
            let (event_id, event_type, schema_version) =
                (bad.event_id, bad.event_type.clone(), bad.schema_version);
            let result = store
                .append(&s, ExpectedVersion::Exact(1), vec![bad])
                .await
                .unwrap();
            corrupt.push(Corrupt {
                stream: s,
                event_id,
                position: result.positions[0],
                event_type: if event_type == "Added" {
                    "Added"
                } else {
                    "Subtracted"
                },
                schema_version,
            });
        }
        // A row written behind the store's back: its payload is a JSON string.
        let raw_id = Uuid::new_v4();
        let (tx, seq): (i64, i64) = sqlx::query_as(
            "INSERT INTO es.events (seq, event_id, stream_id, version, event_type, schema_version, data) \
             VALUES (1, $1, 'Counter-raw', 1, 'Added', 2, '\"not an object\"') \
             RETURNING tx_id::text::bigint, seq",
        )
        .bind(raw_id)
        .fetch_one(store.pool())
        .await
        .expect("inserting a raw row");
        corrupt.push(Corrupt {
            stream: stream("Counter-raw"),
            event_id: raw_id,
            position: Position::from_parts(u64::try_from(tx).unwrap(), u64::try_from(seq).unwrap()),
            event_type: "Added",
            schema_version: 2,
        });
        // Good events after the corrupt ones.
        store
            .append(&good, ExpectedVersion::Exact(2), vec![added(4)])
            .await
            .unwrap();

        // Loading: a typed error naming the event.
        let repository: Repository<Counter, _> = Repository::new(store.clone());
        let loaded = repository.load(&good).await.expect("the good stream loads");
        assert_eq!((loaded.state.total, loaded.version), (7, 3));
        for (case, c) in corrupt.iter().enumerate() {
            let error = match repository.load(&c.stream).await {
                Err(StoreError::Decode(error)) => error,
                other => panic!("{}: expected a decode error, got {other:?}", c.stream),
            };
            let DecodeError {
                stream,
                version,
                position,
                event_type,
                schema_version,
                kind,
                ..
            } = &error;
            let expected_version = if case == 4 { 1 } else { 2 };
            assert_eq!(
                (stream, *version, *position, event_type.as_str(), *schema_version),
                (
                    &c.stream,
                    expected_version,
                    c.position,
                    c.event_type,
                    c.schema_version
                ),
                "{error}"
            );
            match (case, kind) {
                (0 | 4, DecodeErrorKind::Payload { type_name, .. }) => {
                    assert!(type_name.ends_with("Added"), "{type_name}");
                }
                (1, DecodeErrorKind::UnknownEventType)
                | (2, DecodeErrorKind::UnsupportedSchemaVersion { current: 2 }) => {}
                (3, DecodeErrorKind::Upcast { from: 1, source }) => {
                    assert!(source.to_string().contains("integer `n`"), "{source}");
                }
                _ => panic!("{}: unexpected kind {kind:?}", c.stream),
            }
            let message = error.to_string();
            for part in [
                c.stream.to_string(),
                format!("version {expected_version} "),
                c.position.to_string(),
                c.event_type.to_owned(),
                format!("schema version {}", c.schema_version),
            ] {
                assert!(message.contains(&part), "{message:?} lacks {part:?}");
            }
            // The raw events are readable; only decoding fails.
            let raw = store
                .read_stream(&c.stream, StreamRead::forward())
                .await
                .unwrap();
            assert_eq!(raw.last().map(|e| e.event_id), Some(c.event_id));
        }
        // Skipping unknown types is a choice; other corruption still fails.
        let lenient: Repository<Counter, _> = Repository::with_options(
            store.clone(),
            RepositoryOptions::default().skip_unknown_events(true),
        );
        let skipped = lenient.load(&corrupt[1].stream).await.unwrap();
        assert_eq!((skipped.state.total, skipped.version), (10, 2));
        assert!(lenient.load(&corrupt[0].stream).await.is_err());

        // Projections: park, stop, and one that does not decode at all.
        let total_events = 2 + 4 * 2 + 1 + 1;
        let fast = RunnerOptions::default()
            .batch_size(100)
            .standby_interval(Duration::from_millis(50));
        let park = fast.error_policy(ErrorPolicy::park_after(1).backoff(Duration::from_millis(5)));
        let stop = fast.error_policy(ErrorPolicy::stop_after(1).backoff(Duration::from_millis(5)));
        let (park_stop, park_run) = start::<_, es_postgres::ExactlyOnce>(ProjectionRunner::new(
            store.clone(),
            Totals,
            park,
        ));
        let (journal_stop, journal_run) = start::<_, es_postgres::ExactlyOnce>(
            ProjectionRunner::new(store.clone(), Journal, fast),
        );
        let stop_runner: ProjectionRunner<TotalsStop> =
            ProjectionRunner::new(store.clone(), TotalsStop, stop);
        let stopped = tokio::time::timeout(
            Duration::from_secs(10),
            stop_runner.run(futures::future::pending()),
        )
        .await
        .expect("the stop-policy runner stops by itself");
        let first = &corrupt[0];
        match stopped {
            Err(ProjectionError::Stopped {
                projection,
                event_id,
                event_type,
                stream_id,
                version,
                position,
                error,
                ..
            }) => {
                assert_eq!(projection, "totals_stop");
                assert_eq!(
                    (event_id, event_type.as_str(), stream_id.as_str(), version, position),
                    (first.event_id, "Added", first.stream.as_str(), 2, first.position)
                );
                assert!(error.contains("does not match"), "{error}");
            }
            other => panic!("expected the runner to stop, got {other:?}"),
        }
        // The stop runner applied exactly the events before the poison one.
        let before_poison = read_feed(&store, &FeedFilter::all(), total_events)
            .await
            .iter()
            .take_while(|e| e.event_id != first.event_id)
            .count();
        assert_eq!(
            count(&store, "SELECT count(*) FROM stop_seen").await,
            i64::try_from(before_poison).unwrap()
        );

        wait_until(Duration::from_secs(10), "the journal applies every event", || async {
            count(&store, "SELECT count(*) FROM journal").await
                == i64::try_from(total_events).unwrap()
        })
        .await;
        wait_until(Duration::from_secs(10), "the park runner parks the corrupt events", || async {
            let status = store.projection_statuses().await.unwrap();
            status
                .iter()
                .any(|s| s.name == "totals" && s.parked == 5 && s.lag == 0)
        })
        .await;
        let parked: Vec<(Uuid, String, i64)> = sqlx::query_as(
            "SELECT event_id, error, version FROM es.projection_dead_letters \
             WHERE projection = 'totals' ORDER BY tx_id, seq",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        assert_eq!(
            parked.iter().map(|p| p.0).collect::<Vec<_>>(),
            corrupt.iter().map(|c| c.event_id).collect::<Vec<_>>()
        );
        for ((_, error, _), c) in parked.iter().zip(&corrupt) {
            assert!(
                error.contains(c.stream.as_str()) && error.contains(&c.position.to_string()),
                "{error}"
            );
        }
        let totals: Vec<(String, i64)> =
            sqlx::query_as("SELECT stream_id, total FROM totals ORDER BY stream_id")
                .fetch_all(store.pool())
                .await
                .unwrap();
        assert_eq!(
            totals,
            [
                ("Counter-good".to_owned(), 7),
                ("Counter-shape".to_owned(), 10),
                ("Counter-type".to_owned(), 10),
                ("Counter-upcast".to_owned(), 10),
                ("Counter-version".to_owned(), 10),
            ]
        );
        let statuses = store.projection_statuses().await.unwrap();
        let journal = statuses.iter().find(|s| s.name == "journal").unwrap();
        assert_eq!((journal.parked, journal.lag, journal.last_error.as_deref()), (0, 0, None));
        let stopped = statuses.iter().find(|s| s.name == "totals_stop").unwrap();
        assert_eq!(stopped.state, ProjectionState::Failed);

        let _ = park_stop.send(());
        let _ = journal_stop.send(());
        park_run.await.unwrap().unwrap();
        journal_run.await.unwrap().unwrap();
    });
}

// ---------------------------------------------------------------------------
// 2. Bad input at the API
// ---------------------------------------------------------------------------

/// A check of the error a bad input gets.
type Check<'a> = &'a dyn Fn(&StoreError) -> bool;

/// The text of an append's error, to compare the two stores.
fn error_text(result: Result<es_core::AppendResult, StoreError>) -> String {
    match result {
        Ok(result) => panic!("expected an error, got {result:?}"),
        Err(error) => format!("{error:?}"),
    }
}

/// Invalid stream ids cannot even be built; oversized events and batches
/// and malformed events are typed errors, the same in both stores, and
/// nothing is written.
#[test]
#[expect(clippy::too_many_lines, reason = "a table of bad inputs")]
fn bad_input_is_rejected_and_nothing_is_written() {
    runtime().block_on(async {
        // Stream ids are checked when they are built, before any store call.
        let long = "x".repeat(256);
        for (text, expected) in [
            ("", StreamIdError::Empty),
            (long.as_str(), StreamIdError::TooLong { len: 256 }),
            ("Order-\n1", StreamIdError::ControlCharacter { ch: '\n', index: 6 }),
            ("Order-\u{0}", StreamIdError::ControlCharacter { ch: '\0', index: 6 }),
            ("Order\u{7f}", StreamIdError::ControlCharacter { ch: '\u{7f}', index: 5 }),
            ("\u{85}", StreamIdError::ControlCharacter { ch: '\u{85}', index: 0 }),
        ] {
            assert_eq!(StreamId::new(text), Err(expected), "{text:?}");
            let json = serde_json::to_string(text).unwrap();
            assert!(serde_json::from_str::<StreamId>(&json).is_err(), "{text:?}");
        }
        assert!(StreamId::new("é".repeat(127)).is_ok(), "255 bytes are allowed");

        let limits = StoreLimits::default()
            .max_event_bytes(1_000)
            .max_batch_events(3)
            .max_batch_bytes(2_000);
        let store = common::fresh_store_with(PgStoreOptions::default().limits(limits), 4).await;
        let memory = MemoryStore::with_limits(limits);
        let s = stream("Input-1");
        let big = |bytes: usize| NewEvent::new("Big", json!({ "text": "x".repeat(bytes) }));
        let fixed = Uuid::new_v4();
        let duplicate = |e: &StoreError| {
            matches!(e, StoreError::IdempotencyConflict { kind: IdempotencyConflictKind::DuplicateInBatch, event_id, .. } if *event_id == fixed)
        };
        let cases: Vec<(&str, Vec<NewEvent>, Check<'_>)> = vec![
            (
                "event over max_event_bytes",
                vec![big(10), big(1_000)],
                &|e| matches!(e, StoreError::EventTooLarge { max: 1_000, size, .. } if *size > 1_000),
            ),
            (
                "metadata counts toward the event size",
                vec![NewEvent::new("Meta", json!({}))
                    .with_metadata(Metadata::default().with_actor("a".repeat(1_000)))],
                &|e| matches!(e, StoreError::EventTooLarge { .. }),
            ),
            (
                "more events than max_batch_events",
                (0..4).map(|_| big(1)).collect(),
                &|e| matches!(e, StoreError::BatchTooLarge { events: 4, max_events: 3, .. }),
            ),
            (
                "more bytes than max_batch_bytes",
                (0..3).map(|_| big(900)).collect(),
                &|e| matches!(e, StoreError::BatchTooLarge { events: 3, max_bytes: 2_000, bytes, .. } if *bytes > 2_000),
            ),
            (
                "empty event type",
                vec![big(1), NewEvent::new("", json!({}))],
                &|e| matches!(e, StoreError::InvalidEvent { kind: InvalidEventKind::EmptyEventType, .. }),
            ),
            (
                "event type over 255 bytes",
                vec![NewEvent::new("T".repeat(256), json!({}))],
                &|e| matches!(e, StoreError::InvalidEvent { kind: InvalidEventKind::EventTypeTooLong { len: 256, max: 255 }, .. }),
            ),
            (
                "control character in the event type",
                vec![NewEvent::new("Order\tPlaced", json!({}))],
                &|e| matches!(e, StoreError::InvalidEvent { kind: InvalidEventKind::ControlCharacterInEventType, .. }),
            ),
            (
                "schema version 0",
                vec![NewEvent::new("Zero", json!({})).with_schema_version(0)],
                &|e| matches!(e, StoreError::InvalidEvent { kind: InvalidEventKind::SchemaVersionZero, .. }),
            ),
            (
                "NUL in a data value",
                vec![NewEvent::new("Nul", json!({ "a": ["ok", "b\u{0}"] }))],
                &|e| matches!(e, StoreError::InvalidEvent { kind: InvalidEventKind::Unstorable { part: "data", reason: UnstorableJson::NulCharacter { .. } }, .. }),
            ),
            (
                "NUL in a data key",
                vec![NewEvent::new("Nul", json!({ "k\u{0}": 1 }))],
                &|e| matches!(e, StoreError::InvalidEvent { kind: InvalidEventKind::Unstorable { part: "data", reason: UnstorableJson::NulCharacter { .. } }, .. }),
            ),
            (
                "NUL in the metadata",
                vec![NewEvent::new("Nul", json!({}))
                    .with_metadata(Metadata::default().with_custom("k", json!({ "n": "\u{0}" })))],
                &|e| matches!(e, StoreError::InvalidEvent { kind: InvalidEventKind::Unstorable { part: "metadata", reason: UnstorableJson::NulCharacter { .. } }, .. }),
            ),
            (
                "NUL in the correlation id",
                vec![NewEvent::new("Nul", json!({}))
                    .with_metadata(Metadata::default().with_correlation_id("c\u{0}"))],
                &|e| matches!(e, StoreError::InvalidEvent { kind: InvalidEventKind::Unstorable { part: "metadata", reason: UnstorableJson::NulCharacter { .. } }, .. }),
            ),
            (
                "the same id twice in a batch",
                vec![big(1).with_id(fixed), big(2).with_id(fixed)],
                &duplicate,
            ),
        ];
        for (what, batch, check) in cases {
            for expected in [ExpectedVersion::Any, ExpectedVersion::NoStream] {
                let pg = store.append(&s, expected, batch.clone()).await;
                let mem = memory.append(&s, expected, batch.clone()).await;
                let Err(error) = &pg else {
                    panic!("{what}: accepted: {pg:?}");
                };
                assert!(check(error), "{what}: {error:?}");
                if let StoreError::InvalidEvent { stream, .. }
                | StoreError::EventTooLarge { stream, .. }
                | StoreError::BatchTooLarge { stream, .. } = error
                {
                    assert_eq!(stream, &s);
                }
                assert_eq!(error_text(pg), error_text(mem), "{what}: the stores differ");
            }
        }
        assert_eq!(count(&store, "SELECT count(*) FROM es.events").await, 0);
        assert!(store.read_stream(&s, StreamRead::forward()).await.unwrap().is_empty());

        // At the limits exactly, the batch is accepted.
        let edge = NewEvent::new("Edge", json!({ "t": "" }));
        let overhead = serde_json::to_string(&edge.data).unwrap().len() + 2;
        let edge = NewEvent::new("Edge", json!({ "t": "x".repeat(1_000 - overhead) }));
        store
            .append(&s, ExpectedVersion::NoStream, vec![edge])
            .await
            .expect("an event of exactly max_event_bytes is accepted");

        // Metadata is a typed struct: what can be sent is this, and it is
        // stored as a JSON object and read back equal.
        let metadata = Metadata::default()
            .with_correlation_id("req-1")
            .with_causation_id(Uuid::new_v4())
            .with_actor("user-7")
            .with_custom("list", json!([1, "two", null, { "three": 3.5 }]))
            .with_custom("flag", false)
            .with_custom("nothing", Value::Null);
        let sent = NewEvent::new("WithMeta", json!({})).with_metadata(metadata.clone());
        store
            .append(&s, ExpectedVersion::Exact(1), vec![sent, NewEvent::new("Bare", json!(null))])
            .await
            .unwrap();
        let read = store.read_stream(&s, StreamRead::forward()).await.unwrap();
        assert_eq!(read[1].metadata, metadata);
        assert_eq!(read[2].metadata, Metadata::default());
        assert_eq!(read[2].data, Value::Null, "any JSON value is a payload");
        assert_eq!(
            count(&store, "SELECT count(*) FROM es.events WHERE jsonb_typeof(metadata) <> 'object'").await,
            0
        );
    });
}

/// Rows whose metadata is not the metadata object (written behind the
/// store's back) give `CorruptEvent` naming the event, from every read
/// path, without a panic; other streams read normally.
#[test]
fn corrupt_metadata_in_the_database_is_a_typed_error() {
    runtime().block_on(async {
        let store = common::fresh_store().await;
        let fine = stream("Fine-1");
        store
            .append(&fine, ExpectedVersion::NoStream, vec![NewEvent::new("Ok", json!({}))])
            .await
            .unwrap();
        let bad_metadata = [
            ("a string", r#""a string""#),
            ("an array", "[1, 2]"),
            ("null", "null"),
            ("a number", "42"),
            ("a bad causation id", r#"{"causation_id": "not-a-uuid"}"#),
            ("a numeric correlation id", r#"{"correlation_id": 7}"#),
            ("custom that is not a map", r#"{"custom": "x"}"#),
        ];
        for (n, (what, metadata)) in bad_metadata.iter().enumerate() {
            let id = format!("Bad-{n}");
            let (tx, seq): (i64, i64) = sqlx::query_as(
                "INSERT INTO es.events (seq, event_id, stream_id, version, event_type, schema_version, data, metadata) \
                 VALUES (1, $1, $2, 1, 'Odd', 3, '{}', $3::jsonb) RETURNING tx_id::text::bigint, seq",
            )
            .bind(Uuid::new_v4())
            .bind(&id)
            .bind(metadata)
            .fetch_one(store.pool())
            .await
            .unwrap_or_else(|e| panic!("inserting {what}: {e}"));
            let position = Position::from_parts(u64::try_from(tx).unwrap(), u64::try_from(seq).unwrap());
            let error = store
                .read_stream(&stream(&id), StreamRead::forward())
                .await
                .expect_err(what);
            let StoreError::CorruptEvent { location, reason, position: at } = &error else {
                panic!("{what}: expected CorruptEvent, got {error:?}");
            };
            for part in [
                id.clone(),
                "version 1".to_owned(),
                position.to_string(),
                "Odd".to_owned(),
                "schema version 3".to_owned(),
            ] {
                assert!(location.contains(&part), "{what}: {location:?} lacks {part:?}");
            }
            assert!(reason.contains("metadata"), "{what}: {reason}");
            assert_eq!(*at, Some(position), "{what}: the error carries the position");
            // Backward reads and the feed say the same.
            assert!(matches!(
                store
                    .read_stream(&stream(&id), StreamRead::backward().limit(1))
                    .await,
                Err(StoreError::CorruptEvent { .. })
            ));
            let feed = store
                .read_all(Position::START, &FeedFilter::all().category("Bad"), 100)
                .await;
            assert!(matches!(feed, Err(StoreError::CorruptEvent { .. })), "{feed:?}");
        }
        // A subscription reports the corrupt event and ends; it neither
        // panics nor loops.
        let mut subscription = store.subscribe(Position::START, FeedFilter::all());
        let first = subscription.next().await.expect("the good event");
        assert_eq!(first.expect("the good event").stream_id, fine);
        let second = tokio::time::timeout(Duration::from_secs(5), subscription.next())
            .await
            .expect("the subscription answers");
        assert!(matches!(second, Some(Err(StoreError::CorruptEvent { .. }))), "{second:?}");
        let end = tokio::time::timeout(Duration::from_secs(5), subscription.next())
            .await
            .expect("the subscription ends");
        assert!(end.is_none());
        // A projection applies the events before the corrupt one, then stops
        // with the store's error instead of skipping it or looping.
        sqlx::raw_sql("CREATE TABLE journal (event_id uuid PRIMARY KEY)")
            .execute(store.pool())
            .await
            .unwrap();
        let runner: ProjectionRunner<Journal> =
            ProjectionRunner::new(store.clone(), Journal, RunnerOptions::default());
        let outcome = tokio::time::timeout(
            Duration::from_secs(10),
            runner.run(futures::future::pending()),
        )
        .await
        .expect("the runner stops by itself");
        assert!(
            matches!(
                &outcome,
                Err(ProjectionError::Store { source: StoreError::CorruptEvent { location, .. }, .. })
                    if location.contains("Bad-0")
            ),
            "{outcome:?}"
        );
        assert_eq!(count(&store, "SELECT count(*) FROM journal").await, 1);
        // Other streams are unaffected.
        assert_eq!(store.read_stream(&fine, StreamRead::forward()).await.unwrap().len(), 1);
        let repository: Repository<Counter, _> = Repository::new(store.clone());
        assert!(matches!(
            repository.load(&stream("Bad-0")).await,
            Err(StoreError::CorruptEvent { .. })
        ));
    });
}

// ---------------------------------------------------------------------------
// 3. Hostile text
// ---------------------------------------------------------------------------

/// Texts that break naive SQL or string handling.
const HOSTILE: &[&str] = &[
    "O'Reilly",
    "''",
    "\"double\"",
    "semi;colon",
    "--comment",
    "/* block */",
    "back\\slash\\",
    "\\x00\\u0000",
    "$1 $$ $tag$",
    "%_ LIKE",
    "'; DROP TABLE es.events; --",
    "\"); DELETE FROM es.events; --",
    "emoji 😀🎉👩‍👩‍👧",
    "RTL \u{202E}txet\u{202C}",
    "zero\u{200B}width\u{FEFF}",
    "combining e\u{301} vs \u{e9}",
    "中文 العربية हिन्दी",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "a-b-c",
    "-leading",
    " spaced ",
];

/// A projection with a name full of SQL and unicode.
struct OddName {
    seen: Arc<Mutex<Vec<Uuid>>>,
    /// Every call, across rebuilds.
    calls: Arc<AtomicUsize>,
}

impl Projection for OddName {
    const NAME: &'static str = "tally'; DROP TABLE projections; --\"😀\\";
    const EVENT_TYPES: &'static [&'static str] = &["'; DROP TABLE es.events; --", "emoji 😀🎉👩‍👩‍👧"];
}

impl Dispatch<()> for OddName {
    async fn dispatch(&self, event: &RecordedEvent, (): &mut ()) -> Result<(), BoxError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.seen
            .lock()
            .map_err(|_| "poisoned lock")?
            .push(event.event_id);
        Ok(())
    }
}

impl Reset<()> for OddName {
    async fn reset(&self, (): &mut ()) -> Result<(), BoxError> {
        self.seen.lock().map_err(|_| "poisoned lock")?.clear();
        Ok(())
    }
}

/// Stream ids, event types, data and metadata made of quotes, `;`, `--`,
/// backslashes, emoji and other unicode come back byte for byte, from the
/// stream and from the feed filtered by them; NUL is rejected cleanly. The
/// same holds in schemas named by SQL keywords, and for a projection whose
/// name is hostile.
#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, checked end to end")]
fn hostile_text_round_trips_or_is_rejected_cleanly() {
    runtime().block_on(async {
        let (url, pool) = common::fresh_pool(6).await;
        // Valid but odd schema names: SQL keywords, underscores, digits.
        let mut stores = Vec::new();
        for schema in ["es", "select", "user", "_", "a1__"] {
            let config = PgStoreOptions::new(schema).expect("a valid schema name");
            let store = PgEventStore::new(pool.clone(), config);
            store.migrate().await.unwrap_or_else(|e| panic!("migrating {schema}: {e:?}"));
            stores.push(store);
        }
        for bad in [
            "Es", "es-x", "es;drop", "es\"x", "es x", "pg_x", "1es", "", "é", "es\u{0}",
        ] {
            assert!(PgStoreOptions::new(bad).is_err(), "schema {bad:?} accepted");
        }
        assert!(PgStoreOptions::new("a".repeat(49)).is_err());

        for store in &stores {
            let schema = store.options().schema();
            let mut sent = Vec::new();
            for (i, text) in HOSTILE.iter().enumerate() {
                let id = StreamId::new(format!("{text}-{i}")).expect("a valid stream id");
                let data = json!({ *text: *text, "list": [*text, { *text: [*text] }], "ctl": "\t\n\r\u{1}\u{7f}" });
                let metadata = Metadata::default()
                    .with_correlation_id(*text)
                    .with_actor(format!("{text}\n{text}"))
                    .with_custom(*text, json!({ *text: *text }));
                let event = NewEvent::new(*text, data).with_metadata(metadata);
                store
                    .append(&id, ExpectedVersion::NoStream, vec![event.clone()])
                    .await
                    .unwrap_or_else(|e| panic!("{schema}: appending {text:?}: {e}"));
                sent.push((id, event));
            }
            for (id, event) in &sent {
                let read = store.read_stream(id, StreamRead::forward()).await.unwrap();
                assert_eq!(read.len(), 1, "{schema}: {id:?}");
                let got = &read[0];
                assert_eq!(got.stream_id.as_str().as_bytes(), id.as_str().as_bytes());
                assert_eq!(got.event_type.as_bytes(), event.event_type.as_bytes());
                assert_eq!(got.data, event.data);
                assert_eq!(got.metadata, event.metadata);
                // The feed, filtered by the hostile category and type (both
                // pushed into SQL as parameters), finds exactly this event.
                let filter = FeedFilter::all()
                    .category(id.category())
                    .event_types([event.event_type.as_str()]);
                let found = read_feed(store, &filter, 1).await;
                assert_eq!(
                    found.iter().map(|e| e.event_id).collect::<Vec<_>>(),
                    [event.event_id],
                    "{schema}: filter {filter:?}"
                );
                // And the bytes in the table are the bytes sent.
                let (stored_id, stored_type, correlation): (Vec<u8>, Vec<u8>, String) = sqlx::query_as(&format!(
                    "SELECT convert_to(stream_id, 'UTF8'), convert_to(event_type, 'UTF8'), \
                     metadata->>'correlation_id' FROM \"{schema}\".events WHERE event_id = $1"
                ))
                .bind(event.event_id)
                .fetch_one(store.pool())
                .await
                .unwrap();
                assert_eq!(stored_id, id.as_str().as_bytes());
                assert_eq!(stored_type, event.event_type.as_bytes());
                assert_eq!(Some(correlation.as_str()), event.metadata.correlation_id.as_deref());
            }
            let all = read_feed(store, &FeedFilter::all(), HOSTILE.len()).await;
            assert_eq!(all.len(), HOSTILE.len(), "{schema}");
        }
        // Nothing was interpreted as SQL: every schema's tables are intact
        // and hold exactly what was appended to it.
        for store in &stores {
            let schema = store.options().schema();
            assert_eq!(
                count(store, &format!("SELECT count(*) FROM \"{schema}\".events")).await,
                i64::try_from(HOSTILE.len()).unwrap()
            );
            assert_eq!(
                count(
                    store,
                    &format!("SELECT count(DISTINCT stream_id) FROM \"{schema}\".events")
                )
                .await,
                i64::try_from(HOSTILE.len()).unwrap()
            );
        }

        // NUL cannot be stored in PostgreSQL text: rejected before any I/O.
        let store = &stores[0];
        assert!(matches!(
            StreamId::new("Nul-\u{0}"),
            Err(StreamIdError::ControlCharacter { ch: '\0', .. })
        ));
        let s = stream("Nul-1");
        for (event, part) in [
            (NewEvent::new("Nul\u{0}", json!({})), None),
            (NewEvent::new("Nul", json!("a\u{0}b")), Some("data")),
            (NewEvent::new("Nul", json!({ "\u{0}": 1 })), Some("data")),
            (
                NewEvent::new("Nul", json!({}))
                    .with_metadata(Metadata::default().with_actor("\u{0}")),
                Some("metadata"),
            ),
            (
                NewEvent::new("Nul", json!({}))
                    .with_metadata(Metadata::default().with_custom("\u{0}", 1)),
                Some("metadata"),
            ),
        ] {
            let error = store
                .append(&s, ExpectedVersion::Any, vec![event])
                .await
                .expect_err("NUL is rejected");
            match (part, error) {
                (
                    None,
                    StoreError::InvalidEvent {
                        kind: InvalidEventKind::ControlCharacterInEventType,
                        ..
                    },
                ) => {}
                (
                    Some(expected),
                    StoreError::InvalidEvent {
                        kind:
                            InvalidEventKind::Unstorable {
                                part,
                                reason: UnstorableJson::NulCharacter { .. },
                            },
                        ..
                    },
                ) if part == expected => {}
                (_, other) => panic!("unexpected error {other:?}"),
            }
        }
        assert!(store.read_stream(&s, StreamRead::forward()).await.unwrap().is_empty());

        // A projection with a hostile name, in the schema `user`.
        let user = stores[2].clone();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let calls = Arc::new(AtomicUsize::new(0));
        let runner = ProjectionRunner::at_least_once(
            user.clone(),
            OddName {
                seen: Arc::clone(&seen),
                calls: Arc::clone(&calls),
            },
            RunnerOptions::default().standby_interval(Duration::from_millis(50)),
        );
        let (stop, run) = start(runner);
        wait_until(Duration::from_secs(10), "the projection reads its two types", || async {
            seen.lock().unwrap().len() == 2
        })
        .await;
        // The handler saw the events before their checkpoint committed.
        wait_until(Duration::from_secs(10), "the checkpoint after both", || async {
            user.projection_statuses()
                .await
                .unwrap()[0]
                .lag
                == 0
        })
        .await;
        let statuses = user.projection_statuses()
            .await
            .unwrap();
        assert_eq!(statuses.len(), 1);
        assert_eq!(statuses[0].name.as_bytes(), OddName::NAME.as_bytes());
        assert!(statuses[0].active);
        assert_eq!(statuses[0].lag, 0);
        // A rebuild by name finds it.
        user.request_rebuild(OddName::NAME).await.unwrap();
        wait_until(Duration::from_secs(10), "the rebuild replays the two events", || async {
            let applied = user.projection_statuses().await.unwrap()[0].events_applied;
            applied == 2 && calls.load(Ordering::SeqCst) == 4 && seen.lock().unwrap().len() == 2
        })
        .await;
        let _ = stop.send(());
        run.await.unwrap().unwrap();
        // Live notifications work in a schema named by a keyword.
        let mut live = user.subscribe(Position::START, FeedFilter::all().category("live"));
        let event = NewEvent::new("Live", json!({}));
        let live_id = event.event_id;
        user.append(&stream("live-1"), ExpectedVersion::NoStream, vec![event])
            .await
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), live.next())
            .await
            .expect("live delivery")
            .expect("an event")
            .unwrap();
        assert_eq!(got.event_id, live_id);
        drop(url);
    });
}

// ---------------------------------------------------------------------------
// 4. Server restarts
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// 5. Pool exhaustion and statement timeouts
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// 6. A transaction left open holds the feed back
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// 7. Model-based: PgEventStore behaves like MemoryStore
// ---------------------------------------------------------------------------

mod model {
    use proptest::prelude::*;

    use super::{ExpectedVersion, Ids, Op};

    fn expected() -> impl Strategy<Value = ExpectedVersion> {
        prop_oneof![
            3 => Just(ExpectedVersion::Any),
            1 => Just(ExpectedVersion::NoStream),
            1 => Just(ExpectedVersion::StreamExists),
            2 => (0u64..6).prop_map(ExpectedVersion::Exact),
        ]
    }

    fn ids() -> impl Strategy<Value = Ids> {
        prop_oneof![
            1 => Just(Ids::Fresh(0)),
            4 => (1usize..4).prop_map(Ids::Fresh),
            2 => prop::collection::vec(0usize..6, 1..4).prop_map(Ids::Pool),
            4 => (0usize..4, 0usize..2, 1usize..4, 0usize..2).prop_map(
                |(batch, skip, take, fresh_tail)| Ids::Earlier { batch, skip, take, fresh_tail }
            ),
            1 => (0usize..4).prop_map(|batch| Ids::Reversed { batch }),
        ]
    }

    pub(super) fn ops() -> impl Strategy<Value = Vec<Op>> {
        let op = (0usize..3, expected(), ids()).prop_map(|(stream, expected, ids)| Op {
            stream,
            expected,
            ids,
        });
        prop::collection::vec(op, 1..=20)
    }
}

/// Where the event ids of a generated batch come from.
#[derive(Debug, Clone)]
enum Ids {
    /// `n` ids never used before (0: an empty batch).
    Fresh(usize),
    /// Ids from a small pool shared by the case, so that batches collide
    /// (within a batch too).
    Pool(Vec<usize>),
    /// `take` ids of the `batch`-th latest batch after skipping `skip` (a
    /// retry, a part of one), then `fresh_tail` new ones (a partial
    /// overlap).
    Earlier {
        batch: usize,
        skip: usize,
        take: usize,
        fresh_tail: usize,
    },
    /// The `batch`-th latest batch in reverse order.
    Reversed { batch: usize },
}

/// One generated append.
#[derive(Debug, Clone)]
struct Op {
    stream: usize,
    expected: ExpectedVersion,
    ids: Ids,
}

type Append = (StreamId, ExpectedVersion, Vec<NewEvent>);

/// The `back`-th latest batch (0: the last one), if there is any.
fn earlier(history: &[Vec<Uuid>], back: usize) -> Option<&Vec<Uuid>> {
    let len = history.len();
    (len > 0).then(|| &history[len - 1 - back % len])
}

/// A fixed sequence that produces every outcome at least once; it runs
/// before the random cases.
fn scripted() -> Vec<Op> {
    use ExpectedVersion::{Any, Exact, NoStream, StreamExists};
    let op = |stream, expected, ids| Op {
        stream,
        expected,
        ids,
    };
    let again = |batch, skip, take, fresh_tail| Ids::Earlier {
        batch,
        skip,
        take,
        fresh_tail,
    };
    vec![
        op(0, NoStream, Ids::Fresh(3)),
        op(0, Exact(7), again(0, 0, 3, 0)), // replay, whatever the expected version
        op(0, NoStream, again(1, 1, 2, 0)), // replay of a part
        op(0, Any, Ids::Reversed { batch: 2 }), // DifferentOrder
        op(1, Any, again(3, 0, 1, 1)),      // PartialOverlap
        op(1, Any, again(4, 0, 2, 0)),      // OtherStream
        op(1, Exact(3), Ids::Fresh(1)),     // wrong expected version
        op(1, StreamExists, Ids::Fresh(0)), // empty batch on an absent stream
        op(0, StreamExists, Ids::Fresh(0)), // empty batch: a version check
        op(2, Any, Ids::Pool(vec![1, 1])),  // DuplicateInBatch
        op(2, NoStream, Ids::Pool(vec![0, 1])),
        op(2, Exact(0), Ids::Pool(vec![0, 1])), // replay
        op(0, Exact(3), Ids::Fresh(2)),
        op(2, Any, Ids::Pool(vec![1, 2])), // PartialOverlap
    ]
}

/// Turns the generated operations into concrete appends, the same for both
/// stores.
fn resolve(category: &str, ops: &[Op]) -> Vec<Append> {
    let pool: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
    let mut history: Vec<Vec<Uuid>> = Vec::new();
    let mut appends = Vec::new();
    for (n, op) in ops.iter().enumerate() {
        let ids: Vec<Uuid> = match &op.ids {
            Ids::Fresh(count) => (0..*count).map(|_| Uuid::new_v4()).collect(),
            Ids::Pool(picks) => picks.iter().map(|&i| pool[i]).collect(),
            Ids::Earlier {
                batch,
                skip,
                take,
                fresh_tail,
            } => {
                let mut ids: Vec<Uuid> = earlier(&history, *batch)
                    .map(|earlier| earlier.iter().skip(*skip).take(*take).copied().collect())
                    .unwrap_or_default();
                ids.extend((0..*fresh_tail).map(|_| Uuid::new_v4()));
                ids
            }
            Ids::Reversed { batch } => earlier(&history, *batch)
                .map(|earlier| earlier.iter().rev().copied().collect())
                .unwrap_or_default(),
        };
        history.push(ids.clone());
        let events = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                NewEvent::new(format!("Type{}", (n + i) % 3), json!({ "op": n, "i": i }))
                    .with_id(*id)
                    .with_schema_version(1 + u32::try_from(i).unwrap())
                    .with_metadata(Metadata::default().with_correlation_id(format!("op-{n}")))
            })
            .collect();
        appends.push((
            stream(&format!("{category}-{}", op.stream)),
            op.expected,
            events,
        ));
    }
    appends
}

/// An append's result with positions replaced by the events stored there,
/// comparable across stores.
#[derive(Debug, PartialEq)]
enum Outcome {
    Appended {
        stream_version: u64,
        events: Vec<Option<Uuid>>,
        replay: bool,
    },
    WrongExpectedVersion {
        stream: StreamId,
        expected: ExpectedVersion,
        actual: u64,
    },
    IdempotencyConflict {
        stream: StreamId,
        event_id: Uuid,
        kind: IdempotencyConflictKind,
    },
    Other(String),
}

/// An event as read back: id, version, type, schema version, data, metadata.
type StoredEvent = (Uuid, u64, String, u32, Value, Metadata);

/// What a store did with `appends`: each outcome, the feed of the case's
/// category (event ids in feed order), and each stream's events.
#[derive(Debug, PartialEq)]
struct Observed {
    outcomes: Vec<Outcome>,
    feed: Vec<Uuid>,
    streams: Vec<Vec<StoredEvent>>,
    partial_reads: Vec<Vec<(Uuid, u64)>>,
}

async fn observe<S: EventStore>(store: &S, category: &str, appends: &[Append]) -> Observed {
    let mut results = Vec::new();
    for (stream, expected, events) in appends {
        results.push(store.append(stream, *expected, events.clone()).await);
    }
    let mut streams = Vec::new();
    let mut partial_reads = Vec::new();
    for n in 0..3 {
        let id = stream(&format!("{category}-{n}"));
        let events = store.read_stream(&id, StreamRead::forward()).await.unwrap();
        streams.push(
            events
                .iter()
                .map(|e| {
                    (
                        e.event_id,
                        e.version,
                        e.event_type.clone(),
                        e.schema_version,
                        e.data.clone(),
                        e.metadata.clone(),
                    )
                })
                .collect(),
        );
        for read in [
            StreamRead::forward().from_version(2).limit(2),
            StreamRead::backward().limit(2),
            StreamRead::backward().from_version(3).limit(5),
            StreamRead::forward().from_version(4),
        ] {
            let events = store.read_stream(&id, read).await.unwrap();
            partial_reads.push(events.iter().map(|e| (e.event_id, e.version)).collect());
        }
    }
    let total = streams.iter().map(Vec::len).sum();
    let feed = read_feed(store, &FeedFilter::all().category(category), total).await;
    let at: HashMap<Position, Uuid> = feed.iter().map(|e| (e.position, e.event_id)).collect();
    let outcomes = results
        .into_iter()
        .map(|result| match result {
            Ok(result) => Outcome::Appended {
                stream_version: result.stream_version,
                events: result
                    .positions
                    .iter()
                    .map(|p| at.get(p).copied())
                    .collect(),
                replay: result.idempotent_replay,
            },
            Err(StoreError::WrongExpectedVersion {
                stream,
                expected,
                actual,
            }) => Outcome::WrongExpectedVersion {
                stream,
                expected,
                actual,
            },
            Err(StoreError::IdempotencyConflict {
                stream,
                event_id,
                kind,
            }) => Outcome::IdempotencyConflict {
                stream,
                event_id,
                kind,
            },
            Err(other) => Outcome::Other(format!("{other:?}")),
        })
        .collect();
    Observed {
        outcomes,
        feed: feed.iter().map(|e| e.event_id).collect(),
        streams,
        partial_reads,
    }
}

/// Random sequences of appends (random expected versions; fresh, colliding
/// and re-sent event ids; retries, partial overlaps, empty batches) give
/// the same outcomes, errors, stream contents and feed order in PostgreSQL
/// as in the in-memory model.
#[test]
fn pg_store_matches_the_memory_model() {
    use proptest::test_runner::{Config, TestRunner};

    let runtime = runtime();
    let store = runtime.block_on(common::fresh_store());
    let cases = AtomicU64::new(0);
    let appends_seen = AtomicUsize::new(0);
    let kinds = Mutex::new(std::collections::BTreeMap::<String, usize>::new());
    let mut runner = TestRunner::new(Config {
        cases: 24,
        max_shrink_iters: 200,
        failure_persistence: None,
        ..Config::default()
    });
    let check = |ops: Vec<Op>| -> Result<(), proptest::test_runner::TestCaseError> {
        let category = format!("Model{}", cases.fetch_add(1, Ordering::SeqCst));
        let appends = resolve(&category, &ops);
        appends_seen.fetch_add(appends.len(), Ordering::SeqCst);
        let (memory, postgres) = runtime.block_on(async {
            let memory = observe(&MemoryStore::new(), &category, &appends).await;
            let postgres = observe(&store, &category, &appends).await;
            (memory, postgres)
        });
        for (n, (m, p)) in memory.outcomes.iter().zip(&postgres.outcomes).enumerate() {
            proptest::prop_assert_eq!(m, p, "append {} of {:?}", n, appends[n]);
        }
        proptest::prop_assert_eq!(&memory, &postgres);
        let mut kinds = kinds.lock().unwrap();
        for (outcome, (_, _, events)) in postgres.outcomes.iter().zip(&appends) {
            let kind = match outcome {
                Outcome::Appended { replay: true, .. } => "replay".to_owned(),
                Outcome::Appended { .. } if events.is_empty() => "empty batch".to_owned(),
                Outcome::Appended { .. } => "appended".to_owned(),
                Outcome::WrongExpectedVersion { .. } => "wrong expected version".to_owned(),
                Outcome::IdempotencyConflict { kind, .. } => format!("{kind:?}"),
                Outcome::Other(error) => error.clone(),
            };
            *kinds.entry(kind).or_default() += 1;
        }
        Ok(())
    };
    if let Err(failure) = check(scripted()) {
        panic!("the scripted sequence: {failure}");
    }
    if let Err(failure) = runner.run(&model::ops(), check) {
        panic!("{failure}");
    }
    let kinds = kinds.into_inner().unwrap();
    println!(
        "{} cases, {} appends compared: {kinds:?}",
        cases.load(Ordering::SeqCst),
        appends_seen.load(Ordering::SeqCst)
    );
    for kind in [
        "appended",
        "empty batch",
        "replay",
        "wrong expected version",
        "PartialOverlap",
        "DifferentOrder",
        "OtherStream",
        "DuplicateInBatch",
    ] {
        assert!(
            kinds.contains_key(kind),
            "no case produced {kind}: {kinds:?}"
        );
    }
}
