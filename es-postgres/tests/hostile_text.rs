//! Hostile text: stream ids, event types, data and metadata made of quotes,
//! SQL fragments, backslashes, emoji and other unicode come back byte for
//! byte, in schemas named by SQL keywords and for a projection whose name is
//! hostile; NUL, which PostgreSQL text cannot hold, is rejected cleanly.

mod common;

use common::{count, read_feed, runtime, start, stream, wait_until};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use es_core::{
    BoxError, Dispatch, EventStore, ExpectedVersion, FeedFilter, InvalidEventKind, Metadata,
    NewEvent, Position, Projection, RecordedEvent, Reset, StoreError, StreamId, StreamIdError,
    StreamRead, UnstorableJson,
};
use es_postgres::{PgEventStore, PgStoreOptions, ProjectionRunner, RunnerOptions};
use futures::StreamExt;
use serde_json::json;
use uuid::Uuid;

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
                let mut event = NewEvent::new(*text, data).with_metadata(metadata);
                if text.starts_with('$') {
                    // `$` opens the store's own event types: refused, named.
                    let refused = store
                        .append(&id, ExpectedVersion::NoStream, vec![event.clone()])
                        .await;
                    assert!(
                        matches!(
                            &refused,
                            Err(StoreError::InvalidEvent {
                                kind: InvalidEventKind::ReservedEventType,
                                ..
                            })
                        ),
                        "{schema}: {text:?}: {refused:?}"
                    );
                    event.event_type = format!("x{text}");
                }
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
