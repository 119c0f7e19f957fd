//! Model-based: scripted and random sequences of appends (random expected
//! versions; fresh, colliding and re-sent event ids) give the same
//! outcomes, errors, stream contents and feed order in `PgEventStore` as in
//! `MemoryStore`.

mod common;

use common::{read_feed, runtime, stream};

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use es_core::{
    EventStore, ExpectedVersion, FeedFilter, IdempotencyConflictKind, MemoryStore, Metadata,
    NewEvent, Position, StoreError, StreamId, StreamRead,
};
use serde_json::{Value, json};
use uuid::Uuid;

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
