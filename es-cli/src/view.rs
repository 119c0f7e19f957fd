//! What the store answers, in the shapes that `--json` prints and the
//! console renders.

use chrono::{DateTime, SecondsFormat, Utc};
use es_core::RecordedEvent;
use es_postgres::{
    CategorySummary, FeedLag, LeaseHolder, ParkedEvent, PgEventStore, ProjectionStatus,
    StoreSummary, StreamSummary,
};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::error::CliError;

/// A time as RFC 3339 with milliseconds, in UTC.
#[must_use]
pub fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One event.
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    /// Its position in the feed, `commit/sequence`.
    pub position: String,
    /// Its stream.
    pub stream_id: String,
    /// Its version in the stream.
    pub version: u64,
    /// Its id.
    pub event_id: Uuid,
    /// Its stored type name.
    pub event_type: String,
    /// The schema version of its payload.
    pub schema_version: u32,
    /// When it was recorded.
    pub recorded_at: String,
    /// Its metadata.
    pub metadata: Value,
    /// Its payload.
    pub data: Value,
}

impl From<&RecordedEvent> for EventView {
    fn from(event: &RecordedEvent) -> Self {
        Self {
            position: event.position.to_string(),
            stream_id: event.stream_id.to_string(),
            version: event.version,
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            recorded_at: time(event.recorded_at),
            metadata: serde_json::to_value(&event.metadata).unwrap_or(Value::Null),
            data: event.data.clone(),
        }
    }
}

impl EventView {
    /// The payload as indented JSON.
    #[must_use]
    pub fn pretty_data(&self) -> String {
        serde_json::to_string_pretty(&self.data).unwrap_or_default()
    }

    /// The metadata as indented JSON.
    #[must_use]
    pub fn pretty_metadata(&self) -> String {
        serde_json::to_string_pretty(&self.metadata).unwrap_or_default()
    }

    /// Whether the event has any metadata.
    #[must_use]
    pub fn has_metadata(&self) -> bool {
        self.metadata.as_object().is_some_and(|m| !m.is_empty())
    }

    /// The metadata's correlation id, if any.
    #[must_use]
    pub fn correlation_id(&self) -> Option<&str> {
        self.metadata.get("correlation_id").and_then(Value::as_str)
    }

    /// The metadata's causation id, if any.
    #[must_use]
    pub fn causation_id(&self) -> Option<&str> {
        self.metadata.get("causation_id").and_then(Value::as_str)
    }
}

/// One stream.
#[derive(Debug, Clone, Serialize)]
pub struct StreamView {
    /// Its id.
    pub stream_id: String,
    /// Its category.
    pub category: String,
    /// Its version.
    pub version: u64,
    /// When its first event was recorded.
    pub created_at: String,
    /// When its newest event was recorded.
    pub updated_at: String,
}

impl From<&StreamSummary> for StreamView {
    fn from(stream: &StreamSummary) -> Self {
        Self {
            stream_id: stream.stream_id.to_string(),
            category: stream.stream_id.category().to_owned(),
            version: stream.version,
            created_at: time(stream.created_at),
            updated_at: time(stream.updated_at),
        }
    }
}

/// The session holding a projection's lease.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseView {
    /// Its server process id.
    pub pid: i32,
    /// The program that connected, if it said.
    pub application_name: Option<String>,
    /// Where it connected from.
    pub client_addr: Option<String>,
    /// When it connected.
    pub connected_at: Option<String>,
}

impl From<&LeaseHolder> for LeaseView {
    fn from(holder: &LeaseHolder) -> Self {
        Self {
            pid: holder.pid,
            application_name: holder.application_name.clone(),
            client_addr: holder.client_addr.clone(),
            connected_at: holder.connected_at.map(time),
        }
    }
}

impl LeaseView {
    /// One short line: `pid 123 (orders, 10.0.0.5)`.
    #[must_use]
    pub fn describe(&self) -> String {
        let details: Vec<&str> = [
            self.application_name.as_deref(),
            self.client_addr.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect();
        if details.is_empty() {
            format!("pid {}", self.pid)
        } else {
            format!("pid {} ({})", self.pid, details.join(", "))
        }
    }
}

/// One projection.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectionView {
    /// Its name.
    pub name: String,
    /// `running`, `stopped` or `failed`.
    pub state: String,
    /// The position of the last event it applied.
    pub position: String,
    /// Events of its types after its position.
    pub lag: u64,
    /// Events applied since it was created or rebuilt.
    pub events_applied: u64,
    /// Events it set aside.
    pub parked: u64,
    /// The session holding its lease; `None` when no runner does.
    pub lease_holder: Option<LeaseView>,
    /// The last handler error.
    pub last_error: Option<String>,
    /// Whether a rebuild was asked for and has not started yet.
    pub rebuild_requested: bool,
    /// The event types it reads (empty: all).
    pub event_types: Vec<String>,
    /// When its checkpoint or state last changed.
    pub updated_at: String,
}

impl From<&ProjectionStatus> for ProjectionView {
    fn from(status: &ProjectionStatus) -> Self {
        Self {
            name: status.name.clone(),
            state: status.state.to_string(),
            position: status.position.to_string(),
            lag: status.lag,
            events_applied: status.events_applied,
            parked: status.parked,
            lease_holder: status.lease_holder.as_ref().map(LeaseView::from),
            last_error: status.last_error.clone(),
            rebuild_requested: status.rebuild_requested,
            event_types: status.event_types.clone(),
            updated_at: time(status.updated_at),
        }
    }
}

impl ProjectionView {
    /// The lease holder in a few words, or `-`.
    #[must_use]
    pub fn lease(&self) -> String {
        self.lease_holder
            .as_ref()
            .map_or_else(|| "-".to_owned(), LeaseView::describe)
    }
}

