//! The rules of the store contract, one function per rule, then those of a
//! [`Repository`](crate::Repository) on the store (the `repository_*`
//! rules: commands, the state cache, conflicts, metadata, snapshots).
//!
//! Each function takes a fresh, empty store and panics when the store breaks
//! the rule. [`conformance_suite!`](crate::conformance_suite) turns them into
//! tests.

#![allow(
    clippy::missing_panics_doc,
    reason = "every function here is a test case that panics on failure"
)]

mod across;
mod commands;
mod repository;
mod round_trip;

pub use across::*;
pub use commands::*;
pub use repository::*;
pub use round_trip::*;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    AppendResult, EventStore, ExpectedVersion, FeedFilter, IdempotencyConflictKind, Metadata,
    NewEvent, Position, RecordedEvent, Snapshot, SnapshotStore, StoreError, StreamId,
    StreamIdError, StreamRead,
};

/// Bound on waiting for a subscription to deliver.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);

fn stream(id: &str) -> StreamId {
    StreamId::new(id).expect("test stream ids are valid")
}

fn event(event_type: &str, n: u64) -> NewEvent {
    NewEvent::new(event_type, json!({ "n": n }))
}

fn events(n: u64) -> Vec<NewEvent> {
    (1..=n).map(|i| event("Happened", i)).collect()
}

async fn append<S: EventStore>(
    store: &S,
    id: &StreamId,
    expected: ExpectedVersion,
    batch: Vec<NewEvent>,
) -> AppendResult {
    store
        .append(id, expected, batch)
        .await
        .unwrap_or_else(|e| panic!("append to {id} with {expected} failed: {e}"))
}

async fn whole_feed<S: EventStore>(store: &S) -> Vec<RecordedEvent> {
    store
        .read_all(Position::START, &FeedFilter::all(), usize::MAX)
        .await
        .expect("reading the feed")
}

async fn whole_stream<S: EventStore>(store: &S, id: &StreamId) -> Vec<RecordedEvent> {
    store
        .read_stream(id, StreamRead::forward())
        .await
        .expect("reading the stream")
}

fn versions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.version).collect()
}

fn ids(events: &[RecordedEvent]) -> Vec<Uuid> {
    events.iter().map(|e| e.event_id).collect()
}

#[track_caller]
fn assert_wrong_version(
    result: Result<AppendResult, StoreError>,
    stream_id: &StreamId,
    expected: ExpectedVersion,
    actual: u64,
) {
    match result {
        Err(StoreError::WrongExpectedVersion {
            stream: s,
            expected: e,
            actual: a,
        }) => {
            assert_eq!(&s, stream_id, "error names the stream");
            assert_eq!(e, expected, "error names the expected version");
            assert_eq!(a, actual, "error reports the actual version");
        }
        other => panic!("expected WrongExpectedVersion(actual {actual}), got {other:?}"),
    }
}

#[track_caller]
fn assert_conflict(result: Result<AppendResult, StoreError>, kind: IdempotencyConflictKind) {
    match result {
        Err(StoreError::IdempotencyConflict { kind: k, .. }) => assert_eq!(k, kind),
        other => panic!("expected IdempotencyConflict({kind:?}), got {other:?}"),
    }
}

/// `Any` appends to a stream that does not exist; its first event is version 1.
pub async fn expected_any_appends_to_new_stream<S: EventStore>(store: S) {
    let s = stream("Order-1");
    let r = append(&store, &s, ExpectedVersion::Any, events(1)).await;
    assert_eq!(r.stream_version, 1);
    assert!(!r.idempotent_replay);
    assert_eq!(versions(&whole_stream(&store, &s).await), [1]);
}

/// `Any` appends to a stream that has events.
pub async fn expected_any_appends_to_existing_stream<S: EventStore>(store: S) {
    let s = stream("Order-1");
    append(&store, &s, ExpectedVersion::Any, events(2)).await;
    let r = append(&store, &s, ExpectedVersion::Any, events(1)).await;
    assert_eq!(r.stream_version, 3);
    assert_eq!(versions(&whole_stream(&store, &s).await), [1, 2, 3]);
}

/// `NoStream` passes when the stream has no events.
pub async fn expected_no_stream_passes_on_absent_stream<S: EventStore>(store: S) {
    let s = stream("Order-1");
    let r = append(&store, &s, ExpectedVersion::NoStream, events(2)).await;
    assert_eq!(r.stream_version, 2);
}

/// `NoStream` fails on a stream with events and reports its version.
pub async fn expected_no_stream_fails_on_existing_stream<S: EventStore>(store: S) {
    let s = stream("Order-1");
    append(&store, &s, ExpectedVersion::Any, events(2)).await;
    let r = store.append(&s, ExpectedVersion::NoStream, events(1)).await;
    assert_wrong_version(r, &s, ExpectedVersion::NoStream, 2);
}

/// `StreamExists` passes on a stream with events.
pub async fn expected_stream_exists_passes_on_existing_stream<S: EventStore>(store: S) {
    let s = stream("Order-1");
    append(&store, &s, ExpectedVersion::Any, events(1)).await;
    let r = append(&store, &s, ExpectedVersion::StreamExists, events(1)).await;
    assert_eq!(r.stream_version, 2);
}

/// `StreamExists` fails on an absent stream, reporting version 0.
pub async fn expected_stream_exists_fails_on_absent_stream<S: EventStore>(store: S) {
    let s = stream("Order-1");
    let r = store
        .append(&s, ExpectedVersion::StreamExists, events(1))
        .await;
    assert_wrong_version(r, &s, ExpectedVersion::StreamExists, 0);
}

