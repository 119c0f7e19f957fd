//! How far the global feed is held back by transactions still running.
//!
//! The feed only returns events of transactions older than every running
//! one (see [`PgEventStore`]), so a transaction left open anywhere in the
//! cluster (a long report, a session idle in transaction) holds back the
//! events committed after it began. [`PgEventStore::feed_lag`] reports how
//! many committed events wait behind that horizon and which transaction
//! holds it.

use std::time::Duration;

use es_core::StoreError;
use sqlx::Row;

use crate::PgEventStore;
use crate::error::read_error;

/// How far the feed is held back right now (see
/// [`PgEventStore::feed_lag`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FeedLag {
    /// Committed events that the feed does not return yet, because a
    /// transaction that began before they committed is still running.
    pub held_back: u64,
    /// The running transaction with the oldest transaction id, which holds
    /// the horizon back; `None` when no transaction with an id is running.
    pub oldest: Option<OldestTransaction>,
}

/// The running transaction that holds the feed's horizon back.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OldestTransaction {
    /// The server process id of its session (`pg_stat_activity.pid`); end
    /// the transaction with `pg_terminate_backend(pid)` if it must go.
    pub pid: i32,
    /// How long ago the transaction began (`xact_start`).
    pub age: Duration,
    /// The session's state: `active`, `idle in transaction`, ...; `None`
    /// when the server does not show it (another user's session).
    pub state: Option<String>,
    /// The database it is connected to; `None` for a background process.
    pub database: Option<String>,
}

impl PgEventStore {
    /// How many committed events the feed holds back, and which running
    /// transaction holds them back.
    ///
    /// A transaction that has written anything (it has a transaction id)
    /// sets the horizon of the feed for the whole cluster, in every
    /// database: events committed after it began are returned only once it
    /// ends, so that none is ever skipped. Watch this to find sessions left
    /// idle in transaction. Reading other sessions' state needs the
    /// `pg_read_all_stats` role (or a superuser); without it, `oldest` may
    /// be `None` although `held_back` is not 0.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] or [`StoreError::Timeout`] when the server
    /// cannot be asked.
    pub async fn feed_lag(&self) -> Result<FeedLag, StoreError> {
        let sql = format!(
            "SELECT (SELECT count(*) FROM \"{schema}\".events \
                     WHERE tx_id >= pg_snapshot_xmin(pg_current_snapshot())) AS held_back, \
                    o.pid, o.state, o.datname, \
                    extract(epoch FROM clock_timestamp() - o.xact_start)::float8 AS age \
             FROM (SELECT) AS one \
             LEFT JOIN LATERAL ( \
                 SELECT pid, state, datname, xact_start FROM pg_stat_activity \
                 WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() \
                 ORDER BY age(backend_xid) DESC, xact_start LIMIT 1 \
             ) AS o ON true",
            schema = self.config().schema()
        );
        let row = sqlx::query(&sql)
            .fetch_one(self.pool())
            .await
            .map_err(|e| read_error("read feed lag", e))?;
        let get = |e: sqlx::Error| StoreError::backend("read feed lag", e);
        let held_back: i64 = row.try_get("held_back").map_err(get)?;
        let pid: Option<i32> = row.try_get("pid").map_err(get)?;
        let oldest = match pid {
            Some(pid) => {
                let age: Option<f64> = row.try_get("age").map_err(get)?;
                Some(OldestTransaction {
                    pid,
                    age: age
                        .map_or(Ok(Duration::ZERO), Duration::try_from_secs_f64)
                        .map_err(|e| StoreError::CorruptRecord {
                            location: format!("the age of transaction {pid}"),
                            reason: e.to_string(),
                        })?,
                    state: row.try_get("state").map_err(get)?,
                    database: row.try_get("datname").map_err(get)?,
                })
            }
            None => None,
        };
        Ok(FeedLag {
            held_back: crate::convert::unsigned(held_back, "the count of held-back events")
                .map_err(|reason| StoreError::CorruptRecord {
                    location: "the feed's lag".to_owned(),
                    reason,
                })?,
            oldest,
        })
    }
}
