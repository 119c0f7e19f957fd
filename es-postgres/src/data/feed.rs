//! The global feed: pages of the events table in `(tx_id, seq)` order
//! below the horizon, filtered by category or event type, and how far the
//! horizon holds events back.

use std::fmt::Write as _;
use std::time::Duration;

use es_core::{FeedFilter, FeedPage, Position, RecordedEvent, StoreError};
use futures::TryStreamExt as _;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{PgPool, Row as _};

use super::rows::{EVENT_COLUMNS, EventColumns, qualified_event_columns};
use crate::convert;
use crate::error::read_error;
use crate::lag::{FeedLag, OldestTransaction};
use crate::route::Session;

/// Rows a windowed feed read examines at least (see [`Statements::page`]).
const FEED_WINDOW: usize = 2_000;

/// A row's category, as the category index computes it, for the events
/// table under `prefix` (an alias and a dot, or nothing).
fn category(prefix: &str) -> String {
    format!("split_part({prefix}stream_id, '-', 1)")
}

/// The parts of the feed's statements, with the schema filled in.
#[derive(Debug)]
pub(crate) struct Statements {
    events: String,
    /// Events after `$1/$2` below the horizon; filters are appended.
    select: String,
    /// The category's appends (one index entry each).
    category_appends: String,
    /// The whole rows of a windowed read's matches (`m`).
    matched_events: String,
    /// Rows after the later of `$1/$2` and the horizon.
    held_back: String,
    lag: String,
}

impl Statements {
    pub(crate) fn new(schema: &str) -> Self {
        let events = format!("\"{schema}\".events");
        Self {
            select: format!(
                "SELECT {EVENT_COLUMNS} FROM {events} \
                 WHERE (tx_id, seq) > ($1::bigint::text::xid8, $2) \
                 AND tx_id < pg_snapshot_xmin(pg_current_snapshot())"
            ),
            category_appends: format!(
                "SELECT tx_id FROM {events} WHERE {} = ($4::text[])[1] AND starts_append",
                category("")
            ),
            // Each match through the primary key: the LIMIT keeps the
            // planner from turning the lookups into a join over a scan of
            // the table, which it prefers on a small one.
            matched_events: format!(
                "SELECT ev.* FROM m CROSS JOIN LATERAL (SELECT {columns} FROM {events} ev \
                 WHERE ev.tx_id = m.tx_id AND ev.seq = m.seq LIMIT 1) ev \
                 ORDER BY ev.tx_id, ev.seq",
                columns = qualified_event_columns("ev"),
            ),
            // One lower bound, the later of `after` and the horizon: given
            // as two conditions, the index scan would start at `after` and
            // walk every row up to the horizon.
            held_back: format!(
                "SELECT tx_id FROM {events} \
                 WHERE (tx_id, seq) > (\
                   greatest($1::bigint::text::xid8, pg_snapshot_xmin(pg_current_snapshot())), \
                   CASE WHEN $1::bigint::text::xid8 >= pg_snapshot_xmin(pg_current_snapshot()) \
                   THEN $2 ELSE 0 END)"
            ),
            lag: format!(
                "SELECT (SELECT count(*) FROM {events} \
                         WHERE tx_id >= pg_snapshot_xmin(pg_current_snapshot())) AS held_back, \
                        o.pid, o.state, o.datname, \
                        extract(epoch FROM clock_timestamp() - o.xact_start)::float8 AS age \
                 FROM (SELECT) AS one \
                 LEFT JOIN LATERAL ( \
                     SELECT pid, state, datname, xact_start FROM pg_stat_activity \
                     WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() \
                     ORDER BY age(backend_xid) DESC, xact_start LIMIT 1 \
                 ) AS o ON true"
            ),
            events,
        }
    }