/// `Exact(n)` passes when the stream is at version `n`.
pub async fn expected_exact_passes_on_matching_version<S: EventStore>(store: S) {
    let s = stream("Order-1");
    append(&store, &s, ExpectedVersion::Any, events(3)).await;
    let r = append(&store, &s, ExpectedVersion::Exact(3), events(2)).await;
    assert_eq!(r.stream_version, 5);
    assert_eq!(r.versions(), 4..=5);
}

/// `Exact(n)` fails when the stream is past `n`, reporting the true version.
pub async fn expected_exact_fails_when_stream_is_ahead<S: EventStore>(store: S) {
    let s = stream("Order-1");
    append(&store, &s, ExpectedVersion::Any, events(3)).await;
    let r = store.append(&s, ExpectedVersion::Exact(1), events(1)).await;
    assert_wrong_version(r, &s, ExpectedVersion::Exact(1), 3);
}

/// `Exact(n)` fails when the stream has not reached `n`.
pub async fn expected_exact_fails_when_stream_is_behind<S: EventStore>(store: S) {
    let s = stream("Order-1");
    append(&store, &s, ExpectedVersion::Any, events(3)).await;
    let r = store.append(&s, ExpectedVersion::Exact(7), events(1)).await;
    assert_wrong_version(r, &s, ExpectedVersion::Exact(7), 3);
}

/// `Exact(0)` means "empty" and passes on an absent stream.
pub async fn expected_exact_zero_passes_on_absent_stream<S: EventStore>(store: S) {
    let s = stream("Order-1");
    let r = append(&store, &s, ExpectedVersion::Exact(0), events(1)).await;
    assert_eq!(r.stream_version, 1);
}

/// `Exact(0)` fails on a stream with events.
pub async fn expected_exact_zero_fails_on_existing_stream<S: EventStore>(store: S) {
    let s = stream("Order-1");
    append(&store, &s, ExpectedVersion::Any, events(1)).await;
    let r = store.append(&s, ExpectedVersion::Exact(0), events(1)).await;
    assert_wrong_version(r, &s, ExpectedVersion::Exact(0), 1);
}

/// A failed version check writes nothing, and does not claim the batch's
/// event ids: the same batch later appends normally.
pub async fn failed_check_writes_nothing<S: EventStore>(store: S) {
    let s = stream("Order-1");
    append(&store, &s, ExpectedVersion::Any, events(2)).await;
    let before = whole_feed(&store).await;
    let batch = events(3);
    let r = store
        .append(&s, ExpectedVersion::Exact(1), batch.clone())
        .await;
    assert_wrong_version(r, &s, ExpectedVersion::Exact(1), 2);
    assert_eq!(whole_feed(&store).await, before, "the feed is unchanged");
    let r = append(&store, &s, ExpectedVersion::Exact(2), batch).await;
    assert_eq!(r.versions(), 3..=5);
    assert!(!r.idempotent_replay);
}

/// A batch lands with contiguous versions, in batch order, with ascending
/// positions.
pub async fn batch_versions_are_contiguous<S: EventStore>(store: S) {
    let s = stream("Order-1");
    let first = events(3);
    let second = events(4);
    let r1 = append(&store, &s, ExpectedVersion::NoStream, first.clone()).await;
    let r2 = append(&store, &s, ExpectedVersion::Exact(3), second.clone()).await;
    assert_eq!(r1.versions(), 1..=3);
    assert_eq!(r2.versions(), 4..=7);
    assert_eq!(r1.positions.len(), 3);
    assert_eq!(r2.positions.len(), 4);
    let all: Vec<Position> = r1.positions.iter().chain(&r2.positions).copied().collect();
    assert!(all.windows(2).all(|w| w[0] < w[1]), "positions ascend");
    let stored = whole_stream(&store, &s).await;
    assert_eq!(versions(&stored), [1, 2, 3, 4, 5, 6, 7]);
    let sent: Vec<Uuid> = first.iter().chain(&second).map(|e| e.event_id).collect();
    assert_eq!(ids(&stored), sent, "events keep batch order");
}

/// An append is atomic: one bad event in the batch and none is written.
pub async fn batch_is_atomic_when_one_event_is_invalid<S: EventStore>(store: S) {
    let s = stream("Order-1");
    let mut batch = events(5);
    batch[3] = NewEvent::new("Broken", json!({ "text": "a\u{0}b" }));
    let r = store.append(&s, ExpectedVersion::Any, batch).await;
    assert!(
        matches!(r, Err(StoreError::InvalidEvent { .. })),
        "expected InvalidEvent, got {r:?}"
    );
    assert!(whole_stream(&store, &s).await.is_empty());
    assert!(whole_feed(&store).await.is_empty());
}

/// 32 concurrent `Any` appends to one stream all land, with versions 1..=32.
pub async fn concurrent_any_appends_all_land<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("Order-1");
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = store.clone();
            let s = s.clone();
            tokio::spawn(async move {
                let e = event("Happened", i);
                let id = e.event_id;
                let r = store.append(&s, ExpectedVersion::Any, vec![e]).await;
                (id, r)
            })
        })
        .collect();
    let mut sent = HashSet::new();
    let mut got_versions = Vec::new();
    for task in tasks {
        let (id, r) = task.await.expect("task");
        let r = r.unwrap_or_else(|e| panic!("concurrent Any append failed: {e}"));
        sent.insert(id);
        got_versions.push(r.stream_version);
    }
    got_versions.sort_unstable();
    assert_eq!(got_versions, (1..=32).collect::<Vec<_>>());
    let stored = whole_stream(&store, &s).await;
    assert_eq!(versions(&stored), (1..=32).collect::<Vec<_>>());
    assert_eq!(
        stored.iter().map(|e| e.event_id).collect::<HashSet<_>>(),
        sent
    );
}

