//! What `append` accepts, every read returns equal; what a store cannot
//! return equal, it rejects before writing, the same way on every store.
//! "Equal" is [`same_json`]: integers stay integers, floats keep their bits.

use proptest::prelude::*;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Map, Value, json};

use super::{append, assert_wrong_version, stream, whole_feed, whole_stream};
use crate::json::{MAX_JSON_DEPTH, UnstorableJson, same_json};
use crate::store::{MAX_SCHEMA_VERSION, MAX_STREAM_VERSION};
use crate::{
    EventStore, ExpectedVersion, FeedFilter, InvalidEventKind, InvalidSnapshotKind, MemoryStore,
    Metadata, NewEvent, Position, RecordedEvent, Snapshot, SnapshotStore, StoreError, StreamId,
    StreamRead,
};

/// `value` inside `depth` containers, alternating arrays and objects.
fn nested(depth: usize, value: Value) -> Value {
    (0..depth).fold(value, |inner, level| {
        if level % 2 == 0 {
            json!([inner])
        } else {
            json!({ "k": inner })
        }
    })
}

/// The deepest nesting `store` accepts.
fn depth_limit<S: EventStore>(store: &S) -> usize {
    store.limits().max_json_depth.min(MAX_JSON_DEPTH)
}

/// Asserts that `read` holds `sent`'s data and metadata, equal.
#[track_caller]
fn assert_same(sent: &NewEvent, read: &RecordedEvent, what: &str) {
    assert_eq!(read.event_id, sent.event_id, "{what}: event id");
    assert_eq!(read.schema_version, sent.schema_version, "{what}");
    assert!(
        same_json(&sent.data, &read.data),
        "{what}: data {} read back as {}",
        sent.data,
        read.data
    );
    let metadata = |m: &Metadata| serde_json::to_value(m).expect("metadata serializes");
    assert!(
        same_json(&metadata(&sent.metadata), &metadata(&read.metadata)),
        "{what}: metadata {:?} read back as {:?}",
        sent.metadata,
        read.metadata
    );
}

/// Appends `sent` as one batch to a new stream and checks that the stream
/// and the feed return each event equal.
async fn assert_round_trip<S: EventStore>(store: &S, id: &StreamId, sent: Vec<NewEvent>) {
    append(store, id, ExpectedVersion::NoStream, sent.clone()).await;
    let read = whole_stream(store, id).await;
    assert_eq!(read.len(), sent.len(), "{id}: events read back");
    for (n, (sent, read)) in sent.iter().zip(&read).enumerate() {
        assert_same(sent, read, &format!("{id} event {n} (stream read)"));
    }
    let category = FeedFilter::all().category(id.category());
    let feed = store
        .read_all(Position::START, &category, usize::MAX)
        .await
        .expect("reading the feed");
    let feed: Vec<&RecordedEvent> = feed.iter().filter(|e| &e.stream_id == id).collect();
    assert_eq!(feed.len(), sent.len(), "{id}: events in the feed");
    for (n, (sent, read)) in sent.iter().zip(feed).enumerate() {
        assert_same(sent, read, &format!("{id} event {n} (feed)"));
    }
}

/// Asserts that `result` refused the event at `index` as unstorable, in
/// `part`, for `reason`.
#[track_caller]
fn assert_unstorable<T: std::fmt::Debug>(
    result: Result<T, StoreError>,
    index: usize,
    part: &str,
    reason: &dyn Fn(&UnstorableJson) -> bool,
) {
    match result {
        Err(StoreError::InvalidEvent {
            index: i,
            kind:
                InvalidEventKind::Unstorable {
                    part: p,
                    reason: ref r,
                },
            ..
        }) if i == index && p == part && reason(r) => {}
        other => panic!("expected event {index}'s {part} refused as unstorable, got {other:?}"),
    }
}

