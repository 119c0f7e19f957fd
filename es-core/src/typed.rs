//! Typed events: an enum whose variants are the event types of a stream,
//! with stable stored names, schema versions and upcasting.
//!
//! Implement [`Event`] with `#[derive(Event)]` (feature `derive`, on by
//! default); the trait's documentation lists the derive's attributes.

use serde_json::Value;

use crate::{BoxError, NewEvent, Position, RecordedEvent, StreamId};

/// An enum of the event types that one kind of stream holds.
///
/// Each variant is one event type with a stable stored name and a schema
/// version. [`Event::decode`] reads a recorded event of any older schema
/// version and upcasts it to the current one.
///
/// Derive it rather than implementing it by hand:
///
/// ```
/// use es_core::{Event, RecordedEvent};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// struct OrderPlaced { total_cents: u64 }
///
/// #[derive(Debug, PartialEq, Event)]
/// enum OrderEvent {
///     #[es(name = "OrderPlaced")]
///     Placed(OrderPlaced),
/// }
///
/// let event = OrderEvent::Placed(OrderPlaced { total_cents: 500 });
/// let new = event.encode()?;
/// assert_eq!(new.event_type, "OrderPlaced");
/// assert_eq!(new.schema_version, 1);
/// # Ok::<(), es_core::EncodeError>(())
/// ```
///
/// # The derive's attributes
///
/// Each variant wraps one payload type (`Serialize + DeserializeOwned`) and
/// takes these settings in `#[es(...)]`:
///
/// | Setting | Meaning |
/// |---|---|
/// | `name = "OrderPlaced"` | the stored event type (default: the variant's name); keep it stable |
/// | `alias = "OrderCreated"` | an older stored name that still decodes to this variant (repeatable) |
/// | `version = N` | the current schema version of the payload (default 1, never 0) |
/// | `upcast(from = N, with = path)` | a JSON step from version `N` to `N + 1`: `fn(serde_json::Value) -> Result<Value, E>` with `E: Into<BoxError>` |
/// | `upcast(from = N, type = OldPayload)` | a typed step: version `N`'s payload type, with `From<OldPayload>` for the next version's type |
///
/// On the enum, `#[es(crate = "path")]` names the `es_core` crate when it is
/// re-exported under another path. The derive rejects, with an error on the
/// offending token: a duplicate name or alias, version 0, a version without
/// an upcast step from each older version, and unknown or repeated settings.
///
/// Decoding runs the steps in order, from the stored schema version to the
/// current one. Here version 1 stored euros as a number and version 2 cents
/// as a `u32`:
///
/// ```
/// use es_core::{Event, NewEvent, Position, RecordedEvent, StreamId};
/// use serde::{Deserialize, Serialize};
/// use serde_json::{Value, json};
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// struct Placed { total_cents: u64 }
///
/// /// Version 2's payload.
/// #[derive(Deserialize)]
/// struct PlacedV2 { total_cents: u32 }
///
/// impl From<PlacedV2> for Placed {
///     fn from(old: PlacedV2) -> Self {
///         Self { total_cents: u64::from(old.total_cents) }
///     }
/// }
///
/// /// Version 1 to version 2, on the JSON.
/// fn placed_v1(data: Value) -> Result<Value, String> {
///     let euros = data["euros"].as_u64().ok_or("no `euros`")?;
///     Ok(json!({ "total_cents": euros * 100 }))
/// }
///
/// #[derive(Debug, PartialEq, Event)]
/// enum OrderEvent {
///     #[es(name = "OrderPlaced", alias = "OrderCreated", version = 3)]
///     #[es(upcast(from = 1, with = placed_v1), upcast(from = 2, type = PlacedV2))]
///     Placed(Placed),
/// }
///
/// // An event as a release of schema version 1 stored it.
/// let old = NewEvent::new("OrderCreated", json!({ "euros": 3 })).with_schema_version(1);
/// let stored = RecordedEvent::new(
///     old,
///     StreamId::new("Order-1")?,
///     1,
///     Position::from_parts(1, 1),
///     chrono::Utc::now(),
/// );
/// assert_eq!(OrderEvent::decode(&stored)?, OrderEvent::Placed(Placed { total_cents: 300 }));
/// assert_eq!(OrderEvent::EVENT_TYPES, ["OrderPlaced", "OrderCreated"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event enum",
    label = "`{Self}` does not implement `es_core::Event`",
    note = "derive it with `#[derive(es_core::Event)]` on an enum of event payloads"
)]
pub trait Event: Sized + Send + Sync + 'static {
    /// Every stored event type this enum decodes: the current names of its
    /// variants, then their aliases. Use it to filter the global feed.
    const EVENT_TYPES: &'static [&'static str];

    /// The stored name of this event's type.
    fn event_type(&self) -> &'static str;

    /// The current schema version of this event's type.
    fn schema_version(&self) -> u32;

    /// The payload as JSON.
    ///
    /// # Errors
    ///
    /// When the payload's `Serialize` implementation fails (for example a
    /// map with keys that are not strings).
    fn to_data(&self) -> Result<Value, serde_json::Error>;

    /// Decodes a recorded event, upcasting an older schema version to the
    /// current one.
    ///
    /// # Errors
    ///
    /// [`DecodeError`], naming the event; its
    /// [`kind`](DecodeError::kind) is [`DecodeErrorKind::UnknownEventType`]
    /// when the stored type is not one of [`EVENT_TYPES`](Self::EVENT_TYPES),
    /// which a caller may choose to skip (see
    /// [`DecodeError::is_unknown_event_type`]).
    fn decode(event: &RecordedEvent) -> Result<Self, DecodeError>;

    /// The event to append: its stored name, schema version and JSON
    /// payload, with a fresh id and empty metadata.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] when the payload cannot be serialized.
    fn encode(&self) -> Result<NewEvent, EncodeError> {
        let data = self.to_data().map_err(|source| EncodeError {
            event_type: self.event_type(),
            source,
        })?;
        Ok(NewEvent::new(self.event_type(), data).with_schema_version(self.schema_version()))
    }
}

