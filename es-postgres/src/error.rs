//! Classifying driver errors, by SQLSTATE and error kind, never by message.

use es_core::StoreError;

/// SQLSTATEs the store acts on (PostgreSQL's appendix "Error Codes").
pub(crate) mod sqlstate {
    /// `unique_violation`: two writers raced on the same key.
    pub(crate) const UNIQUE_VIOLATION: &str = "23505";
    /// `serialization_failure`: the transaction was rolled back.
    pub(crate) const SERIALIZATION_FAILURE: &str = "40001";
    /// `deadlock_detected`: the transaction was rolled back.
    pub(crate) const DEADLOCK_DETECTED: &str = "40P01";
    /// `query_canceled`: `statement_timeout` or a cancel request.
    pub(crate) const QUERY_CANCELED: &str = "57014";
    /// Class 08, connection exceptions.
    pub(crate) const CONNECTION_EXCEPTION_CLASS: &str = "08";
    /// `admin_shutdown`, `crash_shutdown`, `cannot_connect_now`, ...: the
    /// server ended the session.
    pub(crate) const OPERATOR_INTERVENTION_SESSION: &str = "57P";
}

use sqlstate::{
    CONNECTION_EXCEPTION_CLASS, DEADLOCK_DETECTED, OPERATOR_INTERVENTION_SESSION, QUERY_CANCELED,
    SERIALIZATION_FAILURE, UNIQUE_VIOLATION,
};

/// How a failed statement should be handled.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A race that left nothing written: run the statement again.
    Retry,
    /// The connection broke: the statement may or may not have run. An
    /// append runs again looking its ids up, which finds it if it landed.
    Reconnect(StoreError),
    /// Give up with this error.
    Fail(StoreError),
}

/// Classifies a driver error of `operation`.
pub(crate) fn classify(operation: &'static str, error: sqlx::Error) -> Failure {
    let code = error
        .as_database_error()
        .and_then(sqlx::error::DatabaseError::code)
        .map(std::borrow::Cow::into_owned);
    match code.as_deref() {
        // Two appends raced on the same event id, or a serialization failure
        // or deadlock rolled the statement back: nothing was written, and a
        // second run sees the winner's rows.
        Some(UNIQUE_VIOLATION | SERIALIZATION_FAILURE | DEADLOCK_DETECTED) => Failure::Retry,
        Some(QUERY_CANCELED) => Failure::Fail(StoreError::Timeout { operation }),
        // The server ended the session (a restart, an administrator) or the
        // connection broke.
        Some(c)
            if c.starts_with(CONNECTION_EXCEPTION_CLASS)
                || c.starts_with(OPERATOR_INTERVENTION_SESSION) =>
        {
            Failure::Reconnect(StoreError::backend(operation, error))
        }
        _ if matches!(error, sqlx::Error::Io(_)) => {
            Failure::Reconnect(StoreError::backend(operation, error))
        }
        _ => Failure::Fail(match error {
            sqlx::Error::PoolTimedOut => StoreError::Timeout { operation },
            sqlx::Error::PoolClosed => StoreError::Closed,
            other => StoreError::backend(operation, other),
        }),
    }
}

/// Converts a driver error of a read into a store error.
pub(crate) fn read_error(operation: &'static str, error: sqlx::Error) -> StoreError {
    match classify(operation, error) {
        Failure::Fail(e) | Failure::Reconnect(e) => e,
        Failure::Retry => StoreError::backend(
            operation,
            "the read was rolled back by a concurrency conflict",
        ),
    }
}
