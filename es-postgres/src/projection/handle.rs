//! A runner in a task of its own, and the handle that owns its lifecycle.

use es_core::{Projection, StoreError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::delivery::Delivery;
use super::versions::address;
use super::{ProjectionError, ProjectionRunner, ProjectionStatus};
use crate::PgEventStore;
use crate::data::projections::ParkedEvent;

impl<P, D> ProjectionRunner<P, D>
where
    P: Projection,
    D: Delivery<P>,
{
    /// Runs the projection in a task of its own (on the current Tokio
    /// runtime) and returns its handle. [`ProjectionHandle::stop`] stops it
    /// and waits; dropping the handle asks it to stop without waiting.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime.
    #[must_use = "dropping the handle detaches the runner; stop it with `stop`"]
    pub fn spawn(self) -> ProjectionHandle<P> {
        let (stop, stopped) = oneshot::channel::<()>();
        let store = self.store.clone();
        let task = tokio::spawn(async move {
            self.run(async {
                // Resolves on `stop`, and when the handle is dropped.
                let _ = stopped.await;
            })
            .await
        });
        ProjectionHandle {
            store,
            stop,
            task,
            projection: std::marker::PhantomData,
        }
    }
}

/// A running projection (from [`ProjectionRunner::spawn`]): stop it, ask
/// for its status, rebuild it, deal with its parked events.
///
/// ```no_run
/// # async fn demo<P: es_core::Projection>(handle: es_postgres::ProjectionHandle<P>) -> Result<(), Box<dyn std::error::Error>> {
/// let status = handle.status().await?;
/// println!("{} is {} events behind", status.name, status.lag);
/// handle.rebuild().await?;
/// handle.stop().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ProjectionHandle<P> {
    store: PgEventStore,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ProjectionError>>,
    projection: std::marker::PhantomData<fn() -> P>,
}

impl<P: Projection> ProjectionHandle<P> {
    /// Stops the runner after the batch in progress (committed or rolled
    /// back as a whole), gives its lease up and waits until it has.
    ///
    /// # Errors
    ///
    /// The [`ProjectionError`] that stopped the runner by itself before,
    /// if one did; [`ProjectionError::Panicked`] if its task panicked.
    pub async fn stop(self) -> Result<(), ProjectionError> {
        let _ = self.stop.send(());
        Self::join(self.task).await
    }

    /// Waits until the runner stops by itself (at an event it cannot apply
    /// under the stop policy, or a failed reset), without asking it to.
    ///
    /// # Errors
    ///
    /// As [`stop`](Self::stop).
    pub async fn stopped(self) -> Result<(), ProjectionError> {
        let Self { stop, task, .. } = self;
        let result = Self::join(task).await;
        drop(stop);
        result
    }

    /// Whether the runner has stopped (by itself, or after a panic).
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// The projection's status: its position, lag, state, lease and last
    /// error.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when it cannot be read.
    pub async fn status(&self) -> Result<ProjectionStatus, StoreError> {
        self.store
            .projection_status(&address::<P>())
            .await?
            .ok_or_else(|| StoreError::CorruptRecord {
                location: format!("status of projection {}", P::NAME),
                reason: "its row has not been created yet".to_owned(),
            })
    }

    /// Asks the runner to rebuild the projection (see
    /// [`PgEventStore::request_rebuild`]).
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the request cannot be recorded.
    pub async fn rebuild(&self) -> Result<(), StoreError> {
        self.store.request_rebuild(&address::<P>()).await
    }

    /// The events the projection set aside (see
    /// [`PgEventStore::parked_events`]).
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when they cannot be read.
    pub async fn parked(&self) -> Result<Vec<ParkedEvent>, StoreError> {
        self.store.parked_events(&address::<P>()).await
    }

    /// Asks the runner to apply parked event `id` again (see
    /// [`PgEventStore::retry_parked`]).
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the request cannot be recorded.
    pub async fn retry_parked(&self, id: i64) -> Result<bool, StoreError> {
        self.store.retry_parked(&address::<P>(), id).await
    }

    /// Deletes parked event `id` for good (see
    /// [`PgEventStore::discard_parked`]).
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when it cannot be deleted.
    pub async fn discard_parked(&self, id: i64) -> Result<bool, StoreError> {
        self.store.discard_parked(&address::<P>(), id).await
    }

    async fn join(task: JoinHandle<Result<(), ProjectionError>>) -> Result<(), ProjectionError> {
        match task.await {
            Ok(result) => result,
            Err(error) => Err(ProjectionError::Panicked {
                projection: P::NAME.to_owned(),
                error: error.to_string(),
            }),
        }
    }
}