/// Data and metadata nested exactly as deep as the store's limit read back
/// equal; one level deeper (and 200 levels) is refused with the event's
/// index, and nothing of the batch is written.
pub async fn json_nesting_at_the_limit_reads_back_and_deeper_is_rejected<S: EventStore>(store: S) {
    let limit = depth_limit(&store);
    let ok = stream("Deep-1");
    let at_limit = vec![
        NewEvent::new("Deep", nested(limit, json!("leaf"))),
        NewEvent::new("Deep", json!({})).with_metadata(
            // The metadata object and its `custom` map count as two levels.
            Metadata::default().with_custom("v", nested(limit - 2, json!(1.5))),
        ),
    ];
    assert_round_trip(&store, &ok, at_limit).await;

    let bad = stream("Deep-2");
    for (batch, index, part) in
        [
            (
                vec![
                    NewEvent::new("Deep", json!(1)),
                    NewEvent::new("Deep", nested(limit + 1, json!(1))),
                ],
                1,
                "data",
            ),
            (
                vec![NewEvent::new("Deep", nested(200, json!(1)))],
                0,
                "data",
            ),
            (
                vec![NewEvent::new("Deep", json!({})).with_metadata(
                    Metadata::default().with_custom("v", nested(limit - 1, json!(1))),
                )],
                0,
                "metadata",
            ),
        ]
    {
        let result = store.append(&bad, ExpectedVersion::Any, batch).await;
        assert_unstorable(result, index, part, &|r| {
            *r == UnstorableJson::TooDeep { max: limit }
        });
    }
    assert!(whole_stream(&store, &bad).await.is_empty());
}

/// The extreme finite floats, large and small exponents and floats with
/// integral values read back as the same floats (not as integers).
pub async fn extreme_floats_read_back_equal<S: EventStore>(store: S) {
    let floats = [
        f64::MAX,
        f64::MIN,
        f64::MIN_POSITIVE,
        5e-324,
        -5e-324,
        f64::EPSILON,
        1e16,
        -1e16,
        1e21,
        1e300,
        1e-300,
        1e-7,
        0.1,
        0.0,
        1.0,
        -3.0,
        9_007_199_254_740_993.0,
        123_456.789e10,
        std::f64::consts::PI,
    ];
    let data = json!({ "floats": floats, "one": 1e16 });
    let metadata = Metadata::default().with_custom("f", json!(floats));
    let sent = vec![NewEvent::new("Floats", data).with_metadata(metadata)];
    assert_round_trip(&store, &stream("Float-1"), sent).await;
}

/// `-0.0`, which reads back as `0.0` from a decimal, is refused wherever it
/// is, naming the path; nothing is written.
pub async fn negative_zero_is_rejected<S: EventStore>(store: S) {
    let s = stream("Zero-1");
    let path = |expected: &'static str| move |r: &UnstorableJson| matches!(r, UnstorableJson::NegativeZero { path } if path == expected);
    let result = store
        .append(
            &s,
            ExpectedVersion::Any,
            vec![
                NewEvent::new("Zero", json!({ "a": 0.0 })),
                NewEvent::new("Zero", json!({ "a": [1, { "b": -0.0 }] })),
            ],
        )
        .await;
    assert_unstorable(result, 1, "data", &path("/a/1/b"));
    let result = store
        .append(
            &s,
            ExpectedVersion::Any,
            vec![NewEvent::new("Zero", json!(-0.0))],
        )
        .await;
    assert_unstorable(result, 0, "data", &path(""));
    let in_metadata = NewEvent::new("Zero", json!({}))
        .with_metadata(Metadata::default().with_custom("z", json!([-0.0])));
    let result = store
        .append(&s, ExpectedVersion::Any, vec![in_metadata])
        .await;
    assert_unstorable(result, 0, "metadata", &path("/custom/z/0"));
    assert!(whole_stream(&store, &s).await.is_empty());
}

