//! Rules of appends across streams ([`EventStore::append_many`]) and of
//! archived and deleted streams.

use std::collections::HashSet;

use uuid::Uuid;

use super::{append, assert_wrong_version, event, events, ids, stream, versions, whole_feed};
use crate::store::{ARCHIVED_EVENT_TYPE, DELETED_EVENT_TYPE};
use crate::{
    AppendResult, EventStore, ExpectedVersion, IdempotencyConflictKind, InvalidEventKind, NewEvent,
    RecordedEvent, Snapshot, SnapshotStore, StoreError, StreamAppend, StreamId, StreamRead,
};

async fn append_many<S: EventStore>(store: &S, request: Vec<StreamAppend>) -> Vec<AppendResult> {
    store
        .append_many(request)
        .await
        .unwrap_or_else(|e| panic!("the append across streams failed: {e}"))
}

async fn stream_events<S: EventStore>(store: &S, id: &StreamId) -> Vec<RecordedEvent> {
    store
        .read_stream(id, StreamRead::forward())
        .await
        .unwrap_or_else(|e| panic!("reading {id} failed: {e}"))
}

/// Every stream's events are written with its own versions, and when one
/// stream's check fails, or one event is invalid, nothing is written.
pub async fn append_many_writes_every_stream_or_none<S: EventStore>(store: S) {
    let (a, b) = (stream("Order-1"), stream("Coupon-1"));
    append(&store, &b, ExpectedVersion::NoStream, events(1)).await;
    let results = append_many(
        &store,
        vec![
            StreamAppend::new(a.clone(), ExpectedVersion::NoStream, events(2)),
            StreamAppend::new(b.clone(), ExpectedVersion::Exact(1), events(1)),
        ],
    )
    .await;
    assert_eq!(results.len(), 2);
    assert_eq!(
        (results[0].stream_version, results[1].stream_version),
        (2, 2)
    );
    assert!(results.iter().all(|r| !r.idempotent_replay));
    assert_eq!(versions(&stream_events(&store, &a).await), [1, 2]);
    assert_eq!(versions(&stream_events(&store, &b).await), [1, 2]);

    let feed = whole_feed(&store).await;
    let refused = store
        .append_many(vec![
            StreamAppend::new(a.clone(), ExpectedVersion::Exact(2), events(1)),
            StreamAppend::new(b.clone(), ExpectedVersion::Exact(5), events(1)),
        ])
        .await
        .map(|_| ());
    match refused {
        Err(StoreError::WrongExpectedVersion {
            stream, actual: 2, ..
        }) => assert_eq!(stream, b, "the error names the stream that failed"),
        other => panic!("expected WrongExpectedVersion on {b}, got {other:?}"),
    }
    let invalid = store
        .append_many(vec![
            StreamAppend::new(a.clone(), ExpectedVersion::Exact(2), events(1)),
            StreamAppend::new(b.clone(), ExpectedVersion::Exact(2), vec![event("", 1)]),
        ])
        .await
        .map(|_| ());
    assert!(
        matches!(invalid, Err(StoreError::InvalidEvent { ref stream, .. }) if *stream == b),
        "got {invalid:?}"
    );
    assert_eq!(whole_feed(&store).await, feed, "nothing was written");
}

/// A request's events are contiguous in the feed, in request order, at the
/// positions the results report.
pub async fn append_many_events_are_contiguous_in_request_order<S: EventStore>(store: S) {
    let (a, b, c) = (stream("Order-1"), stream("Coupon-1"), stream("Order-2"));
    append(&store, &a, ExpectedVersion::Any, events(1)).await;
    let request = vec![
        StreamAppend::new(c.clone(), ExpectedVersion::Any, events(2)),
        StreamAppend::new(a.clone(), ExpectedVersion::Exact(1), events(1)),
        StreamAppend::new(b.clone(), ExpectedVersion::Any, events(3)),
    ];
    let sent: Vec<Uuid> = request
        .iter()
        .flat_map(|r| r.events.iter().map(|e| e.event_id))
        .collect();
    let results = append_many(&store, request).await;
    append(&store, &a, ExpectedVersion::Any, events(1)).await;
    let feed = whole_feed(&store).await;
    let first = feed
        .iter()
        .position(|e| e.event_id == sent[0])
        .expect("the request's first event is in the feed");
    let written = &feed[first..first + sent.len()];
    assert_eq!(ids(written), sent, "contiguous, in request order");
    let positions: Vec<_> = results.iter().flat_map(|r| r.positions.clone()).collect();
    let read: Vec<_> = written.iter().map(|e| e.position).collect();
    assert_eq!(positions, read, "the results give the feed positions");
    assert_eq!(versions(&written[..2]), [1, 2]);
    assert_eq!(written[2].version, 2);
    assert_eq!(versions(&written[3..]), [1, 2, 3]);
}

