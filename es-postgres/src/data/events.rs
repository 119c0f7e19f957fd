//! The events table: the append function, stream reads, reads by event id,
//! and a row's stored text.

use es_core::backend::EncodedEvent;
use es_core::store::{MAX_SCHEMA_VERSION, MAX_STREAM_VERSION};
use es_core::{
    AppendResult, ExpectedVersion, IdempotencyConflictKind, InvalidEventKind, NewEvent, Position,
    ReadDirection, RecordedEvent, StoreError, StreamId, StreamRead,
};
use futures::TryStreamExt as _;
use sqlx::Row as _;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use super::rows::{EVENT_COLUMNS, EventColumns};
use crate::convert;
use crate::error::{Failure, classify, read_error};
use crate::route::Session;

/// The statements of the events table, with the schema filled in.
#[derive(Debug)]
pub(crate) struct Statements {
    append: String,
    read_forward: String,
    read_backward: String,
    read_by_id: String,
    raw_event: String,
}

impl Statements {
    pub(crate) fn new(schema: &str) -> Self {
        let events = format!("\"{schema}\".events");
        Self {
            append: format!(
                "SELECT outcome, actual, conflict_id, tx_id, first_seq, tx_ids, seqs \
                 FROM \"{schema}\".append_events($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb[], $9)"
            ),
            read_forward: format!(
                "SELECT {EVENT_COLUMNS} FROM {events} \
                 WHERE stream_id = $1 AND version >= $2 ORDER BY version LIMIT $3"
            ),
            read_backward: format!(
                "SELECT {EVENT_COLUMNS} FROM {events} \
                 WHERE stream_id = $1 AND version <= $2 ORDER BY version DESC LIMIT $3"
            ),
            read_by_id: format!(
                "SELECT {EVENT_COLUMNS} FROM {events} \
                 WHERE event_id = ANY($1) ORDER BY tx_id, seq"
            ),
            raw_event: format!(
                "SELECT event_id, stream_id, version, event_type, data::text AS data, \
                 metadata::text AS metadata FROM {events} \
                 WHERE tx_id = $1::bigint::text::xid8 AND seq = $2"
            ),
        }
    }
}

/// What the append function decided (its `outcome` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AppendOutcome {
    /// The batch was written.
    Appended,
    /// The batch had been written before: nothing was written.
    Replayed,
    /// The expected version did not hold.
    WrongExpectedVersion,
    /// Some of the batch's ids are stored, others not.
    PartialOverlap,
    /// The ids are stored in another stream.
    OtherStream,
    /// The ids are stored, but not contiguously in the batch's order.
    DifferentOrder,
    /// This transaction is older than the stream's last writer: nothing was
    /// written; run it again.
    Retry,
    /// The batch would take the stream past the `bigint` range.
    VersionOverflow,
}

impl AppendOutcome {
    /// Every outcome.
    #[cfg(test)]
    const ALL: [Self; 8] = [
        Self::Appended,
        Self::Replayed,
        Self::WrongExpectedVersion,
        Self::PartialOverlap,
        Self::OtherStream,
        Self::DifferentOrder,
        Self::Retry,
        Self::VersionOverflow,
    ];

    /// The outcome's code in the SQL function.
    #[cfg(test)]
    fn code(self) -> i16 {
        match self {
            Self::Appended => 0,
            Self::Replayed => 1,
            Self::WrongExpectedVersion => 2,
            Self::PartialOverlap => 3,
            Self::OtherStream => 4,
            Self::DifferentOrder => 5,
            Self::Retry => 6,
            Self::VersionOverflow => 7,
        }
    }

    /// The outcome of `code` (the inverse of `code`, checked by a test).
    fn from_code(code: i16) -> Option<Self> {
        Some(match code {
            0 => Self::Appended,
            1 => Self::Replayed,
            2 => Self::WrongExpectedVersion,
            3 => Self::PartialOverlap,
            4 => Self::OtherStream,
            5 => Self::DifferentOrder,
            6 => Self::Retry,
            7 => Self::VersionOverflow,
            _ => return None,
        })
    }
}

/// The kinds of expectation, as the SQL function takes them
/// (`p_expected_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExpectedKind {
    Any,
    NoStream,
    StreamExists,
    Exact,
}

impl ExpectedKind {
    /// Every kind.
    #[cfg(test)]
    const ALL: [Self; 4] = [Self::Any, Self::NoStream, Self::StreamExists, Self::Exact];

    /// The kind's code in the SQL function.
    fn code(self) -> i16 {
        match self {
            Self::Any => 0,
            Self::NoStream => 1,
            Self::StreamExists => 2,
            Self::Exact => 3,
        }
    }

