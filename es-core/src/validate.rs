//! Checks every store runs on a batch before it touches storage.

use std::collections::HashSet;

use crate::{
    IdempotencyConflictKind, InvalidEventKind, NewEvent, StoreError, StoreLimits, StreamId,
};

/// An event's data and metadata serialized as JSON text, once.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EncodedEvent {
    /// The data as compact JSON.
    pub data: String,
    /// The metadata as a compact JSON object.
    pub metadata: String,
}

/// Checks a batch against `limits` and the rules every store shares: a
/// well-formed event type, a schema version of at least 1, no NUL in any
/// string (PostgreSQL cannot store it), no event id twice in the batch, and
/// the size limits.
///
/// Store implementations call this (or [`encode_batch`]) first, so that a
/// bad batch fails the same way on every store and before any I/O.
///
/// # Errors
///
/// [`StoreError::InvalidEvent`], [`StoreError::EventTooLarge`],
/// [`StoreError::BatchTooLarge`] or [`StoreError::IdempotencyConflict`] (for a
/// repeated id).
pub fn check_batch(
    stream: &StreamId,
    events: &[NewEvent],
    limits: &StoreLimits,
) -> Result<(), StoreError> {
    encode_batch(stream, events, limits).map(drop)
}

/// [`check_batch`], returning each event's data and metadata serialized,
/// for stores that send JSON text: the size check and the store then share
/// one serialization.
///
/// # Errors
///
/// As [`check_batch`].
pub fn encode_batch(
    stream: &StreamId,
    events: &[NewEvent],
    limits: &StoreLimits,
) -> Result<Vec<EncodedEvent>, StoreError> {
    let invalid = |event: &NewEvent, kind| StoreError::InvalidEvent {
        stream: stream.clone(),
        event_id: event.event_id,
        kind,
    };
    let too_large = |bytes| StoreError::BatchTooLarge {
        stream: stream.clone(),
        events: events.len(),
        bytes,
        max_events: limits.max_batch_events,
        max_bytes: limits.max_batch_bytes,
    };
    if events.len() > limits.max_batch_events {
        return Err(too_large(0));
    }
    let mut total = 0usize;
    let mut ids = HashSet::with_capacity(events.len());
    let mut encoded = Vec::with_capacity(events.len());
    for event in events {
        if event.event_type.is_empty() {
            return Err(invalid(event, InvalidEventKind::EmptyEventType));
        }
        if event.event_type.len() > limits.max_event_type_bytes {
            return Err(invalid(
                event,
                InvalidEventKind::EventTypeTooLong {
                    len: event.event_type.len(),
                    max: limits.max_event_type_bytes,
                },
            ));
        }
        if event.event_type.chars().any(char::is_control) {
            return Err(invalid(
                event,
                InvalidEventKind::ControlCharacterInEventType,
            ));
        }
        if event.schema_version == 0 {
            return Err(invalid(event, InvalidEventKind::SchemaVersionZero));
        }
        let data = to_json(&event.data);
        if has_escaped_nul(&data) {
            return Err(invalid(
                event,
                InvalidEventKind::NulCharacter { part: "data" },
            ));
        }
        let metadata = to_json(&event.metadata);
        if has_escaped_nul(&metadata) {
            return Err(invalid(
                event,
                InvalidEventKind::NulCharacter { part: "metadata" },
            ));
        }
        let size = data.len() + metadata.len();
        if size > limits.max_event_bytes {
            return Err(StoreError::EventTooLarge {
                stream: stream.clone(),
                event_id: event.event_id,
                size,
                max: limits.max_event_bytes,
            });
        }
        total += size;
        if total > limits.max_batch_bytes {
            return Err(too_large(total));
        }
        if !ids.insert(event.event_id) {
            return Err(StoreError::IdempotencyConflict {
                stream: stream.clone(),
                event_id: event.event_id,
                kind: IdempotencyConflictKind::DuplicateInBatch,
            });
        }
        encoded.push(EncodedEvent { data, metadata });
    }
    Ok(encoded)
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    // A `Value` or `Metadata` (string keys only) always serializes.
    serde_json::to_string(value).unwrap_or_default()
}

/// Whether compact JSON text holds the escape of a NUL character:
/// `\u0000` preceded by an even number of backslashes (an odd number means
/// the backslash itself was escaped, as in the text `\\u0000`).
fn has_escaped_nul(json: &str) -> bool {
    let bytes = json.as_bytes();
    let mut from = 0;
    while let Some(at) = json[from..].find("\\u0000").map(|i| i + from) {
        let backslashes = bytes[..=at]
            .iter()
            .rev()
            .take_while(|&&b| b == b'\\')
            .count();
        if backslashes % 2 == 1 {
            return true;
        }
        from = at + 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn nul_in(value: &serde_json::Value) -> bool {
        has_escaped_nul(&to_json(value))
    }

    #[test]
    fn nul_is_found_in_nested_keys_and_values() {
        assert!(nul_in(&json!({"a": [{"b": "x\u{0}"}]})));
        assert!(nul_in(&json!({"k\u{0}": 1})));
        assert!(nul_in(&json!({"a": "\\\u{0}"})));
    }

    #[test]
    fn an_escaped_backslash_before_u0000_is_not_nul() {
        assert!(!nul_in(&json!({"a": "\\u0000"})));
        assert!(!nul_in(&json!({"a": "\\\\u0000"})));
        assert!(!nul_in(&json!({"a": "u0000", "b": "\u{1}"})));
    }
}
