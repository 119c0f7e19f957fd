//! [`PgEventStore`]: the event-store contract on PostgreSQL.

use std::fmt::Write as _;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use es_core::store::{MAX_SCHEMA_VERSION, MAX_STREAM_VERSION};
use es_core::subscription::{FollowOptions, WatchWaker, follow};
use es_core::validate::{EncodedEvent, encode_batch, encode_snapshot};
use es_core::{
    AppendResult, EventStore, EventStream, ExpectedVersion, FeedFilter, FeedPage,
    IdempotencyConflictKind, InvalidEventKind, InvalidSnapshotKind, Metadata, NewEvent, Position,
    ReadDirection, RecordedEvent, Snapshot, SnapshotStore, StoreError, StoreLimits, StreamId,
    StreamRead,
};
use futures::TryStreamExt as _;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::PgStoreConfig;
use crate::convert;
use crate::error::{Failure, classify, read_error};
use crate::migrate::{self, MigrateError};
use crate::notify::{self, Wakeups};

/// An [`EventStore`] in PostgreSQL.
///
/// - An append is one statement whatever the batch size: a server-side
///   function that locks the stream, recognises retries by event id, checks
///   the expected version and inserts the batch from arrays.
/// - The global feed is ordered by (transaction id, sequence) and only
///   returns events of transactions older than every running one, so a
///   transaction that commits late is never skipped. A transaction left open
///   anywhere in the cluster therefore holds the feed back until it ends.
/// - Subscriptions are woken in-process by local appends, across processes
///   by a coalesced `NOTIFY`, and poll as a backstop.
///
/// Cloning is cheap and shares the pool.
///
/// ```no_run
/// use es_core::{EventStore, ExpectedVersion, NewEvent, StreamId};
/// use es_postgres::{PgEventStore, PgStoreConfig};
/// use serde_json::json;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let store = PgEventStore::connect("postgres://localhost/app", PgStoreConfig::default()).await?;
/// store.migrate().await?;
/// let order = StreamId::new("Order-1")?;
/// let placed = NewEvent::new("OrderPlaced", json!({ "total_cents": 500 }));
/// store.append(&order, ExpectedVersion::NoStream, vec![placed]).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct PgEventStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    config: PgStoreConfig,
    sql: Queries,
    wakeups: Wakeups,
}

/// The store's SQL, with the schema name filled in once.
#[derive(Debug)]
struct Queries {
    append: String,
    read_forward: String,
    read_backward: String,
    events: String,
    feed_select: String,
    category_appends: String,
    matched_events: String,
    held_back_select: String,
    load_snapshot: String,
    save_snapshot: String,
    raw_event: String,
    /// The schema's table of listening sessions.
    listeners: String,
}

/// The columns of an event row, in the order [`decode_event`] reads them.
const COLUMNS: &str = "event_id, stream_id, version, tx_id, seq, \
                       event_type, schema_version, data, metadata, recorded_at";

impl Queries {
    fn new(schema: &str) -> Self {
        let events = format!("\"{schema}\".events");
        Self {
            events: events.clone(),
            append: format!(
                "SELECT outcome, actual, conflict_id, tx_id, first_seq, tx_ids, seqs \
                 FROM \"{schema}\".append_events($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb[], $9)"
            ),
            read_forward: format!(
                "SELECT {COLUMNS} FROM {events} \
                 WHERE stream_id = $1 AND version >= $2 ORDER BY version LIMIT $3"
            ),
            read_backward: format!(
                "SELECT {COLUMNS} FROM {events} \
                 WHERE stream_id = $1 AND version <= $2 ORDER BY version DESC LIMIT $3"
            ),
            feed_select: format!(
                "SELECT {COLUMNS} FROM {events} \
                 WHERE (tx_id, seq) > ($1::bigint::text::xid8, $2) \
                 AND tx_id < pg_snapshot_xmin(pg_current_snapshot())"
            ),
            category_appends: format!(
                "SELECT tx_id FROM {events} \
                 WHERE {CATEGORY} = ($4::text[])[1] AND starts_append"
            ),
            // The whole rows of a windowed read's matches (`m`), each
            // through the primary key: the LIMIT keeps the planner from
            // turning the lookups into a join over a scan of the table,
            // which it prefers on a small one.
            matched_events: format!(
                "SELECT ev.* FROM m CROSS JOIN LATERAL (SELECT {columns} FROM {events} ev \
                 WHERE ev.tx_id = m.tx_id AND ev.seq = m.seq LIMIT 1) ev \
                 ORDER BY ev.tx_id, ev.seq",
                columns = qualified_columns("ev"),
            ),
            listeners: format!("\"{schema}\".listeners"),
            raw_event: format!(
                "SELECT event_id, stream_id, version, event_type, data::text AS data, \
                 metadata::text AS metadata FROM {events} \
                 WHERE tx_id = $1::bigint::text::xid8 AND seq = $2"
            ),
            load_snapshot: format!(
                "SELECT version, schema_version, data, taken_at \
                 FROM \"{schema}\".snapshots WHERE stream_id = $1"
            ),
            save_snapshot: format!(
                "INSERT INTO \"{schema}\".snapshots AS s \
                 (stream_id, version, schema_version, data, taken_at) \
                 VALUES ($1, $2, $3, $4::jsonb, $5) \
                 ON CONFLICT (stream_id) DO UPDATE \
                 SET version = EXCLUDED.version, schema_version = EXCLUDED.schema_version, \
                 data = EXCLUDED.data, taken_at = EXCLUDED.taken_at \
                 WHERE s.version <= EXCLUDED.version"
            ),
            // One lower bound, the later of `after` and the horizon: given
            // as two conditions, the index scan would start at `after` and
            // walk every row up to the horizon.
            held_back_select: format!(
                "SELECT tx_id FROM {events} \
                 WHERE (tx_id, seq) > (\
                   greatest($1::bigint::text::xid8, pg_snapshot_xmin(pg_current_snapshot())), \
                   CASE WHEN $1::bigint::text::xid8 >= pg_snapshot_xmin(pg_current_snapshot()) \
                   THEN $2 ELSE 0 END)"
            ),
        }
    }

