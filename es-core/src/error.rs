//! The store's error type.

use uuid::Uuid;

use crate::json::UnstorableJson;
use crate::{ExpectedVersion, Position, StreamId, StreamIdError};

/// A boxed error from a store's backend (driver, network, server).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why an idempotent retry could not be recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdempotencyConflictKind {
    /// Some ids of the batch are stored and others are not.
    PartialOverlap,
    /// The ids are stored, but in another stream.
    OtherStream,
    /// The ids are stored in this stream, but not contiguously in the batch's
    /// order.
    DifferentOrder,
    /// The batch itself holds the same id twice.
    DuplicateInBatch,
}

impl std::fmt::Display for IdempotencyConflictKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::PartialOverlap => "only some of the batch's event ids are already stored",
            Self::OtherStream => "the event id is already stored in another stream",
            Self::DifferentOrder => {
                "the batch's event ids are stored, but not contiguously in the same order"
            }
            Self::DuplicateInBatch => "the batch holds the same event id twice",
        })
    }
}

/// What is wrong with an event of a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidEventKind {
    /// The event type is empty.
    #[error("the event type is empty")]
    EmptyEventType,
    /// The event type is longer than the store allows.
    #[error("the event type is {len} bytes long, more than the {max} allowed")]
    EventTypeTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The event type contains a control character.
    #[error("the event type contains a control character")]
    ControlCharacterInEventType,
    /// The schema version is 0; versions start at 1.
    #[error("the schema version is 0; schema versions start at 1")]
    SchemaVersionZero,
    /// The schema version is above [`MAX_SCHEMA_VERSION`](crate::store::MAX_SCHEMA_VERSION).
    #[error("the schema version {version} is above {max}, the highest a store keeps")]
    SchemaVersionTooLarge {
        /// The event's schema version.
        version: u32,
        /// The highest schema version a store keeps.
        max: u32,
    },
    /// The event type starts with `$`, which only the store's own events
    /// use (see [`is_system_event_type`](crate::store::is_system_event_type)).
    #[error("the event type starts with `$`, which is reserved for the store's own events")]
    ReservedEventType,
    /// The data or metadata holds a value that no store could read back
    /// equal (see [`json`](crate::json)).
    #[error("the {part} cannot be stored: {reason}")]
    Unstorable {
        /// `"data"` or `"metadata"`.
        part: &'static str,
        /// What is wrong, and where.
        reason: UnstorableJson,
    },
    /// The data or metadata failed to serialize as JSON.
    #[error("the {part} failed to serialize: {reason}")]
    Unencodable {
        /// `"data"` or `"metadata"`.
        part: &'static str,
        /// The serializer's error.
        reason: String,
    },
}

/// What is wrong with a snapshot to save.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidSnapshotKind {
    /// The stream version is 0 or above [`MAX_STREAM_VERSION`](crate::store::MAX_STREAM_VERSION).
    #[error("the stream version {version} is outside 1..={max}")]
    VersionOutOfRange {
        /// The snapshot's stream version.
        version: u64,
        /// The highest stream version a store keeps.
        max: u64,
    },
    /// The format version is above [`MAX_SCHEMA_VERSION`](crate::store::MAX_SCHEMA_VERSION).
    #[error("the format version {version} is above {max}, the highest a store keeps")]
    SchemaVersionTooLarge {
        /// The snapshot's format version.
        version: u32,
        /// The highest format version a store keeps.
        max: u32,
    },
    /// The state holds a value that no store could read back equal.
    #[error("the state cannot be stored: {0}")]
    Unstorable(UnstorableJson),
    /// The state failed to serialize as JSON.
    #[error("the state failed to serialize: {0}")]
    Unencodable(String),
}

