//! What the runtime reports to the monitoring an application already has:
//! `tracing` spans on each operation and `metrics` through the facade (no
//! exporter is chosen here: install one, such as
//! `metrics-exporter-prometheus`, and the numbers flow).
//!
//! Span fields follow OpenTelemetry's semantic conventions where one exists
//! (`db.system.name`, `db.operation.name`); the rest are under `es.`. Metric
//! names and units:
//!
//! | metric | kind | labels | unit |
//! |---|---|---|---|
//! | [`EVENTS_APPENDED`] | counter | | events written (not replays) |
//! | [`APPENDS`] | counter | `outcome` | appends |
//! | [`APPEND_DURATION`] | histogram | `outcome` | seconds |
//! | [`COMMANDS`] | counter | `aggregate`, `outcome` | commands |
//! | [`COMMAND_CONFLICTS_RETRIED`] | counter | `aggregate` | decisions made again |
//! | [`COMMAND_DURATION`] | histogram | `aggregate`, `outcome` | seconds |
//! | [`LOAD_DURATION`] | histogram | `aggregate` | seconds |
//! | [`PROJECTION_EVENTS`] | counter | `projection` | events handed to the projection |
//! | [`PROJECTION_BATCH_DURATION`] | histogram | `projection` | seconds |
//! | [`PROJECTION_LAG`] | gauge | `projection` | events of its types after its checkpoint |
//! | [`FEED_HELD_BACK`] | gauge | | committed events behind the feed's horizon |
//!
//! An append's `outcome` is one of [`AppendOutcome`]'s names; a command's
//! one of [`CommandOutcomeKind`]'s. A projection's label is the key of its
//! version's run: its name for version 1, `name@vN` after it, so the two
//! versions of a rebuild are told apart. Stores record appends (the PostgreSQL
//! store does); the [`Repository`](crate::Repository) records commands and
//! loads.

use std::time::Duration;

use crate::error::StoreError;
use crate::repository::{CommandError, CommandOutcome};
use crate::store::AppendResult;

/// Counter: events written by appends (idempotent replays write none).
pub const EVENTS_APPENDED: &str = "es_events_appended_total";
/// Counter: appends, by `outcome`.
pub const APPENDS: &str = "es_appends_total";
/// Histogram: the time an append took, in seconds, by `outcome`.
pub const APPEND_DURATION: &str = "es_append_duration_seconds";
/// Counter: commands executed by a repository, by `aggregate` (its
/// category) and `outcome`.
pub const COMMANDS: &str = "es_commands_total";
/// Counter: decisions made again because another writer changed the
/// stream first (each is one append that found a newer version).
pub const COMMAND_CONFLICTS_RETRIED: &str = "es_command_conflicts_retried_total";
/// Histogram: the time a command took, in seconds, retries included, by
/// `aggregate` and `outcome`.
pub const COMMAND_DURATION: &str = "es_command_duration_seconds";
/// Histogram: the time loading an aggregate took, in seconds, by
/// `aggregate`.
pub const LOAD_DURATION: &str = "es_load_duration_seconds";

/// Counter: events in the batches a projection runner applied, by
/// `projection` (parked events included).
pub const PROJECTION_EVENTS: &str = "es_projection_events_total";
/// Histogram: the time a projection batch took, in seconds (its
/// handlers and its checkpoint's commit), by `projection`.
pub const PROJECTION_BATCH_DURATION: &str = "es_projection_batch_duration_seconds";
/// Gauge: events of a projection's types after its checkpoint, by
/// `projection`; 0 once its runner has caught up, measured at most every
/// [`GAUGE_INTERVAL`] while it catches up.
pub const PROJECTION_LAG: &str = "es_projection_lag_events";
/// Gauge: committed events that the feed holds back behind a transaction
/// still running, measured by projection runners that read an empty page,
/// at most every [`GAUGE_INTERVAL`].
pub const FEED_HELD_BACK: &str = "es_feed_held_back_events";
/// How often the gauges that need a count are measured at most.
pub const GAUGE_INTERVAL: Duration = Duration::from_secs(5);

/// How an append ended, as spans and metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AppendOutcome {
    /// The events were written.
    Written,
    /// The events were stored before: the original result was returned.
    IdempotentReplay,
    /// The expected version did not hold; nothing was written.
    WrongExpectedVersion,
    /// Some of the event ids were stored with other content.
    IdempotencyConflict,
    /// Any other error (bad input, a limit, the backend).
    Error,
}