/// Of 32 concurrent `Exact(v)` appends, exactly one wins; the others report
/// the winner's version.
pub async fn concurrent_exact_appends_have_one_winner<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("Order-1");
    append(&store, &s, ExpectedVersion::Any, events(2)).await;
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = store.clone();
            let s = s.clone();
            tokio::spawn(async move {
                store
                    .append(&s, ExpectedVersion::Exact(2), vec![event("Happened", i)])
                    .await
            })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(r) => {
                winners += 1;
                assert_eq!(r.stream_version, 3);
            }
            Err(e) => assert_wrong_version(Err(e), &s, ExpectedVersion::Exact(2), 3),
        }
    }
    assert_eq!(winners, 1, "exactly one Exact(2) append wins");
    assert_eq!(versions(&whole_stream(&store, &s).await), [1, 2, 3]);
}

async fn assert_idempotent_retry<S: EventStore>(
    store: &S,
    s: &StreamId,
    expected: ExpectedVersion,
) {
    let batch = events(3);
    let first = append(store, s, expected, batch.clone()).await;
    let feed = whole_feed(store).await;
    let again = append(store, s, expected, batch).await;
    assert!(again.idempotent_replay, "the retry is reported as a replay");
    assert!(!first.idempotent_replay);
    assert_eq!(again.stream_version, first.stream_version);
    assert_eq!(again.positions, first.positions, "same positions");
    assert_eq!(whole_feed(store).await, feed, "the retry wrote nothing");
}

/// Re-sending a stored batch with `Any` returns the first result and writes
/// nothing.
pub async fn idempotent_retry_with_any<S: EventStore>(store: S) {
    let s = stream("Order-1");
    append(&store, &s, ExpectedVersion::Any, events(1)).await;
    assert_idempotent_retry(&store, &s, ExpectedVersion::Any).await;
}

/// Re-sending a stored batch with `NoStream` (which would now fail the
/// check) returns the first result.
pub async fn idempotent_retry_with_no_stream<S: EventStore>(store: S) {
    let s = stream("Order-1");
    assert_idempotent_retry(&store, &s, ExpectedVersion::NoStream).await;
}

/// Re-sending a stored batch with `StreamExists` returns the first result.
pub async fn idempotent_retry_with_stream_exists<S: EventStore>(store: S) {
    let s = stream("Order-1");
    append(&store, &s, ExpectedVersion::Any, events(1)).await;
    assert_idempotent_retry(&store, &s, ExpectedVersion::StreamExists).await;
}

/// Re-sending a stored `Exact` batch after the stream moved on returns the
/// first result, not a version conflict.
pub async fn idempotent_retry_with_exact_after_later_appends<S: EventStore>(store: S) {
    let s = stream("Order-1");
    append(&store, &s, ExpectedVersion::Any, events(2)).await;
    let batch = events(2);
    let first = append(&store, &s, ExpectedVersion::Exact(2), batch.clone()).await;
    append(&store, &s, ExpectedVersion::Exact(4), events(3)).await;
    let feed = whole_feed(&store).await;
    let again = append(&store, &s, ExpectedVersion::Exact(2), batch).await;
    assert!(again.idempotent_replay);
    assert_eq!(again.stream_version, 4);
    assert_eq!(again.versions(), 3..=4);
    assert_eq!(again.positions, first.positions);
    assert_eq!(whole_feed(&store).await, feed);
}

/// A batch of which only some ids are stored is a conflict; nothing is
/// written.
pub async fn idempotent_partial_overlap_is_conflict<S: EventStore>(store: S) {
    let s = stream("Order-1");
    let batch = events(2);
    append(&store, &s, ExpectedVersion::Any, batch.clone()).await;
    let feed = whole_feed(&store).await;
    let mut overlapping = batch;
    overlapping.push(event("Happened", 9));
    let r = store.append(&s, ExpectedVersion::Any, overlapping).await;
    assert_conflict(r, IdempotencyConflictKind::PartialOverlap);
    assert_eq!(whole_feed(&store).await, feed);
}

/// Ids stored in another stream are a conflict.
pub async fn idempotent_ids_in_other_stream_are_conflict<S: EventStore>(store: S) {
    let batch = events(2);
    append(
        &store,
        &stream("Order-1"),
        ExpectedVersion::Any,
        batch.clone(),
    )
    .await;
    let feed = whole_feed(&store).await;
    let r = store
        .append(&stream("Order-2"), ExpectedVersion::Any, batch)
        .await;
    assert_conflict(r, IdempotencyConflictKind::OtherStream);
    assert_eq!(whole_feed(&store).await, feed);
}

/// Stored ids sent in another order (or not contiguous) are a conflict.
pub async fn idempotent_ids_in_other_order_are_conflict<S: EventStore>(store: S) {
    let s = stream("Order-1");
    let batch = events(3);
    append(&store, &s, ExpectedVersion::Any, batch.clone()).await;
    let feed = whole_feed(&store).await;
    let reversed: Vec<NewEvent> = batch.iter().rev().cloned().collect();
    let r = store.append(&s, ExpectedVersion::Any, reversed).await;
    assert_conflict(r, IdempotencyConflictKind::DifferentOrder);
    let gapped = vec![batch[0].clone(), batch[2].clone()];
    let r = store.append(&s, ExpectedVersion::Any, gapped).await;
    assert_conflict(r, IdempotencyConflictKind::DifferentOrder);
    assert_eq!(whole_feed(&store).await, feed);
}

