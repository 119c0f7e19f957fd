//! The projections table (checkpoints, state, rebuild requests), the
//! dead-letter table, and the advisory lock that is each projection's
//! lease.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use es_core::{Position, StoreError};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row as _};
use uuid::Uuid;

use crate::convert;

/// The state of a projection, as its row records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProjectionState {
    /// A runner is applying events (or was, until its process died).
    Running,
    /// Its runner shut down.
    Stopped,
    /// Its runner stopped at an event it could not apply or read, under
    /// the stop policy; `last_error` says which.
    Failed,
}

impl ProjectionState {
    /// Every state.
    pub const ALL: [Self; 3] = [Self::Running, Self::Stopped, Self::Failed];

    /// The state as the table stores it.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for ProjectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProjectionState {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| format!("unknown projection state {text:?}"))
    }
}

/// The statements of the projection tables, with the schema filled in.
#[derive(Debug)]
pub(crate) struct Statements {
    schema: String,
    start: String,
    checkpoint: String,
    rebuild_requested: String,
    reset: String,
    clear_dead_letters: String,
    forget: String,
    set_state: String,
    park: String,
    note_error: String,
    request_rebuild: String,
    rows: String,
    lag: String,
    lease_holder: String,
    parked: String,
    discard: String,
    retry_requested: String,
    request_retry: String,
    unpark: String,
    retry_failed: String,
}

impl Statements {
    pub(crate) fn new(schema: &str) -> Self {
        let table = format!("\"{schema}\".projections");
        let dead = format!("\"{schema}\".projection_dead_letters");
        let letter = "id, projection, event_id, stream_id, version, tx_id, seq, event_type, \
                      error, attempts, parked_at, raw_data, raw_metadata, retry_requested";
        Self {
            schema: schema.to_owned(),
            start: format!(
                "INSERT INTO {table} AS p (name, state, event_types) VALUES ($1, 'running', $2) \
                 ON CONFLICT (name) DO UPDATE \
                 SET state = 'running', event_types = EXCLUDED.event_types, updated_at = now() \
                 RETURNING p.tx_id, p.seq, p.rebuild_requested"
            ),
            checkpoint: format!(
                "UPDATE {table} SET tx_id = $2, seq = $3, events_applied = events_applied + $4, \
                 state = 'running', updated_at = now() WHERE name = $1 RETURNING rebuild_requested"
            ),
            rebuild_requested: format!("SELECT rebuild_requested FROM {table} WHERE name = $1"),
            reset: format!(
                "UPDATE {table} SET tx_id = 0, seq = 0, events_applied = 0, \
                 rebuild_requested = false, last_error = NULL, state = 'running', \
                 updated_at = now() WHERE name = $1"
            ),
            clear_dead_letters: format!("DELETE FROM {dead} WHERE projection = $1"),
            forget: format!("DELETE FROM {table} WHERE name = $1"),
            set_state: format!(
                "UPDATE {table} SET state = $2, last_error = coalesce($3, last_error), \
                 updated_at = now() WHERE name = $1"
            ),
            park: format!(
                "INSERT INTO {dead} (projection, event_id, stream_id, version, tx_id, seq, \
                 event_type, error, attempts, raw_data, raw_metadata) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (projection, event_id) DO NOTHING"
            ),
            note_error: format!("UPDATE {table} SET last_error = $2 WHERE name = $1"),
            request_rebuild: format!(
                "INSERT INTO {table} (name, rebuild_requested) VALUES ($1, true) \
                 ON CONFLICT (name) DO UPDATE SET rebuild_requested = true"
            ),
            rows: format!(
                "SELECT p.name, p.tx_id, p.seq, p.event_types, p.state, p.last_error, \
                 p.events_applied, p.updated_at, p.rebuild_requested, \
                 (SELECT count(*) FROM {dead} d WHERE d.projection = p.name) AS parked \
                 FROM {table} p WHERE p.name = ANY($1) ORDER BY p.name"
            ),
            lag: format!(
                "SELECT count(*) FROM \"{schema}\".events \
                 WHERE (tx_id, seq) > ($1::bigint::text::xid8, $2) \
                 AND (cardinality($3::text[]) = 0 OR event_type = ANY($3))"
            ),
            lease_holder: "SELECT l.pid, a.application_name, host(a.client_addr) AS client_addr, \
                 a.backend_start FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND l.granted \
                 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                 AND ((l.classid::bigint << 32) | l.objid::bigint) = $1 AND l.objsubid = 1 \
                 LIMIT 1"
                .to_owned(),
            parked: format!(
                "SELECT {letter} FROM {dead} WHERE projection = $1 ORDER BY tx_id, seq"
            ),
            discard: format!("DELETE FROM {dead} WHERE projection = $1 AND id = $2"),
            retry_requested: format!(
                "SELECT {letter} FROM {dead} WHERE projection = $1 AND retry_requested \
                 ORDER BY tx_id, seq"
            ),
            request_retry: format!(
                "UPDATE {dead} SET retry_requested = true WHERE projection = $1 AND id = $2"
            ),
            unpark: format!("DELETE FROM {dead} WHERE id = $1"),
            retry_failed: format!(
                "UPDATE {dead} SET retry_requested = false, error = $2, \
                 attempts = attempts + $3 WHERE id = $1"
            ),
        }
    }

