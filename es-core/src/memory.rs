//! [`MemoryStore`]: the event-store contract in memory, for tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::Utc;
use uuid::Uuid;

use crate::subscription::{FollowOptions, WatchWaker, follow};
use crate::validate::{check_batch, check_version_room, encode_snapshot};
use crate::{
    AppendResult, EventStore, EventStream, ExpectedVersion, FeedFilter, IdempotencyConflictKind,
    NewEvent, Position, ReadDirection, RecordedEvent, Snapshot, SnapshotStore, StoreError,
    StoreLimits, StreamId, StreamRead,
};

/// An [`EventStore`] held in memory, with exactly the semantics of the
/// PostgreSQL store: use it in unit tests of aggregates, command handlers and
/// projections.
///
/// Cloning is cheap and shares the store.
///
/// ```
/// use es_core::{EventStore, ExpectedVersion, MemoryStore, NewEvent, StreamId, StreamRead};
/// use serde_json::json;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// let stream = StreamId::new("Order-1")?;
/// let event = NewEvent::new("OrderPlaced", json!({ "total_cents": 500 }));
/// let result = store.append(&stream, ExpectedVersion::NoStream, vec![event]).await?;
/// assert_eq!(result.stream_version, 1);
/// let events = store.read_stream(&stream, StreamRead::forward()).await?;
/// assert_eq!(events[0].event_type, "OrderPlaced");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    limits: StoreLimits,
    commits: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct State {
    /// Every event, in feed order.
    feed: Vec<RecordedEvent>,
    /// Per stream, the feed index of each event, in version order.
    streams: HashMap<StreamId, Vec<usize>>,
    /// Feed index of each event id.
    ids: HashMap<Uuid, usize>,
    /// Appends committed so far.
    commits: u64,
    /// The newest snapshot of each stream.
    snapshots: HashMap<StreamId, Snapshot>,
}

impl MemoryStore {
    /// An empty store with the default limits.
    #[must_use]
    pub fn new() -> Self {
        Self::with_limits(StoreLimits::default())
    }