/// A batch holding the same id twice is rejected; nothing is written.
pub async fn duplicate_id_within_batch_is_conflict<S: EventStore>(store: S) {
    let s = stream("Order-1");
    let e = event("Happened", 1);
    let r = store
        .append(&s, ExpectedVersion::Any, vec![e.clone(), e])
        .await;
    assert_conflict(r, IdempotencyConflictKind::DuplicateInBatch);
    assert!(whole_feed(&store).await.is_empty());
}

/// An empty batch that passes the check returns the stream's version and
/// writes nothing, also on an absent stream.
pub async fn empty_batch_passes_version_check_and_writes_nothing<S: EventStore>(store: S) {
    let s = stream("Order-1");
    let r = append(&store, &s, ExpectedVersion::NoStream, Vec::new()).await;
    assert_eq!(r.stream_version, 0);
    assert!(r.positions.is_empty());
    assert!(whole_feed(&store).await.is_empty());
    // The empty append did not create the stream.
    append(&store, &s, ExpectedVersion::NoStream, events(2)).await;
    let r = append(&store, &s, ExpectedVersion::Exact(2), Vec::new()).await;
    assert_eq!(r.stream_version, 2);
    assert!(!r.idempotent_replay);
    let r = append(&store, &s, ExpectedVersion::StreamExists, Vec::new()).await;
    assert_eq!(r.stream_version, 2);
    assert_eq!(whole_feed(&store).await.len(), 2);
}

/// An empty batch that fails the check reports the actual version.
pub async fn empty_batch_fails_version_check<S: EventStore>(store: S) {
    let s = stream("Order-1");
    let r = store
        .append(&s, ExpectedVersion::StreamExists, Vec::new())
        .await;
    assert_wrong_version(r, &s, ExpectedVersion::StreamExists, 0);
    append(&store, &s, ExpectedVersion::Any, events(2)).await;
    let r = store
        .append(&s, ExpectedVersion::Exact(1), Vec::new())
        .await;
    assert_wrong_version(r, &s, ExpectedVersion::Exact(1), 2);
    let r = store
        .append(&s, ExpectedVersion::NoStream, Vec::new())
        .await;
    assert_wrong_version(r, &s, ExpectedVersion::NoStream, 2);
}

/// An empty stream id is rejected before the store is involved.
pub async fn invalid_stream_id_empty_is_rejected<S: EventStore>(store: S) {
    assert_eq!(StreamId::new(""), Err(StreamIdError::Empty));
    assert!(serde_json::from_value::<StreamId>(json!("")).is_err());
    assert!(whole_feed(&store).await.is_empty());
}

/// A stream id of 256 bytes is rejected; 255 bytes is accepted and stored.
pub async fn invalid_stream_id_over_255_bytes_is_rejected<S: EventStore>(store: S) {
    let long = format!("Order-{}", "x".repeat(250));
    assert_eq!(
        StreamId::new(long.clone()),
        Err(StreamIdError::TooLong { len: 256 })
    );
    let longest = stream(&long[..255]);
    append(&store, &longest, ExpectedVersion::NoStream, events(1)).await;
    let stored = whole_stream(&store, &longest).await;
    assert_eq!(stored[0].stream_id.as_str().len(), 255);
}

/// Stream ids with control characters (including NUL) are rejected.
pub async fn invalid_stream_id_control_characters_are_rejected<S: EventStore>(store: S) {
    for bad in [
        "Order-\u{0}",
        "Order-a\nb",
        "\tOrder",
        "Order-\u{7f}",
        "Order-\u{9b}",
    ] {
        assert!(
            matches!(
                StreamId::new(bad),
                Err(StreamIdError::ControlCharacter { .. })
            ),
            "{bad:?} accepted"
        );
    }
    assert!(whole_feed(&store).await.is_empty());
}

/// An event over the size limit is rejected and nothing is written.
pub async fn oversize_event_is_rejected_and_nothing_written<S: EventStore>(store: S) {
    let s = stream("Order-1");
    let max = store.limits().max_event_bytes;
    let big = NewEvent::new("Big", Value::String("x".repeat(max)));
    let mut batch = events(2);
    batch.push(big.clone());
    match store.append(&s, ExpectedVersion::Any, batch).await {
        Err(StoreError::EventTooLarge { event_id, size, .. }) => {
            assert_eq!(event_id, big.event_id);
            assert!(size > max);
        }
        other => panic!("expected EventTooLarge, got {other:?}"),
    }
    assert!(whole_feed(&store).await.is_empty());
}

/// A batch over the event-count or byte limit is rejected and nothing is
/// written.
pub async fn oversize_batch_is_rejected_and_nothing_written<S: EventStore>(store: S) {
    let s = stream("Order-1");
    let limits = store.limits();
    let too_many = events(limits.max_batch_events as u64 + 1);
    let r = store.append(&s, ExpectedVersion::Any, too_many).await;
    assert!(
        matches!(r, Err(StoreError::BatchTooLarge { .. })),
        "expected BatchTooLarge, got {r:?}"
    );
    let chunk = limits.max_event_bytes / 2;
    let count = limits.max_batch_bytes / chunk + 1;
    let too_big: Vec<NewEvent> = (0..count)
        .map(|_| NewEvent::new("Chunk", Value::String("y".repeat(chunk))))
        .collect();
    let r = store.append(&s, ExpectedVersion::Any, too_big).await;
    assert!(
        matches!(r, Err(StoreError::BatchTooLarge { bytes, max_bytes, .. }) if bytes > max_bytes),
        "expected BatchTooLarge by bytes"
    );
    assert!(whole_feed(&store).await.is_empty());
}

