//! What the store holds, for the people who operate it: counts, the list of
//! streams (through the `events_streams` index, one entry per stream), the
//! head of the feed and the recent rate of appends.

use chrono::{DateTime, Utc};
use es_core::{Position, StoreError, StreamId};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row as _};

use super::rows::Xid8;
use crate::catalog::{Activity, CategorySummary, MinuteCount, StoreSummary, StreamSummary};
use crate::convert;
use crate::error::read_error;

/// A row's category, as the streams index computes it.
const CATEGORY: &str = "split_part(stream_id, '-', 1)";

/// The catalog's statements, with the schema filled in.
#[derive(Debug)]
pub(crate) struct Statements {
    counts: String,
    categories: String,
    head: String,
    streams: String,
    category_streams: String,
    activity: String,
}

impl Statements {
    pub(crate) fn new(schema: &str) -> Self {
        let events = format!("\"{schema}\".events");
        // A stream's newest row: its version and when it was last written.
        let newest = format!(
            "CROSS JOIN LATERAL (SELECT n.version, n.recorded_at FROM {events} n \
             WHERE n.stream_id = f.stream_id ORDER BY n.version DESC LIMIT 1) l"
        );
        let stream_columns =
            "f.stream_id, l.version, f.recorded_at AS created_at, l.recorded_at AS updated_at";
        Self {
            counts: format!(
                "SELECT (SELECT count(*) FROM {events}) AS events, \
                        (SELECT count(*) FROM {events} WHERE version = 1) AS streams"
            ),
            categories: format!(
                "SELECT {CATEGORY} AS category, count(*) AS streams FROM {events} \
                 WHERE version = 1 GROUP BY 1 ORDER BY 1"
            ),
            head: format!(
                "SELECT tx_id, seq FROM {events} \
                 WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
                 ORDER BY tx_id DESC, seq DESC LIMIT 1"
            ),
            streams: format!(
                "SELECT {stream_columns} FROM {events} f {newest} \
                 WHERE f.version = 1 AND (split_part(f.stream_id, '-', 1), f.stream_id) > ($1, $2) \
                 ORDER BY split_part(f.stream_id, '-', 1), f.stream_id LIMIT $3"
            ),
            category_streams: format!(
                "SELECT {stream_columns} FROM {events} f {newest} \
                 WHERE f.version = 1 AND split_part(f.stream_id, '-', 1) = $1 \
                 AND f.stream_id > $2 ORDER BY f.stream_id LIMIT $3"
            ),
            // The newest `$2` events at most, walked back along the primary
            // key: the cost is bounded whatever the store holds.
            // The server's minute comes along, also when no row does, so
            // that minutes are counted on one clock.
            activity: format!(
                "SELECT date_trunc('minute', now()) AS now, m.minute, m.events, m.reached_cap \
                 FROM (SELECT) AS one LEFT JOIN ( \
                   SELECT date_trunc('minute', recorded_at) AS minute, count(*) AS events, \
                          bool_or(last) AS reached_cap \
                   FROM (SELECT recorded_at, row_number() OVER () = $2 AS last FROM \
                         (SELECT recorded_at FROM {events} \
                          WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
                          ORDER BY tx_id DESC, seq DESC LIMIT $2) newest) t \
                   WHERE recorded_at > now() - make_interval(mins => $1) \
                   GROUP BY 1) AS m ON true \
                 ORDER BY m.minute"
            ),
        }
    }
}

fn corrupt(location: &str, reason: String) -> StoreError {
    StoreError::CorruptRecord {
        location: location.to_owned(),
        reason,
    }
}

fn count(row: &PgRow, column: &str, operation: &'static str) -> Result<u64, StoreError> {
    let value: i64 = row.try_get(column).map_err(|e| read_error(operation, e))?;
    convert::unsigned(value, column).map_err(|reason| corrupt(operation, reason))
}

