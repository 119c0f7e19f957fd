//! The event-store contract: [`EventStore`] and its vocabulary.

use std::fmt;
use std::pin::Pin;

use futures::Stream;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{NewEvent, Position, RecordedEvent, StoreError, StreamId};

/// The outcome the caller expects of a stream's version before an append.
///
/// | Expected | Passes when |
/// |---|---|
/// | `Any` | always |
/// | `NoStream` | the stream has no events |
/// | `StreamExists` | the stream has at least one event |
/// | `Exact(n)` | the stream's version is exactly `n` (`Exact(0)`: empty) |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must have no events.
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream's version must be exactly this.
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream at version `actual` passes the check.
    #[must_use]
    pub fn is_satisfied_by(self, actual: u64) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => actual == 0,
            Self::StreamExists => actual > 0,
            Self::Exact(expected) => actual == expected,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any version"),
            Self::NoStream => f.write_str("no stream"),
            Self::StreamExists => f.write_str("an existing stream"),
            Self::Exact(version) => write!(f, "version {version}"),
        }
    }
}

/// The direction of a stream read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReadDirection {
    /// Oldest first.
    #[default]
    Forward,
    /// Newest first.
    Backward,
}

/// What part of a stream to read: a direction, the version to start from
/// (inclusive) and the most events to return.
///
/// ```
/// use es_core::StreamRead;
///
/// // Versions 5, 6, 7.
/// let tail = StreamRead::forward().from_version(5).limit(3);
/// // The last event.
/// let last = StreamRead::backward().limit(1);
/// # let _ = (tail, last);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct StreamRead {
    /// Direction of the read.
    pub direction: ReadDirection,
    /// First version to return (forward: at least this; backward: at most
    /// this).
    pub from: u64,
    /// Most events to return.
    pub limit: usize,
    /// Whether the read must include every event committed before it
    /// began. A store that serves reads from a replica
    /// ([`EventStore::reads_may_lag`]) serves such a read from the primary;
    /// every other store reads the same either way.
    pub latest: bool,
}

impl StreamRead {
    /// The whole stream, oldest first.
    #[must_use]
    pub const fn forward() -> Self {
        Self {
            direction: ReadDirection::Forward,
            from: 0,
            limit: usize::MAX,
            latest: false,
        }
    }

    /// The whole stream, newest first.
    #[must_use]
    pub const fn backward() -> Self {
        Self {
            direction: ReadDirection::Backward,
            from: u64::MAX,
            limit: usize::MAX,
            latest: false,
        }
    }

    /// Starts at `version` (inclusive).
    #[must_use]
    pub const fn from_version(mut self, version: u64) -> Self {
        self.from = version;
        self
    }

    /// Returns at most `limit` events.
    #[must_use]
    pub const fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Sets [`latest`](Self::latest): the read sees every event committed
    /// before it began, even on a store that reads from a replica.
    #[must_use]
    pub const fn latest(mut self) -> Self {
        self.latest = true;
        self
    }

    /// Whether an event at `version` lies in the read's range (ignoring the
    /// limit).
    #[must_use]
    pub fn includes(&self, version: u64) -> bool {
        match self.direction {
            ReadDirection::Forward => version >= self.from,
            ReadDirection::Backward => version <= self.from,
        }
    }
}

impl Default for StreamRead {
    fn default() -> Self {
        Self::forward()
    }
}

/// A page of the global feed, from [`EventStore::read_feed`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FeedPage {
    /// The events that passed the filter, in feed order.
    pub events: Vec<RecordedEvent>,
    /// Where the next read starts: the last event's position, or a later one
    /// when the store examined events after it that did not pass the filter
    /// (never beyond an event that might still pass it).
    pub next: Position,
    /// Whether more may follow at once: the page is full, or the store
    /// stopped examining before the end of the feed. When false, the
    /// follower has caught up and waits for new events.
    pub more: bool,
}

impl FeedPage {
    /// A page of `events`, read after `after` with `limit`, for a store that
    /// examines the feed to its end: `next` is the last event's position and
    /// `more` whether the page is full.
    #[must_use]
    pub fn of_events(after: Position, events: Vec<RecordedEvent>, limit: usize) -> Self {
        let next = events.last().map_or(after, |e| e.position);
        let more = !events.is_empty() && events.len() >= limit;
        Self { events, next, more }
    }

