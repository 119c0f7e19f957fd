//! Decoding event rows by column name, shared by the stream reads and the
//! feed.

use es_core::{Metadata, Position, RecordedEvent, StoreError, StreamId};
use sqlx::Row as _;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use uuid::Uuid;

use crate::convert;

/// The columns of an event row, as every statement that reads events
/// names them.
pub(crate) const EVENT_COLUMNS: &str = "event_id, stream_id, version, tx_id, seq, \
                                        event_type, schema_version, data, metadata, recorded_at";

/// [`EVENT_COLUMNS`] of the events table under the alias `alias`.
pub(crate) fn qualified_event_columns(alias: &str) -> String {
    EVENT_COLUMNS
        .split(", ")
        .map(|column| format!("{alias}.{}", column.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where the event columns are in a result set, found by name once, from
/// its first row: decoding a row then costs no name lookups.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventColumns {
    event_id: usize,
    stream_id: usize,
    version: usize,
    tx_id: usize,
    seq: usize,
    event_type: usize,
    schema_version: usize,
    data: usize,
    metadata: usize,
    recorded_at: usize,
}

impl EventColumns {
    /// The event columns of `row`'s result set.
    pub(crate) fn locate(row: &PgRow) -> Result<Self, StoreError> {
        let at = |name: &str| {
            row.try_column(name)
                .map(sqlx::Column::ordinal)
                .map_err(|e| StoreError::CorruptRecord {
                    location: "an events row".to_owned(),
                    reason: format!("no column {name}: {e}"),
                })
        };
        Ok(Self {
            event_id: at("event_id")?,
            stream_id: at("stream_id")?,
            version: at("version")?,
            tx_id: at("tx_id")?,
            seq: at("seq")?,
            event_type: at("event_type")?,
            schema_version: at("schema_version")?,
            data: at("data")?,
            metadata: at("metadata")?,
            recorded_at: at("recorded_at")?,
        })
    }

    /// Whether `row` holds an event (a page with no events is one row of
    /// null event columns).
    pub(crate) fn present(&self, row: &PgRow) -> Result<bool, StoreError> {
        let seq: Option<i64> = row.try_get(self.seq).map_err(|e| unplaced(e.to_string()))?;
        Ok(seq.is_some())
    }

    /// The event of `row`. `known` is a stream id the row probably has (the
    /// stream read, or the previous row's), shared when it does. A value
    /// that cannot be read back is [`StoreError::CorruptEvent`] naming the
    /// event as precisely as the row allows.
    pub(crate) fn decode(
        &self,
        row: &PgRow,
        known: Option<&StreamId>,
    ) -> Result<RecordedEvent, StoreError> {
        let position = self.position(row)?;
        let at = Location::new(position);
        let field = |e: sqlx::Error| at.corrupt(e.to_string());
        let stream: &str = row.try_get(self.stream_id).map_err(field)?;
        // Rows of a stream read all carry the id asked for: share it.
        let stream_id = match known {
            Some(id) if id.as_str() == stream => id.clone(),
            _ => StreamId::new(stream)
                .map_err(|e| at.corrupt(format!("stream id {stream:?}: {e}")))?,
        };
        let version: i64 = row.try_get(self.version).map_err(field)?;
        let version = convert::unsigned(version, "the version").map_err(|e| at.corrupt(e))?;
        let event_type: String = row.try_get(self.event_type).map_err(field)?;
        let schema_version: i32 = row.try_get(self.schema_version).map_err(field)?;
        let at = at.in_stream(&stream_id, version, &event_type, schema_version);
        let schema_version = u32::try_from(schema_version)
            .map_err(|_| at.corrupt(format!("negative schema version {schema_version}")))?;
        let metadata = self.metadata(row).map_err(|e| at.corrupt(e))?;
        let data: serde_json::Value = row
            .try_get(self.data)
            .map_err(|e| at.corrupt(format!("data: {e}")))?;
        let event_id: Uuid = row.try_get(self.event_id).map_err(field)?;
        Ok(es_core::backend::recorded_event(
            event_id,
            stream_id,
            version,
            position,
            event_type,
            schema_version,
            data,
            metadata,
            row.try_get(self.recorded_at).map_err(field)?,
        ))
    }

    fn position(&self, row: &PgRow) -> Result<Position, StoreError> {
        let seq: i64 = row.try_get(self.seq).map_err(|e| unplaced(e.to_string()))?;
        let Xid8(tx) = row
            .try_get(self.tx_id)
            .map_err(|e| unplaced(e.to_string()))?;
        let seq = convert::unsigned(seq, "the sequence").map_err(unplaced)?;
        Ok(Position::from_parts(tx, seq))
    }

    /// The metadata; `{}` (most events') needs no parsing.
    fn metadata(&self, row: &PgRow) -> Result<Metadata, String> {
        if is_empty_object(row, self.metadata) {
            return Ok(Metadata::default());
        }
        let Json(metadata): Json<Metadata> = row
            .try_get(self.metadata)
            .map_err(|e| format!("metadata is not a metadata object: {e}"))?;
        Ok(metadata)
    }
}

/// A corrupt row whose position is unknown.
fn unplaced(reason: String) -> StoreError {
    StoreError::CorruptEvent {
        location: "an events row".to_owned(),
        position: None,
        reason,
    }
}

/// Where an event row is, as precisely as known so far.
struct Location {
    position: Position,
    text: String,
}

impl Location {
    fn new(position: Position) -> Self {
        Self {
            position,
            text: format!("position {position}"),
        }
    }

    fn in_stream(
        &self,
        stream: &StreamId,
        version: u64,
        event_type: &str,
        schema_version: i32,
    ) -> Self {
        Self {
            position: self.position,
            text: format!(
                "{}, stream {stream} version {version}, event type {event_type:?} schema version {schema_version}",
                self.text
            ),
        }
    }

    fn corrupt(&self, reason: String) -> StoreError {
        StoreError::CorruptEvent {
            location: self.text.clone(),
            position: Some(self.position),
            reason,
        }
    }
}

/// Whether column `index` holds the `jsonb` value `{}`, which needs no
/// parsing.
fn is_empty_object(row: &PgRow, index: usize) -> bool {
    let Ok(value) = row.try_get_raw(index) else {
        return false;
    };
    match value.format() {
        // Binary jsonb: a version byte (1), then the text.
        sqlx::postgres::PgValueFormat::Binary => value.as_bytes().ok() == Some(b"\x01{}"),
        sqlx::postgres::PgValueFormat::Text => value.as_bytes().ok() == Some(b"{}"),
    }
}

/// A PostgreSQL `xid8`: a 64-bit transaction id, read in binary so that a
/// read does not convert every row's id to text.
pub(crate) struct Xid8(pub(crate) u64);

/// The built-in type id of `xid8`.
const XID8_OID: sqlx::postgres::types::Oid = sqlx::postgres::types::Oid(5069);

impl sqlx::Type<sqlx::Postgres> for Xid8 {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        sqlx::postgres::PgTypeInfo::with_oid(XID8_OID)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for Xid8 {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        match value.format() {
            sqlx::postgres::PgValueFormat::Binary => {
                let bytes: [u8; 8] = value.as_bytes()?.try_into()?;
                Ok(Self(u64::from_be_bytes(bytes)))
            }
            sqlx::postgres::PgValueFormat::Text => Ok(Self(value.as_str()?.parse()?)),
        }
    }
}
