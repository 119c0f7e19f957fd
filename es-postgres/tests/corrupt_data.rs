//! Corrupt stored data: events whose payload, type or schema version the
//! aggregate cannot decode, and rows written with SQL behind the store's
//! back (a payload of the wrong shape, metadata that is not the metadata
//! object). Each is a typed error naming the event, from every read path;
//! the projection runner parks or stops at it as configured; other streams
//! and projections that do not decode are unaffected.

mod common;

use common::{count, read_feed, runtime, start, stream, wait_until};

use std::time::Duration;

use es_core::{
    Aggregate, BoxError, DecodeError, DecodeErrorKind, Dispatch, Event, EventStore,
    ExpectedVersion, FeedFilter, NewEvent, On, Position, Projection, RecordedEvent, Repository,
    RepositoryOptions, Reset, StoreError, StreamId, StreamRead,
};
use es_postgres::{ErrorPolicy, ProjectionError, ProjectionRunner, ProjectionState, RunnerOptions};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

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
