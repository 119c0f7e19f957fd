//! The events table: the append function, stream reads, reads by event id,
//! and a row's stored text.

use es_core::backend::EncodedEvent;
use es_core::store::{MAX_SCHEMA_VERSION, MAX_STREAM_VERSION};
use es_core::{ARCHIVED_EVENT_TYPE, DELETED_EVENT_TYPE, is_system_event_type};
use es_core::{
    AppendResult, ExpectedVersion, IdempotencyConflictKind, InvalidEventKind, NewEvent, Position,
    ReadDirection, RecordedEvent, StoreError, StreamAppend, StreamId, StreamRead,
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
    append_many: String,
    close: String,
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
            append_many: format!(
                "SELECT outcome, failed, actual, conflict_id, versions, tx_id, first_seq, tx_ids, \
                 seqs FROM \"{schema}\".append_many($1, $2, $3, $4, $5, $6, $7, $8, $9, \
                 $10::jsonb, $11::jsonb[], $12)"
            ),
            close: format!(
                "SELECT outcome, actual, conflict_id, tx_id, first_seq, tx_ids, seqs \
                 FROM \"{schema}\".close_stream($1, $2, $3, $4, $5, $6::jsonb)"
            ),
            read_forward: read_stream_statement(&events, "version >= $2 ORDER BY version LIMIT $3"),
            read_backward: read_stream_statement(
                &events,
                "version <= $2 ORDER BY version DESC LIMIT $3",
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

/// A read of a stream's range (`range` after `stream_id = $1 AND`) with
/// the stream's last event type beside each row, so that an archived or
/// deleted stream is recognized in the same round trip. A stream with no
/// event in the range gives one row of null event columns; one that does
/// not exist gives no row.
fn read_stream_statement(events: &str, range: &str) -> String {
    format!(
        "SELECT head.head_type, head.head_version, range.* FROM \
         (SELECT event_type AS head_type, version AS head_version FROM {events} \
          WHERE stream_id = $1 ORDER BY version DESC LIMIT 1) AS head \
         LEFT JOIN LATERAL (SELECT {EVENT_COLUMNS} FROM {events} \
          WHERE stream_id = $1 AND {range}) AS range ON true"
    )
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
    /// The stream was deleted.
    StreamDeleted,
}

impl AppendOutcome {
    /// Every outcome.
    #[cfg(test)]
    const ALL: [Self; 9] = [
        Self::Appended,
        Self::Replayed,
        Self::WrongExpectedVersion,
        Self::PartialOverlap,
        Self::OtherStream,
        Self::DifferentOrder,
        Self::Retry,
        Self::VersionOverflow,
        Self::StreamDeleted,
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
            Self::StreamDeleted => 8,
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
            8 => Self::StreamDeleted,
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
        let mut batch = Self::with_capacity(events.len());
        batch.push(stream, events, encoded)?;
        Ok(batch)
    }

    fn with_capacity(events: usize) -> Self {
        Self {
            ids: Vec::with_capacity(events),
            types: Vec::with_capacity(events),
            schema_versions: Vec::with_capacity(events),
            data: "[]".to_owned(),
            metadata: Vec::with_capacity(events),
        }
    }

    /// Adds `events` (of `stream`) at the end.
    fn push(
        &mut self,
        stream: &StreamId,
        events: Vec<NewEvent>,
        encoded: Vec<EncodedEvent>,
    ) -> Result<(), StoreError> {
        let bytes: usize = encoded.iter().map(|e| e.data.len() + 1).sum();
        self.data.pop();
        self.data.reserve(bytes + 1);
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
            self.ids.push(event.event_id);
            self.types.push(event.event_type);
            self.schema_versions.push(schema_version);
            if self.data.len() > 1 {
                self.data.push(',');
            }
            self.data.push_str(&encoded.data);
            // Empty metadata travels as NULL and is stored as `{}` without
            // being parsed.
            self.metadata
                .push((encoded.metadata != "{}").then_some(encoded.metadata));
        }
        self.data.push(']');
        Ok(())
    }

    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }
}

/// An append across streams as the function's parameters: each stream with
/// its expectation and event count, and every event of the request in one
/// [`Batch`] with its stream and its place in that stream's batch.
pub(crate) struct Request {
    streams: Vec<StreamId>,
    expected: Vec<ExpectedVersion>,
    counts: Vec<i32>,
    entries: Vec<i32>,
    offsets: Vec<i32>,
    batch: Batch,
}