    /// A page that examined the feed up to `next` (inclusive).
    #[must_use]
    pub fn new(events: Vec<RecordedEvent>, next: Position, more: bool) -> Self {
        Self { events, next, more }
    }
}

/// Which events of the global feed to return. Empty lists mean "all"; both
/// lists together mean events matching both.
///
/// ```
/// use es_core::FeedFilter;
///
/// let filter = FeedFilter::all()
///     .category("Order")
///     .event_types(["OrderPlaced", "OrderShipped"]);
/// assert!(filter.matches("Order-1", "OrderPlaced"));
/// assert!(!filter.matches("Order-1", "OrderPaid"));
/// assert!(!filter.matches("Customer-1", "OrderPlaced"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct FeedFilter {
    /// Stream categories to include; empty: all.
    pub categories: Vec<String>,
    /// Event types to include; empty: all.
    pub event_types: Vec<String>,
}

impl FeedFilter {
    /// Every event.
    #[must_use]
    pub fn all() -> Self {
        Self::default()
    }

    /// Also includes the stream category `category`.
    #[must_use]
    pub fn category(mut self, category: impl Into<String>) -> Self {
        self.categories.push(category.into());
        self
    }

    /// Also includes the event types `types`.
    #[must_use]
    pub fn event_types<I, T>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.event_types.extend(types.into_iter().map(Into::into));
        self
    }

    /// Whether the filter lets everything through.
    #[must_use]
    pub fn is_all(&self) -> bool {
        self.categories.is_empty() && self.event_types.is_empty()
    }

    /// Whether an event of `event_type` in stream `stream_id` passes.
    #[must_use]
    pub fn matches(&self, stream_id: &str, event_type: &str) -> bool {
        let category = crate::stream_id::category_of(stream_id);
        (self.categories.is_empty() || self.categories.iter().any(|c| c == category))
            && (self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type))
    }
}

/// The result of a successful append.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AppendResult {
    /// The stream's version after the append: the version of its last event
    /// (for an empty batch, the version that was checked).
    pub stream_version: u64,
    /// The feed position of each appended event, in batch order.
    pub positions: Vec<Position>,
    /// Whether the batch had been stored before and this call wrote nothing.
    pub idempotent_replay: bool,
}

impl AppendResult {
    /// The result of an append. Meant for store implementations.
    #[must_use]
    pub fn new(stream_version: u64, positions: Vec<Position>, idempotent_replay: bool) -> Self {
        Self {
            stream_version,
            positions,
            idempotent_replay,
        }
    }

    /// The version of the batch's first event (for an empty batch, one past
    /// the stream's version).
    #[must_use]
    pub fn first_version(&self) -> u64 {
        self.stream_version + 1 - self.positions.len() as u64
    }

    /// The versions the batch's events have, in order.
    #[must_use]
    pub fn versions(&self) -> std::ops::RangeInclusive<u64> {
        self.first_version()..=self.stream_version
    }
}

/// One stream's part of an append across streams
/// ([`EventStore::append_many`]): the stream, the version it must have, and
/// its events (none: only the version is checked).
///
/// ```
/// use es_core::{ExpectedVersion, NewEvent, StreamAppend, StreamId};
/// use serde_json::json;
///
/// let order = StreamId::new("Order-7")?;
/// let coupon = StreamId::new("Coupon-SPRING")?;
/// let request = vec![
///     StreamAppend::new(order, ExpectedVersion::Exact(3), vec![
///         NewEvent::new("CouponApplied", json!({ "code": "SPRING" })),
///     ]),
///     StreamAppend::new(coupon, ExpectedVersion::NoStream, vec![
///         NewEvent::new("CouponRedeemed", json!({ "order": "7" })),
///     ]),
/// ];
/// # let _ = request;
/// # Ok::<(), es_core::StreamIdError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StreamAppend {
    /// The stream appended to.
    pub stream: StreamId,
    /// The version the stream must have.
    pub expected: ExpectedVersion,
    /// Its events, in order.
    pub events: Vec<NewEvent>,
}