    /// The advisory-lock key of projection `name`'s lease: a stable 64-bit
    /// hash of the schema and name (FNV-1a), so every process computes the
    /// same key.
    pub(crate) fn lease_key(&self, name: &str) -> i64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in self
            .schema
            .bytes()
            .chain(*b":projection:")
            .chain(name.bytes())
        {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        i64::from_ne_bytes(hash.to_ne_bytes())
    }
}

/// A statement of the projection tables that failed.
#[derive(Debug)]
pub(crate) enum Failed {
    /// The database failed (a lost connection, a server error): a runner
    /// stands by and tries again.
    Database(sqlx::Error),
    /// A stored value cannot be read back: retrying cannot help.
    Corrupt(StoreError),
}

impl From<sqlx::Error> for Failed {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(error)
    }
}

impl Failed {
    /// As a store error of `operation`.
    pub(crate) fn into_store_error(self, operation: &'static str) -> StoreError {
        match self {
            Self::Database(error) => crate::error::read_error(operation, error),
            Self::Corrupt(error) => error,
        }
    }
}

/// A checkpoint or status value that cannot be read back.
fn corrupt(name: &str, what: &str, reason: impl fmt::Display) -> Failed {
    Failed::Corrupt(StoreError::CorruptRecord {
        location: format!("{what} of projection {name}"),
        reason: reason.to_string(),
    })
}

/// A projection's checkpoint as its runner starts: where to read on, and
/// whether a rebuild was asked for.
pub(crate) struct Start {
    pub(crate) position: Position,
    pub(crate) rebuild_requested: bool,
}

/// Creates the projection's row if needed, records its event types, marks
/// it running and returns its checkpoint.
pub(crate) async fn start(
    conn: &mut PgConnection,
    statements: &Statements,
    name: &str,
    event_types: &[&str],
) -> Result<Start, Failed> {
    let row = sqlx::query(&statements.start)
        .bind(name)
        .bind(event_types)
        .fetch_one(conn)
        .await?;
    let position = convert::position(row.try_get("tx_id")?, row.try_get("seq")?)
        .map_err(|reason| corrupt(name, "checkpoint", reason))?;
    Ok(Start {
        position,
        rebuild_requested: row.try_get("rebuild_requested")?,
    })
}

/// Moves the checkpoint to `position` (in the caller's transaction),
/// counting `applied` events; returns whether a rebuild was requested.
pub(crate) async fn checkpoint(
    conn: &mut PgConnection,
    statements: &Statements,
    name: &str,
    position: Position,
    applied: usize,
) -> Result<bool, Failed> {
    let (tx_id, seq) = convert::checkpoint(position, name).map_err(Failed::Corrupt)?;
    let applied = convert::count(applied, "save a checkpoint").map_err(Failed::Corrupt)?;
    Ok(sqlx::query_scalar(&statements.checkpoint)
        .bind(name)
        .bind(tx_id)
        .bind(seq)
        .bind(applied)
        .fetch_one(conn)
        .await?)
}

/// Whether a rebuild of the projection was requested.
pub(crate) async fn rebuild_requested(
    conn: &mut PgConnection,
    statements: &Statements,
    name: &str,
) -> Result<bool, Failed> {
    Ok(sqlx::query_scalar(&statements.rebuild_requested)
        .bind(name)
        .fetch_one(conn)
        .await?)
}