/// Integers at the edges of `i64` and `u64` read back as the same
/// integers; numbers beyond them (which JSON values hold as floats) read
/// back as the same floats.
pub async fn integers_at_the_edges_read_back_equal<S: EventStore>(store: S) {
    let data = json!({
        "integers": [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX, MAX_STREAM_VERSION + 1, u64::MAX,
                     9_007_199_254_740_993_u64],
        "beyond": [18_446_744_073_709_551_616.0, 1e20, -9_223_372_036_854_775_809.0, -1e19],
    });
    let sent = vec![NewEvent::new("Integers", data)];
    assert_round_trip(&store, &stream("Int-1"), sent).await;
}

/// Long strings holding every JSON escape, every control character but NUL,
/// and unicode of every width read back equal, in values and in keys.
pub async fn long_strings_with_every_escape_read_back_equal<S: EventStore>(store: S) {
    let controls: String = (1u8..0x20).map(char::from).collect();
    let every =
        format!("{controls}\"\\/\u{7f}\u{80}\u{2028}\u{2029}\u{feff}\u{fffd}é中😀\u{10ffff}'$1%s");
    let long = every.repeat(500);
    let mut object = Map::new();
    object.insert(every.clone(), json!(every));
    object.insert(String::new(), json!(""));
    object.insert(long.clone(), json!([long.clone(), every.clone()]));
    let metadata = Metadata::default()
        .with_correlation_id(every.clone())
        .with_actor(long.clone())
        .with_custom(every.clone(), json!(long));
    let sent = vec![NewEvent::new("Strings", Value::Object(object)).with_metadata(metadata)];
    assert_round_trip(&store, &stream("Text-1"), sent).await;
}

/// Schema versions 1 and [`MAX_SCHEMA_VERSION`] read back; above it an
/// event is refused (never clamped) and nothing is written.
pub async fn schema_versions_at_the_edges<S: EventStore>(store: S) {
    let s = stream("Schema-1");
    let sent = vec![
        NewEvent::new("V", json!({})).with_schema_version(1),
        NewEvent::new("V", json!({})).with_schema_version(MAX_SCHEMA_VERSION),
    ];
    assert_round_trip(&store, &s, sent).await;
    let over = stream("Schema-2");
    for version in [MAX_SCHEMA_VERSION + 1, u32::MAX] {
        let batch = vec![
            NewEvent::new("V", json!({})),
            NewEvent::new("V", json!({})).with_schema_version(version),
        ];
        match store.append(&over, ExpectedVersion::Any, batch).await {
            Err(StoreError::InvalidEvent {
                index: 1,
                kind: InvalidEventKind::SchemaVersionTooLarge { version: v, max },
                ..
            }) if v == version && max == MAX_SCHEMA_VERSION => {}
            other => panic!("schema version {version}: expected a refusal, got {other:?}"),
        }
    }
    assert!(whole_stream(&store, &over).await.is_empty());
}

/// Snapshots at stream version [`MAX_STREAM_VERSION`] and format version
/// [`MAX_SCHEMA_VERSION`] read back, their states equal; past either, or at
/// stream version 0, or with a state no store could read back equal, a
/// snapshot is refused and nothing is written.
pub async fn snapshots_at_the_edges<S: SnapshotStore>(store: S) {
    let s = stream("Schema-1");
    let state = json!({ "f": 1e16, "i": u64::MAX, "s": "\u{1}" });
    let kept = Snapshot::new(
        s.clone(),
        MAX_STREAM_VERSION,
        MAX_SCHEMA_VERSION,
        state.clone(),
    );
    store.save_snapshot(kept).await.expect("saving a snapshot");
    let loaded = store
        .load_snapshot(&s)
        .await
        .expect("loading the snapshot")
        .expect("a snapshot");
    assert_eq!(
        (loaded.version, loaded.schema_version),
        (MAX_STREAM_VERSION, MAX_SCHEMA_VERSION)
    );
    assert!(
        same_json(&state, &loaded.data),
        "{} read back as {}",
        state,
        loaded.data
    );
    let refused = [
        Snapshot::new(s.clone(), 0, 1, json!({})),
        Snapshot::new(s.clone(), MAX_STREAM_VERSION + 1, 1, json!({})),
        Snapshot::new(s.clone(), u64::MAX, 1, json!({})),
        Snapshot::new(s.clone(), 1, MAX_SCHEMA_VERSION + 1, json!({})),
        Snapshot::new(s.clone(), 1, 1, json!({ "z": -0.0 })),
        Snapshot::new(s.clone(), 1, 1, nested(MAX_JSON_DEPTH + 1, json!(1))),
    ];
    for snapshot in refused {
        let what = format!(
            "snapshot v{} format {}",
            snapshot.version, snapshot.schema_version
        );
        match store.save_snapshot(snapshot).await {
            Err(StoreError::InvalidSnapshot { stream, kind }) => {
                assert_eq!(stream, s, "{what}");
                assert!(
                    matches!(
                        kind,
                        InvalidSnapshotKind::VersionOutOfRange { .. }
                            | InvalidSnapshotKind::SchemaVersionTooLarge { .. }
                            | InvalidSnapshotKind::Unstorable(_)
                    ),
                    "{what}: {kind:?}"
                );
            }
            other => panic!("{what}: expected InvalidSnapshot, got {other:?}"),
        }
    }
    let still = store
        .load_snapshot(&s)
        .await
        .expect("loading")
        .expect("kept");
    assert_eq!(still.version, MAX_STREAM_VERSION, "refusals wrote nothing");
}