impl StreamAppend {
    /// Appends `events` to `stream` if its version satisfies `expected`.
    #[must_use]
    pub fn new(stream: StreamId, expected: ExpectedVersion, events: Vec<NewEvent>) -> Self {
        Self {
            stream,
            expected,
            events,
        }
    }
}

/// The event type of the event that [`EventStore::archive_stream`] appends.
pub const ARCHIVED_EVENT_TYPE: &str = "$archived";

/// The event type of the event that [`EventStore::delete_stream`] appends.
pub const DELETED_EVENT_TYPE: &str = "$deleted";

/// Whether `event_type` is one that only a store writes: it starts with `$`
/// (see [`ARCHIVED_EVENT_TYPE`], [`DELETED_EVENT_TYPE`]). Appends refuse
/// such types, and a [`Repository`](crate::Repository) does not hand such
/// events to an aggregate.
#[must_use]
pub fn is_system_event_type(event_type: &str) -> bool {
    event_type.starts_with('$')
}

/// The highest stream version a store keeps (PostgreSQL's `bigint`): an
/// append that would pass it is refused, and an `Exact` expectation above
/// it never passes.
pub const MAX_STREAM_VERSION: u64 = i64::MAX.unsigned_abs();

/// The highest schema version a store keeps (PostgreSQL's `integer`), for
/// events and snapshots alike.
pub const MAX_SCHEMA_VERSION: u32 = i32::MAX.unsigned_abs();

/// Size limits checked before an append touches storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreLimits {
    /// Largest event: bytes of serialized data plus metadata (default 1 MiB).
    pub max_event_bytes: usize,
    /// Most events in one append (default 10,000).
    pub max_batch_events: usize,
    /// Largest batch: the sum of its events' sizes (default 16 MiB).
    pub max_batch_bytes: usize,
    /// Longest event type name in bytes (default 255).
    pub max_event_type_bytes: usize,
    /// Deepest nesting of arrays and objects in an event's data, or in its
    /// metadata counting the metadata object and its `custom` map (default
    /// 64). At most [`MAX_JSON_DEPTH`](crate::json::MAX_JSON_DEPTH), the
    /// deepest a store can read back: a larger setting counts as that.
    pub max_json_depth: usize,
}

impl StoreLimits {
    /// Sets [`max_event_bytes`](Self::max_event_bytes).
    #[must_use]
    pub const fn max_event_bytes(mut self, bytes: usize) -> Self {
        self.max_event_bytes = bytes;
        self
    }

    /// Sets [`max_batch_events`](Self::max_batch_events).
    #[must_use]
    pub const fn max_batch_events(mut self, events: usize) -> Self {
        self.max_batch_events = events;
        self
    }

    /// Sets [`max_batch_bytes`](Self::max_batch_bytes).
    #[must_use]
    pub const fn max_batch_bytes(mut self, bytes: usize) -> Self {
        self.max_batch_bytes = bytes;
        self
    }

    /// Sets [`max_json_depth`](Self::max_json_depth).
    #[must_use]
    pub const fn max_json_depth(mut self, depth: usize) -> Self {
        self.max_json_depth = depth;
        self
    }
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_event_bytes: 1024 * 1024,
            max_batch_events: 10_000,
            max_batch_bytes: 16 * 1024 * 1024,
            max_event_type_bytes: 255,
            max_json_depth: 64,
        }
    }
}

/// A live feed of recorded events, as returned by [`EventStore::subscribe`].
pub type EventStream = Pin<Box<dyn Stream<Item = Result<RecordedEvent, StoreError>> + Send>>;

