//! [`Hooked`]: a store that forwards every call to another one, with hooks
//! around appends and stream reads, so that a test can make a store
//! misbehave (lose a reply, let another writer in first) or count what it
//! reads without writing a whole store.

use uuid::Uuid;

use crate::{
    AppendResult, EventStore, EventStream, ExpectedVersion, FeedFilter, FeedPage, NewEvent,
    Position, RecordedEvent, Snapshot, SnapshotStore, StoreError, StoreLimits, StreamAppend,
    StreamId, StreamRead,
};

/// What a [`Hooked`] store does around the calls it forwards to its inner
/// store `S`. Every hook does nothing by default.
#[async_trait::async_trait]
pub trait Hooks<S: Sync>: Send + Sync {
    /// Runs before an append reaches the inner store.
    ///
    /// # Errors
    ///
    /// An error fails the append without reaching the inner store.
    async fn before_append(&self, inner: &S, stream: &StreamId) -> Result<(), StoreError> {
        let _ = (inner, stream);
        Ok(())
    }

    /// Turns the inner store's answer to an append into the caller's.
    async fn after_append(
        &self,
        inner: &S,
        result: Result<AppendResult, StoreError>,
    ) -> Result<AppendResult, StoreError> {
        let _ = inner;
        result
    }

    /// Sees the events a stream read returns.
    fn after_read_stream(&self, events: &[RecordedEvent]) {
        let _ = events;
    }

    /// Turns the events of a stream read that is not
    /// [`latest`](StreamRead::latest) into the caller's: a hook that drops
    /// the newest ones plays a replica that has not replayed them yet.
    fn lagging_read(&self, events: Vec<RecordedEvent>) -> Vec<RecordedEvent> {
        events
    }

    /// Whether the store says its reads may lag (by default, as the inner
    /// store says).
    fn reads_may_lag(&self, inner: &S) -> bool
    where
        S: EventStore,
    {
        inner.reads_may_lag()
    }
}

/// A store that forwards every call to `inner`, running `hooks` around
/// appends and stream reads.
#[derive(Debug, Clone)]
pub struct Hooked<S, H> {
    /// The store that does the work.
    pub inner: S,
    /// What happens around it.
    pub hooks: H,
}

impl<S, H> Hooked<S, H> {
    /// `inner` with `hooks`.
    pub fn new(inner: S, hooks: H) -> Self {
        Self { inner, hooks }
    }
}

#[async_trait::async_trait]
impl<S: EventStore, H: Hooks<S>> EventStore for Hooked<S, H> {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        self.hooks.before_append(&self.inner, stream).await?;
        let result = self.inner.append(stream, expected, events).await;
        self.hooks.after_append(&self.inner, result).await
    }

    async fn append_many(
        &self,
        appends: Vec<StreamAppend>,
    ) -> Result<Vec<AppendResult>, StoreError> {
        for append in &appends {
            self.hooks
                .before_append(&self.inner, &append.stream)
                .await?;
        }
        self.inner.append_many(appends).await
    }

    async fn archive_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<AppendResult, StoreError> {
        self.inner.archive_stream(stream, expected).await
    }

    async fn delete_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<AppendResult, StoreError> {
        self.inner.delete_stream(stream, expected).await
    }

    async fn read_events(&self, ids: &[Uuid]) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_events(ids).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        read: StreamRead,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut events = self.inner.read_stream(stream, read).await?;
        if !read.latest {
            events = self.hooks.lagging_read(events);
        }
        self.hooks.after_read_stream(&events);
        Ok(events)
    }

    async fn read_all(
        &self,
        after: Position,
        filter: &FeedFilter,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(after, filter, limit).await
    }

    async fn read_feed(
        &self,
        after: Position,
        filter: &FeedFilter,
        limit: usize,
    ) -> Result<FeedPage, StoreError> {
        self.inner.read_feed(after, filter, limit).await
    }

    fn subscribe(&self, after: Position, filter: FeedFilter) -> EventStream {
        self.inner.subscribe(after, filter)
    }

    fn limits(&self) -> StoreLimits {
        self.inner.limits()
    }

    fn reads_may_lag(&self) -> bool {
        self.hooks.reads_may_lag(&self.inner)
    }
}

#[async_trait::async_trait]
impl<S: SnapshotStore, H: Send + Sync> SnapshotStore for Hooked<S, H> {
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        self.inner.load_snapshot(stream).await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.inner.save_snapshot(snapshot).await
    }
}