    /// The kind and version parameters for `expected`.
    fn parameters(expected: ExpectedVersion) -> (i16, i64) {
        let (kind, version) = match expected {
            ExpectedVersion::Any => (Self::Any, 0),
            ExpectedVersion::NoStream => (Self::NoStream, 0),
            ExpectedVersion::StreamExists => (Self::StreamExists, 0),
            ExpectedVersion::Exact(v) => match i64::try_from(v) {
                Ok(v) => (Self::Exact, v),
                // No stream gets past the bigint range, so the check fails;
                // -1 fails it the same way, and the function still looks
                // the ids up and reports the stream's actual version.
                Err(_) => (Self::Exact, -1),
            },
        };
        (kind.code(), version)
    }
}

/// A batch as the append function's parameters. The payloads travel as
/// one JSON array, joined from the text that the size check already
/// produced: each payload is serialized once, and the server parses the
/// batch in one go (a hundred separate parses cost a 100-event append about
/// a tenth of its time). Empty metadata travels as NULL.
pub(crate) struct Batch {
    ids: Vec<Uuid>,
    types: Vec<String>,
    schema_versions: Vec<i32>,
    data: String,
    metadata: Vec<Option<String>>,
}

impl Batch {
    /// The batch of `events`, which `encode_batch` checked and encoded (so
    /// every schema version fits an `integer`).
    pub(crate) fn new(
        stream: &StreamId,
        events: Vec<NewEvent>,
        encoded: Vec<EncodedEvent>,
    ) -> Result<Self, StoreError> {
        let bytes: usize = encoded.iter().map(|e| e.data.len() + 1).sum();
        let mut batch = Self {
            ids: Vec::with_capacity(events.len()),
            types: Vec::with_capacity(events.len()),
            schema_versions: Vec::with_capacity(events.len()),
            data: String::with_capacity(bytes + 2),
            metadata: Vec::with_capacity(events.len()),
        };
        batch.data.push('[');
        for (index, (event, encoded)) in events.into_iter().zip(encoded).enumerate() {
            let schema_version =
                i32::try_from(event.schema_version).map_err(|_| StoreError::InvalidEvent {
                    stream: stream.clone(),
                    index,
                    event_id: event.event_id,
                    event_type: event.event_type.clone(),
                    kind: InvalidEventKind::SchemaVersionTooLarge {
                        version: event.schema_version,
                        max: MAX_SCHEMA_VERSION,
                    },
                })?;
            batch.ids.push(event.event_id);
            batch.types.push(event.event_type);
            batch.schema_versions.push(schema_version);
            if batch.data.len() > 1 {
                batch.data.push(',');
            }
            batch.data.push_str(&encoded.data);
            // Empty metadata travels as NULL and is stored as `{}` without
            // being parsed.
            batch
                .metadata
                .push((encoded.metadata != "{}").then_some(encoded.metadata));
        }
        batch.data.push(']');
        Ok(batch)
    }

    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }
}

/// What one run of the append function decided.
pub(crate) enum Attempt {
    Done(AppendResult),
    /// Lost a race; nothing was written.
    Retry,
}

/// Runs the append function once. With `check`, it looks the batch's ids
/// up even when the version check passes (after a unique violation showed
/// that some are stored).
pub(crate) async fn append(
    session: &mut Session,
    statements: &Statements,
    stream: &StreamId,
    expected: ExpectedVersion,
    batch: &Batch,
    check: bool,
) -> Result<Attempt, Failure> {
    let (kind, version) = ExpectedKind::parameters(expected);
    let row = sqlx::query(&statements.append)
        .bind(stream.as_str())
        .bind(kind)
        .bind(version)
        .bind(&batch.ids)
        .bind(&batch.types)
        .bind(&batch.schema_versions)
        .bind(&batch.data)
        .bind(&batch.metadata)
        .bind(check)
        .persistent(session.persistent())
        .fetch_one(session.conn())
        .await
        .map_err(|e| classify("append", e))?;
    AppendRow::decode(stream, &row)
        .and_then(|result| result.into_attempt(stream, expected, batch.len()))
        .map_err(Failure::Fail)
}

/// A row of the append function, decoded by column name.
struct AppendRow {
    outcome: AppendOutcome,
    actual: u64,
    conflict_id: Option<Uuid>,
    /// A fresh append's first position.
    first: Option<Position>,
    /// A replay's positions, one per event (null otherwise).
    replayed: Option<Vec<Position>>,
}

