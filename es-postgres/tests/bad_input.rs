//! Bad input at the API: invalid stream ids cannot be built; oversized
//! events and batches and malformed events are typed errors, the same as
//! `MemoryStore`'s, and nothing is written; input exactly at the limits is
//! accepted, and metadata reads back equal.

mod common;

use common::{count, runtime, stream};

use es_core::{
    EventStore, ExpectedVersion, IdempotencyConflictKind, InvalidEventKind, MemoryStore, Metadata,
    NewEvent, StoreError, StoreLimits, StreamId, StreamIdError, StreamRead, UnstorableJson,
};
use es_postgres::PgStoreOptions;
use serde_json::{Value, json};
use uuid::Uuid;

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