/// An empty or control-character event type, or schema version 0, is
/// rejected.
pub async fn invalid_event_type_or_schema_version_is_rejected<S: EventStore>(store: S) {
    let s = stream("Order-1");
    for bad in [
        NewEvent::new("", json!({})),
        NewEvent::new("Order\nPlaced", json!({})),
        NewEvent::new(
            "x".repeat(store.limits().max_event_type_bytes + 1),
            json!({}),
        ),
        NewEvent::new("OrderPlaced", json!({})).with_schema_version(0),
    ] {
        let r = store.append(&s, ExpectedVersion::Any, vec![bad]).await;
        assert!(
            matches!(r, Err(StoreError::InvalidEvent { .. })),
            "expected InvalidEvent, got {r:?}"
        );
    }
    assert!(whole_feed(&store).await.is_empty());
}

/// NUL in data or metadata strings is rejected cleanly (PostgreSQL text
/// cannot hold it).
pub async fn nul_in_data_or_metadata_is_rejected<S: EventStore>(store: S) {
    let s = stream("Order-1");
    for bad in [
        NewEvent::new("A", json!({ "k": "\u{0}" })),
        NewEvent::new("A", json!({ "k\u{0}": 1 })),
        NewEvent::new("A", json!({})).with_metadata(Metadata::default().with_actor("a\u{0}")),
        NewEvent::new("A", json!({}))
            .with_metadata(Metadata::default().with_custom("x", json!(["\u{0}"]))),
    ] {
        let r = store.append(&s, ExpectedVersion::Any, vec![bad]).await;
        assert!(
            matches!(r, Err(StoreError::InvalidEvent { .. })),
            "expected InvalidEvent, got {r:?}"
        );
    }
    assert!(whole_feed(&store).await.is_empty());
}

async fn five_event_stream<S: EventStore>(store: &S) -> StreamId {
    let s = stream("Order-1");
    append(store, &s, ExpectedVersion::Any, events(5)).await;
    append(store, &stream("Order-2"), ExpectedVersion::Any, events(2)).await;
    s
}

/// Reading forward returns the stream's events oldest first.
pub async fn read_stream_forward<S: EventStore>(store: S) {
    let s = five_event_stream(&store).await;
    let read = store.read_stream(&s, StreamRead::forward()).await.unwrap();
    assert_eq!(versions(&read), [1, 2, 3, 4, 5]);
    assert!(read.iter().all(|e| e.stream_id == s));
}

/// Reading backward returns the stream's events newest first.
pub async fn read_stream_backward<S: EventStore>(store: S) {
    let s = five_event_stream(&store).await;
    let read = store.read_stream(&s, StreamRead::backward()).await.unwrap();
    assert_eq!(versions(&read), [5, 4, 3, 2, 1]);
}

/// Reads start at the given version, inclusive, in either direction.
pub async fn read_stream_from_version<S: EventStore>(store: S) {
    let s = five_event_stream(&store).await;
    let fwd = StreamRead::forward().from_version(3);
    assert_eq!(
        versions(&store.read_stream(&s, fwd).await.unwrap()),
        [3, 4, 5]
    );
    let back = StreamRead::backward().from_version(3);
    assert_eq!(
        versions(&store.read_stream(&s, back).await.unwrap()),
        [3, 2, 1]
    );
    let past_end = StreamRead::forward().from_version(6);
    assert!(store.read_stream(&s, past_end).await.unwrap().is_empty());
    let back_past_end = StreamRead::backward().from_version(9);
    assert_eq!(
        versions(&store.read_stream(&s, back_past_end).await.unwrap()),
        [5, 4, 3, 2, 1]
    );
}

/// Reads return at most `limit` events.
pub async fn read_stream_with_limit<S: EventStore>(store: S) {
    let s = five_event_stream(&store).await;
    let read = |r| store.read_stream(&s, r);
    assert_eq!(
        versions(&read(StreamRead::forward().limit(2)).await.unwrap()),
        [1, 2]
    );
    assert_eq!(
        versions(
            &read(StreamRead::forward().from_version(4).limit(9))
                .await
                .unwrap()
        ),
        [4, 5]
    );
    assert_eq!(
        versions(&read(StreamRead::backward().limit(2)).await.unwrap()),
        [5, 4]
    );
    assert!(
        read(StreamRead::forward().limit(0))
            .await
            .unwrap()
            .is_empty()
    );
}

/// A stream without events reads as empty, not as an error.
pub async fn read_absent_stream_is_empty<S: EventStore>(store: S) {
    let s = stream("Order-404");
    assert!(
        store
            .read_stream(&s, StreamRead::forward())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .read_stream(&s, StreamRead::backward())
            .await
            .unwrap()
            .is_empty()
    );
}