/// An append-only store of event streams with a global feed.
///
/// Every implementation follows the same contract, written down as the
/// conformance suite in [`testing::conformance`](crate::testing) (feature
/// `testing`): optimistic concurrency by [`ExpectedVersion`], atomic batches
/// with contiguous versions, idempotent appends by event id, and a global feed
/// that yields every committed event exactly once in a stable order.
#[async_trait::async_trait]
pub trait EventStore: Send + Sync {
    /// Appends `events` to `stream` as one atomic batch, if the stream's
    /// version satisfies `expected`.
    ///
    /// If every event id of the batch is already stored, contiguously and in
    /// this order, in this stream, nothing is written and the first append's
    /// result is returned with `idempotent_replay` set, whatever `expected`
    /// says; so a caller may retry after a timeout. An empty batch only
    /// checks the version.
    ///
    /// # Errors
    ///
    /// - [`StoreError::WrongExpectedVersion`] when the check fails;
    /// - [`StoreError::IdempotencyConflict`] when only some ids are stored, or
    ///   they are stored elsewhere;
    /// - [`StoreError::InvalidEvent`], [`StoreError::EventTooLarge`],
    ///   [`StoreError::BatchTooLarge`] before any I/O (see
    ///   [`backend::check_batch`](crate::backend::check_batch): among
    ///   others, a value that could not be read back equal is refused here);
    /// - [`StoreError::StreamVersionOverflow`] when the batch would take the
    ///   stream past [`MAX_STREAM_VERSION`];
    /// - [`StoreError::Backend`] or [`StoreError::Timeout`] when storage
    ///   fails; the append may then have happened, and a retry with the same
    ///   event ids is safe.
    ///
    /// In all error cases but the last, nothing was written.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may or may not leave the batch written; retry with
    /// the same event ids to find out.
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError>;

    /// Appends to several streams as one atomic request: every stream's
    /// events are written, or none. Each stream's version is checked as
    /// [`append`](Self::append) checks it; the events of the whole request
    /// are contiguous in the feed, in request order (the first stream's,
    /// then the second's, ...). A stream without events in the request is
    /// only checked: a way to write one stream on the condition that
    /// another has not changed.
    ///
    /// Returns one [`AppendResult`] per stream, in request order. An empty
    /// request writes nothing and returns no result.
    ///
    /// Idempotency holds for the request as a whole: if every stream's
    /// events are already stored (each stream's as `append` would recognize
    /// them), nothing is written and the first results are returned with
    /// `idempotent_replay` set, whatever the expected versions say (a
    /// stream without events then reports its current version). A request
    /// of which only some events are stored is an
    /// [`StoreError::IdempotencyConflict`] (`PartialOverlap`).
    ///
    /// Stores lock the streams of a request in one fixed order, so requests
    /// over overlapping streams never deadlock, whatever order they name
    /// the streams in.
    ///
    /// # Errors
    ///
    /// As [`append`](Self::append), naming the first stream (in request
    /// order) that failed; and [`StoreError::RepeatedStream`] when a stream
    /// appears twice. The size limits apply to each stream's events and to
    /// the request as a whole. In every case but a transient one, nothing
    /// was written.
    ///
    /// # Cancel safety
    ///
    /// As [`append`](Self::append): retry with the same event ids.
    async fn append_many(
        &self,
        appends: Vec<StreamAppend>,
    ) -> Result<Vec<AppendResult>, StoreError>;

    /// Archives `stream` (a soft delete), if its version satisfies
    /// `expected`: the store appends an event of type
    /// [`ARCHIVED_EVENT_TYPE`] to it, with empty data and the next version.
    ///
    /// - Reads of an archived stream fail with [`StoreError::StreamArchived`],
    ///   which carries its version.
    /// - Its events stay in the feed, followed by the `$archived` event.
    /// - An append to it (with an expected version that the `$archived`
    ///   event's version satisfies) restores it: its versions continue,
    ///   and reads return every event again, the `$archived` one included.
    /// - Archiving an archived stream writes nothing and returns the first
    ///   result with `idempotent_replay` set.
    ///
    /// # Errors
    ///
    /// [`StoreError::WrongExpectedVersion`], [`StoreError::StreamDeleted`],
    /// or a failure of storage (then, as for an append, the stream may
    /// have been archived; archiving again is safe).
    async fn archive_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<AppendResult, StoreError>;