impl AppendRow {
    fn decode(stream: &StreamId, row: &PgRow) -> Result<Self, StoreError> {
        let bad = |reason: String| StoreError::CorruptRecord {
            location: format!("the result of an append to {stream}"),
            reason,
        };
        let get = |e: sqlx::Error| bad(e.to_string());
        let code: i16 = row.try_get("outcome").map_err(get)?;
        let outcome = AppendOutcome::from_code(code)
            .ok_or_else(|| bad(format!("the unknown outcome {code}")))?;
        let actual: Option<i64> = row.try_get("actual").map_err(get)?;
        let actual = actual.ok_or_else(|| bad("no stream version".to_owned()))?;
        let tx: Option<i64> = row.try_get("tx_id").map_err(get)?;
        let first_seq: Option<i64> = row.try_get("first_seq").map_err(get)?;
        let first = match tx.zip(first_seq) {
            Some((tx, seq)) => Some(convert::position(tx, seq).map_err(bad)?),
            None => None,
        };
        let tx_ids: Option<Vec<i64>> = row.try_get("tx_ids").map_err(get)?;
        let seqs: Option<Vec<i64>> = row.try_get("seqs").map_err(get)?;
        let replayed = match tx_ids.zip(seqs) {
            Some((tx_ids, seqs)) => Some(
                tx_ids
                    .into_iter()
                    .zip(seqs)
                    .map(|(tx, seq)| convert::position(tx, seq))
                    .collect::<Result<_, _>>()
                    .map_err(bad)?,
            ),
            None => None,
        };
        Ok(Self {
            outcome,
            actual: convert::unsigned(actual, "the stream version").map_err(bad)?,
            conflict_id: row.try_get("conflict_id").map_err(get)?,
            first,
            replayed,
        })
    }

    fn into_attempt(
        self,
        stream: &StreamId,
        expected: ExpectedVersion,
        batch_len: usize,
    ) -> Result<Attempt, StoreError> {
        let missing = |what: &str| StoreError::CorruptRecord {
            location: format!("the result of an append to {stream}"),
            reason: format!("{what} is missing"),
        };
        let conflict = |kind| match self.conflict_id {
            Some(event_id) => StoreError::IdempotencyConflict {
                stream: stream.clone(),
                event_id,
                kind,
            },
            None => missing("the conflicting event id"),
        };
        match self.outcome {
            AppendOutcome::Appended => {
                let positions = match self.first {
                    _ if batch_len == 0 => Vec::new(),
                    Some(first) => (0..batch_len as u64)
                        .map(|i| Position::from_parts(first.commit(), first.sequence() + i))
                        .collect(),
                    None => return Err(missing("the position of the events written")),
                };
                Ok(Attempt::Done(AppendResult::new(
                    self.actual,
                    positions,
                    false,
                )))
            }
            AppendOutcome::Replayed => {
                let positions = self
                    .replayed
                    .ok_or_else(|| missing("the positions of the events stored"))?;
                Ok(Attempt::Done(AppendResult::new(
                    self.actual,
                    positions,
                    true,
                )))
            }
            AppendOutcome::WrongExpectedVersion => Err(StoreError::WrongExpectedVersion {
                stream: stream.clone(),
                expected,
                actual: self.actual,
            }),
            AppendOutcome::PartialOverlap => Err(conflict(IdempotencyConflictKind::PartialOverlap)),
            AppendOutcome::OtherStream => Err(conflict(IdempotencyConflictKind::OtherStream)),
            AppendOutcome::DifferentOrder => Err(conflict(IdempotencyConflictKind::DifferentOrder)),
            AppendOutcome::Retry => Ok(Attempt::Retry),
            AppendOutcome::VersionOverflow => Err(StoreError::StreamVersionOverflow {
                stream: stream.clone(),
                events: batch_len,
                max: MAX_STREAM_VERSION,
            }),
        }
    }
}

/// Reads events of one stream, decoding rows as they arrive while the
/// server still produces the rest.
pub(crate) async fn read_stream(
    session: &mut Session,
    statements: &Statements,
    stream: &StreamId,
    read: StreamRead,
) -> Result<Vec<RecordedEvent>, StoreError> {
    // Every stored version is a bigint: a forward read from past that
    // range finds nothing, a backward one starts at the last event.
    let (sql, from) = match (read.direction, i64::try_from(read.from)) {
        _ if read.limit == 0 => return Ok(Vec::new()),
        (ReadDirection::Forward, Ok(from)) => (&statements.read_forward, from),
        (ReadDirection::Forward, Err(_)) => return Ok(Vec::new()),
        (ReadDirection::Backward, from) => (
            &statements.read_backward,
            from.map_or(i64::MAX, |from| from),
        ),
    };
    let mut rows = sqlx::query(sql)
        .bind(stream.as_str())
        .bind(from)
        .bind(convert::limit(read.limit))
        .persistent(session.persistent())
        .fetch(session.conn());
    let mut events = Vec::new();
    let mut columns = None;
    let mut corrupt = None;
    while let Some(row) = rows
        .try_next()
        .await
        .map_err(|e| read_error("read stream", e))?
    {
        if corrupt.is_some() {
            continue;
        }
        let columns = match columns {
            Some(columns) => columns,
            None => *columns.insert(EventColumns::locate(&row)?),
        };
        match columns.decode(&row, Some(stream)) {
            Ok(event) => events.push(event),
            Err(error) => corrupt = Some(error),
        }
    }
    corrupt.map_or(Ok(events), Err)
}