/// One parked event.
#[derive(Debug, Clone, Serialize)]
pub struct ParkedView {
    /// Its id in the dead-letter table (for retry and discard).
    pub id: i64,
    /// The event's id.
    pub event_id: Uuid,
    /// Its stream.
    pub stream_id: String,
    /// Its version.
    pub version: u64,
    /// Its position.
    pub position: String,
    /// Its type.
    pub event_type: String,
    /// The handler's error.
    pub error: String,
    /// How many times it was tried.
    pub attempts: u64,
    /// When it was parked.
    pub parked_at: String,
    /// Whether a retry was asked for.
    pub retry_requested: bool,
    /// Whether the event could not be read (its stored text is kept).
    pub unreadable: bool,
}

impl From<&ParkedEvent> for ParkedView {
    fn from(parked: &ParkedEvent) -> Self {
        Self {
            id: parked.id,
            event_id: parked.event_id,
            stream_id: parked.stream_id.clone(),
            version: parked.version,
            position: parked.position.to_string(),
            event_type: parked.event_type.clone(),
            error: parked.error.clone(),
            attempts: parked.attempts,
            parked_at: time(parked.parked_at),
            retry_requested: parked.retry_requested,
            unreadable: parked.raw.is_some(),
        }
    }
}

/// The transaction that holds the feed back.
#[derive(Debug, Clone, Serialize)]
pub struct HolderView {
    /// Its session's server process id.
    pub pid: i32,
    /// How long it has been open, in seconds.
    pub age_seconds: f64,
    /// Its session's state.
    pub state: Option<String>,
    /// Its database.
    pub database: Option<String>,
}

/// Events held back by open transactions.
#[derive(Debug, Clone, Serialize)]
pub struct HeldBackView {
    /// Committed events the feed does not return yet.
    pub events: u64,
    /// The oldest running transaction.
    pub oldest_transaction: Option<HolderView>,
}

impl From<&FeedLag> for HeldBackView {
    fn from(lag: &FeedLag) -> Self {
        Self {
            events: lag.held_back,
            oldest_transaction: lag.oldest.as_ref().map(|oldest| HolderView {
                pid: oldest.pid,
                age_seconds: oldest.age.as_secs_f64(),
                state: oldest.state.clone(),
                database: oldest.database.clone(),
            }),
        }
    }
}

impl HeldBackView {
    /// Who holds the feed back, in a few words, or `-`.
    #[must_use]
    pub fn holder(&self) -> String {
        self.oldest_transaction.as_ref().map_or_else(
            || "-".to_owned(),
            |t| {
                format!(
                    "pid {} ({}, open {:.0}s)",
                    t.pid,
                    t.state.as_deref().unwrap_or("state hidden"),
                    t.age_seconds
                )
            },
        )
    }
}

/// A category and its number of streams.
#[derive(Debug, Clone, Serialize)]
pub struct CategoryView {
    /// The category.
    pub name: String,
    /// Its streams.
    pub streams: u64,
}

impl From<&CategorySummary> for CategoryView {
    fn from(category: &CategorySummary) -> Self {
        Self {
            name: category.name.clone(),
            streams: category.streams,
        }
    }
}

/// `es status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    /// The schema.
    pub schema: String,
    /// Events stored.
    pub events: u64,
    /// Streams.
    pub streams: u64,
    /// Categories with their streams.
    pub categories: Vec<CategoryView>,
    /// The feed's head, `commit/sequence`.
    pub head: Option<String>,
    /// Events held back by open transactions.
    pub held_back: HeldBackView,
    /// The projections.
    pub projections: Vec<ProjectionView>,
}

impl StatusView {
    /// Reads everything `es status` shows.
    ///
    /// # Errors
    ///
    /// When the store cannot be read.
    pub async fn read(store: &PgEventStore) -> Result<Self, CliError> {
        let summary: StoreSummary = store
            .summary()
            .await
            .map_err(|e| CliError::store("reading the store's counts", e))?;
        let lag = store
            .feed_lag()
            .await
            .map_err(|e| CliError::store("reading the feed's lag", e))?;
        Ok(Self {
            schema: store.options().schema().to_owned(),
            events: summary.events,
            streams: summary.streams,
            categories: summary.categories.iter().map(CategoryView::from).collect(),
            head: summary.head.map(|p| p.to_string()),
            held_back: HeldBackView::from(&lag),
            projections: projections(store).await?,
        })
    }
}

/// Every projection the store knows.
///
/// # Errors
///
/// When the store cannot be read.
pub async fn projections(store: &PgEventStore) -> Result<Vec<ProjectionView>, CliError> {
    let statuses = store
        .projection_statuses()
        .await
        .map_err(|e| CliError::store("reading the projections", e))?;
    Ok(statuses.iter().map(ProjectionView::from).collect())
}

/// Projection `name`, or [`CliError::NotFound`].
///
/// # Errors
///
/// When the store cannot be read or knows no such projection.
pub async fn projection(store: &PgEventStore, name: &str) -> Result<ProjectionView, CliError> {
    crate::query::name("projection name", name)?;
    match store
        .projection_status(name)
        .await
        .map_err(|e| CliError::store(format!("reading projection {name}"), e))?
    {
        Some(status) => Ok(ProjectionView::from(&status)),
        None => Err(unknown_projection(name)),
    }
}

/// The error for a projection the store does not know.
#[must_use]
pub fn unknown_projection(name: &str) -> CliError {
    CliError::NotFound(format!(
        "unknown projection {name:?}: no runner of it has started in this schema (see `es projections`)"
    ))
}