/// Counts of events, streams and streams per category, and the feed's head.
pub(crate) async fn summary(
    pool: &PgPool,
    statements: &Statements,
) -> Result<StoreSummary, StoreError> {
    const OPERATION: &str = "summarise the store";
    let row = sqlx::query(&statements.counts)
        .fetch_one(pool)
        .await
        .map_err(|e| read_error(OPERATION, e))?;
    let events = count(&row, "events", OPERATION)?;
    let streams = count(&row, "streams", OPERATION)?;
    let rows = sqlx::query(&statements.categories)
        .fetch_all(pool)
        .await
        .map_err(|e| read_error(OPERATION, e))?;
    let categories = rows
        .iter()
        .map(|row| {
            Ok(CategorySummary {
                name: row
                    .try_get("category")
                    .map_err(|e| read_error(OPERATION, e))?,
                streams: count(row, "streams", OPERATION)?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(StoreSummary {
        events,
        streams,
        categories,
        head: head(pool, statements).await?,
    })
}

/// The position of the newest event the feed returns.
pub(crate) async fn head(
    pool: &PgPool,
    statements: &Statements,
) -> Result<Option<Position>, StoreError> {
    const OPERATION: &str = "read the feed's head";
    let row = sqlx::query(&statements.head)
        .fetch_optional(pool)
        .await
        .map_err(|e| read_error(OPERATION, e))?;
    let Some(row) = row else { return Ok(None) };
    let Xid8(tx) = row.try_get("tx_id").map_err(|e| read_error(OPERATION, e))?;
    let seq: i64 = row.try_get("seq").map_err(|e| read_error(OPERATION, e))?;
    let seq = convert::unsigned(seq, "the sequence").map_err(|r| corrupt(OPERATION, r))?;
    Ok(Some(Position::from_parts(tx, seq)))
}

/// Up to `limit` streams after `after` (by category, then id), of
/// `category` only when given.
pub(crate) async fn streams(
    pool: &PgPool,
    statements: &Statements,
    category: Option<&str>,
    after: Option<&StreamId>,
    limit: usize,
) -> Result<Vec<StreamSummary>, StoreError> {
    const OPERATION: &str = "list streams";
    let limit = convert::limit(limit).unwrap_or(i64::MAX);
    let after_id = after.map_or("", StreamId::as_str);
    let query = match category {
        Some(category) => sqlx::query(&statements.category_streams)
            .bind(category)
            .bind(after_id),
        None => sqlx::query(&statements.streams)
            .bind(after.map_or("", StreamId::category))
            .bind(after_id),
    };
    let rows = query
        .bind(limit)
        .fetch_all(pool)
        .await
        .map_err(|e| read_error(OPERATION, e))?;
    rows.iter().map(stream_summary).collect()
}

fn stream_summary(row: &PgRow) -> Result<StreamSummary, StoreError> {
    const OPERATION: &str = "list streams";
    let get = |e| read_error(OPERATION, e);
    let id: String = row.try_get("stream_id").map_err(get)?;
    let stream_id = StreamId::new(id.as_str())
        .map_err(|e| corrupt(&format!("stream {id:?}"), e.to_string()))?;
    let version: i64 = row.try_get("version").map_err(get)?;
    Ok(StreamSummary {
        version: convert::unsigned(version, "the version")
            .map_err(|r| corrupt(&format!("stream {id:?}"), r))?,
        stream_id,
        created_at: row.try_get("created_at").map_err(get)?,
        updated_at: row.try_get("updated_at").map_err(get)?,
    })
}

/// Events recorded per minute over the last `minutes` minutes, counted
/// among the newest `cap` events; whether the cap was reached; the
/// server's current minute.
pub(crate) async fn activity(
    pool: &PgPool,
    statements: &Statements,
    minutes: u32,
    cap: u32,
) -> Result<Activity, StoreError> {
    const OPERATION: &str = "count recent appends";
    let get = |e| read_error(OPERATION, e);
    let rows = sqlx::query(&statements.activity)
        .bind(i32::try_from(minutes).unwrap_or(i32::MAX))
        .bind(i64::from(cap))
        .fetch_all(pool)
        .await
        .map_err(get)?;
    let mut activity = Activity {
        now: DateTime::<Utc>::UNIX_EPOCH,
        minutes: Vec::with_capacity(rows.len()),
        capped: false,
    };
    for row in &rows {
        activity.now = row.try_get("now").map_err(get)?;
        let Some(minute) = row
            .try_get::<Option<DateTime<Utc>>, _>("minute")
            .map_err(get)?
        else {
            continue;
        };
        activity.capped |= row
            .try_get::<Option<bool>, _>("reached_cap")
            .map_err(get)?
            .unwrap_or(false);
        activity.minutes.push(MinuteCount {
            minute,
            events: count(row, "events", OPERATION)?,
        });
    }
    Ok(activity)
}
