//! `projection_versions`: which version of each projection readers are
//! served (`migrations/0009_projection_versions.sql`), and the records of
//! each version's run in the projection tables.

use sqlx::{PgConnection, Row as _};

use super::projections::Failed;
use es_core::StoreError;

/// The statements of the versions table, with the schema filled in.
#[derive(Debug)]
pub(crate) struct Statements {
    read: String,
    lock: String,
    claim: String,
    switch: String,
    keys: String,
    has_checkpoint: String,
    has_dead_letters: String,
}

impl Statements {
    pub(crate) fn new(schema: &str) -> Self {
        let table = format!("\"{schema}\".projection_versions");
        Self {
            read: format!("SELECT serving FROM {table} WHERE name = $1"),
            lock: format!("SELECT serving FROM {table} WHERE name = $1 FOR UPDATE"),
            claim: format!(
                "INSERT INTO {table} (name, serving) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING"
            ),
            switch: format!("UPDATE {table} SET serving = $2, switched_at = now() WHERE name = $1"),
            keys: format!(
                "SELECT name FROM \"{schema}\".projections \
                 WHERE name = $1 OR starts_with(name, $1 || '@v')"
            ),
            has_checkpoint: format!(
                "SELECT EXISTS (SELECT FROM \"{schema}\".projections WHERE name = $1)"
            ),
            has_dead_letters: format!(
                "SELECT EXISTS (SELECT FROM \"{schema}\".projection_dead_letters \
                 WHERE projection = $1)"
            ),
        }
    }
}

/// A projection's row: the version served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Versions {
    pub(crate) serving: u32,
}

/// A stored version that cannot be read back.
fn corrupt(name: &str, reason: impl std::fmt::Display) -> Failed {
    Failed::Corrupt(StoreError::CorruptRecord {
        location: format!("the versions of projection {name}"),
        reason: reason.to_string(),
    })
}

/// The projection's row; `None` when no version has served yet.
pub(crate) async fn read(
    conn: &mut PgConnection,
    statements: &Statements,
    name: &str,
) -> Result<Option<Versions>, Failed> {
    fetch(conn, &statements.read, name).await
}

/// The projection's row, locked until the caller's transaction ends; `None`
/// when no version has served yet.
pub(crate) async fn lock(
    tx: &mut PgConnection,
    statements: &Statements,
    name: &str,
) -> Result<Option<Versions>, Failed> {
    fetch(tx, &statements.lock, name).await
}

async fn fetch(
    conn: &mut PgConnection,
    statement: &str,
    name: &str,
) -> Result<Option<Versions>, Failed> {
    let Some(row) = sqlx::query(statement)
        .bind(name)
        .fetch_optional(conn)
        .await?
    else {
        return Ok(None);
    };
    let serving: i64 = row.try_get("serving")?;
    let serving =
        u32::try_from(serving).map_err(|_| corrupt(name, format!("version {serving}")))?;
    Ok(Some(Versions { serving }))
}

/// Records `version` as served, unless a row exists; returns whether it
/// did.
pub(crate) async fn claim(
    tx: &mut PgConnection,
    statements: &Statements,
    name: &str,
    version: u32,
) -> Result<bool, Failed> {
    let done = sqlx::query(&statements.claim)
        .bind(name)
        .bind(i64::from(version))
        .execute(tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Serves `version` from now on.
pub(crate) async fn switch(
    tx: &mut PgConnection,
    statements: &Statements,
    name: &str,
    version: u32,
) -> Result<(), Failed> {
    sqlx::query(&statements.switch)
        .bind(name)
        .bind(i64::from(version))
        .execute(tx)
        .await?;
    Ok(())
}

/// The keys of projection `name`'s runs that have records: `name` and
/// `name@v...`.
pub(crate) async fn keys(
    conn: &mut PgConnection,
    statements: &Statements,
    name: &str,
) -> Result<Vec<String>, Failed> {
    Ok(sqlx::query_scalar(&statements.keys)
        .bind(name)
        .fetch_all(conn)
        .await?)
}

/// Whether the run `key` has parked events.
pub(crate) async fn has_dead_letters(
    conn: &mut PgConnection,
    statements: &Statements,
    key: &str,
) -> Result<bool, Failed> {
    Ok(sqlx::query_scalar(&statements.has_dead_letters)
        .bind(key)
        .fetch_one(conn)
        .await?)
}

/// Whether a checkpoint row with `key` exists.
pub(crate) async fn has_checkpoint(
    tx: &mut PgConnection,
    statements: &Statements,
    key: &str,
) -> Result<bool, Failed> {
    Ok(sqlx::query_scalar(&statements.has_checkpoint)
        .bind(key)
        .fetch_one(tx)
        .await?)
}