/// Every field of an appended event reads back as sent, with the version,
/// position and recording time the store assigned.
pub async fn recorded_envelope_round_trips<S: EventStore>(store: S) {
    let s = stream("Order-1");
    let causation = Uuid::now_v7();
    let metadata = Metadata::default()
        .with_correlation_id("req-42")
        .with_causation_id(causation)
        .with_actor("user-7")
        .with_custom("tenant", "acme")
        .with_custom("nested", json!({ "a": [1, 2.5, null, true] }));
    let data =
        json!({ "customer": "c-1", "total_cents": 12_345, "items": [{ "sku": "A", "qty": 2 }] });
    let sent = NewEvent::new("OrderPlaced", data.clone())
        .with_schema_version(3)
        .with_metadata(metadata.clone());
    let before = chrono::Utc::now() - chrono::Duration::seconds(60);
    let r = append(&store, &s, ExpectedVersion::NoStream, vec![sent.clone()]).await;
    let after = chrono::Utc::now() + chrono::Duration::seconds(60);
    let got = &whole_stream(&store, &s).await[0];
    assert_eq!(got.event_id, sent.event_id);
    assert_eq!(got.stream_id, s);
    assert_eq!(got.version, 1);
    assert_eq!(got.position, r.positions[0]);
    assert_eq!(got.event_type, "OrderPlaced");
    assert_eq!(got.schema_version, 3);
    assert_eq!(got.data, data);
    assert_eq!(got.metadata, metadata);
    assert!(got.recorded_at > before && got.recorded_at < after);
    assert_eq!(&whole_feed(&store).await[0], got, "feed and stream agree");
}

/// Quotes, SQL punctuation, backslashes, emoji and other unicode in stream
/// ids, event types, data and metadata are stored byte for byte.
pub async fn hostile_text_round_trips<S: EventStore>(store: S) {
    let hostile = [
        "O'Reilly-1\"; DROP TABLE events; --",
        "Ünïcødé-日本語-🦀",
        "Back\\slash-$1-%s-{}",
        "Quote-''--/*",
    ];
    for text in hostile {
        let s = stream(text);
        let meta = Metadata::default()
            .with_actor(text)
            .with_correlation_id(text)
            .with_custom(text, text);
        let sent = NewEvent::new(text, json!({ text: text, "k": [text] })).with_metadata(meta);
        append(&store, &s, ExpectedVersion::NoStream, vec![sent.clone()]).await;
        let got = &whole_stream(&store, &s).await[0];
        assert_eq!(got.stream_id.as_str(), text);
        assert_eq!(got.event_type, text);
        assert_eq!(got.data, sent.data);
        assert_eq!(got.metadata, sent.metadata);
        let by_type = FeedFilter::all().event_types([text]);
        let found = store.read_all(Position::START, &by_type, 10).await.unwrap();
        assert_eq!(ids(&found), [sent.event_id], "filter by hostile type");
    }
    assert_eq!(whole_feed(&store).await.len(), hostile.len());
}

async fn interleaved<S: EventStore>(store: &S) -> Vec<StreamId> {
    let streams = [stream("Order-1"), stream("Customer-1"), stream("Order-2")];
    for round in 0..4u64 {
        for (i, s) in streams.iter().enumerate() {
            let kind = if i == 1 {
                "CustomerSeen"
            } else {
                "OrderTouched"
            };
            let batch = (0..=round % 2)
                .map(|n| event(kind, round * 10 + n))
                .collect();
            append(store, s, ExpectedVersion::Any, batch).await;
        }
    }
    streams.to_vec()
}

/// The feed holds every event exactly once, and each stream's events appear
/// in version order.
pub async fn feed_holds_every_event_once_in_stream_order<S: EventStore>(store: S) {
    let streams = interleaved(&store).await;
    let feed = whole_feed(&store).await;
    let mut expected_total = 0;
    for s in &streams {
        let stored = whole_stream(&store, s).await;
        expected_total += stored.len();
        let in_feed: Vec<&RecordedEvent> = feed.iter().filter(|e| &e.stream_id == s).collect();
        assert_eq!(
            in_feed.iter().map(|e| e.version).collect::<Vec<_>>(),
            versions(&stored),
            "feed order agrees with stream order for {s}"
        );
    }
    assert_eq!(feed.len(), expected_total);
    assert_eq!(
        feed.iter()
            .map(|e| e.event_id)
            .collect::<HashSet<_>>()
            .len(),
        feed.len()
    );
    assert!(feed.windows(2).all(|w| w[0].position < w[1].position));
}

/// Reading the feed twice gives the same events in the same order.
pub async fn feed_order_is_stable_across_reads<S: EventStore>(store: S) {
    interleaved(&store).await;
    let first = whole_feed(&store).await;
    append(&store, &stream("Order-9"), ExpectedVersion::Any, events(1)).await;
    let second = whole_feed(&store).await;
    assert_eq!(first[..], second[..first.len()]);
    assert_eq!(second.len(), first.len() + 1);
}

/// The positions an append returns are the events' positions in the feed.
pub async fn feed_positions_match_append_results<S: EventStore>(store: S) {
    let s = stream("Order-1");
    let mut by_position = HashMap::new();
    for n in 1..=3 {
        let batch = events(n);
        let r = append(&store, &s, ExpectedVersion::Any, batch.clone()).await;
        for (e, p) in batch.iter().zip(&r.positions) {
            by_position.insert(*p, e.event_id);
        }
    }
    let feed = whole_feed(&store).await;
    assert_eq!(feed.len(), by_position.len());
    for e in &feed {
        assert_eq!(by_position.get(&e.position), Some(&e.event_id));
    }
}