    /// The statement of one page for `filter`: one row per event, with null
    /// event columns when the page is empty. Every row also has
    ///
    /// - `held_back`: whether committed events matching `filter` lie beyond
    ///   the horizon (held back by an older transaction still running);
    /// - `windowed`: whether the read stopped examining the feed before the
    ///   horizon (null when it examines all of it);
    /// - `end_tx`, `end_seq`: the position up to which it examined the feed.
    ///
    /// All parts see the same snapshot. Without a filter the page is the
    /// next rows in feed order; one category is read through the category
    /// index ([`category_page`](Self::category_page)); other filters (event
    /// types alone, several categories) examine a window of rows in feed
    /// order and return the matches among them. So the cost of a read is
    /// bounded however rare the matches are.
    pub(crate) fn page(&self, filter: &FeedFilter, limit: usize) -> String {
        let window = limit.saturating_mul(4).clamp(FEED_WINDOW, 25 * FEED_WINDOW);
        if filter.categories.len() == 1 {
            return self.category_page(filter, window);
        }
        let mut page = self.select.clone();
        push_filter(&mut page, "", filter);
        let mut held_back = self.held_back.clone();
        push_filter(&mut held_back, "", filter);
        // `held_back` is a scalar subquery in feed order rather than an
        // EXISTS: PostgreSQL drops the ORDER BY from an EXISTS, and its
        // generic plan then scans the whole table for a row that is rarely
        // there.
        let held_back = format!(
            "(SELECT ({held_back} ORDER BY tx_id, seq LIMIT 1) IS NOT NULL AS held_back) h"
        );
        if filter.is_all() {
            return format!(
                "SELECT h.held_back, NULL::boolean AS windowed, NULL::bigint AS end_tx, \
                 NULL::bigint AS end_seq, e.* FROM {held_back} \
                 LEFT JOIN LATERAL ({page} ORDER BY tx_id, seq LIMIT $3) e ON true"
            );
        }
        // One pass over the window's rows (in feed order, with their heap
        // rows for the filter's columns), then the matches' whole rows.
        let mut matches = String::from("true");
        push_filter(&mut matches, "", filter);
        format!(
            "WITH w AS MATERIALIZED ( \
               SELECT tx_id, seq, {matches} AS hit FROM {events} \
               WHERE (tx_id, seq) > ($1::bigint::text::xid8, $2) \
               AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
               ORDER BY tx_id, seq LIMIT {window}), \
             m AS (SELECT tx_id, seq FROM w WHERE hit ORDER BY tx_id, seq LIMIT $3) \
             SELECT h.held_back, (SELECT count(*) FROM w) = {window} AS windowed, \
               l.tx_id::text::bigint AS end_tx, l.seq AS end_seq, e.* FROM {held_back} \
             LEFT JOIN LATERAL (SELECT tx_id, seq FROM w ORDER BY tx_id DESC, seq DESC LIMIT 1) l \
             ON true \
             LEFT JOIN LATERAL ({matched}) e ON true",
            events = self.events,
            matched = self.matched_events,
        )
    }

    /// The page of one category (and maybe event types): the next
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
    fn category_page(&self, filter: &FeedFilter, window: usize) -> String {
        let window = window / 4;
        let events = &self.events;
        let mut held_back = self.category_appends.clone();
        held_back.push_str(
            " AND tx_id >= greatest($1::bigint::text::xid8, pg_snapshot_xmin(pg_current_snapshot()))",
        );
        let held_back =
            format!("(SELECT ({held_back} ORDER BY tx_id LIMIT 1) IS NOT NULL AS held_back) h");
        let appends = format!(
            "SELECT DISTINCT tx_id FROM {events} \
             WHERE {} = ($4::text[])[1] AND starts_append \
             AND tx_id >= $1::bigint::text::xid8 \
             AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY tx_id",
            category("")
        );
        if filter.event_types.is_empty() {
            let mut page = format!(
                "SELECT {columns} FROM {events} ev \
                 WHERE ev.tx_id = a.tx_id AND (ev.tx_id, ev.seq) > ($1::bigint::text::xid8, $2)",
                columns = qualified_event_columns("ev"),
            );
            push_filter(&mut page, "ev.", filter);
            return format!(
                "SELECT h.held_back, NULL::boolean AS windowed, NULL::bigint AS end_tx, \
                 NULL::bigint AS end_seq, e.* FROM {held_back} \
                 LEFT JOIN LATERAL (SELECT ev.* FROM ({appends} LIMIT $3 + 1) a \
                 CROSS JOIN LATERAL ({page}) ev ORDER BY ev.tx_id, ev.seq LIMIT $3) e ON true"
            );
        }
        // The window's transactions as an array, matched through the
        // primary key: a join with them could be planned as a hash join
        // over a scan of the whole table when the types look rare.
        let mut matches = self.select.clone();
        push_filter(&mut matches, "", filter);
        format!(
            "WITH w AS MATERIALIZED (SELECT ARRAY({appends} LIMIT {window}) AS txs) \
             SELECT h.held_back, cardinality(w.txs) = {window} AS windowed, \
             w.txs[cardinality(w.txs)]::text::bigint AS end_tx, {max_seq}::bigint AS end_seq, e.* \
             FROM {held_back} CROSS JOIN w \
             LEFT JOIN LATERAL ({matches} AND tx_id = ANY(w.txs) ORDER BY tx_id, seq LIMIT $3) e \
             ON true",
            max_seq = i64::MAX,
        )
    }
}