    /// The feed query for `filter`: one row per event of the page, with
    /// null event columns when the page is empty. The first columns are the
    /// same on every row:
    ///
    /// 0. `held_back`: whether committed events matching `filter` lie
    ///    beyond the safe horizon (held back by an older transaction that is
    ///    still running);
    /// 1. `windowed`: whether the read stopped examining the feed before the
    ///    horizon (null when it examines all of it);
    /// 2. and 3. the position up to which it examined the feed.
    ///
    /// Then the event's [`COLUMNS`]. All parts see the same snapshot.
    ///
    /// - Without a filter, the page is the next rows in feed order.
    /// - With one category (and maybe event types), the read finds the next
    ///   transactions that appended to the category in the category index
    ///   (one entry per append: an append's events share their stream), at
    ///   most a window of them, and reads their matching events through the
    ///   primary key.
    /// - Other filters (event types alone, several categories) examine a
    ///   window of rows in feed order and return the matches among them.
    ///
    /// So the cost of a read is bounded however rare the matches are.
    fn feed(&self, filter: &FeedFilter, limit: usize) -> String {
        let window = limit.saturating_mul(4).clamp(FEED_WINDOW, 25 * FEED_WINDOW);
        let events = &self.events;
        let mut page = self.feed_select.clone();
        Self::push_filter(&mut page, filter);
        if filter.categories.len() == 1 {
            return self.category_feed(filter, window);
        }
        let mut held_back = self.held_back_select.clone();
        Self::push_filter(&mut held_back, filter);
        // `held_back` is a scalar subquery in feed order rather than an
        // EXISTS: PostgreSQL drops the ORDER BY from an EXISTS, and its
        // generic plan then scans the whole table for a row that is rarely
        // there.
        let held_back = format!(
            "(SELECT ({held_back} ORDER BY tx_id, seq LIMIT 1) IS NOT NULL AS held_back) h"
        );
        if filter.is_all() {
            return format!(
                "SELECT h.held_back, NULL::boolean, NULL::bigint, NULL::bigint, e.* FROM {held_back} \
                 LEFT JOIN LATERAL ({page} ORDER BY tx_id, seq LIMIT $3) e ON true"
            );
        }
        // One pass over the window's rows (in feed order, with their heap
        // rows for the filter's columns), then the matches' whole rows.
        let mut matches = String::from("true");
        Self::push_filter(&mut matches, filter);
        format!(
            "WITH w AS MATERIALIZED ( \
               SELECT tx_id, seq, {matches} AS hit FROM {events} \
               WHERE (tx_id, seq) > ($1::bigint::text::xid8, $2) \
               AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
               ORDER BY tx_id, seq LIMIT {window}), \
             m AS (SELECT tx_id, seq FROM w WHERE hit ORDER BY tx_id, seq LIMIT $3) \
             SELECT h.held_back, (SELECT count(*) FROM w) = {window}, \
               l.tx_id::text::bigint, l.seq, e.* FROM {held_back} \
             LEFT JOIN LATERAL (SELECT tx_id, seq FROM w ORDER BY tx_id DESC, seq DESC LIMIT 1) l \
             ON true \
             LEFT JOIN LATERAL ({matched}) e ON true",
            matched = self.matched_events,
        )
    }

    /// The feed query for one category (and maybe event types): the next
    /// transactions that appended to the category, from the category index
    /// in feed order (one entry per append: an append's events share their
    /// stream), and the category's events of each, through the primary key.
    ///
    /// - Category alone: `$3 + 1` transactions hold at least `$3` events
    ///   after `after` (each but the first, which may hold none after it,
    ///   holds at least one), so the page reads no more appends than it
    ///   needs. The transactions come out in feed order and each one's
    ///   events in sequence order, so the page is an incremental sort of
    ///   them that stops when it is full, never a sort of the category.
    /// - With event types too, the appends may hold no match: the read
    ///   examines at most a quarter of `window` appends (each holds one
    ///   event or more) and says how far it looked.
    fn category_feed(&self, filter: &FeedFilter, window: usize) -> String {
        let window = window / 4;
        let events = &self.events;
        let mut page = format!(
            "SELECT {columns} FROM {events} ev \
             WHERE ev.tx_id = a.tx_id AND (ev.tx_id, ev.seq) > ($1::bigint::text::xid8, $2)",
            columns = qualified_columns("ev"),
        );
        Self::push_filter_on(&mut page, "ev.", filter);
        let mut held_back = self.category_appends.clone();
        held_back.push_str(
            " AND tx_id >= greatest($1::bigint::text::xid8, pg_snapshot_xmin(pg_current_snapshot()))",
        );
        let held_back =
            format!("(SELECT ({held_back} ORDER BY tx_id LIMIT 1) IS NOT NULL AS held_back) h");
        let appends = format!(
            "SELECT DISTINCT tx_id FROM {events} \
             WHERE {CATEGORY} = ($4::text[])[1] AND starts_append \
             AND tx_id >= $1::bigint::text::xid8 \
             AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY tx_id"
        );
        if filter.event_types.is_empty() {
            return format!(
                "SELECT h.held_back, NULL::boolean, NULL::bigint, NULL::bigint, e.* FROM {held_back} \
                 LEFT JOIN LATERAL (SELECT ev.* FROM ({appends} LIMIT $3 + 1) a \
                 CROSS JOIN LATERAL ({page}) ev ORDER BY ev.tx_id, ev.seq LIMIT $3) e ON true"
            );
        }
        // The window's transactions as an array, matched through the
        // primary key: a join with them could be planned as a hash join
        // over a scan of the whole table when the types look rare.
        let mut matches = self.feed_select.clone();
        Self::push_filter(&mut matches, filter);
        format!(
            "WITH w AS MATERIALIZED (SELECT ARRAY({appends} LIMIT {window}) AS txs) \
             SELECT h.held_back, cardinality(w.txs) = {window}, \
             w.txs[cardinality(w.txs)]::text::bigint, {max_seq}::bigint, e.* \
             FROM {held_back} CROSS JOIN w \
             LEFT JOIN LATERAL ({matches} AND tx_id = ANY(w.txs) ORDER BY tx_id, seq LIMIT $3) e \
             ON true",
            max_seq = i64::MAX,
        )
    }

    /// Appends `filter`'s conditions to `sql`; its arrays are parameters 4
    /// and on.
    fn push_filter(sql: &mut String, filter: &FeedFilter) {
        Self::push_filter_on(sql, "", filter);
    }

    /// [`push_filter`](Self::push_filter) on the columns of the events
    /// table under `prefix` (an alias and a dot, or nothing).
    fn push_filter_on(sql: &mut String, prefix: &str, filter: &FeedFilter) {
        let mut param = 4;
        let category = format!("split_part({prefix}stream_id, '-', 1)");
        let event_type = format!("{prefix}event_type");
        for (column, values) in [
            (&category, &filter.categories),
            (&event_type, &filter.event_types),
        ] {
            match values.len() {
                0 => {}
                // Writing to a String cannot fail.
                1 => drop(write!(sql, " AND {column} = (${param}::text[])[1]")),
                _ => drop(write!(sql, " AND {column} = ANY(${param}::text[])")),
            }
            if !values.is_empty() {
                param += 1;
            }
        }
    }
}

