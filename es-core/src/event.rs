//! Events as the store sees them: the event to append and the recorded event.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{Position, StreamId};

/// Context carried with every event: who caused it, and in which flow.
///
/// Stored as a JSON object; absent fields are omitted.
///
/// ```
/// use es_core::Metadata;
///
/// let meta = Metadata::default()
///     .with_correlation_id("req-42")
///     .with_actor("user-7")
///     .with_custom("tenant", "acme");
/// assert_eq!(meta.custom["tenant"], "acme");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Metadata {
    /// Ties together every event caused by one request or workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The id of the command or event that directly caused this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// The user or system that acted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Application-defined fields.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub custom: Map<String, Value>,
}

impl Metadata {
    /// Sets the correlation id.
    #[must_use]
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the causation id.
    #[must_use]
    pub fn with_causation_id(mut self, id: Uuid) -> Self {
        self.causation_id = Some(id);
        self
    }

    /// Sets the actor.
    #[must_use]
    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    /// Adds an application-defined field.
    #[must_use]
    pub fn with_custom(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.custom.insert(key.into(), value.into());
        self
    }

    /// Whether no field is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.correlation_id.is_none()
            && self.causation_id.is_none()
            && self.actor.is_none()
            && self.custom.is_empty()
    }
}

/// An event to append to a stream.
///
/// The `event_id` makes appends idempotent: re-sending a batch with the same
/// ids returns the first result instead of writing twice. [`NewEvent::new`]
/// picks a fresh UUIDv7; choose the id yourself (with
/// [`NewEvent::with_id`]) when a retry must be recognised as such.
///
/// ```
/// use es_core::NewEvent;
/// use serde_json::json;
///
/// let event = NewEvent::new("OrderPlaced", json!({ "customer": "c-1" })).with_schema_version(2);
/// assert_eq!(event.schema_version, 2);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NewEvent {
    /// Unique id of the event, chosen by the client.
    pub event_id: Uuid,
    /// The stored name of the event's type (`OrderPlaced`).
    pub event_type: String,
    /// The version of the type's schema that `data` follows (1 and up).
    pub schema_version: u32,
    /// The payload, a JSON value.
    pub data: Value,
    /// Context for the event.
    pub metadata: Metadata,
}

impl NewEvent {
    /// An event of `event_type` with `data`, a fresh UUIDv7 id, schema
    /// version 1 and empty metadata.
    #[must_use]
    pub fn new(event_type: impl Into<String>, data: Value) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version: 1,
            data,
            metadata: Metadata::default(),
        }
    }

    /// Replaces the event id.
    #[must_use]
    pub fn with_id(mut self, event_id: Uuid) -> Self {
        self.event_id = event_id;
        self
    }

    /// Sets the schema version.
    #[must_use]
    pub fn with_schema_version(mut self, schema_version: u32) -> Self {
        self.schema_version = schema_version;
        self
    }

    /// Replaces the metadata.
    #[must_use]
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }
}

/// An event as stored: the appended event plus where and when it landed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RecordedEvent {
    /// Unique id of the event.
    pub event_id: Uuid,
    /// The stream the event belongs to.
    pub stream_id: StreamId,
    /// Version of the event in its stream (the first event is 1).
    pub version: u64,
    /// Place of the event in the global feed.
    pub position: Position,
    /// The stored name of the event's type.
    pub event_type: String,
    /// The schema version that `data` follows.
    pub schema_version: u32,
    /// The payload.
    pub data: Value,
    /// Context for the event.
    pub metadata: Metadata,
    /// When the store recorded the event (server time).
    pub recorded_at: DateTime<Utc>,
}

impl RecordedEvent {
    /// The recorded event of `event`, as a store records it at `version` of
    /// `stream_id` and at `position`: for tests of projections and other
    /// consumers of recorded events. (A store implementation reading rows
    /// back uses [`backend::recorded_event`](crate::backend::recorded_event).)
    #[must_use]
    pub fn new(
        event: NewEvent,
        stream_id: StreamId,
        version: u64,
        position: Position,
        recorded_at: DateTime<Utc>,
    ) -> Self {
        Self {
            event_id: event.event_id,
            stream_id,
            version,
            position,
            event_type: event.event_type,
            schema_version: event.schema_version,
            data: event.data,
            metadata: event.metadata,
            recorded_at,
        }
    }
}