/// Appends `filter`'s conditions on the events table under `prefix` to
/// `sql`; its arrays are parameters 4 and on.
fn push_filter(sql: &mut String, prefix: &str, filter: &FeedFilter) {
    let mut param = 4;
    let event_type = format!("{prefix}event_type");
    for (column, values) in [
        (category(prefix), &filter.categories),
        (event_type, &filter.event_types),
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

/// The page statement `sql` with its parameters: the position to read
/// after, the limit and the filter's arrays.
fn bind<'q>(
    sql: &'q str,
    (after_tx, after_seq): (i64, i64),
    filter: &'q FeedFilter,
    limit: usize,
) -> sqlx::query::Query<'q, sqlx::Postgres, PgArguments> {
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

/// A page as read: its events, whether committed events are held back
/// behind the horizon, and how far the read examined the feed.
pub(crate) struct Page {
    pub(crate) events: Vec<RecordedEvent>,
    pub(crate) held_back: bool,
    pub(crate) windowed: bool,
    pub(crate) end: Option<Position>,
    /// An event that could not be read back, after `events`.
    pub(crate) corrupt: Option<StoreError>,
}

/// The columns every row of a page has besides the event's, decoded by
/// name.
struct Head {
    held_back: bool,
    windowed: bool,
    end: Option<Position>,
}

impl Head {
    fn decode(row: &PgRow) -> Result<Self, StoreError> {
        let bad = |e: sqlx::Error| read_error("read feed", e);
        let held_back: bool = row.try_get("held_back").map_err(bad)?;
        let windowed: Option<bool> = row.try_get("windowed").map_err(bad)?;
        let end_tx: Option<i64> = row.try_get("end_tx").map_err(bad)?;
        let end_seq: Option<i64> = row.try_get("end_seq").map_err(bad)?;
        let end =
            match end_tx.zip(end_seq) {
                Some((tx, seq)) => Some(convert::position(tx, seq).map_err(|reason| {
                    StoreError::CorruptRecord {
                        location: "the end of a feed read".to_owned(),
                        reason,
                    }
                })?),
                None => None,
            };
        // Null: the read examines the feed to its end.
        let windowed = windowed == Some(true);
        Ok(Self {
            held_back,
            windowed,
            end,
        })
    }
}

/// Runs the page statement `sql` (from [`Statements::page`]) once, after
/// the primary-key bound `after`. Rows are decoded as they arrive, while
/// the server still produces the rest; after an event that cannot be read
/// back, the rest is only drained. Prepared once per connection: each shape
/// of read has one good plan whatever its values, so a generic plan is that
/// plan and no read pays for planning.
pub(crate) async fn read_page(
    session: &mut Session,
    sql: &str,
    after: (i64, i64),
    filter: &FeedFilter,
    limit: usize,
) -> Result<Page, StoreError> {
    let mut rows = bind(sql, after, filter, limit)
        .persistent(session.persistent())
        .fetch(session.conn());
    let mut head: Option<(Head, EventColumns)> = None;
    let mut events: Vec<RecordedEvent> = Vec::with_capacity(limit.min(1_000));
    let mut corrupt = None;
    while let Some(row) = rows
        .try_next()
        .await
        .map_err(|e| read_error("read feed", e))?
    {
        let columns = if let Some((_, columns)) = &head {
            *columns
        } else {
            let columns = EventColumns::locate(&row)?;
            head = Some((Head::decode(&row)?, columns));
            columns
        };
        if corrupt.is_some() || !columns.present(&row)? {
            continue;
        }
        // Neighbouring rows mostly share a stream: share its id.
        let previous = events.last().map(|e| &e.stream_id);
        match columns.decode(&row, previous) {
            Ok(event) => events.push(event),
            Err(error) => corrupt = Some(error),
        }
    }
    // The statement answers at least one row; without one, nothing was read.
    let Some((head, _)) = head else {
        return Ok(Page {
            events,
            held_back: false,
            windowed: false,
            end: None,
            corrupt,
        });
    };
    Ok(Page {
        events,
        held_back: head.held_back,
        windowed: head.windowed,
        end: head.end,
        corrupt,
    })
}

impl Page {
    /// The page a follower sees after `after` with `limit`: where to read
    /// on, and whether at once. A page that met an unreadable event ends
    /// before it (the next read starts at it and reports it).
    pub(crate) fn into_feed_page(
        self,
        after: Position,
        limit: usize,
    ) -> Result<(FeedPage, bool), StoreError> {
        if let Some(error) = self.corrupt {
            if self.events.is_empty() {
                return Err(error);
            }
            return Ok((FeedPage::of_events(after, self.events, 1), false));
        }
        let page = match self.end {
            // A full page, or a read that examines every row: read on after
            // its last event.
            _ if self.events.len() >= limit => FeedPage::of_events(after, self.events, limit),
            None => FeedPage::of_events(after, self.events, limit),
            // A window that was not filled examined every row up to `end`.
            Some(end) => FeedPage::new(self.events, end.max(after), self.windowed),
        };
        Ok((page, self.held_back))
    }
}

/// Runs the page statement for `filter` once under `EXPLAIN (ANALYZE,
/// BUFFERS, FORMAT JSON)`.
pub(crate) async fn explain_page(
    session: &mut Session,
    statements: &Statements,
    after: (i64, i64),
    filter: &FeedFilter,
    limit: usize,
) -> Result<serde_json::Value, StoreError> {
    let sql = format!(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}",
        statements.page(filter, limit)
    );
    let row = bind(&sql, after, filter, limit)
        .persistent(false)
        .fetch_one(session.conn())
        .await
        .map_err(|e| read_error("explain a feed read", e))?;
    row.try_get(0)
        .map_err(|e| read_error("explain a feed read", e))
}