/// `Exact(n)` past [`MAX_STREAM_VERSION`] never passes: it is a wrong
/// expected version with the actual version (never a storage error), and a
/// retry of a stored batch under it is still recognised. Reads from
/// versions and positions past every stored one return nothing (forward)
/// or everything (backward).
pub async fn exact_and_reads_at_the_edges<S: EventStore>(store: S) {
    let s = stream("Edge-1");
    let huge = [MAX_STREAM_VERSION, MAX_STREAM_VERSION + 1, u64::MAX];
    for n in huge {
        let r = store
            .append(
                &s,
                ExpectedVersion::Exact(n),
                vec![NewEvent::new("E", json!(1))],
            )
            .await;
        assert_wrong_version(r, &s, ExpectedVersion::Exact(n), 0);
    }
    let batch = vec![NewEvent::new("E", json!(1)), NewEvent::new("E", json!(2))];
    let first = append(&store, &s, ExpectedVersion::NoStream, batch.clone()).await;
    for n in huge {
        let r = store
            .append(
                &s,
                ExpectedVersion::Exact(n),
                vec![NewEvent::new("E", json!(3))],
            )
            .await;
        assert_wrong_version(r, &s, ExpectedVersion::Exact(n), 2);
        let empty = store
            .append(&s, ExpectedVersion::Exact(n), Vec::new())
            .await;
        assert_wrong_version(empty, &s, ExpectedVersion::Exact(n), 2);
        let retry = store
            .append(&s, ExpectedVersion::Exact(n), batch.clone())
            .await
            .expect("a retry of a stored batch");
        assert!(retry.idempotent_replay);
        assert_eq!(retry.positions, first.positions);
    }
    for from in [MAX_STREAM_VERSION + 1, u64::MAX] {
        let forward = StreamRead::forward().from_version(from);
        assert!(
            store
                .read_stream(&s, forward)
                .await
                .expect("read")
                .is_empty()
        );
        let backward = StreamRead::backward().from_version(from).limit(usize::MAX);
        let read = store.read_stream(&s, backward).await.expect("read");
        assert_eq!(read.iter().map(|e| e.version).collect::<Vec<_>>(), [2, 1]);
    }
    for after in [
        Position::from_parts(u64::MAX, u64::MAX),
        Position::from_parts(MAX_STREAM_VERSION + 1, 0),
    ] {
        let all = FeedFilter::all();
        assert!(
            store
                .read_all(after, &all, usize::MAX)
                .await
                .expect("read")
                .is_empty()
        );
        let page = store.read_feed(after, &all, 10).await.expect("read");
        assert!(page.events.is_empty() && !page.more);
    }
    // A position past every sequence of the first event's transaction
    // reads on from the next transaction.
    let past = Position::from_parts(first.positions[1].commit(), u64::MAX);
    let after_first = store
        .read_all(past, &FeedFilter::all(), 10)
        .await
        .expect("read");
    assert!(after_first.iter().all(|e| e.position > first.positions[1]));
    assert_eq!(whole_feed(&store).await.len(), 2);
}