    /// An empty store enforcing `limits`.
    #[must_use]
    pub fn with_limits(limits: StoreLimits) -> Self {
        let (commits, _) = tokio::sync::watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                limits,
                commits,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock, and each append mutates the
        // state only after every check passed, so a poisoned lock still
        // guards a consistent state.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl State {
    fn version(&self, stream: &StreamId) -> u64 {
        self.streams.get(stream).map_or(0, |e| e.len() as u64)
    }

    /// The earlier result if `events` is a retry of a stored batch, `None`
    /// if no id is stored, or the conflict.
    fn replay(
        &self,
        stream: &StreamId,
        events: &[NewEvent],
    ) -> Result<Option<AppendResult>, StoreError> {
        let conflict = |event_id, kind| StoreError::IdempotencyConflict {
            stream: stream.clone(),
            event_id,
            kind,
        };
        let found: Vec<Option<&RecordedEvent>> = events
            .iter()
            .map(|e| self.ids.get(&e.event_id).map(|&i| &self.feed[i]))
            .collect();
        let Some(first) = found.iter().flatten().next() else {
            return Ok(None);
        };
        if found.iter().any(Option::is_none) {
            return Err(conflict(
                first.event_id,
                IdempotencyConflictKind::PartialOverlap,
            ));
        }
        let stored: Vec<&RecordedEvent> = found.into_iter().flatten().collect();
        if let Some(elsewhere) = stored.iter().find(|e| &e.stream_id != stream) {
            return Err(conflict(
                elsewhere.event_id,
                IdempotencyConflictKind::OtherStream,
            ));
        }
        let start = stored[0].version;
        if let Some(out_of_place) = stored
            .iter()
            .zip(start..)
            .find(|(e, version)| e.version != *version)
        {
            return Err(conflict(
                out_of_place.0.event_id,
                IdempotencyConflictKind::DifferentOrder,
            ));
        }
        let positions = stored.iter().map(|e| e.position).collect();
        Ok(Some(AppendResult::new(
            start + events.len() as u64 - 1,
            positions,
            true,
        )))
    }
}

#[async_trait::async_trait]
impl EventStore for MemoryStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        check_batch(stream, &events, &self.inner.limits)?;
        let mut state = self.state();
        if let Some(result) = state.replay(stream, &events)? {
            return Ok(result);
        }
        let actual = state.version(stream);
        if !expected.is_satisfied_by(actual) {
            return Err(StoreError::WrongExpectedVersion {
                stream: stream.clone(),
                expected,
                actual,
            });
        }
        if events.is_empty() {
            return Ok(AppendResult::new(actual, Vec::new(), false));
        }
        check_version_room(stream, actual, events.len())?;
        state.commits += 1;
        let commit = state.commits;
        let recorded_at = Utc::now();
        let mut positions = Vec::with_capacity(events.len());
        for (event, version) in events.into_iter().zip(actual + 1..) {
            let index = state.feed.len();
            let position = Position::from_parts(commit, index as u64 + 1);
            positions.push(position);
            state.ids.insert(event.event_id, index);
            state.streams.entry(stream.clone()).or_default().push(index);
            state.feed.push(RecordedEvent::new(
                event,
                stream.clone(),
                version,
                position,
                recorded_at,
            ));
        }
        let version = actual + positions.len() as u64;
        drop(state);
        self.inner.commits.send_replace(commit);
        Ok(AppendResult::new(version, positions, false))
    }

    async fn read_events(&self, ids: &[Uuid]) -> Result<Vec<RecordedEvent>, StoreError> {
        let state = self.state();
        let mut found: Vec<usize> = ids
            .iter()
            .filter_map(|id| state.ids.get(id))
            .copied()
            .collect();
        found.sort_unstable();
        found.dedup();
        Ok(found.into_iter().map(|i| state.feed[i].clone()).collect())
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        read: StreamRead,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let state = self.state();
        let Some(indices) = state.streams.get(stream) else {
            return Ok(Vec::new());
        };
        let pick = |&i: &usize| state.feed[i].clone();
        let events = match read.direction {
            ReadDirection::Forward => indices
                .iter()
                .skip(
                    usize::try_from(read.from.saturating_sub(1)).map_or(indices.len(), |skip| skip),
                )
                .take(read.limit)
                .map(pick)
                .collect(),
            ReadDirection::Backward => {
                let end =
                    usize::try_from(read.from).map_or(indices.len(), |end| end.min(indices.len()));
                indices[..end]
                    .iter()
                    .rev()
                    .take(read.limit)
                    .map(pick)
                    .collect()
            }
        };
        Ok(events)
    }

    async fn read_all(
        &self,
        after: Position,
        filter: &FeedFilter,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let state = self.state();
        let start = state.feed.partition_point(|e| e.position <= after);
        Ok(state.feed[start..]
            .iter()
            .filter(|e| filter.matches(e.stream_id.as_str(), &e.event_type))
            .take(limit)
            .cloned()
            .collect())
    }

    fn subscribe(&self, after: Position, filter: FeedFilter) -> EventStream {
        let waker = WatchWaker::new(self.inner.commits.subscribe(), None);
        follow(self.clone(), after, filter, waker, FollowOptions::default())
    }

    fn limits(&self) -> StoreLimits {
        self.inner.limits
    }
}

#[async_trait::async_trait]
impl SnapshotStore for MemoryStore {
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        Ok(self.state().snapshots.get(stream).cloned())
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        encode_snapshot(&snapshot)?;
        let mut state = self.state();
        let newer = state
            .snapshots
            .get(&snapshot.stream_id)
            .is_none_or(|stored| stored.version <= snapshot.version);
        if newer {
            state.snapshots.insert(snapshot.stream_id.clone(), snapshot);
        }
        Ok(())
    }
}
