//! The service around the aggregate: the store and repository
//! ([`Shop`]), and the projection runners ([`Projections`]).

use std::future::Future;
use std::time::{Duration, Instant};

use es_core::{
    Aggregate, CommandContext, CommandError, CommandOutcome, Decide, Dispatch, Projection,
    Repository, RepositoryOptions, Reset, StreamId,
};
use es_postgres::{
    PgEventStore, ProjectionHandle, ProjectionRunner, ProjectionState, ProjectionStatus,
    RunnerOptions,
};
use sqlx::{PgConnection, PgPool};

use crate::Error;
use crate::coupons::{ApplyCoupon, Coupon, CouponError, IssueCoupon};
use crate::domain::{Order, OrderError};
use crate::projections::{CustomerTotals, OrderSummaries, create_read_models};

/// An order id that cannot name a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid order id {0:?}: use 1 to 64 ASCII letters, digits, `-` and `_`")]
pub struct InvalidOrderId(pub String);

/// The stream of order `order_id`: `Order-{order_id}`.
///
/// # Errors
///
/// [`InvalidOrderId`] unless the id is 1 to 64 ASCII letters, digits, `-`
/// and `_` (so that it reads well in a URL and in the stream id).
pub fn order_stream(order_id: &str) -> Result<StreamId, InvalidOrderId> {
    let valid = (1..=64).contains(&order_id.len())
        && order_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(InvalidOrderId(order_id.to_owned()));
    }
    Order::stream_id(order_id).map_err(|_| InvalidOrderId(order_id.to_owned()))
}

/// The order service: the event store, and a repository that runs commands
/// against orders.
#[derive(Debug)]
pub struct Shop {
    store: PgEventStore,
    orders: Repository<Order, PgEventStore>,
    coupons: Repository<Coupon, PgEventStore>,
}

impl Shop {
    /// Prepares `store` (its migrations, then the read models' tables) and
    /// opens the shop on it with a default repository.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] or [`Error::Sql`] when the schema cannot be
    /// created.
    pub async fn open(store: PgEventStore) -> Result<Self, Error> {
        Self::open_with(store, RepositoryOptions::default()).await
    }

    /// As [`open`](Self::open), with repository options.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub async fn open_with(store: PgEventStore, options: RepositoryOptions) -> Result<Self, Error> {
        store.migrate().await?;
        create_read_models(store.pool()).await?;
        Ok(Self {
            orders: Repository::with_options(store.clone(), options),
            coupons: Repository::with_options(store.clone(), options),
            store,
        })
    }

    /// The event store.
    #[must_use]
    pub fn store(&self) -> &PgEventStore {
        &self.store
    }

    /// The database pool, for the read models.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        self.store.pool()
    }

    /// The repository of orders.
    #[must_use]
    pub fn orders(&self) -> &Repository<Order, PgEventStore> {
        &self.orders
    }

    /// Runs `command` against the order `stream` (see [`order_stream`]).
    ///
    /// # Errors
    ///
    /// As [`Repository::execute`]: [`CommandError::Rejected`] with the
    /// order's [`OrderError`], [`CommandError::Conflict`] when other writers
    /// kept changing the order, or a store failure.
    pub async fn execute<C>(
        &self,
        stream: &StreamId,
        command: &C,
        context: &CommandContext,
    ) -> Result<CommandOutcome, CommandError<OrderError>>
    where
        Order: Decide<C, Error = OrderError>,
        C: Sync,
    {
        self.orders.execute(stream, command, context).await
    }

    /// Issues coupon `code` with a discount.
    ///
    /// # Errors
    ///
    /// [`CommandError::Rejected`] with [`CouponError`] when the coupon
    /// exists or the discount is not acceptable; a store failure.
    pub async fn issue_coupon(
        &self,
        code: &StreamId,
        command: &IssueCoupon,
        context: &CommandContext,
    ) -> Result<CommandOutcome, CommandError<CouponError>> {
        self.coupons.execute(code, command, context).await
    }

    /// Applies coupon `code` to order `order`, which redeems it: the
    /// order's `CouponApplied` and the coupon's `CouponRedeemed` are
    /// written in one atomic append, so of several orders racing for one
    /// coupon exactly one gets it. Returns the outcome on the order, then
    /// on the coupon.
    ///
    /// # Errors
    ///
    /// [`CommandError::Rejected`] with [`OrderError::CouponRedeemed`] (or
    /// another refusal of the order), [`CommandError::Conflict`] when other
    /// writers kept changing either stream, or a store failure.
    pub async fn apply_coupon(
        &self,
        order: &StreamId,
        code: &StreamId,
        context: &CommandContext,
    ) -> Result<(CommandOutcome, CommandOutcome), CommandError<OrderError>> {
        let command = ApplyCoupon {
            order_id: order.id().to_owned(),
            code: code.id().to_owned(),
        };
        (self.orders)
            .execute_with(&self.coupons, order, code, &command, context)
            .await
    }
}

/// The runners of the shop's two projections.
#[derive(Debug)]
pub struct Projections {
    /// `order_summaries`.
    pub summaries: ProjectionHandle<OrderSummaries>,
    /// `customer_totals`.
    pub customers: ProjectionHandle<CustomerTotals>,
}

impl Projections {
    /// Starts both runners.
    #[must_use]
    pub fn start(store: &PgEventStore) -> Self {
        Self {
            summaries: runner(store, OrderSummaries).spawn(),
            customers: runner(store, CustomerTotals).spawn(),
        }
    }

    /// Stops both runners.
    ///
    /// # Errors
    ///
    /// [`Error::Projection`] when a runner had stopped on an error.
    pub async fn stop(self) -> Result<(), Error> {
        let summaries = self.summaries.stop().await;
        let customers = self.customers.stop().await;
        summaries.and(customers)?;
        Ok(())
    }
}

/// An exactly-once runner of `projection`, which a standby replaces
/// quickly.
pub fn runner<P>(store: &PgEventStore, projection: P) -> ProjectionRunner<P>
where
    P: Projection + Dispatch<PgConnection> + Reset<PgConnection>,
{
    let options = RunnerOptions::default().standby_interval(Duration::from_millis(100));
    ProjectionRunner::new(store.clone(), projection, options)
}

/// The status of the store's projections.
///
/// # Errors
///
/// [`Error::Store`] when the status cannot be read.
pub async fn status(store: &PgEventStore) -> Result<Vec<ProjectionStatus>, Error> {
    Ok(store.projection_statuses().await?)
}

/// Polls the status of the projections named in `names` (the versions
/// served) until each has applied every event of its types (lag 0) and
/// `also` holds, for at most `within`; returns the last status of every
/// projection.
///
/// # Errors
///
/// [`Error::Timeout`] when they do not catch up in time, [`Error::Store`]
/// when the status cannot be read, or `also`'s error.
pub async fn wait_for_projections<F, Fut>(
    store: &PgEventStore,
    names: &[&str],
    within: Duration,
    mut also: F,
) -> Result<Vec<ProjectionStatus>, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, Error>>,
{
    let deadline = Instant::now() + within;
    loop {
        let statuses = status(store).await?;
        let mut caught_up = true;
        for name in names {
            // The status of the version served.
            let served = store.projection_status(name).await?;
            caught_up &= served.is_some_and(|s| s.lag == 0 && s.state == ProjectionState::Running);
        }
        if caught_up && also().await? {
            return Ok(statuses);
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: "the projections to catch up",
                within,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