/// Reads the feed's lag.
pub(crate) async fn lag(pool: &PgPool, statements: &Statements) -> Result<FeedLag, StoreError> {
    let row = sqlx::query(&statements.lag)
        .fetch_one(pool)
        .await
        .map_err(|e| read_error("read feed lag", e))?;
    let get = |e: sqlx::Error| StoreError::backend("read feed lag", e);
    let corrupt = |reason: String| StoreError::CorruptRecord {
        location: "the feed's lag".to_owned(),
        reason,
    };
    let held_back: i64 = row.try_get("held_back").map_err(get)?;
    let pid: Option<i32> = row.try_get("pid").map_err(get)?;
    let oldest = match pid {
        Some(pid) => {
            let age: Option<f64> = row.try_get("age").map_err(get)?;
            Some(OldestTransaction {
                pid,
                age: age
                    .map_or(Ok(Duration::ZERO), Duration::try_from_secs_f64)
                    .map_err(|e| corrupt(format!("the age of transaction {pid}: {e}")))?,
                state: row.try_get("state").map_err(get)?,
                database: row.try_get("datname").map_err(get)?,
            })
        }
        None => None,
    };
    Ok(FeedLag {
        held_back: convert::unsigned(held_back, "the count of held-back events")
            .map_err(corrupt)?,
        oldest,
    })
}
