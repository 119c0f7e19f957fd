//! Classifying driver errors, by SQLSTATE and error kind, never by message.

use es_core::StoreError;

/// SQLSTATE of a unique violation.
pub(crate) const UNIQUE_VIOLATION: &str = "23505";

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
        Some(UNIQUE_VIOLATION | "40001" | "40P01") => Failure::Retry,
        // query_canceled: statement_timeout or a cancel request.
        Some("57014") => Failure::Fail(StoreError::Timeout { operation }),
        // The server ended the session (a restart, an administrator) or the
        // connection broke.
        Some(c) if c.starts_with("08") || c.starts_with("57P") => {
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
