//! Helpers for the code that the derives generate. Not a public API: it may
//! change in any release, which is why `es-core` pins `es-derive` exactly.

pub use serde;
pub use serde_json;
pub use serde_json::Value;

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::typed::{DecodeError, DecodeErrorKind};
use crate::{BoxError, RecordedEvent};

pub use crate::aggregate::SnapshotPolicy;
pub use crate::{Aggregate, Event, On, RecordedEvent as Recorded};

/// Dispatches each variant of an event enum to `A`'s handler for its payload.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot hand its events to `{A}`",
    label = "not an event enum with a handler in `{A}` for each variant",
    note = "derive `es_core::Event` for `{Self}` and implement `es_core::On<Payload>` for `{A}`"
)]
pub trait Dispatch<A> {
    /// Hands the payload to `target`'s handler.
    fn dispatch(self, target: &mut A);
}

/// Serializes a payload or a state.
///
/// # Errors
///
/// What serde reports.
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Value, serde_json::Error> {
    serde_json::to_value(value)
}

/// Deserializes a state from a snapshot payload.
///
/// # Errors
///
/// What serde reports.
pub fn from_json<T: DeserializeOwned>(value: &Value) -> Result<T, serde_json::Error> {
    T::deserialize(value)
}

/// Reads the payload of `event` (possibly upcast to `data`) as `T`.
///
/// # Errors
///
/// [`DecodeErrorKind::Payload`].
pub fn payload<T: DeserializeOwned>(event: &RecordedEvent, data: &Value) -> Result<T, DecodeError> {
    T::deserialize(data).map_err(|source| {
        DecodeError::new(
            event,
            DecodeErrorKind::Payload {
                type_name: std::any::type_name::<T>(),
                source,
            },
        )
    })
}

/// Runs one JSON upcast step, from schema version `from` to `from + 1`.
///
/// # Errors
///
/// [`DecodeErrorKind::Upcast`] with the step's error.
pub fn upcast_json<F, E>(
    event: &RecordedEvent,
    from: u32,
    step: F,
    data: Value,
) -> Result<Value, DecodeError>
where
    F: FnOnce(Value) -> Result<Value, E>,
    E: Into<BoxError>,
{
    step(data).map_err(|e| {
        DecodeError::new(
            event,
            DecodeErrorKind::Upcast {
                from,
                source: e.into(),
            },
        )
    })
}

/// The error for a known event type stored with a schema version that has
/// no path to `current`.
#[must_use]
pub fn unsupported_version(event: &RecordedEvent, current: u32) -> DecodeError {
    DecodeError::new(event, DecodeErrorKind::UnsupportedSchemaVersion { current })
}

/// The error for an event type that no variant has.
#[must_use]
pub fn unknown_event_type(event: &RecordedEvent) -> DecodeError {
    DecodeError::new(event, DecodeErrorKind::UnknownEventType)
}

/// The variant of an event enum whose name has the [`variant_key`]
/// `VARIANT`: its stored names (current name, then aliases), its payload
/// type and the decoding of its payload, upcasts included.
/// `#[derive(Event)]` implements it for each variant; `#[derive(Projection)]`
/// reads it to learn the event types a projection handles and the payload
/// each handler takes.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no event variant of this name",
    label = "not a variant of an event enum",
    note = "name each handled event as `EventEnum::Variant`, where `EventEnum` derives `es_core::Event`"
)]
pub trait Variant<const VARIANT: u64> {
    /// The variant's payload.
    type Payload;

    /// The variant's stored names.
    const NAMES: &'static [&'static str];

    /// Decodes `event`, stored under one of [`NAMES`](Self::NAMES), as the
    /// variant's payload, running the upcasts from its schema version.
    ///
    /// # Errors
    ///
    /// The payload does not decode, an upcast step fails, or the schema
    /// version has no path to the current one.
    fn decode(event: &RecordedEvent) -> Result<Self::Payload, DecodeError>;
}

/// The variant of event enum `E` whose name has the key `VARIANT`, as a
/// type that can be named even when no such variant exists: an unknown
/// variant is then reported once, where its names are read, not at every
/// use.
pub struct Handled<E, const VARIANT: u64>(PhantomData<fn() -> E>);

/// Routes the events of one handled variant to `P`'s handler for its
/// payload, with the sink `Cx`. `#[derive(Projection)]` requires it for
/// each handled variant.
pub trait Route<P, Cx: ?Sized> {
    /// The variant's stored names.
    const NAMES: &'static [&'static str];

    /// Decodes `event` as the variant's payload and hands it to `projection`.
    fn route(
        projection: &P,
        event: &RecordedEvent,
        cx: &mut Cx,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
}

impl<E, const VARIANT: u64, P, Cx> Route<P, Cx> for Handled<E, VARIANT>
where
    E: Variant<VARIANT>,
    P: crate::Handle<E::Payload, Cx>,
    Cx: Send + ?Sized,
{
    const NAMES: &'static [&'static str] = E::NAMES;

    async fn route(projection: &P, event: &RecordedEvent, cx: &mut Cx) -> Result<(), BoxError> {
        let payload = E::decode(event)?;
        projection.handle(payload, event, cx).await
    }
}

/// The payload of a variant that a derive with errors could not read: every
/// projection handles it, so that the derive's own error is the only one.
#[derive(Debug)]
pub enum Unread {}

impl<P: Send + Sync + ?Sized, Cx: Send + ?Sized> crate::Handle<Unread, Cx> for P {
    async fn handle(&self, event: Unread, _: &RecordedEvent, _: &mut Cx) -> Result<(), BoxError> {
        match event {}
    }
}

/// A stable key for a variant's name (64-bit FNV-1a), usable in const
/// generics.
#[must_use]
pub const fn variant_key(name: &str) -> u64 {
    let bytes = name.as_bytes();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

/// The total length of `parts`.
#[must_use]
pub const fn names_len(parts: &[&[&'static str]]) -> usize {
    let mut total = 0;
    let mut i = 0;
    while i < parts.len() {
        total += parts[i].len();
        i += 1;
    }
    total
}

/// `parts` concatenated; `N` must be [`names_len`] of `parts`.
///
/// # Panics
///
/// At compile time, when `N` is not the total length.
#[must_use]
pub const fn concat_names<const N: usize>(parts: &[&[&'static str]]) -> [&'static str; N] {
    let mut out = [""; N];
    let mut at = 0;
    let mut i = 0;
    while i < parts.len() {
        let mut j = 0;
        while j < parts[i].len() {
            out[at] = parts[i][j];
            at += 1;
            j += 1;
        }
        i += 1;
    }
    assert!(at == N, "concat_names: wrong total length");
    out
}

/// Whether `event_type` is one of `names`.
#[must_use]
pub fn is_one_of(event_type: &str, names: &[&str]) -> bool {
    names.contains(&event_type)
}