/// The same request sent again writes nothing and returns the first
/// results, whatever the expected versions now say; a stream without events
/// reports its current version.
pub async fn append_many_sent_again_is_a_replay<S: EventStore>(store: S) {
    let (a, b, c) = (stream("Order-1"), stream("Coupon-1"), stream("Order-2"));
    append(&store, &c, ExpectedVersion::Any, events(2)).await;
    let request = vec![
        StreamAppend::new(a.clone(), ExpectedVersion::NoStream, events(2)),
        StreamAppend::new(b.clone(), ExpectedVersion::NoStream, events(1)),
        StreamAppend::new(c.clone(), ExpectedVersion::Exact(2), Vec::new()),
    ];
    let first = append_many(&store, request.clone()).await;
    append(&store, &c, ExpectedVersion::Any, events(1)).await;
    let feed = whole_feed(&store).await;
    let again = append_many(&store, request).await;
    assert!(again.iter().all(|r| r.idempotent_replay), "{again:?}");
    for (again, first) in again.iter().zip(&first).take(2) {
        assert_eq!(again.positions, first.positions);
        assert_eq!(again.stream_version, first.stream_version);
    }
    assert_eq!(
        again[2].stream_version, 3,
        "the checked stream's version now"
    );
    assert!(again[2].positions.is_empty());
    assert_eq!(whole_feed(&store).await, feed, "nothing was written");
}

/// A request of which only some events are stored is a conflict, and
/// writes nothing.
pub async fn append_many_partly_stored_is_a_conflict<S: EventStore>(store: S) {
    let (a, b) = (stream("Order-1"), stream("Coupon-1"));
    let stored = events(2);
    append(&store, &a, ExpectedVersion::NoStream, stored.clone()).await;
    let feed = whole_feed(&store).await;
    let result = store
        .append_many(vec![
            StreamAppend::new(a.clone(), ExpectedVersion::NoStream, stored.clone()),
            StreamAppend::new(b.clone(), ExpectedVersion::NoStream, events(1)),
        ])
        .await;
    match result {
        Err(StoreError::IdempotencyConflict {
            kind: IdempotencyConflictKind::PartialOverlap,
            event_id,
            ..
        }) => assert_eq!(event_id, stored[0].event_id),
        other => panic!("expected a partial overlap, got {other:?}"),
    }
    assert_eq!(whole_feed(&store).await, feed, "nothing was written");
}

/// A stream named twice, or an event id used twice across the request, is
/// refused before anything is written; an empty request writes nothing;
/// the batch limits apply to the whole request.
pub async fn append_many_refuses_repeats_and_oversize_requests<S: EventStore>(store: S) {
    let (a, b) = (stream("Order-1"), stream("Coupon-1"));
    let repeated = store
        .append_many(vec![
            StreamAppend::new(a.clone(), ExpectedVersion::Any, events(1)),
            StreamAppend::new(a.clone(), ExpectedVersion::Any, events(1)),
        ])
        .await;
    assert!(
        matches!(repeated, Err(StoreError::RepeatedStream { ref stream }) if *stream == a),
        "got {repeated:?}"
    );
    let shared = event("Happened", 1);
    let twice = store
        .append_many(vec![
            StreamAppend::new(a.clone(), ExpectedVersion::Any, vec![shared.clone()]),
            StreamAppend::new(b.clone(), ExpectedVersion::Any, vec![shared]),
        ])
        .await;
    assert!(
        matches!(
            twice,
            Err(StoreError::IdempotencyConflict {
                kind: IdempotencyConflictKind::DuplicateInBatch,
                ref stream,
                ..
            }) if *stream == b
        ),
        "got {twice:?}"
    );
    assert!(append_many(&store, Vec::new()).await.is_empty());
    let half = store.limits().max_batch_events / 2 + 1;
    let many = |n| (0..n).map(|i| event("Happened", i)).collect::<Vec<_>>();
    let oversize = store
        .append_many(vec![
            StreamAppend::new(a.clone(), ExpectedVersion::Any, many(half as u64)),
            StreamAppend::new(b.clone(), ExpectedVersion::Any, many(half as u64)),
        ])
        .await;
    assert!(
        matches!(oversize, Err(StoreError::BatchTooLarge { ref stream, .. }) if *stream == b),
        "got {oversize:?}"
    );
    assert!(whole_feed(&store).await.is_empty(), "nothing was written");
}