/// [`COLUMNS`] of the events table under the alias `alias`.
fn qualified_columns(alias: &str) -> String {
    COLUMNS
        .split(", ")
        .map(|column| format!("{alias}.{}", column.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A row's category, as the category index computes it.
const CATEGORY: &str = "split_part(stream_id, '-', 1)";

/// Rows a windowed feed read examines at least (see `Queries::feed`).
const FEED_WINDOW: usize = 2_000;

impl PgEventStore {
    /// A store over `pool`. Call [`migrate`](Self::migrate) once before use.
    #[must_use]
    pub fn new(pool: PgPool, config: PgStoreConfig) -> Self {
        let sql = Queries::new(config.schema());
        Self {
            inner: Arc::new(Inner {
                pool,
                config,
                sql,
                wakeups: Wakeups::new(),
            }),
        }
    }

    /// Connects a pool of up to 10 connections to `url` and builds a store.
    ///
    /// The sessions run with `jit = off`: every statement of the store reads
    /// a bounded number of rows, and a plan estimated as expensive (a
    /// generic plan, a misestimate) would otherwise be compiled again on
    /// each execution, tens of milliseconds each time.
    ///
    /// The pool does not test a connection before handing it out (a round
    /// trip per operation): an append whose connection turns out broken runs
    /// once more on a fresh one, which is safe because appends are
    /// idempotent by event id, and subscriptions and projection runners
    /// retry reads. A pool of your own (see [`PgEventStore::new`]) works too.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the server cannot be reached.
    pub async fn connect(url: &str, config: PgStoreConfig) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::backend("connect", e))?
            .options([("jit", "off")]);
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::backend("connect", e))?;
        Ok(Self::new(pool, config))
    }

    /// Creates the schema and applies pending migrations. Idempotent, and
    /// safe to run from several processes at once.
    ///
    /// # Errors
    ///
    /// [`MigrateError`] when a migration fails or the applied migrations
    /// differ from the embedded ones.
    pub async fn migrate(&self) -> Result<(), MigrateError> {
        migrate::run(&self.inner.pool, &self.inner.config).await
    }

    /// The connection pool.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The store's configuration.
    #[must_use]
    pub fn config(&self) -> &PgStoreConfig {
        &self.inner.config
    }

    /// A waker for followers of this store's feed: local appends, NOTIFYs
    /// from other processes, and the poll interval as backstop.
    pub(crate) fn waker(&self) -> WatchWaker<u64> {
        let wakeups = self.inner.wakeups.subscribe(
            &self.inner.pool,
            self.inner.config.channel(),
            self.inner.sql.listeners.clone(),
        );
        WatchWaker::new(wakeups, Some(self.inner.config.poll()))
    }

    /// Wakes this process's followers of the feed.
    pub(crate) fn wake(&self) {
        self.inner.wakeups.wake();
    }

    /// Runs the append function once. With `check`, it looks the batch's
    /// ids up even when the version check passes (after a unique violation
    /// showed that some are stored).
    async fn append_once(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        batch: &Batch,
        check: bool,
    ) -> Result<Attempt, Failure> {
        let (kind, exact) = match expected {
            ExpectedVersion::Any => (0i16, 0i64),
            ExpectedVersion::NoStream => (1, 0),
            ExpectedVersion::StreamExists => (2, 0),
            ExpectedVersion::Exact(v) => match i64::try_from(v) {
                Ok(v) => (3, v),
                // No stream gets past the bigint range, so the check fails;
                // -1 fails it the same way, and the function still looks
                // the ids up and reports the stream's actual version.
                Err(_) => (3, -1),
            },
        };
        let row = sqlx::query(&self.inner.sql.append)
            .bind(stream.as_str())
            .bind(kind)
            .bind(exact)
            .bind(&batch.ids)
            .bind(&batch.types)
            .bind(&batch.schema_versions)
            .bind(&batch.data)
            .bind(&batch.metadata)
            .bind(check)
            .fetch_one(&self.inner.pool)
            .await
            .map_err(|e| classify("append", e))?;
        decode_outcome(stream, expected, batch.ids.len(), &row).map_err(Failure::Fail)
    }
}