/// A category filter returns exactly the events of streams in the category.
pub async fn feed_filters_by_category<S: EventStore>(store: S) {
    interleaved(&store).await;
    let feed = whole_feed(&store).await;
    let orders = store
        .read_all(
            Position::START,
            &FeedFilter::all().category("Order"),
            usize::MAX,
        )
        .await
        .unwrap();
    let expected: Vec<&RecordedEvent> = feed
        .iter()
        .filter(|e| e.stream_id.category() == "Order")
        .collect();
    assert!(!orders.is_empty());
    assert_eq!(orders.iter().collect::<Vec<_>>(), expected);
    let none = store
        .read_all(
            Position::START,
            &FeedFilter::all().category("Ord"),
            usize::MAX,
        )
        .await
        .unwrap();
    assert!(
        none.is_empty(),
        "a category is matched whole, not as a prefix"
    );
}

/// An event-type filter returns exactly the events of those types, and
/// combines with a category filter.
pub async fn feed_filters_by_event_type<S: EventStore>(store: S) {
    interleaved(&store).await;
    append(
        &store,
        &stream("Order-3"),
        ExpectedVersion::Any,
        vec![event("CustomerSeen", 0)],
    )
    .await;
    let feed = whole_feed(&store).await;
    let filter = FeedFilter::all().event_types(["CustomerSeen"]);
    let seen = store
        .read_all(Position::START, &filter, usize::MAX)
        .await
        .unwrap();
    let expected: Vec<&RecordedEvent> = feed
        .iter()
        .filter(|e| e.event_type == "CustomerSeen")
        .collect();
    assert_eq!(seen.iter().collect::<Vec<_>>(), expected);
    let both = filter.category("Order");
    let seen_in_orders = store
        .read_all(Position::START, &both, usize::MAX)
        .await
        .unwrap();
    assert_eq!(seen_in_orders.len(), 1);
    assert_eq!(seen_in_orders[0].stream_id.as_str(), "Order-3");
    let two_types = FeedFilter::all().event_types(["CustomerSeen", "OrderTouched"]);
    let all = store
        .read_all(Position::START, &two_types, usize::MAX)
        .await
        .unwrap();
    assert_eq!(all, feed);
}

/// Appends `total` events of which every `every`-th is a `Rare` one (in
/// batches, over a few streams); returns the rare events' ids in order.
async fn sparse<S: EventStore>(store: &S, total: u64, every: u64) -> Vec<Uuid> {
    let mut rare = Vec::new();
    let mut n = 0;
    while n < total {
        let batch: Vec<NewEvent> = (n..(n + 500).min(total))
            .map(|i| {
                if i % every == every - 1 {
                    event("Rare", i)
                } else {
                    event("Common", i)
                }
            })
            .collect();
        rare.extend(
            batch
                .iter()
                .filter(|e| e.event_type == "Rare")
                .map(|e| e.event_id),
        );
        n += u64::try_from(batch.len()).unwrap_or(u64::MAX);
        let id = stream(&format!("Sparse-{}", n % 3));
        append(store, &id, ExpectedVersion::Any, batch).await;
    }
    rare
}

/// Following `read_feed`'s `next` and `more` yields exactly the matching
/// events, whatever a page examined; once caught up, `next` is at or after
/// the last match and a page read from it is empty and says so.
pub async fn read_feed_pages_reach_every_match<S: EventStore>(store: S) {
    let rare = sparse(&store, 9_000, 2_500).await;
    let filter = FeedFilter::all().event_types(["Rare"]);
    let mut after = Position::START;
    let mut seen = Vec::new();
    let mut reads = 0;
    loop {
        reads += 1;
        assert!(reads < 1_000, "read_feed does not move on");
        let page = store.read_feed(after, &filter, 2).await.unwrap();
        assert!(page.events.len() <= 2);
        assert!(page.next >= after, "next went back");
        for e in &page.events {
            assert!(e.position > after && e.position <= page.next);
            assert_eq!(e.event_type, "Rare");
        }
        seen.extend(ids(&page.events));
        after = page.next;
        if !page.more {
            break;
        }
    }
    assert_eq!(seen, rare);
    let again = store.read_feed(after, &filter, 2).await.unwrap();
    assert!(again.events.is_empty() && !again.more);
    // read_all agrees, however the store pages internally.
    let all = store
        .read_all(Position::START, &filter, usize::MAX)
        .await
        .unwrap();
    assert_eq!(ids(&all), rare);
    let first_two = store.read_all(Position::START, &filter, 2).await.unwrap();
    assert_eq!(ids(&first_two), rare[..2]);
}

/// Paging the feed from each page's last position yields exactly the whole
/// feed, and a read after the last position is empty.
pub async fn feed_resumes_from_checkpoint<S: EventStore>(store: S) {
    interleaved(&store).await;
    let feed = whole_feed(&store).await;
    let mut paged = Vec::new();
    let mut checkpoint = Position::START;
    loop {
        let page = store
            .read_all(checkpoint, &FeedFilter::all(), 4)
            .await
            .unwrap();
        assert!(page.len() <= 4);
        let Some(last) = page.last() else { break };
        checkpoint = last.position;
        paged.extend(page);
    }
    assert_eq!(paged, feed);
    // A checkpoint survives a round trip through text.
    let restored: Position = feed[5].position.to_string().parse().unwrap();
    let rest = store
        .read_all(restored, &FeedFilter::all(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(rest[..], feed[6..]);
}

async fn next_n(sub: &mut crate::EventStream, n: usize) -> Vec<RecordedEvent> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match tokio::time::timeout(DELIVERY_TIMEOUT, sub.next()).await {
            Ok(Some(Ok(e))) => got.push(e),
            Ok(Some(Err(e))) => panic!("subscription failed: {e}"),
            Ok(None) => panic!("subscription ended after {} events", got.len()),
            Err(elapsed) => panic!(
                "subscription delivered {} of {n} events ({elapsed})",
                got.len()
            ),
        }
    }
    got
}

