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

use crate::PgEventStore;

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
        crate::data::feed::lag(self.pool(), &self.statements().feed).await
    }
}