/// Values the property test generates: scalars of every kind and edge,
/// strings of any characters (NUL included), wide and nested containers,
/// and a few nested deeper than any limit.
fn arbitrary_json() -> impl Strategy<Value = Value> {
    let float = prop_oneof![
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
        prop::sample::select(vec![
            -0.0,
            0.0,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            5e-324,
            1e16,
            1e21,
            1e-7,
        ]),
        (-1e6..1e6f64).prop_map(f64::trunc),
    ]
    .prop_map(|f| json!(f));
    let text = prop_oneof![
        any::<String>(),
        "[\"\\\\/\u{1}-\u{1f}\u{0}a-zé中😀\u{2028}]{0,40}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<u64>().prop_map(|u| json!(u)),
        float,
        text.clone().prop_map(Value::String),
    ];
    let tree = leaf.clone().prop_recursive(6, 96, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(text.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    let deep = (1..=MAX_JSON_DEPTH + 10, leaf).prop_map(|(depth, v)| nested(depth, v));
    prop_oneof![8 => tree, 1 => deep]
}

/// What a store did with one value: the values read back, or the refusal.
fn verdict(result: Result<(), StoreError>) -> Result<(), String> {
    result.map_err(|error| error.to_string())
}

/// Values generated at random (scalars of every kind and edge, strings of
/// any characters, wide, nested and too deep containers; 2,000 per run, each as
/// an event's data, and one in four also in its metadata) are either
/// refused by this store and by [`MemoryStore`] with the same error, or read
/// back equal from both, through a stream read and the feed. The seed is in
/// the failure message; `ES_JSON_SEED` replays it.
pub async fn arbitrary_json_reads_back_equal_or_is_rejected_alike<S: EventStore>(store: S) {
    const VALUES: usize = 2_000;
    let seed: u64 = std::env::var("ES_JSON_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| uuid::Uuid::new_v4().as_u64_pair().0);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    );
    let strategy = arbitrary_json();
    let values: Vec<Value> = (0..VALUES)
        .map(|_| {
            strategy
                .new_tree(&mut runner)
                .expect("generating a value")
                .current()
        })
        .collect();
    let reference = MemoryStore::with_limits(store.limits());
    let s = stream("Arbitrary-1");
    let mut accepted = Vec::new();
    for (n, value) in values.into_iter().enumerate() {
        let mut event = NewEvent::new("Arbitrary", value.clone());
        if n % 4 == 0 {
            event = event.with_metadata(Metadata::default().with_custom("v", value));
        }
        let here = verdict(
            store
                .append(&s, ExpectedVersion::Any, vec![event.clone()])
                .await
                .map(drop),
        );
        let there = verdict(
            reference
                .append(&s, ExpectedVersion::Any, vec![event.clone()])
                .await
                .map(drop),
        );
        assert_eq!(
            here, there,
            "seed {seed}, value {n}: the stores disagree on {:?}",
            event.data
        );
        if here.is_ok() {
            accepted.push(event);
        }
    }
    for source in [&store as &dyn EventStore, &reference] {
        let read = source
            .read_stream(&s, StreamRead::forward())
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: reading back: {e}"));
        let feed = source
            .read_all(Position::START, &FeedFilter::all(), usize::MAX)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: reading the feed: {e}"));
        assert_eq!(read.len(), accepted.len(), "seed {seed}");
        assert_eq!(feed.len(), accepted.len(), "seed {seed}");
        for (sent, (read, fed)) in accepted.iter().zip(read.iter().zip(&feed)) {
            assert_same(sent, read, &format!("seed {seed}"));
            assert_same(sent, fed, &format!("seed {seed} (feed)"));
        }
    }
}