/// A stream without events in the request is a condition: the others are
/// written only while it has the expected version.
pub async fn append_many_checks_streams_without_events<S: EventStore>(store: S) {
    let (a, b) = (stream("Order-1"), stream("Coupon-1"));
    append(&store, &a, ExpectedVersion::Any, events(1)).await;
    let request = |n| {
        vec![
            StreamAppend::new(a.clone(), ExpectedVersion::Exact(1), Vec::new()),
            StreamAppend::new(b.clone(), ExpectedVersion::Any, events(n)),
        ]
    };
    let results = append_many(&store, request(1)).await;
    assert_eq!(results[0].stream_version, 1);
    assert!(results[0].positions.is_empty());
    append(&store, &a, ExpectedVersion::Any, events(1)).await;
    let refused = store.append_many(request(2)).await.map(|_| ());
    assert!(
        matches!(refused, Err(StoreError::WrongExpectedVersion { ref stream, actual: 2, .. }) if *stream == a),
        "got {refused:?}"
    );
    assert_eq!(versions(&stream_events(&store, &b).await), [1]);
}

/// 16 tasks send requests over overlapping sets of six streams, naming the
/// streams in different orders: no request fails for any reason but a
/// version check, and each is written whole or not at all.
pub async fn append_many_overlapping_requests_never_deadlock<S: EventStore + Clone + 'static>(
    store: S,
) {
    let names: Vec<StreamId> = (0..6).map(|i| stream(&format!("Slot-{i}"))).collect();
    let tasks: Vec<_> = (0..16_usize)
        .map(|task| {
            let (store, names) = (store.clone(), names.clone());
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for round in 0..8_usize {
                    // Three streams, rotated and reversed by task.
                    let mut picked: Vec<StreamId> = (0..3)
                        .map(|k| names[(task + round + k * (1 + task % 2)) % 6].clone())
                        .collect();
                    picked.dedup();
                    if task % 2 == 1 {
                        picked.reverse();
                    }
                    let mut request = Vec::new();
                    for id in picked {
                        let version = store
                            .read_stream(&id, StreamRead::backward().limit(1))
                            .await
                            .expect("reading a stream's version")
                            .first()
                            .map_or(0, |e| e.version);
                        let expected = if round % 2 == 0 {
                            ExpectedVersion::Exact(version)
                        } else {
                            ExpectedVersion::Any
                        };
                        request.push(StreamAppend::new(id, expected, events(2)));
                    }
                    let sent: Vec<Uuid> = request
                        .iter()
                        .flat_map(|r| r.events.iter().map(|e| e.event_id))
                        .collect();
                    match store.append_many(request).await {
                        Ok(_) => outcomes.push((sent, true)),
                        Err(StoreError::WrongExpectedVersion { .. }) => {
                            outcomes.push((sent, false));
                        }
                        Err(other) => panic!("task {task} round {round}: {other}"),
                    }
                }
                outcomes
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(task.await.expect("a task panicked"));
    }
    let feed = whole_feed(&store).await;
    let stored: HashSet<Uuid> = feed.iter().map(|e| e.event_id).collect();
    let mut written = 0;
    for (sent, accepted) in &outcomes {
        let present = sent.iter().filter(|id| stored.contains(id)).count();
        if *accepted {
            assert_eq!(present, sent.len(), "an accepted request is whole");
            let first = feed
                .iter()
                .position(|e| e.event_id == sent[0])
                .expect("stored");
            assert_eq!(ids(&feed[first..first + sent.len()]), *sent, "contiguous");
            written += 1;
        } else {
            assert_eq!(present, 0, "a refused request wrote nothing");
        }
    }
    assert!(written >= 64, "every `Any` request lands; {written} did");
    for id in &names {
        let events = stream_events(&store, id).await;
        let expected: Vec<u64> = (1..=events.len() as u64).collect();
        assert_eq!(versions(&events), expected, "{id} has contiguous versions");
    }
}

/// An archived stream's reads say so, its events stay in the feed followed
/// by the `$archived` event, and archiving it again writes nothing.
pub async fn archived_stream_reads_say_archived<S: EventStore>(store: S) {
    let a = stream("Order-1");
    append(&store, &a, ExpectedVersion::Any, events(2)).await;
    assert_wrong_version(
        store.archive_stream(&a, ExpectedVersion::Exact(1)).await,
        &a,
        ExpectedVersion::Exact(1),
        2,
    );
    let archived = store
        .archive_stream(&a, ExpectedVersion::Exact(2))
        .await
        .expect("archiving");
    assert_eq!(
        (archived.stream_version, archived.idempotent_replay),
        (3, false)
    );
    for read in [StreamRead::forward(), StreamRead::backward().limit(1)] {
        let result = store.read_stream(&a, read).await;
        assert!(
            matches!(result, Err(StoreError::StreamArchived { ref stream, version: 3 }) if *stream == a),
            "got {result:?}"
        );
    }
    let feed = whole_feed(&store).await;
    assert_eq!(feed.len(), 3, "the events stay in the feed");
    assert_eq!(feed[2].event_type, ARCHIVED_EVENT_TYPE);
    assert_eq!(
        (feed[2].version, feed[2].position),
        (3, archived.positions[0])
    );
    let again = store
        .archive_stream(&a, ExpectedVersion::Any)
        .await
        .expect("archiving again");
    assert!(again.idempotent_replay);
    assert_eq!(again.positions, archived.positions);
    assert_eq!(whole_feed(&store).await, feed, "nothing was written");
}

/// An append to an archived stream restores it: versions continue after
/// the `$archived` event, and reads return every event again.
pub async fn append_to_archived_stream_restores_it<S: EventStore>(store: S) {
    let a = stream("Order-1");
    append(&store, &a, ExpectedVersion::Any, events(2)).await;
    store
        .archive_stream(&a, ExpectedVersion::Any)
        .await
        .expect("archiving");
    assert_wrong_version(
        store.append(&a, ExpectedVersion::NoStream, events(1)).await,
        &a,
        ExpectedVersion::NoStream,
        3,
    );
    let restored = append(&store, &a, ExpectedVersion::Exact(3), events(1)).await;
    assert_eq!(restored.stream_version, 4);
    let read = stream_events(&store, &a).await;
    assert_eq!(versions(&read), [1, 2, 3, 4]);
    assert_eq!(read[2].event_type, ARCHIVED_EVENT_TYPE);
}

/// A deleted stream refuses every append, whatever its expected version,
/// alone or in a request across streams, and the request writes nothing;
/// a batch stored before the deletion, sent again, is still a replay.
pub async fn deleted_stream_refuses_appends_under_every_expected_version<S: EventStore>(store: S) {
    let (a, b) = (stream("Order-1"), stream("Order-2"));
    let stored = events(2);
    append(&store, &a, ExpectedVersion::Any, stored.clone()).await;
    let deleted = store
        .delete_stream(&a, ExpectedVersion::Exact(2))
        .await
        .expect("deleting");
    assert_eq!(deleted.stream_version, 3);
    let is_deleted = |result: Result<(), StoreError>| {
        assert!(
            matches!(result, Err(StoreError::StreamDeleted { ref stream, version: 3 }) if *stream == a),
            "got {result:?}"
        );
    };
    for expected in [
        ExpectedVersion::Any,
        ExpectedVersion::NoStream,
        ExpectedVersion::StreamExists,
        ExpectedVersion::Exact(2),
        ExpectedVersion::Exact(3),
    ] {
        is_deleted(store.append(&a, expected, events(1)).await.map(drop));
        is_deleted(store.append(&a, expected, Vec::new()).await.map(drop));
    }
    // A batch stored before the deletion, sent again (a retry after a lost
    // reply), is still a replay: it was written.
    for expected in [ExpectedVersion::Any, ExpectedVersion::Exact(0)] {
        let again = store
            .append(&a, expected, stored.clone())
            .await
            .expect("a replay of the stored batch");
        assert!(again.idempotent_replay);
        assert_eq!(again.stream_version, 2);
    }
    let many = store
        .append_many(vec![StreamAppend::new(
            a.clone(),
            ExpectedVersion::NoStream,
            stored,
        )])
        .await
        .expect("a replay across streams");
    assert!(many[0].idempotent_replay);
    is_deleted(
        store
            .archive_stream(&a, ExpectedVersion::Any)
            .await
            .map(drop),
    );
    is_deleted(
        store
            .append_many(vec![
                StreamAppend::new(b.clone(), ExpectedVersion::Any, events(1)),
                StreamAppend::new(a.clone(), ExpectedVersion::Any, events(1)),
            ])
            .await
            .map(drop),
    );
    assert_eq!(
        whole_feed(&store).await.len(),
        3,
        "nothing more was written"
    );
    let again = store
        .delete_stream(&a, ExpectedVersion::Any)
        .await
        .expect("deleting again");
    assert!(again.idempotent_replay);
    assert_eq!(again.positions, deleted.positions);
}

/// A deleted stream's reads say so; its events stay in the feed, readable
/// by id, followed by the `$deleted` event; its snapshot is gone and none
/// can be saved again. An
/// archived stream can be deleted, and a stream that never had events can
/// be deleted to reserve its id.
pub async fn deleted_stream_reads_say_deleted<S: EventStore + SnapshotStore>(store: S) {
    let (a, b) = (stream("Order-1"), stream("Order-2"));
    let stored = append(&store, &a, ExpectedVersion::Any, events(2)).await;
    store
        .save_snapshot(Snapshot::new(a.clone(), 2, 1, serde_json::json!({})))
        .await
        .expect("saving a snapshot");
    store
        .archive_stream(&a, ExpectedVersion::Any)
        .await
        .expect("archiving");
    store
        .delete_stream(&a, ExpectedVersion::Exact(3))
        .await
        .expect("deleting an archived stream");
    let result = store.read_stream(&a, StreamRead::forward()).await;
    assert!(
        matches!(result, Err(StoreError::StreamDeleted { ref stream, version: 4 }) if *stream == a),
        "got {result:?}"
    );
    let feed = whole_feed(&store).await;
    let types: Vec<&str> = feed.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "Happened",
            "Happened",
            ARCHIVED_EVENT_TYPE,
            DELETED_EVENT_TYPE
        ]
    );
    let by_id = store
        .read_events(&[feed[0].event_id])
        .await
        .expect("reading by id");
    assert_eq!(by_id[0].position, stored.positions[0]);
    assert_eq!(store.load_snapshot(&a).await.expect("loading"), None);
    // A snapshot saved late (its command ran as the stream was deleted) is
    // refused: it cannot outlive the deletion.
    let late = store
        .save_snapshot(Snapshot::new(a.clone(), 2, 1, serde_json::json!({})))
        .await;
    assert!(
        matches!(late, Err(StoreError::StreamDeleted { ref stream, version: 4 }) if *stream == a),
        "got {late:?}"
    );
    assert_eq!(store.load_snapshot(&a).await.expect("loading"), None);

    let reserved = store
        .delete_stream(&b, ExpectedVersion::NoStream)
        .await
        .expect("deleting a stream that never existed");
    assert_eq!(reserved.stream_version, 1);
    let result = store.append(&b, ExpectedVersion::Any, events(1)).await;
    assert!(matches!(
        result,
        Err(StoreError::StreamDeleted { version: 1, .. })
    ));
}

/// Event types that start with `$` are the store's own: appends refuse
/// them.
pub async fn system_event_types_are_refused<S: EventStore>(store: S) {
    let a = stream("Order-1");
    for event_type in [DELETED_EVENT_TYPE, ARCHIVED_EVENT_TYPE, "$anything"] {
        let batch = vec![NewEvent::new(event_type, serde_json::json!({}))];
        let result = store.append(&a, ExpectedVersion::Any, batch.clone()).await;
        assert!(
            matches!(
                result,
                Err(StoreError::InvalidEvent {
                    kind: InvalidEventKind::ReservedEventType,
                    ..
                })
            ),
            "{event_type}: got {result:?}"
        );
        let many = store
            .append_many(vec![StreamAppend::new(
                a.clone(),
                ExpectedVersion::Any,
                batch,
            )])
            .await;
        assert!(
            matches!(many, Err(StoreError::InvalidEvent { .. })),
            "{event_type}: got {many:?}"
        );
    }
    assert!(whole_feed(&store).await.is_empty());
}