impl Request {
    /// The request of `appends`, which `encode_request` checked and encoded.
    pub(crate) fn new(
        appends: Vec<StreamAppend>,
        encoded: Vec<Vec<EncodedEvent>>,
    ) -> Result<Self, StoreError> {
        let events = encoded.iter().map(Vec::len).sum();
        let mut request = Self {
            streams: Vec::with_capacity(appends.len()),
            expected: Vec::with_capacity(appends.len()),
            counts: Vec::with_capacity(appends.len()),
            entries: Vec::with_capacity(events),
            offsets: Vec::with_capacity(events),
            batch: Batch::with_capacity(events),
        };
        for ((append, encoded), entry) in appends.into_iter().zip(encoded).zip(1_i32..) {
            let count = append.events.len();
            // The request's limits (at most `max_batch_events`) were checked.
            let count_i32 = i32::try_from(count).map_err(|_| StoreError::BatchTooLarge {
                stream: append.stream.clone(),
                events: count,
                bytes: 0,
                max_events: i32::MAX.unsigned_abs() as usize,
                max_bytes: 0,
            })?;
            request.entries.extend(std::iter::repeat_n(entry, count));
            request.offsets.extend(1..=count_i32);
            request.counts.push(count_i32);
            request.batch.push(&append.stream, append.events, encoded)?;
            request.streams.push(append.stream);
            request.expected.push(append.expected);
        }
        Ok(request)
    }

    /// Whether the request holds no event.
    pub(crate) fn is_empty(&self) -> bool {
        self.batch.len() == 0
    }

    /// The request's streams, for messages.
    pub(crate) fn streams(&self) -> &[StreamId] {
        &self.streams
    }
}

/// What one run of an append function decided.
pub(crate) enum Attempt<T = AppendResult> {
    Done(T),
    /// Lost a race; nothing was written.
    Retry,
}

/// One of the store's writes: one run of its function, which the store
/// repeats after a lost race or a broken connection. With `check`, a run
/// looks the events' ids up even when the version check passes (after a
/// unique violation showed that some are stored).
pub(crate) trait Write: Sync {
    /// What the write returns.
    type Output: Send;

    /// Runs the write's function once.
    fn run<'a>(
        &'a self,
        session: &'a mut Session,
        statements: &'a Statements,
        check: bool,
    ) -> impl Future<Output = Result<Attempt<Self::Output>, Failure>> + Send + 'a;
}

/// An append to one stream.
pub(crate) struct Single<'a> {
    pub(crate) stream: &'a StreamId,
    pub(crate) expected: ExpectedVersion,
    pub(crate) batch: &'a Batch,
}

impl Write for Single<'_> {
    type Output = AppendResult;

    async fn run(
        &self,
        session: &mut Session,
        statements: &Statements,
        check: bool,
    ) -> Result<Attempt, Failure> {
        let (stream, batch) = (self.stream, self.batch);
        let (kind, version) = ExpectedKind::parameters(self.expected);
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
            .and_then(|result| result.into_attempt(stream, self.expected, batch.len()))
            .map_err(Failure::Fail)
    }
}

/// Archiving or deleting a stream: appending its `marker` event, which is
/// a replay when the stream already ends with it.
pub(crate) struct Close<'a> {
    pub(crate) stream: &'a StreamId,
    pub(crate) expected: ExpectedVersion,
    pub(crate) marker: &'a str,
}

impl Write for Close<'_> {
    type Output = AppendResult;

    async fn run(
        &self,
        session: &mut Session,
        statements: &Statements,
        _check: bool,
    ) -> Result<Attempt, Failure> {
        let (kind, version) = ExpectedKind::parameters(self.expected);
        let row = sqlx::query(&statements.close)
            .bind(self.stream.as_str())
            .bind(self.marker)
            .bind(kind)
            .bind(version)
            .bind(Uuid::new_v4())
            .bind("{}")
            .persistent(session.persistent())
            .fetch_one(session.conn())
            .await
            .map_err(|e| classify("append", e))?;
        AppendRow::decode(self.stream, &row)
            .and_then(|result| result.into_attempt(self.stream, self.expected, 1))
            .map_err(Failure::Fail)
    }
}

impl Write for Request {
    type Output = Vec<AppendResult>;

    async fn run(
        &self,
        session: &mut Session,
        statements: &Statements,
        check: bool,
    ) -> Result<Attempt<Vec<AppendResult>>, Failure> {
        let (kinds, versions): (Vec<i16>, Vec<i64>) = self
            .expected
            .iter()
            .map(|&e| ExpectedKind::parameters(e))
            .unzip();
        let streams: Vec<&str> = self.streams.iter().map(StreamId::as_str).collect();
        let batch = &self.batch;
        let row = sqlx::query(&statements.append_many)
            .bind(&streams)
            .bind(&kinds)
            .bind(&versions)
            .bind(&self.counts)
            .bind(&self.entries)
            .bind(&self.offsets)
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
        ManyRow::decode(self, &row)
            .and_then(|result| result.into_attempt(self))
            .map_err(Failure::Fail)
    }
}

