//! What the store knows of its projections, read and acted on without the
//! projections at hand: status, rebuild requests, parked events.

use chrono::{DateTime, Utc};
use es_core::{Position, StoreError};

use crate::PgEventStore;
use crate::data::projections::{self, LeaseHolder, ParkedEvent, ProjectionState, StatusRow};

/// Observable state of one projection (see
/// [`PgEventStore::projection_statuses`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ProjectionStatus {
    /// The projection's name.
    pub name: String,
    /// Position of the last applied event.
    pub position: Position,
    /// The event types it reads, as its runner last recorded them (empty:
    /// every event).
    pub event_types: Vec<String>,
    /// Events of its types after its position: how far it lags behind the
    /// head of the feed.
    pub lag: u64,
    /// Its state, as last recorded.
    pub state: ProjectionState,
    /// Whether a runner holds its lease right now.
    pub active: bool,
    /// The session of the runner that holds its lease, if one does.
    pub lease_holder: Option<LeaseHolder>,
    /// The last handler error, if any.
    pub last_error: Option<String>,
    /// Events applied since it was created or last rebuilt.
    pub events_applied: u64,
    /// Events set aside in the dead-letter table.
    pub parked: u64,
    /// Whether a rebuild was asked for and not yet started.
    pub rebuild_requested: bool,
    /// When its checkpoint or state last changed.
    pub updated_at: DateTime<Utc>,
}

/// The functions below name a projection by its name, which addresses the
/// version served, or by `name@vN`, which addresses version `N` (see
/// [`projection_key`](super::projection_key)).
impl PgEventStore {
    /// The status of every projection the store knows (each runner records
    /// its projection when it starts), by name.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the status cannot be read,
    /// [`StoreError::CorruptRecord`] when a stored value is impossible.
    pub async fn projection_statuses(&self) -> Result<Vec<ProjectionStatus>, StoreError> {
        let rows = projections::status_rows(self.pool(), self.projection_statements(), None)
            .await
            .map_err(|e| e.into_store_error("projection status"))?;
        let mut statuses = Vec::with_capacity(rows.len());
        for row in rows {
            statuses.push(self.complete_status(row).await?);
        }
        Ok(statuses)
    }

    /// The status of projection `name`; `None` when no runner of it has
    /// started yet.
    ///
    /// # Errors
    ///
    /// As [`projection_statuses`](Self::projection_statuses).
    pub async fn projection_status(
        &self,
        name: &str,
    ) -> Result<Option<ProjectionStatus>, StoreError> {
        let key = self.resolve_projection(name, "projection status").await?;
        let rows =
            projections::status_rows(self.pool(), self.projection_statements(), Some(&[&key]))
                .await
                .map_err(|e| e.into_store_error("projection status"))?;
        match rows.into_iter().next() {
            Some(row) => Ok(Some(self.complete_status(row).await?)),
            None => Ok(None),
        }
    }

    /// Asks the runner holding projection `name`'s lease (in any process)
    /// to rebuild it: reset its read model, move its checkpoint to the
    /// start, clear its dead letters and replay the feed. A runner started
    /// later picks the request up as well.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the request cannot be recorded.
    pub async fn request_rebuild(&self, name: &str) -> Result<(), StoreError> {
        let key = self.resolve_projection(name, "request rebuild").await?;
        projections::request_rebuild(self.pool(), self.projection_statements(), &key)
            .await
            .map_err(|e| e.into_store_error("request rebuild"))?;
        self.wake();
        Ok(())
    }

    /// The events projection `name` set aside, in feed order.
    ///
    /// # Errors
    ///
    /// As [`projection_statuses`](Self::projection_statuses).
    pub async fn parked_events(&self, name: &str) -> Result<Vec<ParkedEvent>, StoreError> {
        let key = self.resolve_projection(name, "list parked events").await?;
        projections::parked(self.pool(), self.projection_statements(), &key)
            .await
            .map_err(|e| e.into_store_error("list parked events"))
    }

    /// Asks projection `name`'s runner to apply parked event `id` again
    /// (once it has caught up with the feed): if the handler now succeeds,
    /// the event leaves the dead-letter table; if not, it stays with its new
    /// error. Returns whether there was such a parked event.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the request cannot be recorded.
    pub async fn retry_parked(&self, name: &str, id: i64) -> Result<bool, StoreError> {
        let key = self
            .resolve_projection(name, "retry a parked event")
            .await?;
        let found = projections::request_retry(self.pool(), self.projection_statements(), &key, id)
            .await
            .map_err(|e| e.into_store_error("retry a parked event"))?;
        self.wake();
        Ok(found)
    }

    /// Deletes parked event `id` of projection `name` for good: the
    /// projection will never apply it. Returns whether there was such a
    /// parked event.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when it cannot be deleted.
    pub async fn discard_parked(&self, name: &str, id: i64) -> Result<bool, StoreError> {
        let key = self
            .resolve_projection(name, "discard a parked event")
            .await?;
        projections::discard(self.pool(), self.projection_statements(), &key, id)
            .await
            .map_err(|e| e.into_store_error("discard a parked event"))
    }

    fn projection_statements(&self) -> &projections::Statements {
        &self.statements().projections
    }

    /// A row's status, with its lag and whether its lease is held.
    async fn complete_status(&self, row: StatusRow) -> Result<ProjectionStatus, StoreError> {
        let statements = self.projection_statements();
        let failed = |e: projections::Failed| e.into_store_error("projection status");
        let lag = projections::lag(
            self.pool(),
            statements,
            &row.name,
            row.position,
            &row.event_types,
        )
        .await
        .map_err(failed)?;
        let lease_holder = projections::lease_holder(self.pool(), statements, &row.name)
            .await
            .map_err(failed)?;
        Ok(ProjectionStatus {
            name: row.name,
            position: row.position,
            event_types: row.event_types,
            lag,
            state: row.state,
            active: lease_holder.is_some(),
            lease_holder,
            last_error: row.last_error,
            events_applied: row.events_applied,
            parked: row.parked,
            rebuild_requested: row.rebuild_requested,
            updated_at: row.updated_at,
        })
    }
}
