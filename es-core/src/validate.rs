//! Checks every store runs before it touches storage, so that bad input
//! fails the same way everywhere and nothing is half-written.

use std::collections::HashSet;

use crate::json::{self, UnstorableJson};
use crate::store::{MAX_SCHEMA_VERSION, MAX_STREAM_VERSION};
use crate::{
    IdempotencyConflictKind, InvalidEventKind, InvalidSnapshotKind, Metadata, NewEvent, Snapshot,
    StoreError, StoreLimits, StreamId,
};

/// An event's data and metadata as the JSON text a store keeps, serialized
/// once.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EncodedEvent {
    /// The data as compact JSON, floats as plain decimals (see
    /// [`json`](mod@crate::json)).
    pub data: String,
    /// The metadata as a compact JSON object.
    pub metadata: String,
}

/// Checks a batch against `limits` and the rules every store shares: a
/// well-formed event type, a schema version in `1..=`[`MAX_SCHEMA_VERSION`],
/// data and metadata that read back equal (nesting within
/// [`StoreLimits::max_json_depth`], no `-0.0`, no NUL in any string), no
/// event id twice in the batch, and the size limits.
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
    for (index, event) in events.iter().enumerate() {
        let invalid = |kind| StoreError::InvalidEvent {
            stream: stream.clone(),
            index,
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            kind,
        };
        check_event(event, limits).map_err(invalid)?;
        let encoding = encode_event(event).map_err(invalid)?;
        let size = encoding.data.len() + encoding.metadata.len();
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
        encoded.push(encoding);
    }
    Ok(encoded)
}

/// [`encode_batch`] for each stream of an append across streams
/// ([`EventStore::append_many`](crate::EventStore::append_many)), and the
/// checks of the request as a whole: no stream twice, no event id twice,
/// and the batch limits over all its events.
///
/// # Errors
///
/// As [`encode_batch`], naming the stream where the request went wrong,
/// and [`StoreError::RepeatedStream`].
pub fn encode_request(
    appends: &[crate::StreamAppend],
    limits: &StoreLimits,
) -> Result<Vec<Vec<EncodedEvent>>, StoreError> {
    let mut streams = HashSet::with_capacity(appends.len());
    let mut ids = HashSet::new();
    let (mut events, mut bytes) = (0usize, 0usize);
    let mut encoded = Vec::with_capacity(appends.len());
    for append in appends {
        let stream = &append.stream;
        if !streams.insert(stream) {
            return Err(StoreError::RepeatedStream {
                stream: stream.clone(),
            });
        }
        let batch = encode_batch(stream, &append.events, limits)?;
        if let Some(event) = append.events.iter().find(|e| !ids.insert(e.event_id)) {
            return Err(StoreError::IdempotencyConflict {
                stream: stream.clone(),
                event_id: event.event_id,
                kind: IdempotencyConflictKind::DuplicateInBatch,
            });
        }
        events += batch.len();
        bytes += batch
            .iter()
            .map(|e| e.data.len() + e.metadata.len())
            .sum::<usize>();
        if events > limits.max_batch_events || bytes > limits.max_batch_bytes {
            return Err(StoreError::BatchTooLarge {
                stream: stream.clone(),
                events,
                bytes,
                max_events: limits.max_batch_events,
                max_bytes: limits.max_batch_bytes,
            });
        }
        encoded.push(batch);
    }
    Ok(encoded)
}

/// Checks that appending `events` events to a stream at version `actual`
/// keeps its version within [`MAX_STREAM_VERSION`].
///
/// # Errors
///
/// [`StoreError::StreamVersionOverflow`].
pub fn check_version_room(stream: &StreamId, actual: u64, events: usize) -> Result<(), StoreError> {
    let room = MAX_STREAM_VERSION.saturating_sub(actual);
    if u64::try_from(events).is_ok_and(|n| n <= room) {
        return Ok(());
    }
    Err(StoreError::StreamVersionOverflow {
        stream: stream.clone(),
        events,
        max: MAX_STREAM_VERSION,
    })
}

/// The checks of one event that do not need its serialized form.
fn check_event(event: &NewEvent, limits: &StoreLimits) -> Result<(), InvalidEventKind> {
    if event.event_type.is_empty() {
        return Err(InvalidEventKind::EmptyEventType);
    }
    if event.event_type.len() > limits.max_event_type_bytes {
        return Err(InvalidEventKind::EventTypeTooLong {
            len: event.event_type.len(),
            max: limits.max_event_type_bytes,
        });
    }
    if event.event_type.chars().any(char::is_control) {
        return Err(InvalidEventKind::ControlCharacterInEventType);
    }
    if crate::store::is_system_event_type(&event.event_type) {
        return Err(InvalidEventKind::ReservedEventType);
    }
    if event.schema_version == 0 {
        return Err(InvalidEventKind::SchemaVersionZero);
    }
    if event.schema_version > MAX_SCHEMA_VERSION {
        return Err(InvalidEventKind::SchemaVersionTooLarge {
            version: event.schema_version,
            max: MAX_SCHEMA_VERSION,
        });
    }
    let unstorable = |part| move |reason| InvalidEventKind::Unstorable { part, reason };
    json::check(&event.data, 0, limits.max_json_depth).map_err(unstorable("data"))?;
    check_metadata(&event.metadata, limits.max_json_depth).map_err(unstorable("metadata"))
}