/// The error of an outcome that wrote nothing, or `None` for `Appended`,
/// `Replayed` and `Retry`.
fn refusal(
    outcome: AppendOutcome,
    stream: &StreamId,
    expected: ExpectedVersion,
    actual: u64,
    conflict_id: Option<Uuid>,
    events: usize,
) -> Option<StoreError> {
    let kind = match outcome {
        AppendOutcome::Appended | AppendOutcome::Replayed | AppendOutcome::Retry => return None,
        AppendOutcome::WrongExpectedVersion => {
            return Some(StoreError::WrongExpectedVersion {
                stream: stream.clone(),
                expected,
                actual,
            });
        }
        AppendOutcome::VersionOverflow => {
            return Some(StoreError::StreamVersionOverflow {
                stream: stream.clone(),
                events,
                max: MAX_STREAM_VERSION,
            });
        }
        AppendOutcome::StreamDeleted => {
            return Some(StoreError::StreamDeleted {
                stream: stream.clone(),
                version: actual,
            });
        }
        AppendOutcome::PartialOverlap => IdempotencyConflictKind::PartialOverlap,
        AppendOutcome::OtherStream => IdempotencyConflictKind::OtherStream,
        AppendOutcome::DifferentOrder => IdempotencyConflictKind::DifferentOrder,
    };
    Some(match conflict_id {
        Some(event_id) => StoreError::IdempotencyConflict {
            stream: stream.clone(),
            event_id,
            kind,
        },
        None => missing(stream, "the conflicting event id"),
    })
}

fn missing(stream: &StreamId, what: &str) -> StoreError {
    StoreError::CorruptRecord {
        location: format!("the result of an append to {stream}"),
        reason: format!("{what} is missing"),
    }
}

/// The columns that the append functions share, decoded by name.
struct Common {
    outcome: AppendOutcome,
    actual: Option<u64>,
    conflict_id: Option<Uuid>,
    /// A fresh append's first position.
    first: Option<Position>,
    /// A replay's positions, one per event (null otherwise).
    replayed: Option<Vec<Position>>,
}

impl Common {
    fn decode(row: &PgRow, bad: &dyn Fn(String) -> StoreError) -> Result<Self, StoreError> {
        let get = |e: sqlx::Error| bad(e.to_string());
        let code: i16 = row.try_get("outcome").map_err(get)?;
        let outcome = AppendOutcome::from_code(code)
            .ok_or_else(|| bad(format!("the unknown outcome {code}")))?;
        let actual: Option<i64> = row.try_get("actual").map_err(get)?;
        let actual = match actual {
            Some(actual) => Some(convert::unsigned(actual, "the stream version").map_err(bad)?),
            None => None,
        };
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
            actual,
            conflict_id: row.try_get("conflict_id").map_err(get)?,
            first,
            replayed,
        })
    }

    /// The positions of `count` events written from the first position.
    fn written(
        &self,
        stream: &StreamId,
        skip: u64,
        count: usize,
    ) -> Result<Vec<Position>, StoreError> {
        match self.first {
            _ if count == 0 => Ok(Vec::new()),
            Some(first) => Ok((skip..skip + count as u64)
                .map(|i| Position::from_parts(first.commit(), first.sequence() + i))
                .collect()),
            None => Err(missing(stream, "the position of the events written")),
        }
    }
}

/// A row of the append function.
struct AppendRow(Common);

impl AppendRow {
    fn decode(stream: &StreamId, row: &PgRow) -> Result<Self, StoreError> {
        let bad = |reason: String| StoreError::CorruptRecord {
            location: format!("the result of an append to {stream}"),
            reason,
        };
        Common::decode(row, &bad).map(Self)
    }

    fn into_attempt(
        self,
        stream: &StreamId,
        expected: ExpectedVersion,
        batch_len: usize,
    ) -> Result<Attempt, StoreError> {
        let row = self.0;
        let actual = row
            .actual
            .ok_or_else(|| missing(stream, "the stream version"))?;
        if let Some(error) = refusal(
            row.outcome,
            stream,
            expected,
            actual,
            row.conflict_id,
            batch_len,
        ) {
            return Err(error);
        }
        let (positions, replay) = match row.outcome {
            AppendOutcome::Retry => return Ok(Attempt::Retry),
            AppendOutcome::Replayed => (
                row.replayed
                    .ok_or_else(|| missing(stream, "the positions of the events stored"))?,
                true,
            ),
            _ => (row.written(stream, 0, batch_len)?, false),
        };
        Ok(Attempt::Done(AppendResult::new(actual, positions, replay)))
    }
}

/// A row of the function that appends across streams.
struct ManyRow {
    common: Common,
    /// The stream (1-based) the outcome is about.
    failed: Option<i32>,
    /// Each stream's version after the request.
    versions: Option<Vec<i64>>,
}

