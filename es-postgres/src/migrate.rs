//! Embedded, versioned schema migrations.

use sqlx::PgPool;
use sqlx::migrate::Migrator;

use crate::PgStoreOptions;

/// The store's migrations, embedded at compile time from
/// `es-postgres/migrations`.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// A migration failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The server refused a statement (creating the schema, setting the path).
    #[error("preparing schema {schema:?} for migrations failed")]
    Prepare {
        /// The store's schema.
        schema: String,
        /// The server's error.
        #[source]
        source: sqlx::Error,
    },
    /// A migration failed or the applied ones differ from the embedded ones.
    #[error("migrating schema {schema:?} failed")]
    Migrate {
        /// The store's schema.
        schema: String,
        /// The migrator's error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
}

impl From<MigrateError> for es_core::StoreError {
    /// A failed migration as the store error a service already handles.
    fn from(error: MigrateError) -> Self {
        Self::backend("migrate", error)
    }
}

/// Creates the schema if needed and applies every pending migration to it.
/// Safe to call from several processes at once: sqlx takes an advisory lock.
pub(crate) async fn run(pool: &PgPool, options: &PgStoreOptions) -> Result<(), MigrateError> {
    let schema = options.schema();
    let prepare = |source| MigrateError::Prepare {
        schema: schema.to_owned(),
        source,
    };
    let mut conn = pool.acquire().await.map_err(prepare)?;
    // The schema name is a validated plain identifier (see PgStoreOptions::new).
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .execute(&mut *conn)
        .await
        .or_else(|e| {
            // Two processes creating the schema at once: one gets a unique
            // violation on the catalog, and the schema exists all the same.
            let code = e
                .as_database_error()
                .and_then(sqlx::error::DatabaseError::code);
            if code.as_deref() == Some(crate::error::sqlstate::UNIQUE_VIOLATION) {
                Ok(sqlx::postgres::PgQueryResult::default())
            } else {
                Err(e)
            }
        })
        .map_err(prepare)?;
    sqlx::query(&format!("SET search_path TO \"{schema}\""))
        .execute(&mut *conn)
        .await
        .map_err(prepare)?;
    let result = MIGRATOR
        .run(&mut *conn)
        .await
        .map_err(|source| MigrateError::Migrate {
            schema: schema.to_owned(),
            source,
        });
    // Do not hand a connection with a changed search_path back to the pool.
    if sqlx::query("RESET search_path")
        .execute(&mut *conn)
        .await
        .is_err()
    {
        drop(conn.detach());
    }
    result
}

/// The embedded migrations not yet applied to the store's schema, as
/// `version description`, oldest first: all of them when the schema holds
/// no store.
pub(crate) async fn pending(
    pool: &PgPool,
    options: &PgStoreOptions,
) -> Result<Vec<String>, sqlx::Error> {
    let schema = options.schema();
    let table = format!("\"{schema}\"._sqlx_migrations");
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(&table)
        .fetch_one(pool)
        .await?;
    let applied: Vec<i64> = if exists {
        sqlx::query_scalar(&format!("SELECT version FROM {table} WHERE success"))
            .fetch_all(pool)
            .await?
    } else {
        Vec::new()
    };
    Ok(MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version))
        .map(|m| format!("{} {}", m.version, m.description))
        .collect())
}