/// Checks metadata as the JSON object it is stored as: its strings, and its
/// custom values two levels deep (in the object, in `custom`).
fn check_metadata(metadata: &Metadata, max_depth: usize) -> Result<(), UnstorableJson> {
    for (field, text) in [
        ("/correlation_id", &metadata.correlation_id),
        ("/actor", &metadata.actor),
    ] {
        if let Some(text) = text {
            json::check_str(text, field)?;
        }
    }
    // The metadata object, and `custom` within it when it has members.
    let own_depth = if metadata.custom.is_empty() { 1 } else { 2 };
    let max = max_depth.min(json::MAX_JSON_DEPTH);
    if own_depth > max {
        return Err(UnstorableJson::TooDeep { max });
    }
    for (key, value) in &metadata.custom {
        let within = |reason| match reason {
            UnstorableJson::NegativeZero { path } => UnstorableJson::NegativeZero {
                path: custom_path(key, &path),
            },
            UnstorableJson::NulCharacter { path } => UnstorableJson::NulCharacter {
                path: custom_path(key, &path),
            },
            other => other,
        };
        json::check_str(key, "/custom").map_err(within)?;
        json::check(value, 2, max_depth).map_err(within)?;
    }
    Ok(())
}

fn custom_path(key: &str, rest: &str) -> String {
    let key = key.replace('~', "~0").replace('/', "~1");
    format!("/custom/{key}{rest}")
}

fn encode_event(event: &NewEvent) -> Result<EncodedEvent, InvalidEventKind> {
    let unencodable = |part| move |reason| InvalidEventKind::Unencodable { part, reason };
    Ok(EncodedEvent {
        data: json::to_stored_text(&event.data).map_err(unencodable("data"))?,
        metadata: json::to_stored_text(&event.metadata).map_err(unencodable("metadata"))?,
    })
}

/// Checks a snapshot before it is saved, and returns its state as the JSON
/// text a store keeps: a stream version in `1..=`[`MAX_STREAM_VERSION`], a
/// format version of at most [`MAX_SCHEMA_VERSION`], and a state that reads
/// back equal (nesting within [`json::MAX_JSON_DEPTH`]).
///
/// # Errors
///
/// [`StoreError::InvalidSnapshot`].
pub fn encode_snapshot(snapshot: &Snapshot) -> Result<String, StoreError> {
    let invalid = |kind| StoreError::InvalidSnapshot {
        stream: snapshot.stream_id.clone(),
        kind,
    };
    if snapshot.version == 0 || snapshot.version > MAX_STREAM_VERSION {
        return Err(invalid(InvalidSnapshotKind::VersionOutOfRange {
            version: snapshot.version,
            max: MAX_STREAM_VERSION,
        }));
    }
    if snapshot.schema_version > MAX_SCHEMA_VERSION {
        return Err(invalid(InvalidSnapshotKind::SchemaVersionTooLarge {
            version: snapshot.schema_version,
            max: MAX_SCHEMA_VERSION,
        }));
    }
    json::check(&snapshot.data, 0, json::MAX_JSON_DEPTH)
        .map_err(|e| invalid(InvalidSnapshotKind::Unstorable(e)))?;
    json::to_stored_text(&snapshot.data).map_err(|e| invalid(InvalidSnapshotKind::Unencodable(e)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn kind_of(event: NewEvent, limits: StoreLimits) -> Option<InvalidEventKind> {
        let stream = StreamId::new("Check-1").unwrap();
        match check_batch(&stream, &[event], &limits) {
            Err(StoreError::InvalidEvent { kind, .. }) => Some(kind),
            Err(other) => panic!("unexpected {other:?}"),
            Ok(()) => None,
        }
    }

    #[test]
    fn metadata_is_checked_as_the_object_it_is_stored_as() {
        let limits = StoreLimits::default().max_json_depth(4);
        let meta = |value| Metadata::default().with_custom("k/1", value);
        let event = |value| NewEvent::new("E", json!({})).with_metadata(meta(value));
        // The metadata object and `custom` take two levels.
        assert_eq!(kind_of(event(json!([[1]])), limits), None);
        assert!(matches!(
            kind_of(event(json!([[[1]]])), limits),
            Some(InvalidEventKind::Unstorable {
                part: "metadata",
                reason: UnstorableJson::TooDeep { max: 4 }
            })
        ));
        assert_eq!(
            kind_of(event(json!({"a": -0.0})), limits),
            Some(InvalidEventKind::Unstorable {
                part: "metadata",
                reason: UnstorableJson::NegativeZero {
                    path: "/custom/k~11/a".to_owned()
                }
            })
        );
        let nul_actor =
            NewEvent::new("E", json!({})).with_metadata(Metadata::default().with_actor("a\u{0}"));
        assert_eq!(
            kind_of(nul_actor, limits),
            Some(InvalidEventKind::Unstorable {
                part: "metadata",
                reason: UnstorableJson::NulCharacter {
                    path: "/actor".to_owned()
                }
            })
        );
    }

    #[test]
    fn version_room_stops_at_the_highest_version() {
        let stream = StreamId::new("Room-1").unwrap();
        assert!(check_version_room(&stream, MAX_STREAM_VERSION - 2, 2).is_ok());
        assert!(check_version_room(&stream, MAX_STREAM_VERSION - 2, 3).is_err());
        assert!(check_version_room(&stream, MAX_STREAM_VERSION, 0).is_ok());
        assert!(check_version_room(&stream, u64::MAX, 1).is_err());
    }
}