/// Moves the checkpoint to the start and clears the dead letters, in the
/// caller's transaction (which also resets the read model).
pub(crate) async fn reset(
    conn: &mut PgConnection,
    statements: &Statements,
    name: &str,
) -> Result<(), Failed> {
    sqlx::query(&statements.reset)
        .bind(name)
        .execute(&mut *conn)
        .await?;
    sqlx::query(&statements.clear_dead_letters)
        .bind(name)
        .execute(conn)
        .await?;
    Ok(())
}

/// Forgets the run `name` of a retired version: its checkpoint row and its
/// dead letters, in the caller's transaction.
pub(crate) async fn forget(
    conn: &mut PgConnection,
    statements: &Statements,
    name: &str,
) -> Result<(), Failed> {
    for statement in [&statements.forget, &statements.clear_dead_letters] {
        sqlx::query(statement)
            .bind(name)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Records the projection's state, and its last error if given.
pub(crate) async fn set_state(
    conn: &mut PgConnection,
    statements: &Statements,
    name: &str,
    state: ProjectionState,
    error: Option<&str>,
) -> Result<(), Failed> {
    sqlx::query(&statements.set_state)
        .bind(name)
        .bind(state.as_str())
        .bind(error)
        .execute(conn)
        .await?;
    Ok(())
}

/// An event to set aside in the dead-letter table.
pub(crate) struct DeadLetter<'a> {
    pub(crate) event_id: Uuid,
    pub(crate) stream_id: &'a str,
    pub(crate) version: u64,
    pub(crate) position: Position,
    pub(crate) event_type: &'a str,
    pub(crate) error: &'a str,
    pub(crate) attempts: u32,
    /// The stored data and metadata text of an event that cannot be read.
    pub(crate) raw: Option<(String, String)>,
}

/// Parks `letter` and records `failure` as the last error, in the
/// caller's transaction.
pub(crate) async fn park(
    conn: &mut PgConnection,
    statements: &Statements,
    name: &str,
    letter: &DeadLetter<'_>,
    failure: &str,
) -> Result<(), Failed> {
    let version = i64::try_from(letter.version)
        .map_err(|_| corrupt(name, "a parked event", "its version exceeds a bigint"))?;
    let (tx_id, seq) = convert::checkpoint(letter.position, name).map_err(Failed::Corrupt)?;
    let (raw_data, raw_metadata) = letter.raw.as_ref().map(|(d, m)| (d, m)).unzip();
    sqlx::query(&statements.park)
        .bind(name)
        .bind(letter.event_id)
        .bind(letter.stream_id)
        .bind(version)
        .bind(tx_id)
        .bind(seq)
        .bind(letter.event_type)
        .bind(letter.error)
        .bind(i64::from(letter.attempts))
        .bind(raw_data)
        .bind(raw_metadata)
        .execute(&mut *conn)
        .await?;
    sqlx::query(&statements.note_error)
        .bind(name)
        .bind(failure)
        .execute(conn)
        .await?;
    Ok(())
}

/// Asks for a rebuild of projection `name`.
pub(crate) async fn request_rebuild(
    pool: &PgPool,
    statements: &Statements,
    name: &str,
) -> Result<(), Failed> {
    sqlx::query(&statements.request_rebuild)
        .bind(name)
        .execute(pool)
        .await?;
    Ok(())
}

/// Tries to take projection `name`'s lease on `conn`.
pub(crate) async fn take_lease(
    conn: &mut PgConnection,
    statements: &Statements,
    name: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(statements.lease_key(name))
        .fetch_one(conn)
        .await
}

/// Gives projection `name`'s lease up.
pub(crate) async fn release_lease(
    conn: &mut PgConnection,
    statements: &Statements,
    name: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(statements.lease_key(name))
        .execute(conn)
        .await?;
    Ok(())
}

/// One projection's row, decoded by column name.
pub(crate) struct StatusRow {
    pub(crate) name: String,
    pub(crate) position: Position,
    pub(crate) event_types: Vec<String>,
    pub(crate) state: ProjectionState,
    pub(crate) last_error: Option<String>,
    pub(crate) events_applied: u64,
    pub(crate) parked: u64,
    pub(crate) rebuild_requested: bool,
    pub(crate) updated_at: DateTime<Utc>,
}

impl StatusRow {
    fn decode(row: &PgRow) -> Result<Self, Failed> {
        let name: String = row.try_get("name")?;
        let bad = |what: &str, reason: String| corrupt(&name, what, reason);
        let state: String = row.try_get("state")?;
        let count = |column: &str| -> Result<u64, Failed> {
            let value: i64 = row.try_get(column)?;
            convert::unsigned(value, column).map_err(|reason| bad("status", reason))
        };
        Ok(Self {
            position: convert::position(row.try_get("tx_id")?, row.try_get("seq")?)
                .map_err(|reason| bad("checkpoint", reason))?,
            event_types: row.try_get("event_types")?,
            state: state.parse().map_err(|reason| bad("state", reason))?,
            last_error: row.try_get("last_error")?,
            events_applied: count("events_applied")?,
            parked: count("parked")?,
            rebuild_requested: row.try_get("rebuild_requested")?,
            updated_at: row.try_get("updated_at")?,
            name,
        })
    }
}

/// The rows of the projections named in `names`, or of all of them when
/// `names` is `None`.
pub(crate) async fn status_rows(
    pool: &PgPool,
    statements: &Statements,
    names: Option<&[&str]>,
) -> Result<Vec<StatusRow>, Failed> {
    let sql = match names {
        Some(_) => statements.rows.clone(),
        None => statements.rows.replace("WHERE p.name = ANY($1) ", ""),
    };
    let mut query = sqlx::query(&sql);
    if let Some(names) = names {
        query = query.bind(names);
    }
    let rows = query.fetch_all(pool).await?;
    rows.iter().map(StatusRow::decode).collect()
}

/// Events of `event_types` (all when empty) after `position`.
pub(crate) async fn lag(
    pool: &PgPool,
    statements: &Statements,
    name: &str,
    position: Position,
    event_types: &[String],
) -> Result<u64, Failed> {
    let (tx_id, seq) = convert::checkpoint(position, name).map_err(Failed::Corrupt)?;
    let lag: i64 = sqlx::query_scalar(&statements.lag)
        .bind(tx_id)
        .bind(seq)
        .bind(event_types)
        .fetch_one(pool)
        .await?;
    convert::unsigned(lag, "the lag").map_err(|reason| corrupt(name, "lag", reason))
}

/// The session holding projection `name`'s lease right now, if any.
pub(crate) async fn lease_holder(
    pool: &PgPool,
    statements: &Statements,
    name: &str,
) -> Result<Option<LeaseHolder>, Failed> {
    let row = sqlx::query(&statements.lease_holder)
        .bind(statements.lease_key(name))
        .fetch_optional(pool)
        .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(LeaseHolder {
        pid: row.try_get("pid")?,
        application_name: row
            .try_get::<Option<String>, _>("application_name")?
            .filter(|name| !name.is_empty()),
        client_addr: row.try_get("client_addr")?,
        connected_at: row.try_get("backend_start")?,
    }))
}

