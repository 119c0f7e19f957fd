//! Checks every store runs on a batch before it touches storage.

use std::collections::HashSet;
use std::io;

use serde_json::Value;

use crate::{
    IdempotencyConflictKind, InvalidEventKind, NewEvent, StoreError, StoreLimits, StreamId,
};

/// Checks a batch against `limits` and the rules every store shares: a
/// well-formed event type, a schema version of at least 1, no NUL in any
/// string (PostgreSQL cannot store it), no event id twice in the batch, and
/// the size limits. Returns the serialized size of each event.
///
/// Store implementations call this first, so that a bad batch fails the same
/// way on every store and before any I/O.
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
    let invalid = |event: &NewEvent, kind| StoreError::InvalidEvent {
        stream: stream.clone(),
        event_id: event.event_id,
        kind,
    };
    let mut total = 0usize;
    let mut ids = HashSet::with_capacity(events.len());
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
        if contains_nul(&event.data) {
            return Err(invalid(
                event,
                InvalidEventKind::NulCharacter { part: "data" },
            ));
        }
        if metadata_contains_nul(event) {
            return Err(invalid(
                event,
                InvalidEventKind::NulCharacter { part: "metadata" },
            ));
        }
        let size = serialized_size(&event.data) + serialized_size(&event.metadata);
        if size > limits.max_event_bytes {
            return Err(StoreError::EventTooLarge {
                stream: stream.clone(),
                event_id: event.event_id,
                size,
                max: limits.max_event_bytes,
            });
        }
        total += size;
        if !ids.insert(event.event_id) {
            return Err(StoreError::IdempotencyConflict {
                stream: stream.clone(),
                event_id: event.event_id,
                kind: IdempotencyConflictKind::DuplicateInBatch,
            });
        }
    }
    if events.len() > limits.max_batch_events || total > limits.max_batch_bytes {
        return Err(StoreError::BatchTooLarge {
            stream: stream.clone(),
            events: events.len(),
            bytes: total,
            max_events: limits.max_batch_events,
            max_bytes: limits.max_batch_bytes,
        });
    }
    Ok(())
}

fn metadata_contains_nul(event: &NewEvent) -> bool {
    let meta = &event.metadata;
    meta.correlation_id
        .as_deref()
        .is_some_and(|s| s.contains('\0'))
        || meta.actor.as_deref().is_some_and(|s| s.contains('\0'))
        || meta
            .custom
            .iter()
            .any(|(key, value)| key.contains('\0') || contains_nul(value))
}

fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// Bytes of `value` serialized as compact JSON, without allocating it.
fn serialized_size<T: serde::Serialize>(value: &T) -> usize {
    struct Count(usize);
    impl io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Serializing a `Value` or `Metadata` into a writer that never fails
    // cannot fail either.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn size_counts_compact_json() {
        assert_eq!(
            serialized_size(&json!({"a": [1, 2]})),
            r#"{"a":[1,2]}"#.len()
        );
    }

    #[test]
    fn nul_is_found_in_nested_keys_and_values() {
        assert!(contains_nul(&json!({"a": [{"b": "x\u{0}"}]})));
        assert!(contains_nul(&json!({"k\u{0}": 1})));
        assert!(!contains_nul(&json!({"a": "\\u0000"})));
    }
}