async fn assert_quiet(sub: &mut crate::EventStream) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
        panic!("unexpected extra delivery: {item:?}");
    }
}

/// A subscription first yields the stored events, then events appended after
/// it started.
pub async fn subscription_catches_up_then_goes_live<S: EventStore>(store: S) {
    let s = stream("Order-1");
    append(&store, &s, ExpectedVersion::Any, events(3)).await;
    let mut sub = store.subscribe(Position::START, FeedFilter::all());
    let caught_up = next_n(&mut sub, 3).await;
    assert_eq!(versions(&caught_up), [1, 2, 3]);
    let live_batch = events(2);
    append(&store, &s, ExpectedVersion::Exact(3), live_batch.clone()).await;
    let live = next_n(&mut sub, 2).await;
    assert_eq!(
        ids(&live),
        live_batch.iter().map(|e| e.event_id).collect::<Vec<_>>()
    );
    assert_quiet(&mut sub).await;
}

/// A subscription from a checkpoint yields only what follows it.
pub async fn subscription_from_checkpoint_yields_only_the_rest<S: EventStore>(store: S) {
    interleaved(&store).await;
    let feed = whole_feed(&store).await;
    let mut sub = store.subscribe(feed[4].position, FeedFilter::all());
    let rest = next_n(&mut sub, feed.len() - 5).await;
    assert_eq!(rest[..], feed[5..]);
    assert_quiet(&mut sub).await;
}

/// A filtered subscription yields only matching events, stored and live.
pub async fn subscription_with_filter<S: EventStore>(store: S) {
    interleaved(&store).await;
    let filter = FeedFilter::all().category("Customer");
    let expected = store
        .read_all(Position::START, &filter, usize::MAX)
        .await
        .unwrap();
    let mut sub = store.subscribe(Position::START, filter);
    assert_eq!(next_n(&mut sub, expected.len()).await, expected);
    append(&store, &stream("Order-1"), ExpectedVersion::Any, events(1)).await;
    let live = event("CustomerSeen", 99);
    append(
        &store,
        &stream("Customer-1"),
        ExpectedVersion::Any,
        vec![live.clone()],
    )
    .await;
    let got = next_n(&mut sub, 1).await;
    assert_eq!(got[0].event_id, live.event_id);
    assert_quiet(&mut sub).await;
}

/// A subscription to rare events delivers them all, stored and live, with
/// many other events between them.
pub async fn subscription_to_rare_events<S: EventStore>(store: S) {
    let stored = sparse(&store, 6_000, 2_900).await;
    let filter = FeedFilter::all().event_types(["Rare"]);
    let mut sub = store.subscribe(Position::START, filter);
    assert_eq!(ids(&next_n(&mut sub, stored.len()).await), stored);
    let more = sparse(&store, 3_000, 2_999).await;
    assert_eq!(ids(&next_n(&mut sub, more.len()).await), more);
    assert_quiet(&mut sub).await;
}

/// While writers append, a subscription started mid-way delivers every
/// event exactly once, in feed order, across the catch-up/live switch.
pub async fn subscription_has_no_gap_or_duplicate_at_switch<S: EventStore + Clone + 'static>(
    store: S,
) {
    const WRITERS: u64 = 4;
    const PER_WRITER: u64 = 50;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let s = stream(&format!("Order-{w}"));
                for n in 0..PER_WRITER {
                    append(&store, &s, ExpectedVersion::Any, vec![event("Happened", n)]).await;
                    if n % 10 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    // Start the subscription while the writers are running.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut sub = store.subscribe(Position::START, FeedFilter::all());
    let total = usize::try_from(WRITERS * PER_WRITER).unwrap();
    let got = next_n(&mut sub, total).await;
    for writer in writers {
        writer.await.expect("writer");
    }
    assert_quiet(&mut sub).await;
    assert_eq!(
        got,
        whole_feed(&store).await,
        "delivered exactly the feed, in order"
    );
    let unique: HashSet<Uuid> = got.iter().map(|e| e.event_id).collect();
    assert_eq!(unique.len(), total);
}

/// The newest snapshot of a stream is kept per stream and read back as
/// saved; a snapshot older than the stored one does not replace it.
pub async fn snapshots_keep_the_newest_per_stream<S: SnapshotStore>(store: S) {
    let s = stream("Order-1");
    assert_eq!(store.load_snapshot(&s).await.unwrap(), None);
    let first = Snapshot::new(s.clone(), 10, 1, json!({ "total": 10, "text": "é'\\" }));
    store.save_snapshot(first.clone()).await.unwrap();
    let got = store.load_snapshot(&s).await.unwrap().expect("a snapshot");
    assert_eq!(
        (got.version, got.schema_version, &got.data),
        (10, 1, &first.data)
    );
    let newer = Snapshot::new(s.clone(), 20, 2, json!({ "total": 20 }));
    store.save_snapshot(newer.clone()).await.unwrap();
    store
        .save_snapshot(Snapshot::new(s.clone(), 15, 2, json!({ "stale": true })))
        .await
        .unwrap();
    let got = store.load_snapshot(&s).await.unwrap().expect("a snapshot");
    assert_eq!(
        (got.version, got.schema_version, &got.data),
        (20, 2, &newer.data)
    );
    assert_eq!(store.load_snapshot(&stream("Order-2")).await.unwrap(), None);
}