/// The database session that holds a projection's lease: the runner's
/// connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseHolder {
    /// Its server process id (`pg_stat_activity.pid`).
    pub pid: i32,
    /// The application name the runner's process connected with, if any.
    pub application_name: Option<String>,
    /// The address it connected from; `None` over a Unix socket, or when
    /// the server does not show another user's sessions.
    pub client_addr: Option<String>,
    /// When it connected; `None` when the server does not show it.
    pub connected_at: Option<DateTime<Utc>>,
}

/// An event a projection set aside, as the dead-letter table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParkedEvent {
    /// The dead letter's id, for [`retry`](crate::PgEventStore::retry_parked)
    /// and [`discard`](crate::PgEventStore::discard_parked).
    pub id: i64,
    /// The projection that parked it.
    pub projection: String,
    /// The event's id.
    pub event_id: Uuid,
    /// Its stream, as stored.
    pub stream_id: String,
    /// Its version in the stream.
    pub version: u64,
    /// Its position in the feed.
    pub position: Position,
    /// Its type, as stored.
    pub event_type: String,
    /// The last error that applying (or reading) it gave.
    pub error: String,
    /// How many times the handler was tried (0: it could not be read).
    pub attempts: u64,
    /// When it was parked.
    pub parked_at: DateTime<Utc>,
    /// The stored data and metadata text of an event that could not be read
    /// back; `None` for an event the handler refused.
    pub raw: Option<(String, String)>,
    /// Whether a retry was asked for and is waiting for the runner.
    pub retry_requested: bool,
}