/// Every way a store operation can fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The stream's version did not satisfy the expected version; nothing
    /// was written.
    #[error(
        "wrong expected version for stream {stream}: expected {expected}, actual version is {actual}"
    )]
    WrongExpectedVersion {
        /// The stream appended to.
        stream: StreamId,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's version at the time of the check (0: no events).
        actual: u64,
    },
    /// Some event ids of the batch are already stored, but the batch is not
    /// a retry of an earlier append; nothing was written.
    #[error("idempotency conflict on stream {stream} for event {event_id}: {kind}")]
    IdempotencyConflict {
        /// The stream appended to.
        stream: StreamId,
        /// The first conflicting event id.
        event_id: Uuid,
        /// What kind of conflict.
        kind: IdempotencyConflictKind,
    },
    /// The stream was deleted ([`EventStore::delete_stream`](crate::EventStore::delete_stream)):
    /// it can never be appended to or read again; its events stay in the
    /// feed. Nothing was written.
    #[error("stream {stream} was deleted at version {version}")]
    StreamDeleted {
        /// The stream.
        stream: StreamId,
        /// Its version: that of its `$deleted` event.
        version: u64,
    },
    /// The stream is archived ([`EventStore::archive_stream`](crate::EventStore::archive_stream)):
    /// reads refuse it until an append restores it.
    #[error("stream {stream} is archived (at version {version}); an append restores it")]
    StreamArchived {
        /// The stream.
        stream: StreamId,
        /// Its version: that of its `$archived` event.
        version: u64,
    },
    /// A stream appears twice in one request of
    /// [`EventStore::append_many`](crate::EventStore::append_many); nothing
    /// was written.
    #[error("stream {stream} appears more than once in one append request")]
    RepeatedStream {
        /// The stream named twice.
        stream: StreamId,
    },
    /// A text is not a valid stream id.
    #[error("invalid stream id {id:?}: {reason}")]
    InvalidStreamId {
        /// The rejected text (lossy if it was not UTF-8).
        id: String,
        /// Why it was rejected.
        reason: StreamIdError,
    },
    /// An event of the batch is malformed, or holds a value that no store
    /// could read back equal; nothing was written.
    #[error(
        "invalid event {index} of the batch for stream {stream} ({event_type:?}, id {event_id}): {kind}"
    )]
    InvalidEvent {
        /// The stream appended to.
        stream: StreamId,
        /// The event's place in the batch, from 0.
        index: usize,
        /// The malformed event's id.
        event_id: Uuid,
        /// Its event type, as given.
        event_type: String,
        /// What is wrong with it.
        kind: InvalidEventKind,
    },
    /// A snapshot to save is malformed; nothing was written.
    #[error("invalid snapshot of stream {stream}: {kind}")]
    InvalidSnapshot {
        /// The snapshot's stream.
        stream: StreamId,
        /// What is wrong with it.
        kind: InvalidSnapshotKind,
    },
    /// The batch would take the stream's version past
    /// [`MAX_STREAM_VERSION`](crate::store::MAX_STREAM_VERSION); nothing was
    /// written.
    #[error(
        "appending {events} events to stream {stream} would take its version past {max}, the highest a store keeps"
    )]
    StreamVersionOverflow {
        /// The stream appended to.
        stream: StreamId,
        /// Events in the batch.
        events: usize,
        /// The highest stream version a store keeps.
        max: u64,
    },
    /// An event is larger than the configured maximum; nothing was written.
    #[error("event {event_id} for stream {stream} is {size} bytes, more than the {max} allowed")]
    EventTooLarge {
        /// The stream appended to.
        stream: StreamId,
        /// The oversize event.
        event_id: Uuid,
        /// Its size in bytes of serialized data and metadata.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A batch holds more events or bytes than configured; nothing was
    /// written.
    #[error(
        "batch for stream {stream} has {events} events and {bytes} bytes; the limits are {max_events} events and {max_bytes} bytes"
    )]
    BatchTooLarge {
        /// The stream appended to.
        stream: StreamId,
        /// Events in the batch.
        events: usize,
        /// Serialized bytes of the batch.
        bytes: usize,
        /// Maximum events per batch.
        max_events: usize,
        /// Maximum bytes per batch.
        max_bytes: usize,
    },
    /// A stored event could not be read back into a
    /// [`RecordedEvent`](crate::RecordedEvent) (a row written behind the
    /// store's back, or by an older release).
    ///
    /// A reader of the feed steps over exactly this event by reading on
    /// after `position`; the events behind it are unaffected.
    #[error("stored event at {location} is corrupt: {reason}")]
    CorruptEvent {
        /// Where the event is stored, as precisely as known.
        location: String,
        /// Its position in the feed, when known.
        position: Option<Position>,
        /// What is wrong with it.
        reason: String,
    },
    /// A stored event could not be decoded into its typed event (an unknown
    /// type or schema version, a payload of another shape, a failed upcast
    /// step): the error names the event.
    #[error(transparent)]
    Decode(#[from] crate::typed::DecodeError),
    /// Stored data other than an event (a snapshot, a checkpoint, a
    /// status row) holds a value that cannot be read back.
    #[error("stored record {location} is corrupt: {reason}")]
    CorruptRecord {
        /// Which record, and which field.
        location: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The store was closed or shut down.
    #[error("the event store is closed")]
    Closed,
    /// The backend did not answer within the configured time.
    #[error("{operation} timed out")]
    Timeout {
        /// What was being done.
        operation: &'static str,
    },
    /// The backend failed (connection lost, server error, ...); the
    /// operation may or may not have taken effect if it was an append, and a
    /// retry with the same event ids is safe.
    #[error("{operation} failed in the storage backend")]
    Backend {
        /// What was being done.
        operation: &'static str,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
}

impl StoreError {
    /// Wraps a backend error.
    pub fn backend(operation: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Backend {
            operation,
            source: source.into(),
        }
    }

    /// Whether retrying the same call may succeed (a lost connection, a
    /// timeout). Appends are idempotent by event id, so retrying one with the
    /// same ids is safe.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Backend { .. } | Self::Timeout { .. })
    }
}