impl AppendOutcome {
    /// The outcome of an append that returned `result`.
    #[must_use]
    pub fn of(result: &Result<AppendResult, StoreError>) -> Self {
        match result {
            Ok(result) if result.idempotent_replay => Self::IdempotentReplay,
            Ok(_) => Self::Written,
            Err(error) => Self::of_error(error),
        }
    }

    /// The outcome of an append that failed with `error`.
    #[must_use]
    pub fn of_error(error: &StoreError) -> Self {
        match error {
            StoreError::WrongExpectedVersion { .. } => Self::WrongExpectedVersion,
            StoreError::IdempotencyConflict { .. } => Self::IdempotencyConflict,
            _ => Self::Error,
        }
    }

    /// The name that spans and metrics use.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Written => "written",
            Self::IdempotentReplay => "idempotent_replay",
            Self::WrongExpectedVersion => "wrong_expected_version",
            Self::IdempotencyConflict => "idempotency_conflict",
            Self::Error => "error",
        }
    }
}

/// Records an append that wrote `events` events (when written) and took
/// `elapsed`, on its `span` (`es.outcome`, `es.stream_version`) and in the
/// metrics.
pub fn record_append(
    span: &tracing::Span,
    result: &Result<AppendResult, StoreError>,
    events: usize,
    elapsed: Duration,
) {
    if let Ok(result) = result {
        span.record("es.stream_version", result.stream_version);
    }
    record_append_outcome(span, AppendOutcome::of(result), events, elapsed);
}

/// Records an append across streams
/// ([`EventStore::append_many`](crate::EventStore::append_many)) as one
/// append of `events` events: written, replayed or refused as a whole.
pub fn record_append_many(
    span: &tracing::Span,
    result: &Result<Vec<AppendResult>, StoreError>,
    events: usize,
    elapsed: Duration,
) {
    let outcome = match result {
        Ok(results) if results.iter().any(|r| r.idempotent_replay) => {
            AppendOutcome::IdempotentReplay
        }
        Ok(_) => AppendOutcome::Written,
        Err(error) => AppendOutcome::of_error(error),
    };
    record_append_outcome(span, outcome, events, elapsed);
}

fn record_append_outcome(
    span: &tracing::Span,
    outcome: AppendOutcome,
    events: usize,
    elapsed: Duration,
) {
    span.record("es.outcome", outcome.as_str());
    if outcome == AppendOutcome::Written {
        metrics::counter!(EVENTS_APPENDED).increment(events as u64);
    }
    metrics::counter!(APPENDS, "outcome" => outcome.as_str()).increment(1);
    metrics::histogram!(APPEND_DURATION, "outcome" => outcome.as_str()).record(elapsed);
}

/// How a command ended, as spans and metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CommandOutcomeKind {
    /// Its events were appended (or it decided none).
    Applied,
    /// It was sent again; its first outcome was returned.
    AlreadyApplied,
    /// The aggregate refused it.
    Rejected,
    /// Other writers kept changing the stream.
    Conflict,
    /// Encoding, reading or appending failed.
    Error,
}

impl CommandOutcomeKind {
    /// The outcome of a command that returned `result`.
    #[must_use]
    pub fn of<E>(result: &Result<CommandOutcome, CommandError<E>>) -> Self {
        match result {
            Ok(outcome) if outcome.already_applied => Self::AlreadyApplied,
            Ok(_) => Self::Applied,
            Err(CommandError::Rejected(_)) => Self::Rejected,
            Err(CommandError::Conflict { .. }) => Self::Conflict,
            Err(_) => Self::Error,
        }
    }

    /// The name that spans and metrics use.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::AlreadyApplied => "already_applied",
            Self::Rejected => "rejected",
            Self::Conflict => "conflict",
            Self::Error => "error",
        }
    }
}

/// The last segment of a type's path: `Pay` for `orders::domain::Pay`.
pub(crate) fn short_type_name<T: ?Sized>() -> &'static str {
    let name = std::any::type_name::<T>();
    let path = name.split('<').next().unwrap_or(name);
    path.rsplit("::").next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_are_short() {
        assert_eq!(short_type_name::<AppendOutcome>(), "AppendOutcome");
        assert_eq!(short_type_name::<Vec<u8>>(), "Vec");
        assert_eq!(short_type_name::<u8>(), "u8");
    }
}