impl ParkedEvent {
    fn decode(row: &PgRow) -> Result<Self, Failed> {
        let projection: String = row.try_get("projection")?;
        let bad = |reason: String| corrupt(&projection, "a parked event", reason);
        let version: i64 = row.try_get("version")?;
        let attempts: i64 = row.try_get("attempts")?;
        let raw_data: Option<String> = row.try_get("raw_data")?;
        let raw_metadata: Option<String> = row.try_get("raw_metadata")?;
        Ok(Self {
            id: row.try_get("id")?,
            event_id: row.try_get("event_id")?,
            stream_id: row.try_get("stream_id")?,
            version: convert::unsigned(version, "the version").map_err(bad)?,
            position: convert::position(row.try_get("tx_id")?, row.try_get("seq")?).map_err(bad)?,
            event_type: row.try_get("event_type")?,
            error: row.try_get("error")?,
            attempts: convert::unsigned(attempts, "the attempts").map_err(bad)?,
            parked_at: row.try_get("parked_at")?,
            raw: raw_data.zip(raw_metadata),
            retry_requested: row.try_get("retry_requested")?,
            projection,
        })
    }
}

/// The events projection `name` parked, in feed order.
pub(crate) async fn parked(
    pool: &PgPool,
    statements: &Statements,
    name: &str,
) -> Result<Vec<ParkedEvent>, Failed> {
    let rows = sqlx::query(&statements.parked)
        .bind(name)
        .fetch_all(pool)
        .await?;
    rows.iter().map(ParkedEvent::decode).collect()
}

/// Asks the runner of projection `name` to apply parked event `id` again;
/// returns whether there was such an event.
pub(crate) async fn request_retry(
    pool: &PgPool,
    statements: &Statements,
    name: &str,
    id: i64,
) -> Result<bool, Failed> {
    let done = sqlx::query(&statements.request_retry)
        .bind(name)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes parked event `id` of projection `name`; returns whether there
/// was such an event.
pub(crate) async fn discard(
    pool: &PgPool,
    statements: &Statements,
    name: &str,
    id: i64,
) -> Result<bool, Failed> {
    let done = sqlx::query(&statements.discard)
        .bind(name)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The parked events of projection `name` whose retry was requested.
pub(crate) async fn retries_requested(
    conn: &mut PgConnection,
    statements: &Statements,
    name: &str,
) -> Result<Vec<ParkedEvent>, Failed> {
    let rows = sqlx::query(&statements.retry_requested)
        .bind(name)
        .fetch_all(conn)
        .await?;
    rows.iter().map(ParkedEvent::decode).collect()
}

/// Removes a dead letter whose event now applied (in the caller's
/// transaction).
pub(crate) async fn unpark(
    conn: &mut PgConnection,
    statements: &Statements,
    id: i64,
) -> Result<(), Failed> {
    sqlx::query(&statements.unpark)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records that a retried dead letter failed again.
pub(crate) async fn retry_failed(
    conn: &mut PgConnection,
    statements: &Statements,
    id: i64,
    error: &str,
    attempts: u32,
) -> Result<(), Failed> {
    sqlx::query(&statements.retry_failed)
        .bind(id)
        .bind(error)
        .bind(i64::from(attempts))
        .execute(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::ProjectionState;

    /// The migration that constrains the state column.
    const STATES: &str = include_str!("../../migrations/0006_projection_api.sql");

    #[test]
    fn the_states_are_the_tables() {
        let check = STATES
            .split_once("CHECK (state IN (")
            .and_then(|(_, rest)| rest.split_once("))"))
            .map(|(list, _)| list)
            .expect("the state constraint");
        let theirs: Vec<&str> = check
            .split(',')
            .map(|s| s.trim().trim_matches('\''))
            .collect();
        let ours: Vec<&str> = ProjectionState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(ours, theirs);
        for state in ProjectionState::ALL {
            assert_eq!(state.as_str().parse(), Ok(state));
        }
        assert!("paused".parse::<ProjectionState>().is_err());
    }
}
