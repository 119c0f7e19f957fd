//! The snapshots table: the newest snapshot of each stream.

use es_core::backend::encode_snapshot;
use es_core::{InvalidSnapshotKind, Snapshot, StoreError, StreamId};
use sqlx::Row as _;

use crate::convert;
use crate::error::read_error;
use crate::route::Session;

/// The statements of the snapshots table, with the schema filled in.
#[derive(Debug)]
pub(crate) struct Statements {
    load: String,
    save: String,
}

impl Statements {
    pub(crate) fn new(schema: &str) -> Self {
        Self {
            load: format!(
                "SELECT version, schema_version, data, taken_at \
                 FROM \"{schema}\".snapshots WHERE stream_id = $1"
            ),
            save: format!(
                "SELECT \"{schema}\".save_snapshot($1, $2, $3, $4::jsonb, $5) AS deleted"
            ),
        }
    }
}

/// The snapshot of `stream`, decoded by column name, if there is one.
pub(crate) async fn load(
    session: &mut Session,
    statements: &Statements,
    stream: &StreamId,
) -> Result<Option<Snapshot>, StoreError> {
    let row = sqlx::query(&statements.load)
        .bind(stream.as_str())
        .persistent(session.persistent())
        .fetch_optional(session.conn())
        .await
        .map_err(|e| read_error("load snapshot", e))?;
    let Some(row) = row else { return Ok(None) };
    let corrupt = |reason: String| StoreError::CorruptRecord {
        location: format!("snapshot of stream {stream}"),
        reason,
    };
    let field = |e: sqlx::Error| corrupt(e.to_string());
    let version: i64 = row.try_get("version").map_err(field)?;
    let schema_version: i32 = row.try_get("schema_version").map_err(field)?;
    let mut snapshot = Snapshot::new(
        stream.clone(),
        convert::unsigned(version, "the version").map_err(corrupt)?,
        u32::try_from(schema_version)
            .map_err(|_| corrupt(format!("negative format version {schema_version}")))?,
        row.try_get("data").map_err(field)?,
    );
    snapshot.taken_at = row.try_get("taken_at").map_err(field)?;
    Ok(Some(snapshot))
}

/// Saves `snapshot` unless a newer one is stored; checked first as every
/// store checks it. [`StoreError::StreamDeleted`] when the stream is
/// deleted: nothing is saved.
pub(crate) async fn save(
    session: &mut Session,
    statements: &Statements,
    snapshot: &Snapshot,
) -> Result<(), StoreError> {
    let data = encode_snapshot(snapshot)?;
    // `encode_snapshot` checked both versions against these columns.
    let out_of_range = |what: &str| StoreError::InvalidSnapshot {
        stream: snapshot.stream_id.clone(),
        kind: InvalidSnapshotKind::Unencodable(format!("the {what} does not fit its column")),
    };
    let version = i64::try_from(snapshot.version).map_err(|_| out_of_range("version"))?;
    let schema_version =
        i32::try_from(snapshot.schema_version).map_err(|_| out_of_range("format version"))?;
    let deleted: Option<i64> = sqlx::query_scalar(&statements.save)
        .bind(snapshot.stream_id.as_str())
        .bind(version)
        .bind(schema_version)
        .bind(data)
        .bind(snapshot.taken_at)
        .persistent(session.persistent())
        .fetch_one(session.conn())
        .await
        .map_err(|e| read_error("save snapshot", e))?;
    match deleted {
        None => Ok(()),
        Some(version) => Err(StoreError::StreamDeleted {
            stream: snapshot.stream_id.clone(),
            version: convert::unsigned(version, "the version").map_err(|reason| {
                StoreError::CorruptRecord {
                    location: format!("the last event of stream {}", snapshot.stream_id),
                    reason,
                }
            })?,
        }),
    }
}
