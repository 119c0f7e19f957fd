//! The servers a store talks to: the primary, and optionally a pooler in
//! front of it and a streaming replica of it.

use std::str::FromStr as _;
use std::time::Duration;

use es_core::StoreError;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection as _, Executor as _, PgConnection, PgPool};

/// The servers of a [`PgEventStore`](crate::PgEventStore), by URL, for
/// [`PgEventStore::connect_servers`](crate::PgEventStore::connect_servers).
///
/// ```
/// use es_postgres::PgServers;
///
/// let servers = PgServers::new("postgres://app@db-primary/app")
///     .pooler("postgres://app@pgbouncer:6432/app")
///     .replica("postgres://app@db-replica/app");
/// # let _ = servers;
/// ```
#[derive(Debug, Clone)]
pub struct PgServers {
    primary: String,
    pooler: Option<String>,
    replica: Option<String>,
}

impl PgServers {
    /// Every session on the primary at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            primary: url.into(),
            pooler: None,
            replica: None,
        }
    }

    /// Appends, reads and snapshots through a pooler in transaction pooling
    /// mode in front of the primary (PgBouncer's `pool_mode =
    /// transaction`; tested with PgBouncer 1.18, for versions from 1.21 on
    /// keep `max_prepared_statements = 0`, since the store deallocates the
    /// statements a connection's set-up leaves); what needs a session of its own (the `LISTEN` of
    /// subscriptions, projections' leases and checkpoints, migrations)
    /// stays on direct sessions to the primary URL.
    #[must_use]
    pub fn pooler(mut self, url: impl Into<String>) -> Self {
        self.pooler = Some(url.into());
        self
    }

    /// Stream reads, feed reads (and so subscriptions and projections'
    /// reads) and snapshot loads from a streaming replica of the primary,
    /// on direct sessions: not through a pooler.
    #[must_use]
    pub fn replica(mut self, url: impl Into<String>) -> Self {
        self.replica = Some(url.into());
        self
    }
}

/// The connection pools of a [`PgEventStore`](crate::PgEventStore), for
/// [`PgEventStore::with_pools`](crate::PgEventStore::with_pools): what
/// [`PgServers`] connects, with pools of your own making.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PgPools {
    /// Direct sessions to the primary.
    pub primary: PgPool,
    /// Connections through a transaction-pooling pooler in front of the
    /// primary (see [`PgServers::pooler`]). They must not keep named
    /// statements: the store runs its statements unnamed here, each in a
    /// transaction of its own; the pool's connect options should set
    /// `statement_cache_capacity(0)` and `extra_float_digits(None)`, and
    /// its `after_connect` should run [`ready_pooled_connection`].
    pub pooler: Option<PgPool>,
    /// Sessions on a streaming replica (see [`PgServers::replica`]).
    pub replica: Option<PgPool>,
}

impl PgPools {
    /// Every session on `primary`.
    #[must_use]
    pub fn new(primary: PgPool) -> Self {
        Self {
            primary,
            pooler: None,
            replica: None,
        }
    }

    /// Sets [`pooler`](Self::pooler).
    #[must_use]
    pub fn pooler(mut self, pool: PgPool) -> Self {
        self.pooler = Some(pool);
        self
    }

    /// Sets [`replica`](Self::replica).
    #[must_use]
    pub fn replica(mut self, pool: PgPool) -> Self {
        self.replica = Some(pool);
        self
    }
}

/// Connects the pools of `servers`.
pub(crate) async fn connect(servers: &PgServers) -> Result<PgPools, StoreError> {
    let primary_size = if servers.pooler.is_some() { 4 } else { 10 };
    let primary = open(&servers.primary, Kind::Direct, primary_size).await?;
    let pooler = match &servers.pooler {
        Some(url) => Some(open(url, Kind::Pooler, 10).await?),
        None => None,
    };
    let replica = match &servers.replica {
        Some(url) => Some(open(url, Kind::Direct, 10).await?),
        None => None,
    };
    Ok(PgPools {
        primary,
        pooler,
        replica,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Direct,
    Pooler,
}

/// A pool of up to `size` connections to `url`, after one session opened
/// on its own: a wrong address, password or database fails here at once
/// with the server's reason, where the pool would retry until its timeout
/// and report only that.
async fn open(url: &str, kind: Kind, size: u32) -> Result<PgPool, StoreError> {
    let mut connect =
        PgConnectOptions::from_str(url).map_err(|e| StoreError::backend("connect", e))?;
    connect = match kind {
        // See `PgEventStore::connect` on `jit`.
        Kind::Direct => connect.options([("jit", "off")]),
        // A pooler refuses startup parameters it does not track, and keeps
        // no prepared statement from one transaction to the next.
        Kind::Pooler => connect.extra_float_digits(None).statement_cache_capacity(0),
    };
    // Sessions name their program (unless the URL does), so that an
    // operator can tell whose session holds a lease or the feed.
    if connect.get_application_name().is_none()
        && let Some(program) = program_name()
    {
        connect = connect.application_name(&program);
    }
    let first = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&connect))
        .await
        .map_err(|_| StoreError::Timeout {
            operation: "connect",
        })?
        .map_err(|e| StoreError::backend("connect", e))?;
    first
        .close()
        .await
        .map_err(|e| StoreError::backend("connect", e))?;
    let mut pool = PgPoolOptions::new()
        .max_connections(size)
        .test_before_acquire(false);
    if kind == Kind::Pooler {
        pool = pool.after_connect(|conn, _| Box::pin(ready_pooled_connection(conn)));
    }
    pool.connect_with(connect)
        .await
        .map_err(|e| StoreError::backend("connect", e))
}

/// Readies a new connection through a transaction-pooling pooler; a pool
/// of your own for [`PgPools::pooler`] runs it in its `after_connect`.
///
/// The driver looks a result type it does not know (the feed's `xid8`
/// transaction ids) up once per connection, with a named prepared
/// statement. Through the pooler that statement would stay on a server
/// connection that other clients share, and the next client to look the
/// type up would fail ("prepared statement already exists"). Here the
/// lookup runs in a transaction that deallocates the statements of its
/// server connection before and after, so none is ever left behind.
///
/// # Errors
///
/// The driver's error when a statement fails.
pub async fn ready_pooled_connection(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    // One transaction, so that one server connection runs all three.
    conn.execute("BEGIN; DEALLOCATE ALL").await?;
    let looked_up = conn
        .fetch_optional(sqlx::query("SELECT NULL::xid8").persistent(false))
        .await;
    let end = if looked_up.is_ok() {
        "DEALLOCATE ALL; COMMIT"
    } else {
        "ROLLBACK"
    };
    conn.execute(end).await?;
    looked_up.map(drop)
}

/// How long a connect waits for the server to answer (the pool's own
/// default for acquiring a connection).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// This process's program name, as sessions report it.
fn program_name() -> Option<String> {
    let path = std::env::current_exe().ok()?;
    Some(path.file_stem()?.to_string_lossy().into_owned())
}