/// Reads the stored events among `ids`, in feed order (through the unique
/// index on `event_id`).
pub(crate) async fn read_by_id(
    session: &mut Session,
    statements: &Statements,
    ids: &[Uuid],
) -> Result<Vec<RecordedEvent>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(&statements.read_by_id)
        .bind(ids)
        .persistent(session.persistent())
        .fetch_all(session.conn())
        .await
        .map_err(|e| read_error("read events by id", e))?;
    let Some(first) = rows.first() else {
        return Ok(Vec::new());
    };
    let columns = EventColumns::locate(first)?;
    rows.iter().map(|row| columns.decode(row, None)).collect()
}

/// An event row as stored, for an event that cannot be read back: its
/// data and metadata as the text PostgreSQL holds.
#[derive(Debug)]
pub(crate) struct RawEvent {
    pub(crate) event_id: Uuid,
    pub(crate) stream_id: String,
    pub(crate) version: u64,
    pub(crate) event_type: String,
    pub(crate) data: String,
    pub(crate) metadata: String,
}

/// The stored row at `position`, as text, if there is one.
pub(crate) async fn raw_event(
    session: &mut Session,
    statements: &Statements,
    position: Position,
) -> Result<Option<RawEvent>, StoreError> {
    let Some((tx, seq)) = convert::feed_after(position) else {
        return Ok(None);
    };
    let row = sqlx::query(&statements.raw_event)
        .bind(tx)
        .bind(seq)
        .persistent(session.persistent())
        .fetch_optional(session.conn())
        .await
        .map_err(|e| read_error("read a stored event", e))?;
    let Some(row) = row else { return Ok(None) };
    let corrupt = |reason: String| StoreError::CorruptEvent {
        location: format!("position {position}"),
        position: Some(position),
        reason,
    };
    let field = |e: sqlx::Error| corrupt(e.to_string());
    Ok(Some(RawEvent {
        event_id: row.try_get("event_id").map_err(field)?,
        stream_id: row.try_get("stream_id").map_err(field)?,
        version: convert::unsigned(row.try_get("version").map_err(field)?, "the version")
            .map_err(corrupt)?,
        event_type: row.try_get("event_type").map_err(field)?,
        data: row.try_get("data").map_err(field)?,
        metadata: row.try_get("metadata").map_err(field)?,
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::{AppendOutcome, ExpectedKind};

    /// The append function as the newest migration defines it.
    const FUNCTION: &str = include_str!("../../migrations/0004_round_trip.sql");

    /// The integers that follow `marker` in the function's source.
    fn codes_after(marker: &str) -> BTreeSet<i16> {
        FUNCTION
            .match_indices(marker)
            .filter_map(|(at, _)| {
                let rest = &FUNCTION[at + marker.len()..];
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            })
            .collect()
    }

    #[test]
    fn the_outcome_codes_are_the_functions() {
        let ours: BTreeSet<i16> = AppendOutcome::ALL.iter().map(|o| o.code()).collect();
        assert_eq!(ours, codes_after("outcome := "));
        assert_eq!(ours.len(), AppendOutcome::ALL.len(), "codes are distinct");
        for outcome in AppendOutcome::ALL {
            assert_eq!(AppendOutcome::from_code(outcome.code()), Some(outcome));
        }
        assert_eq!(AppendOutcome::from_code(8), None);
    }

    #[test]
    fn the_expected_kinds_are_the_functions() {
        let ours: BTreeSet<i16> = ExpectedKind::ALL.iter().map(|k| k.code()).collect();
        // `WHEN n THEN` for each kind but the last, which is the ELSE.
        let mut theirs = codes_after("WHEN ");
        theirs.insert(ExpectedKind::Exact.code());
        assert_eq!(ours, theirs);
        assert!(FUNCTION.contains("Expected kinds: 0 any, 1 no stream, 2 stream exists, 3 exact."));
    }
}
