//! The raw-SQL baseline: what a careful hand-written data layer does with
//! plain sqlx on the same server.

use serde_json::Value;
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// The baseline's table: one row per event, unique by id and by
/// (stream, version), as a hand-written event table would be.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS raw_events (
    id          bigserial   PRIMARY KEY,
    event_id    uuid        NOT NULL UNIQUE,
    stream_id   text        NOT NULL,
    version     bigint      NOT NULL,
    event_type  text        NOT NULL,
    data        jsonb       NOT NULL,
    metadata    jsonb       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream_id, version)
);";

/// BEGIN; INSERT one event; COMMIT.
pub(crate) async fn insert_one(
    pool: &PgPool,
    stream: &str,
    version: i64,
    data: &Value,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO raw_events (event_id, stream_id, version, event_type, data, metadata) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(Uuid::now_v7())
    .bind(stream)
    .bind(version)
    .bind("Happened")
    .bind(data)
    .bind(serde_json::json!({}))
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// BEGIN; INSERT a batch with one UNNEST statement; COMMIT.
pub(crate) async fn insert_batch(
    pool: &PgPool,
    stream: &str,
    first_version: i64,
    data: &[Value],
) -> Result<(), sqlx::Error> {
    let streams = vec![stream; data.len()];
    let versions: Vec<i64> = (first_version..).take(data.len()).collect();
    insert_rows(pool, &streams, &versions, data).await
}

/// One event into each of `streams` at `version`, in one transaction: the
/// hand-written form of an atomic append across streams.
pub(crate) async fn insert_across(
    pool: &PgPool,
    streams: &[&str],
    version: i64,
    data: &Value,
) -> Result<(), sqlx::Error> {
    let versions = vec![version; streams.len()];
    let data = vec![data.clone(); streams.len()];
    insert_rows(pool, streams, &versions, &data).await
}

/// BEGIN; INSERT the rows with one UNNEST statement; COMMIT.
async fn insert_rows(
    pool: &PgPool,
    streams: &[&str],
    versions: &[i64],
    data: &[Value],
) -> Result<(), sqlx::Error> {
    let n = data.len();
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    let types = vec!["Happened"; n];
    let metadata = vec![serde_json::json!({}); n];
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO raw_events (event_id, stream_id, version, event_type, data, metadata) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::jsonb[], $6::jsonb[])",
    )
    .bind(&ids)
    .bind(streams)
    .bind(versions)
    .bind(&types)
    .bind(data)
    .bind(&metadata)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// A decoded row, as a hand-written reader would hold it.
#[derive(Debug)]
#[expect(
    dead_code,
    reason = "decoding the fields is the work measured; the benchmark reads only the version"
)]
pub(crate) struct RawEvent {
    pub(crate) event_id: Uuid,
    pub(crate) stream_id: String,
    pub(crate) version: i64,
    pub(crate) event_type: String,
    pub(crate) data: Value,
    pub(crate) metadata: Value,
}

fn decode(row: &sqlx::postgres::PgRow) -> Result<RawEvent, sqlx::Error> {
    Ok(RawEvent {
        event_id: row.try_get("event_id")?,
        stream_id: row.try_get("stream_id")?,
        version: row.try_get("version")?,
        event_type: row.try_get("event_type")?,
        data: row.try_get("data")?,
        metadata: row.try_get("metadata")?,
    })
}

/// Loads an account by hand: SELECT the stream's events in version order,
/// decode them, and fold their amounts into a balance. Returns the version
/// and the balance; the rows are dropped inside, as the framework's are.
pub(crate) async fn load_account(pool: &PgPool, stream: &str) -> Result<(i64, u64), sqlx::Error> {
    let events = load_stream(pool, stream).await?;
    let balance = events
        .iter()
        .filter_map(|e| e.data.get("cents").and_then(Value::as_u64))
        .sum();
    Ok((events.last().map_or(0, |e| e.version), balance))
}

/// SELECT one stream's events in version order and decode them.
async fn load_stream(pool: &PgPool, stream: &str) -> Result<Vec<RawEvent>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT event_id, stream_id, version, event_type, data, metadata \
         FROM es.events WHERE stream_id = $1 ORDER BY version",
    )
    .bind(stream)
    .fetch_all(pool)
    .await?;
    rows.iter().map(decode).collect()
}

/// Pages through the whole events table in feed order, `page` rows at a
/// time, by its primary key `(tx_id, seq)`, decoding each row; returns the
/// number of rows read.
pub(crate) async fn page_feed(pool: &PgPool, page: i64) -> Result<usize, sqlx::Error> {
    let (mut tx, mut seq) = (0i64, 0i64);
    let mut total = 0;
    loop {
        let rows = sqlx::query(
            "SELECT tx_id::text::bigint AS tx, seq, event_id, stream_id, version, event_type, data, metadata \
             FROM es.events WHERE (tx_id, seq) > ($1::bigint::text::xid8, $2) ORDER BY tx_id, seq LIMIT $3",
        )
        .bind(tx)
        .bind(seq)
        .bind(page)
        .fetch_all(pool)
        .await?;
        let Some(last) = rows.last() else {
            return Ok(total);
        };
        tx = last.try_get("tx")?;
        seq = last.try_get("seq")?;
        for row in &rows {
            let event = decode(row)?;
            std::hint::black_box(&event);
        }
        total += rows.len();
    }
}
