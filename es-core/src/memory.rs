//! [`MemoryStore`]: the event-store contract in memory, for tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::Utc;
use uuid::Uuid;

use crate::store::{ARCHIVED_EVENT_TYPE, DELETED_EVENT_TYPE};
use crate::subscription::{FollowOptions, WatchWaker, follow};
use crate::validate::{check_batch, check_version_room, encode_request, encode_snapshot};
use crate::{
    AppendResult, EventStore, EventStream, ExpectedVersion, FeedFilter, IdempotencyConflictKind,
    NewEvent, Position, ReadDirection, RecordedEvent, Snapshot, SnapshotStore, StoreError,
    StoreLimits, StreamAppend, StreamId, StreamRead,
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

impl State {
    /// The stream's newest event.
    fn head(&self, stream: &StreamId) -> Option<&RecordedEvent> {
        let last = self.streams.get(stream)?.last()?;
        Some(&self.feed[*last])
    }

    /// The version of the stream's `$deleted` event, if it was deleted.
    fn deleted(&self, stream: &StreamId) -> Option<u64> {
        self.head(stream)
            .filter(|e| e.event_type == DELETED_EVENT_TYPE)
            .map(|e| e.version)
    }

    /// An append request, checked and written under the lock: the replay
    /// of the whole request (a request stored before its stream was
    /// deleted is still a replay), then deleted streams, then each
    /// stream's version, then the write.
    fn write(&mut self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>, StoreError> {
        if let Some(results) = self.replay_request(&appends)? {
            return Ok(results);
        }
        if let Some((stream, version)) = appends
            .iter()
            .find_map(|a| Some((&a.stream, self.deleted(&a.stream)?)))
        {
            return Err(StoreError::StreamDeleted {
                stream: stream.clone(),
                version,
            });
        }
        for append in &appends {
            let actual = self.version(&append.stream);
            if !append.expected.is_satisfied_by(actual) {
                return Err(StoreError::WrongExpectedVersion {
                    stream: append.stream.clone(),
                    expected: append.expected,
                    actual,
                });
            }
            check_version_room(&append.stream, actual, append.events.len())?;
        }
        let commit = self.commits + 1;
        let written = appends.iter().any(|a| !a.events.is_empty());
        if written {
            self.commits = commit;
        }
        let recorded_at = Utc::now();
        let results = appends
            .into_iter()
            .map(|append| self.push(append, commit, recorded_at))
            .collect();
        Ok(results)
    }

    /// The earlier results if the request is a retry of a stored one,
    /// `None` if none of its ids is stored, or the conflict.
    fn replay_request(
        &self,
        appends: &[StreamAppend],
    ) -> Result<Option<Vec<AppendResult>>, StoreError> {
        let mut replays = Vec::with_capacity(appends.len());
        for append in appends {
            replays.push(self.replay(&append.stream, &append.events)?);
        }
        let Some(stored) = appends.iter().zip(&replays).find(|(_, r)| r.is_some()) else {
            return Ok(None);
        };
        let unstored = appends
            .iter()
            .zip(&replays)
            .any(|(a, r)| !a.events.is_empty() && r.is_none());
        if unstored {
            return Err(StoreError::IdempotencyConflict {
                stream: stored.0.stream.clone(),
                event_id: stored.0.events[0].event_id,
                kind: IdempotencyConflictKind::PartialOverlap,
            });
        }
        let results = appends
            .iter()
            .zip(replays)
            .map(|(a, replay)| {
                replay
                    .unwrap_or_else(|| AppendResult::new(self.version(&a.stream), Vec::new(), true))
            })
            .collect();
        Ok(Some(results))
    }

    /// Writes one stream's checked events as part of append `commit`.
    fn push(
        &mut self,
        append: StreamAppend,
        commit: u64,
        recorded_at: chrono::DateTime<Utc>,
    ) -> AppendResult {
        let actual = self.version(&append.stream);
        let mut positions = Vec::with_capacity(append.events.len());
        for (event, version) in append.events.into_iter().zip(actual + 1..) {
            let index = self.feed.len();
            let position = Position::from_parts(commit, index as u64 + 1);
            positions.push(position);
            self.ids.insert(event.event_id, index);
            self.streams
                .entry(append.stream.clone())
                .or_default()
                .push(index);
            self.feed.push(RecordedEvent::new(
                event,
                append.stream.clone(),
                version,
                position,
                recorded_at,
            ));
        }
        AppendResult::new(actual + positions.len() as u64, positions, false)
    }

    /// Archives or deletes `stream` by appending the `marker` event.
    fn close(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        marker: &str,
    ) -> Result<AppendResult, StoreError> {
        if let Some(head) = self.head(stream)
            && head.event_type == marker
        {
            return Ok(AppendResult::new(head.version, vec![head.position], true));
        }
        let closing = StreamAppend::new(
            stream.clone(),
            expected,
            vec![NewEvent::new(marker, serde_json::json!({}))],
        );
        let mut written = self.write(vec![closing])?;
        if marker == DELETED_EVENT_TYPE {
            self.snapshots.remove(stream);
        }
        written.pop().ok_or_else(|| StoreError::CorruptRecord {
            location: format!("the archive or deletion of {stream}"),
            reason: "no result".to_owned(),
        })
    }
}

impl MemoryStore {
    /// Runs `write` on the state, then wakes subscribers if it wrote.
    fn write_and_wake<T>(
        &self,
        write: impl FnOnce(&mut State) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut state = self.state();
        let before = state.commits;
        let result = write(&mut state);
        let commits = state.commits;
        drop(state);
        if commits != before {
            self.inner.commits.send_replace(commits);
        }
        result
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
        let request = vec![StreamAppend::new(stream.clone(), expected, events)];
        let mut results = self.write_and_wake(|state| state.write(request))?;
        results.pop().ok_or_else(|| StoreError::CorruptRecord {
            location: format!("the append to {stream}"),
            reason: "no result".to_owned(),
        })
    }

    async fn append_many(
        &self,
        appends: Vec<StreamAppend>,
    ) -> Result<Vec<AppendResult>, StoreError> {
        encode_request(&appends, &self.inner.limits)?;
        self.write_and_wake(|state| state.write(appends))
    }

    async fn archive_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<AppendResult, StoreError> {
        self.write_and_wake(|state| state.close(stream, expected, ARCHIVED_EVENT_TYPE))
    }

    async fn delete_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<AppendResult, StoreError> {
        self.write_and_wake(|state| state.close(stream, expected, DELETED_EVENT_TYPE))
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
        if let Some(head) = state.head(stream) {
            let (stream, version) = (stream.clone(), head.version);
            match head.event_type.as_str() {
                ARCHIVED_EVENT_TYPE => return Err(StoreError::StreamArchived { stream, version }),
                DELETED_EVENT_TYPE => return Err(StoreError::StreamDeleted { stream, version }),
                _ => {}
            }
        }
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
        if let Some(version) = state.deleted(&snapshot.stream_id) {
            return Err(StoreError::StreamDeleted {
                stream: snapshot.stream_id,
                version,
            });
        }
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
