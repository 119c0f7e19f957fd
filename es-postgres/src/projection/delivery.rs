//! How a runner hands events to a projection: in the checkpoint's
//! transaction ([`ExactlyOnce`]) or to another sink ([`AtLeastOnce`]).

use es_core::{BoxError, Dispatch, RecordedEvent, Reset};
use sqlx::PgConnection;

/// Applies events exactly once: the handler writes its PostgreSQL read model
/// in the transaction that stores the checkpoint.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExactlyOnce;

/// Applies events at least once: the handler writes to another sink and
/// deduplicates by event id.
#[derive(Debug, Clone, Copy, Default)]
pub struct AtLeastOnce;

/// How a runner hands events to a projection. Implemented by
/// [`ExactlyOnce`] and [`AtLeastOnce`].
pub trait Delivery<P>: Send + Sync + 'static {
    /// Applies `event` while `tx` (the checkpoint's transaction) is open.
    fn apply(
        projection: &P,
        event: &RecordedEvent,
        tx: &mut PgConnection,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// Clears the projection's read model, in `tx`.
    fn reset(
        projection: &P,
        tx: &mut PgConnection,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// Makes this version the one served, in `tx` ([`Reset::switch`]).
    fn switch(
        projection: &P,
        previous: Option<u32>,
        tx: &mut PgConnection,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// Drops the data of an older version, in `tx` ([`Reset::retire`]).
    fn retire(
        projection: &P,
        version: u32,
        tx: &mut PgConnection,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
}

impl<P> Delivery<P> for ExactlyOnce
where
    P: Dispatch<PgConnection> + Reset<PgConnection>,
{
    async fn apply(
        projection: &P,
        event: &RecordedEvent,
        tx: &mut PgConnection,
    ) -> Result<(), BoxError> {
        projection.dispatch(event, tx).await
    }

    async fn reset(projection: &P, tx: &mut PgConnection) -> Result<(), BoxError> {
        projection.reset(tx).await
    }

    async fn switch(
        projection: &P,
        previous: Option<u32>,
        tx: &mut PgConnection,
    ) -> Result<(), BoxError> {
        projection.switch(previous, tx).await
    }

    async fn retire(projection: &P, version: u32, tx: &mut PgConnection) -> Result<(), BoxError> {
        projection.retire(version, tx).await
    }
}

impl<P> Delivery<P> for AtLeastOnce
where
    P: Dispatch<()> + Reset<()>,
{
    async fn apply(
        projection: &P,
        event: &RecordedEvent,
        _: &mut PgConnection,
    ) -> Result<(), BoxError> {
        projection.dispatch(event, &mut ()).await
    }

    async fn reset(projection: &P, _: &mut PgConnection) -> Result<(), BoxError> {
        projection.reset(&mut ()).await
    }

    async fn switch(
        projection: &P,
        previous: Option<u32>,
        _: &mut PgConnection,
    ) -> Result<(), BoxError> {
        projection.switch(previous, &mut ()).await
    }

    async fn retire(projection: &P, version: u32, _: &mut PgConnection) -> Result<(), BoxError> {
        projection.retire(version, &mut ()).await
    }
}