/// An event's payload could not be serialized.
#[derive(Debug, thiserror::Error)]
#[error("cannot serialize the payload of event type {event_type}")]
pub struct EncodeError {
    /// The stored name of the event's type.
    pub event_type: &'static str,
    /// What serde reported.
    #[source]
    pub source: serde_json::Error,
}

/// A recorded event could not be decoded into its typed form.
///
/// Names the event (stream, version, position, stored type and schema
/// version) and says what went wrong in [`kind`](Self::kind).
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot decode event {event_type} (schema version {schema_version}) at version {version} of stream {stream}, position {position}: {kind}"
)]
#[non_exhaustive]
pub struct DecodeError {
    /// The event's stream.
    pub stream: StreamId,
    /// The event's version in its stream.
    pub version: u64,
    /// The event's position in the global feed.
    pub position: Position,
    /// The stored event type.
    pub event_type: String,
    /// The stored schema version.
    pub schema_version: u32,
    /// What went wrong.
    #[source]
    pub kind: DecodeErrorKind,
}

impl DecodeError {
    /// An error about `event`.
    #[must_use]
    pub fn new(event: &RecordedEvent, kind: DecodeErrorKind) -> Self {
        Self {
            stream: event.stream_id.clone(),
            version: event.version,
            position: event.position,
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            kind,
        }
    }

    /// Whether the stored event type is unknown to the enum, so that a
    /// reader that only cares about some types may skip the event.
    #[must_use]
    pub fn is_unknown_event_type(&self) -> bool {
        matches!(self.kind, DecodeErrorKind::UnknownEventType)
    }
}

/// What went wrong while decoding an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The stored event type is not a name or alias of any variant.
    #[error("unknown event type")]
    UnknownEventType,
    /// The stored schema version is newer than the current one, or 0.
    #[error("unsupported schema version; the current version is {current}")]
    UnsupportedSchemaVersion {
        /// The type's current schema version.
        current: u32,
    },
    /// An upcast step failed.
    #[error("upcast from schema version {from} failed")]
    Upcast {
        /// The version the failed step upcasts from.
        from: u32,
        /// The step's error.
        #[source]
        source: BoxError,
    },
    /// The payload does not match the type of its schema version.
    #[error("the payload does not match {type_name}")]
    Payload {
        /// The Rust type the payload was read into.
        type_name: &'static str,
        /// What serde reported.
        #[source]
        source: serde_json::Error,
    },
}
