//! Where the store's statements run: on a session of a pool, or, through a
//! pooler in transaction pooling mode (PgBouncer's `pool_mode =
//! transaction`), inside a transaction of their own.
//!
//! Such a pooler lends a server connection to a client for one transaction
//! at a time, so nothing may outlive the transaction: a statement prepared
//! under a name would be missing (or another client's) on the next server
//! connection, and the driver prepares an unnamed statement in one
//! exchange and runs it in the next, which only stay on one server
//! connection inside a transaction. Through a pooler every statement is
//! therefore unnamed and runs between `BEGIN` and `COMMIT`.

use es_core::StoreError;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::error::read_error;

/// A pool and whether it goes through a transaction-pooling pooler.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pool: PgPool,
    pooled: bool,
}

impl Route {
    /// Sessions of `pool` kept for as long as the pool keeps them.
    pub(crate) fn direct(pool: PgPool) -> Self {
        Self {
            pool,
            pooled: false,
        }
    }

    /// Connections through a transaction-pooling pooler.
    pub(crate) fn pooled(pool: PgPool) -> Self {
        Self { pool, pooled: true }
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) fn is_pooled(&self) -> bool {
        self.pooled
    }

    /// A connection to run statements on; through a pooler, in a
    /// transaction that [`Session::finish`] commits.
    pub(crate) async fn session(&self) -> Result<Session, sqlx::Error> {
        Ok(if self.pooled {
            Session::Pooled(self.pool.begin().await?)
        } else {
            Session::Direct(self.pool.acquire().await?)
        })
    }
}

/// A connection of a [`Route`].
#[derive(Debug)]
pub(crate) enum Session {
    Direct(PoolConnection<Postgres>),
    /// Rolled back when dropped unfinished.
    Pooled(Transaction<'static, Postgres>),
}

impl Session {
    pub(crate) fn conn(&mut self) -> &mut PgConnection {
        match self {
            Self::Direct(conn) => conn,
            Self::Pooled(transaction) => transaction,
        }
    }

    /// Whether statements may be prepared once and kept by the connection:
    /// not through a pooler.
    pub(crate) fn persistent(&self) -> bool {
        matches!(self, Self::Direct(_))
    }

    /// Ends the session's work: commits the transaction through a pooler.
    pub(crate) async fn finish(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Direct(_) => Ok(()),
            Self::Pooled(transaction) => transaction.commit().await,
        }
    }
}

impl Route {
    /// Runs `work` on a session of this route and finishes the session;
    /// driver errors are reported as errors of `operation`.
    pub(crate) async fn run<T>(
        &self,
        operation: &'static str,
        work: impl AsyncFnOnce(&mut Session) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut session = self.session().await.map_err(|e| read_error(operation, e))?;
        let value = work(&mut session).await?;
        session
            .finish()
            .await
            .map_err(|e| read_error(operation, e))?;
        Ok(value)
    }
}