impl ManyRow {
    fn decode(request: &Request, row: &PgRow) -> Result<Self, StoreError> {
        let bad = |reason: String| StoreError::CorruptRecord {
            location: format!(
                "the result of an append across {} streams",
                request.streams.len()
            ),
            reason,
        };
        let get = |e: sqlx::Error| bad(e.to_string());
        Ok(Self {
            common: Common::decode(row, &bad)?,
            failed: row.try_get("failed").map_err(get)?,
            versions: row.try_get("versions").map_err(get)?,
        })
    }

    fn into_attempt(self, request: &Request) -> Result<Attempt<Vec<AppendResult>>, StoreError> {
        let Self {
            common,
            failed,
            versions,
        } = self;
        let Some(first) = request.streams.first() else {
            return Ok(Attempt::Done(Vec::new()));
        };
        match common.outcome {
            AppendOutcome::Retry => return Ok(Attempt::Retry),
            AppendOutcome::Appended | AppendOutcome::Replayed => {}
            outcome => {
                let index = failed
                    .and_then(|i| usize::try_from(i).ok()?.checked_sub(1))
                    .filter(|&i| i < request.streams.len())
                    .ok_or_else(|| missing(first, "the stream that failed"))?;
                let stream = &request.streams[index];
                let events = usize::try_from(request.counts[index]).unwrap_or_default();
                let actual = common.actual.unwrap_or_default();
                return Err(refusal(
                    outcome,
                    stream,
                    request.expected[index],
                    actual,
                    common.conflict_id,
                    events,
                )
                .unwrap_or_else(|| missing(stream, "the outcome")));
            }
        }
        let versions = versions
            .filter(|v| v.len() == request.streams.len())
            .ok_or_else(|| missing(first, "the streams' versions"))?;
        let replay = common.outcome == AppendOutcome::Replayed;
        let mut skip = 0_usize;
        let mut results = Vec::with_capacity(versions.len());
        for ((stream, &count), version) in request.streams.iter().zip(&request.counts).zip(versions)
        {
            let count = usize::try_from(count).unwrap_or_default();
            let positions = if replay {
                let stored = common
                    .replayed
                    .as_deref()
                    .and_then(|p| p.get(skip..skip + count))
                    .ok_or_else(|| missing(stream, "the positions of the events stored"))?;
                stored.to_vec()
            } else {
                common.written(stream, skip as u64, count)?
            };
            skip += count;
            let version = convert::unsigned(version, "the stream version").map_err(|reason| {
                StoreError::CorruptRecord {
                    location: format!("the result of an append to {stream}"),
                    reason,
                }
            })?;
            results.push(AppendResult::new(version, positions, replay));
        }
        Ok(Attempt::Done(results))
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
    let (sql, from) = match read.direction {
        ReadDirection::Forward => (&statements.read_forward, i64::try_from(read.from)),
        ReadDirection::Backward => (&statements.read_backward, i64::try_from(read.from)),
    };
    let from = from.unwrap_or(i64::MAX);
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
        let columns = if let Some(columns) = columns {
            columns
        } else {
            closed(stream, &row)?;
            *columns.insert(EventColumns::locate(&row)?)
        };
        if !columns.present(&row)? {
            continue;
        }
        match columns.decode(&row, Some(stream)) {
            Ok(event) => events.push(event),
            Err(error) => corrupt = Some(error),
        }
    }
    corrupt.map_or(Ok(events), Err)
}

/// [`StoreError::StreamArchived`] or [`StoreError::StreamDeleted`] when the
/// stream's last event (beside the first row of a read) is its marker.
fn closed(stream: &StreamId, row: &PgRow) -> Result<(), StoreError> {
    let corrupt = |reason: String| StoreError::CorruptRecord {
        location: format!("the last event of stream {stream}"),
        reason,
    };
    let head_type: &str = row
        .try_get("head_type")
        .map_err(|e| corrupt(e.to_string()))?;
    if !is_system_event_type(head_type) {
        return Ok(());
    }
    let version: i64 = row
        .try_get("head_version")
        .map_err(|e| corrupt(e.to_string()))?;
    let version = u64::try_from(version).map_err(|_| corrupt(format!("version {version}")))?;
    let stream = stream.clone();
    match head_type {
        ARCHIVED_EVENT_TYPE => Err(StoreError::StreamArchived { stream, version }),
        DELETED_EVENT_TYPE => Err(StoreError::StreamDeleted { stream, version }),
        other => Err(corrupt(format!("unknown system event type {other}"))),
    }
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
    const FUNCTION: &str = include_str!("../../migrations/0008_streams_across.sql");

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
        assert_eq!(AppendOutcome::from_code(9), None);
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
