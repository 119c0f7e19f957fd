//! What a store implementation needs from `es-core`, and an application
//! never does: the checks every store runs before it writes, the encoding of
//! what it stores, the assembly of what it reads back, and the subscription
//! that turns its paged feed reads into a live stream.
//!
//! A new backend calls [`encode_batch`] (or [`check_batch`]) before any I/O,
//! [`check_version_room`] before it numbers a batch, [`encode_snapshot`]
//! before it saves a snapshot, builds each [`RecordedEvent`] with
//! [`recorded_event`], and implements
//! [`EventStore::subscribe`](crate::EventStore::subscribe) with [`follow`];
//! then it runs the conformance suite (`es_core::conformance_suite!`, feature
//! `testing`).

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

pub use crate::subscription::{FeedWaker, FollowOptions, WatchWaker, follow};
pub use crate::validate::{
    EncodedEvent, check_batch, check_version_room, encode_batch, encode_request, encode_snapshot,
};
use crate::{Metadata, Position, RecordedEvent, StreamId};

/// A recorded event from the fields a store kept.
#[must_use]
#[expect(clippy::too_many_arguments, reason = "one argument per stored field")]
pub fn recorded_event(
    event_id: Uuid,
    stream_id: StreamId,
    version: u64,
    position: Position,
    event_type: String,
    schema_version: u32,
    data: Value,
    metadata: Metadata,
    recorded_at: DateTime<Utc>,
) -> RecordedEvent {
    RecordedEvent {
        event_id,
        stream_id,
        version,
        position,
        event_type,
        schema_version,
        data,
        metadata,
        recorded_at,
    }
}