/// A batch as the append function's parameters. The payloads travel as
/// one JSON array, joined from the text that the size check already
/// produced: each payload is serialized once, and the server parses the
/// batch in one go (a hundred separate parses cost a 100-event append about
/// a tenth of its time). Empty metadata travels as NULL.
struct Batch {
    ids: Vec<Uuid>,
    types: Vec<String>,
    schema_versions: Vec<i32>,
    data: String,
    metadata: Vec<Option<String>>,
}

impl Batch {
    /// The batch of `events`, which [`encode_batch`] checked and encoded
    /// (so every schema version fits an `integer`).
    fn new(
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
}

/// What one run of the append function decided.
enum Attempt {
    Done(AppendResult),
    /// Lost a race; nothing was written.
    Retry,
}

fn decode_outcome(
    stream: &StreamId,
    expected: ExpectedVersion,
    batch_len: usize,
    row: &PgRow,
) -> Result<Attempt, StoreError> {
    let bad = |reason: String| StoreError::CorruptRecord {
        location: format!("the result of an append to {stream}"),
        reason,
    };
    let get_err = |e: sqlx::Error| bad(e.to_string());
    let outcome: i16 = row.try_get("outcome").map_err(get_err)?;
    let actual: Option<i64> = row.try_get("actual").map_err(get_err)?;
    let actual = actual.ok_or_else(|| bad("no stream version".to_owned()))?;
    let actual = convert::unsigned(actual, "the stream version").map_err(bad)?;
    let conflict = |kind| -> Result<Attempt, StoreError> {
        let event_id: Option<Uuid> = row.try_get("conflict_id").map_err(get_err)?;
        Err(StoreError::IdempotencyConflict {
            stream: stream.clone(),
            event_id: event_id.ok_or_else(|| bad("a conflict without an event id".to_owned()))?,
            kind,
        })
    };
    match outcome {
        0 => {
            // A fresh append's events are at (tx_id, first_seq + i).
            let tx: Option<i64> = row.try_get("tx_id").map_err(get_err)?;
            let first: Option<i64> = row.try_get("first_seq").map_err(get_err)?;
            let positions = match (tx, first) {
                _ if batch_len == 0 => Vec::new(),
                (Some(tx), Some(first)) => {
                    let first = convert::position(tx, first).map_err(bad)?;
                    (0..batch_len as u64)
                        .map(|i| Position::from_parts(first.commit(), first.sequence() + i))
                        .collect()
                }
                _ => return Err(bad("no position for the events it wrote".to_owned())),
            };
            Ok(Attempt::Done(AppendResult::new(actual, positions, false)))
        }
        1 => {
            let tx_ids: Vec<i64> = row.try_get("tx_ids").map_err(get_err)?;
            let seqs: Vec<i64> = row.try_get("seqs").map_err(get_err)?;
            let positions = tx_ids
                .iter()
                .zip(&seqs)
                .map(|(&tx, &seq)| convert::position(tx, seq))
                .collect::<Result<_, _>>()
                .map_err(bad)?;
            Ok(Attempt::Done(AppendResult::new(actual, positions, true)))
        }
        2 => Err(StoreError::WrongExpectedVersion {
            stream: stream.clone(),
            expected,
            actual,
        }),
        3 => conflict(IdempotencyConflictKind::PartialOverlap),
        4 => conflict(IdempotencyConflictKind::OtherStream),
        5 => conflict(IdempotencyConflictKind::DifferentOrder),
        6 => Ok(Attempt::Retry),
        7 => Err(StoreError::StreamVersionOverflow {
            stream: stream.clone(),
            events: batch_len,
            max: MAX_STREAM_VERSION,
        }),
        other => Err(bad(format!("the unknown outcome {other}"))),
    }
}

/// A PostgreSQL `xid8`: a 64-bit transaction id, read in binary so that a
/// feed or stream read does not convert every row's id to text.
struct Xid8(u64);

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

/// Reads a row of the events table back into a recorded event; the event's
/// columns ([`COLUMNS`]) start at index `first`. `known` is a stream id the
/// row probably has (the stream read, or the previous row's), shared when it
/// does.
fn decode_event(
    row: &PgRow,
    first: usize,
    known: Option<&StreamId>,
) -> Result<RecordedEvent, StoreError> {
    let unplaced = |reason: String| StoreError::CorruptEvent {
        location: "an events row".to_owned(),
        position: None,
        reason,
    };
    let seq: i64 = row
        .try_get(first + 4)
        .map_err(|e| unplaced(e.to_string()))?;
    let Xid8(tx) = row
        .try_get(first + 3)
        .map_err(|e| unplaced(e.to_string()))?;
    let seq = convert::unsigned(seq, "the sequence").map_err(unplaced)?;
    let position = Position::from_parts(tx, seq);
    let corrupt = |location: String, reason: String| StoreError::CorruptEvent {
        location,
        position: Some(position),
        reason,
    };
    let at = || format!("position {position}");
    let field = |e: sqlx::Error| corrupt(at(), e.to_string());
    let stream: &str = row.try_get(first + 1).map_err(field)?;
    // Rows of a stream read all carry the id asked for: share it.
    let stream_id = match known {
        Some(id) if id.as_str() == stream => id.clone(),
        _ => StreamId::new(stream)
            .map_err(|e| corrupt(at(), format!("stream id {stream:?}: {e}")))?,
    };
    let version: i64 = row.try_get(first + 2).map_err(field)?;
    let version =
        u64::try_from(version).map_err(|_| corrupt(at(), format!("negative version {version}")))?;
    let event_type: String = row.try_get(first + 5).map_err(field)?;
    let schema_version: i32 = row.try_get(first + 6).map_err(field)?;
    let stored_schema_version = u32::try_from(schema_version)
        .map_err(|_| corrupt(at(), format!("negative schema version {schema_version}")))?;
    let in_stream = || {
        format!(
            "{at}, stream {stream_id} version {version}, event type {event_type:?} schema version {schema_version}",
            at = at()
        )
    };
    let metadata = if is_empty_object(row, first + 8) {
        Metadata::default()
    } else {
        let Json(metadata): Json<Metadata> = row.try_get(first + 8).map_err(|e| {
            corrupt(
                in_stream(),
                format!("metadata is not a metadata object: {e}"),
            )
        })?;
        metadata
    };
    let data: serde_json::Value = row
        .try_get(first + 7)
        .map_err(|e| corrupt(in_stream(), format!("data: {e}")))?;
    Ok(RecordedEvent::from_parts(
        row.try_get(first).map_err(field)?,
        stream_id,
        version,
        position,
        event_type,
        stored_schema_version,
        data,
        metadata,
        row.try_get(first + 9).map_err(field)?,
    ))
}

impl PgEventStore {
    /// Reads a page of the feed, and whether committed events are still
    /// held back behind the horizon.
    ///
    /// A short page with committed events held back waits for them a
    /// little: they become readable as soon as the older transaction ends,
    /// usually within milliseconds, and a caller that just appended then
    /// reads its own writes.
    async fn read_feed_waiting(
        &self,
        after: Position,
        filter: &FeedFilter,
        limit: usize,
    ) -> Result<(FeedPage, bool), StoreError> {
        let Some(key) = convert::feed_after(after).filter(|_| limit > 0) else {
            // Nothing asked for, or nothing stored that far.
            return Ok((FeedPage::new(Vec::new(), after, false), false));
        };
        let sql = self.inner.sql.feed(filter, limit);
        let deadline = tokio::time::Instant::now() + self.inner.config.wait_for_held_back();
        let mut pause = Duration::from_millis(2);
        loop {
            let (page, held_back) = self.read_feed_once(&sql, after, key, filter, limit).await?;
            if page.more || !held_back || tokio::time::Instant::now() >= deadline {
                return Ok((page, held_back));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Runs the feed query `sql` once: the page and whether committed
    /// events are held back behind the horizon.
    async fn read_feed_once(
        &self,
        sql: &str,
        after: Position,
        (after_tx, after_seq): (i64, i64),
        filter: &FeedFilter,
        limit: usize,
    ) -> Result<(FeedPage, bool), StoreError> {
        let failed = |e| read_error("read feed", e);
        // Prepared once per connection: each shape of read has one good
        // plan whatever its values (a category's reads walk the category
        // index, others a window of the feed), so a generic plan is that
        // plan and no read pays for planning.
        let query = feed_query(sql, (after_tx, after_seq), filter, limit);
        // Rows are decoded as they arrive, while the server is still
        // producing the rest of the page.
        let mut rows = query.fetch(&self.inner.pool);
        let mut head: Option<(bool, bool, Option<Position>)> = None;
        let mut events: Vec<RecordedEvent> = Vec::with_capacity(limit.min(1_000));
        let mut corrupt = None;
        while let Some(row) = rows.try_next().await.map_err(failed)? {
            if head.is_none() {
                let held_back: bool = row.try_get(0).map_err(failed)?;
                let windowed: Option<bool> = row.try_get(1).map_err(failed)?;
                let end_tx: Option<i64> = row.try_get(2).map_err(failed)?;
                let end_seq: Option<i64> = row.try_get(3).map_err(failed)?;
                let end = match end_tx.zip(end_seq) {
                    Some((tx, seq)) => Some(convert::position(tx, seq).map_err(|reason| {
                        StoreError::CorruptRecord {
                            location: "the end of a feed read".to_owned(),
                            reason,
                        }
                    })?),
                    None => None,
                };
                // Null: the read examines the feed to its end.
                head = Some((held_back, windowed == Some(true), end));
            }
            // An empty page is one row of null event columns. After a
            // corrupt row the rest of the page is only drained.
            let present: Option<i64> = row.try_get(FEED_EVENT + 4).map_err(failed)?;
            if present.is_none() || corrupt.is_some() {
                continue;
            }
            // Neighbouring rows mostly share a stream: share its id.
            let previous = events.last().map(|e| &e.stream_id);
            match decode_event(&row, FEED_EVENT, previous) {
                Ok(event) => events.push(event),
                Err(error) => corrupt = Some(error),
            }
        }
        drop(rows);
        if let Some(error) = corrupt {
            // Hand out the events before a corrupt one; the next read starts
            // at it and reports it.
            if events.is_empty() {
                return Err(error);
            }
            return Ok((FeedPage::of_events(after, events, 1), false));
        }
        // The query answers at least one row; without one, nothing was read.
        let Some((held_back, windowed, end)) = head else {
            return Ok((FeedPage::new(events, after, false), false));
        };
        let page = match end {
            // A full page, or a read that examines every row: read on after
            // its last event.
            _ if events.len() >= limit => FeedPage::of_events(after, events, limit),
            None => FeedPage::of_events(after, events, limit),
            // A window that was not filled examined every row up to `end`.
            Some(end) => FeedPage::new(events, end.max(after), windowed),
        };
        Ok((page, held_back))
    }
}

impl PgEventStore {
    /// Runs the read of [`read_feed`](EventStore::read_feed) once under
    /// `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)` and returns the server's
    /// plan with the rows each step actually read: a diagnostic for a read
    /// that is slower than it should be, and how the tests check that no
    /// read's cost grows with the store.
    ///
    /// `Null` when the read needs no statement (a limit of 0, or a position
    /// past any the store can hold).
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the server refuses the statement.
    pub async fn explain_feed(
        &self,
        after: Position,
        filter: &FeedFilter,
        limit: usize,
    ) -> Result<serde_json::Value, StoreError> {
        let Some((tx, seq)) = convert::feed_after(after).filter(|_| limit > 0) else {
            return Ok(serde_json::Value::Null);
        };
        let sql = format!(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}",
            self.inner.sql.feed(filter, limit)
        );
        let row = feed_query(&sql, (tx, seq), filter, limit)
            .persistent(false)
            .fetch_one(&self.inner.pool)
            .await
            .map_err(|e| read_error("explain a feed read", e))?;
        row.try_get(0)
            .map_err(|e| read_error("explain a feed read", e))
    }
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

impl PgEventStore {
    /// The stored row at `position`, as text, if there is one.
    pub(crate) async fn raw_event(
        &self,
        position: Position,
    ) -> Result<Option<RawEvent>, StoreError> {
        let Some((tx, seq)) = convert::feed_after(position) else {
            return Ok(None);
        };
        let row = sqlx::query(&self.inner.sql.raw_event)
            .bind(tx)
            .bind(seq)
            .fetch_optional(&self.inner.pool)
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
}

/// The feed query `sql` (see [`Queries::feed`]) with its parameters: the
/// position to read after, the limit and the filter's arrays.
fn feed_query<'q>(
    sql: &'q str,
    (after_tx, after_seq): (i64, i64),
    filter: &'q FeedFilter,
    limit: usize,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let mut query = sqlx::query(sql)
        .bind(after_tx)
        .bind(after_seq)
        .bind(convert::limit(limit));
    if !filter.categories.is_empty() {
        query = query.bind(&filter.categories);
    }
    if !filter.event_types.is_empty() {
        query = query.bind(&filter.event_types);
    }
    query
}

/// The column of a feed row where the event's [`COLUMNS`] start.
const FEED_EVENT: usize = 4;

/// Whether column `index` holds the `jsonb` value `{}` (most events'
/// metadata), which needs no parsing.
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

#[async_trait::async_trait]
impl EventStore for PgEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        let encoded = encode_batch(stream, &events, &self.inner.config.store_limits())?;
        let written = !events.is_empty();
        let batch = Batch::new(stream, events, encoded)?;
        let mut attempts = 0;
        let mut check = false;
        let mut reconnects = 0;
        loop {
            attempts += 1;
            match self.append_once(stream, expected, &batch, check).await {
                Ok(Attempt::Done(result)) => {
                    if written && !result.idempotent_replay {
                        self.inner.wakeups.wake();
                        notify::sweep(
                            &self.inner.wakeups,
                            &self.inner.pool,
                            &self.inner.sql.listeners,
                        );
                    }
                    return Ok(result);
                }
                Ok(Attempt::Retry) | Err(Failure::Retry)
                    if attempts <= self.inner.config.retries() =>
                {
                    tracing::debug!(%stream, attempts, "append lost a race; retrying");
                    // A unique violation means some ids are stored: the next
                    // run looks them up (replay or conflict).
                    check = true;
                }
                Ok(Attempt::Retry) | Err(Failure::Retry) => {
                    return Err(StoreError::backend(
                        "append",
                        format!("the append to {stream} lost {attempts} races in a row"),
                    ));
                }
                // The pool hands out connections without testing them first
                // (see `connect`): a connection the server dropped fails
                // here, and the append runs once more on a fresh one,
                // looking its ids up in case the first run landed.
                Err(Failure::Reconnect(_)) if reconnects < self.inner.config.retries() => {
                    tracing::debug!(%stream, "append's connection broke; running it again");
                    reconnects += 1;
                    check = true;
                }
                Err(Failure::Reconnect(error) | Failure::Fail(error)) => return Err(error),
            }
        }
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        read: StreamRead,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        // Every stored version is a bigint: a forward read from past that
        // range finds nothing, a backward one starts at the last event.
        let (sql, from) = match (read.direction, i64::try_from(read.from)) {
            _ if read.limit == 0 => return Ok(Vec::new()),
            (ReadDirection::Forward, Ok(from)) => (&self.inner.sql.read_forward, from),
            (ReadDirection::Forward, Err(_)) => return Ok(Vec::new()),
            (ReadDirection::Backward, from) => (
                &self.inner.sql.read_backward,
                from.map_or(i64::MAX, |from| from),
            ),
        };
        // Rows are decoded as they arrive, while the server is still
        // producing the rest.
        let mut rows = sqlx::query(sql)
            .bind(stream.as_str())
            .bind(from)
            .bind(convert::limit(read.limit))
            .fetch(&self.inner.pool);
        let mut events = Vec::new();
        let mut corrupt = None;
        while let Some(row) = rows
            .try_next()
            .await
            .map_err(|e| read_error("read stream", e))?
        {
            if corrupt.is_none() {
                match decode_event(&row, 0, Some(stream)) {
                    Ok(event) => events.push(event),
                    Err(error) => corrupt = Some(error),
                }
            }
        }
        match corrupt {
            Some(error) => Err(error),
            None => Ok(events),
        }
    }

    async fn read_all(
        &self,
        after: Position,
        filter: &FeedFilter,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        // A windowed read may stop before it found `limit` events: read on
        // from where it stopped until the page is full or the feed ends.
        let mut events = Vec::new();
        let mut after = after;
        while events.len() < limit {
            let page = match self
                .read_feed_waiting(after, filter, limit - events.len())
                .await
            {
                Ok((page, _)) => page,
                // The events before an unreadable one go out first; the
                // next read starts at it and reports it.
                Err(StoreError::CorruptEvent { .. }) if !events.is_empty() => break,
                Err(error) => return Err(error),
            };
            let done = !page.more || page.events.len() >= limit - events.len();
            after = page.next;
            events.extend(page.events);
            if done {
                break;
            }
        }
        Ok(events)
    }

    async fn read_feed(
        &self,
        after: Position,
        filter: &FeedFilter,
        limit: usize,
    ) -> Result<FeedPage, StoreError> {
        let (page, held_back) = self.read_feed_waiting(after, filter, limit).await?;
        // Events still held back after the wait: the follower reads on
        // rather than wait for a wake-up that was already sent.
        Ok(FeedPage::new(
            page.events,
            page.next,
            page.more || held_back,
        ))
    }

    fn subscribe(&self, after: Position, filter: FeedFilter) -> EventStream {
        follow(
            self.clone(),
            after,
            filter,
            self.waker(),
            FollowOptions::default(),
        )
    }

    fn limits(&self) -> StoreLimits {
        self.inner.config.store_limits()
    }
}

#[async_trait::async_trait]
impl SnapshotStore for PgEventStore {
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        let row = sqlx::query(&self.inner.sql.load_snapshot)
            .bind(stream.as_str())
            .fetch_optional(&self.inner.pool)
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

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let data = encode_snapshot(&snapshot)?;
        // `encode_snapshot` checked both versions against these columns.
        let out_of_range = |what: &str| StoreError::InvalidSnapshot {
            stream: snapshot.stream_id.clone(),
            kind: InvalidSnapshotKind::Unencodable(format!("the {what} does not fit its column")),
        };
        let version = i64::try_from(snapshot.version).map_err(|_| out_of_range("version"))?;
        let schema_version =
            i32::try_from(snapshot.schema_version).map_err(|_| out_of_range("format version"))?;
        sqlx::query(&self.inner.sql.save_snapshot)
            .bind(snapshot.stream_id.as_str())
            .bind(version)
            .bind(schema_version)
            .bind(data)
            .bind(snapshot.taken_at)
            .execute(&self.inner.pool)
            .await
            .map_err(|e| read_error("save snapshot", e))?;
        Ok(())
    }
}