    /// Deletes `stream` for good (a tombstone), if its version satisfies
    /// `expected`: the store appends an event of type
    /// [`DELETED_EVENT_TYPE`] to it, with empty data and the next version,
    /// and drops its snapshot.
    ///
    /// - Every later append to it fails with [`StoreError::StreamDeleted`],
    ///   whatever its expected version, and so do reads of it.
    /// - Its events stay in the feed, immutable, followed by the `$deleted`
    ///   event: a projection that reads that type (see
    ///   [`system`](crate::system)) learns of the deletion in feed order and
    ///   may remove what it built from the stream.
    /// - Deleting a deleted stream writes nothing and returns the first
    ///   result with `idempotent_replay` set. An archived stream can be
    ///   deleted; a stream that never had events can be too, which
    ///   reserves its id.
    ///
    /// # Errors
    ///
    /// [`StoreError::WrongExpectedVersion`], or a failure of storage (then
    /// deleting again is safe).
    async fn delete_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<AppendResult, StoreError>;

    /// Reads events of one stream. A stream without events reads as empty.
    ///
    /// # Errors
    ///
    /// [`StoreError::StreamArchived`] or [`StoreError::StreamDeleted`] when
    /// the stream was archived or deleted (see
    /// [`archive_stream`](Self::archive_stream)), [`StoreError::Backend`]
    /// when storage fails, [`StoreError::CorruptEvent`] when a stored row
    /// cannot be read back.
    async fn read_stream(
        &self,
        stream: &StreamId,
        read: StreamRead,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Reads the stored events among `ids`, in feed order; ids that are not
    /// stored are left out. Events of transactions that the feed still holds
    /// back are included.
    ///
    /// A repository uses it to recognize a command sent again (see
    /// [`command_event_id`](crate::command_event_id)).
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when storage fails, [`StoreError::CorruptEvent`]
    /// when a stored row cannot be read back.
    async fn read_events(&self, ids: &[Uuid]) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Reads at most `limit` events of the global feed that come after
    /// `after` and pass `filter`, in feed order.
    ///
    /// The feed never skips an event: an event that commits later than
    /// others always gets a later position than the ones already returned.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when storage fails. [`StoreError::CorruptEvent`]
    /// when the first event to return cannot be read back (a row written
    /// behind the store's back); a read that meets such an event after
    /// others returns those first. The error carries the event's position:
    /// reading on after it steps over exactly that event.
    async fn read_all(
        &self,
        after: Position,
        filter: &FeedFilter,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Reads the next page of the feed for a follower: at most `limit`
    /// events after `after` that pass `filter`, and where to read on.
    ///
    /// Unlike [`read_all`](Self::read_all), a store may stop after examining
    /// a bounded number of events that do not pass the filter, and then
    /// report how far it looked in [`FeedPage::next`]: a follower of rare
    /// events moves on through the feed instead of examining everything
    /// after the last match on every read. [`FeedPage::more`] tells whether
    /// to read on at once or wait for new events.
    ///
    /// The default reads with `read_all`.
    ///
    /// # Errors
    ///
    /// As [`read_all`](Self::read_all).
    async fn read_feed(
        &self,
        after: Position,
        filter: &FeedFilter,
        limit: usize,
    ) -> Result<FeedPage, StoreError> {
        let events = self.read_all(after, filter, limit).await?;
        Ok(FeedPage::of_events(after, events, limit))
    }

    /// Follows the global feed from after `after`: first the events already
    /// stored (catch-up), then each new one as it commits (live), with none
    /// missing or repeated across the switch.
    ///
    /// The stream ends only after yielding an error it cannot recover from.
    /// For an event that cannot be read back, that error is
    /// [`StoreError::CorruptEvent`] with its position: subscribing again
    /// after that position steps over exactly that event.
    fn subscribe(&self, after: Position, filter: FeedFilter) -> EventStream;

    /// The size limits this store enforces.
    fn limits(&self) -> StoreLimits;

    /// Whether reads may miss events committed just before them: true for
    /// a store that serves reads from a replica, which replays the
    /// primary's commits a little later. Appends and their expected-version
    /// checks are never affected, and a [`StreamRead::latest`] read sees
    /// every committed event either way. A [`Repository`](crate::Repository)
    /// on such a store confirms a refusal or an empty decision with a
    /// `latest` read before it returns it.
    ///
    /// The default is `false`.
    fn reads_may_lag(&self) -> bool {
        false
    }
}
