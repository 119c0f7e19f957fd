//! The run loop: stand by for the lease, catch up from the checkpoint,
//! follow the feed live, rebuild on request.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use es_core::observe;
use es_core::{EventStore as _, FeedFilter, FeedPage, Position, Projection};
use sqlx::{Connection as _, PgConnection};

use super::delivery::{AtLeastOnce, Delivery, ExactlyOnce};
use super::read_ahead::ReadAhead;
use super::signal::Signal;
use super::versions::{Role, Turns};
use super::{ProjectionError, RunnerOptions, Stop, lease, projection_key};
use crate::PgEventStore;
use crate::data::projections::{self, ProjectionState};

/// Runs one projection: lease, catch-up, live, error policy, rebuilds.
///
/// `D` is [`ExactlyOnce`] ([`new`](Self::new): a PostgreSQL read model,
/// written in the transaction that stores the checkpoint) or
/// [`AtLeastOnce`] ([`at_least_once`](Self::at_least_once): another sink,
/// which deduplicates by event id). [`spawn`](Self::spawn) runs it in a
/// task and returns a [`ProjectionHandle`](super::ProjectionHandle);
/// [`run`](Self::run) runs it in the caller's task until a shutdown future
/// completes.
pub struct ProjectionRunner<P, D = ExactlyOnce> {
    pub(super) store: PgEventStore,
    pub(super) projection: Arc<P>,
    pub(super) options: RunnerOptions,
    /// The key of this version's checkpoint, lease and dead letters
    /// ([`projection_key`]).
    pub(super) key: String,
    delivery: PhantomData<fn() -> D>,
}

impl<P, D> std::fmt::Debug for ProjectionRunner<P, D>
where
    P: Projection,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionRunner")
            .field("projection", &P::NAME)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<P> ProjectionRunner<P, ExactlyOnce>
where
    P: Projection,
    ExactlyOnce: Delivery<P>,
{
    /// A runner of `projection`, a PostgreSQL read model: its handlers get
    /// the transaction that also moves its checkpoint, so each event's
    /// effect is committed exactly once.
    #[must_use]
    pub fn new(store: PgEventStore, projection: P, options: RunnerOptions) -> Self {
        Self::with_delivery(store, projection, options)
    }
}

impl<P> ProjectionRunner<P, AtLeastOnce>
where
    P: Projection,
    AtLeastOnce: Delivery<P>,
{
    /// A runner of `projection`, which writes to a sink outside PostgreSQL
    /// (its context is `()`): a crash between its effect and the
    /// checkpoint's commit delivers an event again, so it deduplicates by
    /// event id.
    #[must_use]
    pub fn at_least_once(store: PgEventStore, projection: P, options: RunnerOptions) -> Self {
        Self::with_delivery(store, projection, options)
    }
}

/// Where a leased runner stands in the feed.
struct Cursor {
    /// Read after this position next.
    position: Position,
    /// The checkpoint as stored, and when it was.
    saved: (Position, Instant),
    /// While catching up, the task reading the next pages.
    ahead: Option<ReadAhead>,
    /// When the lag gauge was last measured.
    lag_measured: Option<Instant>,
    /// When the held-back gauge was last measured.
    held_back_measured: Option<Instant>,
    /// Where this version stands among the projection's versions.
    versions: Turns,
}

/// Whether a gauge last measured at `measured` is due, and if so, marks it
/// measured now.
fn gauge_due(measured: &mut Option<Instant>) -> bool {
    let due = measured.is_none_or(|at| at.elapsed() >= observe::GAUGE_INTERVAL);
    if due {
        *measured = Some(Instant::now());
    }
    due
}

impl Cursor {
    fn at(position: Position, versions: Turns) -> Self {
        Self {
            position,
            saved: (position, Instant::now()),
            ahead: None,
            lag_measured: None,
            held_back_measured: None,
            versions,
        }
    }
}

impl<P, D> ProjectionRunner<P, D>
where
    P: Projection,
    D: Delivery<P>,
{
    /// How often, at most, the stored checkpoint moves over events that
    /// none of the projection's types are among.
    const PASSED_OVER_SAVE_INTERVAL: Duration = Duration::from_secs(1);

    fn with_delivery(store: PgEventStore, projection: P, options: RunnerOptions) -> Self {
        Self {
            store,
            projection: Arc::new(projection),
            options,
            key: projection_key::<P>(),
            delivery: PhantomData,
        }
    }

    /// The projection.
    #[must_use]
    pub fn projection(&self) -> &P {
        &self.projection
    }

    /// Runs until `shutdown` completes: stands by until it holds the
    /// projection's lease, catches up from the checkpoint, then applies new
    /// events as they commit. A lost database connection drops the lease;
    /// the runner then stands by again and resumes from the checkpoint.
    ///
    /// Returns `Ok(())` after a graceful shutdown (the batch in progress is
    /// committed or rolled back as a whole).
    ///
    /// # Errors
    ///
    /// [`ProjectionError::Stopped`] when an event keeps failing under
    /// [`OnFailure::Stop`](super::OnFailure::Stop);
    /// [`ProjectionError::Reset`] when a requested rebuild's reset hook
    /// fails; [`ProjectionError::Store`] when the feed cannot be read for a
    /// reason retrying cannot fix.
    pub async fn run<F>(&self, shutdown: F) -> Result<(), ProjectionError>
    where
        F: Future<Output = ()> + Send,
    {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut signal = Signal::new(shutdown.as_mut());
        let mut backoff = Duration::from_millis(50);
        loop {
            let interval = self.options.standby_interval;
            let Some(mut conn) =
                lease::acquire(&self.store, &self.key, interval, &mut signal).await
            else {
                return Ok(());
            };
            let stop = match self.run_leased(&mut conn, &mut signal).await {
                Ok(never) => match never {},
                Err(stop) => stop,
            };
            match stop {
                Stop::ShutDown => {
                    let _ = self
                        .set_state(&mut conn, ProjectionState::Stopped, None)
                        .await;
                    lease::release(&self.store, &self.key, conn).await;
                    return Ok(());
                }
                Stop::Fatal(error) => {
                    lease::release(&self.store, &self.key, conn).await;
                    return Err(error);
                }
                Stop::Retired { serving } => {
                    tracing::info!(
                        projection = P::NAME,
                        version = P::VERSION,
                        serving,
                        "a newer version serves; this one ends"
                    );
                    lease::release(&self.store, &self.key, conn).await;
                    return Ok(());
                }
                Stop::Store(source) => {
                    lease::release(&self.store, &self.key, conn).await;
                    return Err(ProjectionError::Store {
                        projection: P::NAME.to_owned(),
                        source,
                    });
                }
                Stop::Db(error) => {
                    tracing::warn!(projection = P::NAME, %error, "projection lost its database connection; standing by");
                    drop(conn);
                    if !signal.sleep(backoff).await {
                        return Ok(());
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// The loop of a runner that holds the lease on `conn`: each turn reads
    /// a page and applies it, or finds nothing and waits; a requested
    /// rebuild starts it over from the beginning. Ends only by [`Stop`].
    async fn run_leased(
        &self,
        conn: &mut PgConnection,
        signal: &mut Signal<'_>,
    ) -> Result<std::convert::Infallible, Stop> {
        let role = self.role(conn).await?;
        if let Role::Retired { serving } = role {
            return Err(Stop::Retired { serving });
        }
        let statements = &self.store.statements().projections;
        let start = projections::start(conn, statements, &self.key, P::EVENT_TYPES).await?;
        let mut cursor = Cursor::at(start.position, Turns::new(role));
        if start.rebuild_requested {
            cursor = Cursor::at(self.rebuild(conn).await?, cursor.versions);
        }
        let filter = P::filter();
        let mut waker = self.store.waker();
        loop {
            if signal.fired() {
                return Err(Stop::ShutDown);
            }
            let (page, from_ahead) = self
                .next_page(conn, &mut cursor, &filter, &mut waker, signal)
                .await?;
            let rebuild = if page.events.is_empty() {
                self.idle(conn, &mut cursor, &page, from_ahead, &mut waker, signal)
                    .await?
            } else {
                if !from_ahead && page.more {
                    cursor.ahead = Some(ReadAhead::start(
                        self.store.clone(),
                        filter.clone(),
                        page.next,
                        self.options.batch_size,
                    ));
                }
                let (applied, rebuild) = self.apply_batch(conn, &page.events, signal).await?;
                self.still_current(conn, &mut cursor.versions).await?;
                cursor.saved = (applied, Instant::now());
                cursor.position = applied.max(page.next);
                if gauge_due(&mut cursor.lag_measured) {
                    self.measure_lag(cursor.position).await;
                }
                rebuild
            };
            if rebuild {
                cursor = Cursor::at(self.rebuild(conn).await?, cursor.versions);
            }
        }
    }

    /// The next page, from the read-ahead task while catching up or read
    /// here, and whether it came from the task. Transient read failures are
    /// retried; an event that cannot be read is handled by the error policy
    /// ([`unreadable`](Self::unreadable)) and stepped over.
    async fn next_page(
        &self,
        conn: &mut PgConnection,
        cursor: &mut Cursor,
        filter: &FeedFilter,
        waker: &mut impl es_core::backend::FeedWaker,
        signal: &mut Signal<'_>,
    ) -> Result<(FeedPage, bool), Stop> {
        loop {
            let from_ahead = cursor.ahead.is_some();
            let read = if let Some(reader) = &mut cursor.ahead {
                let page = tokio::select! {
                    () = signal.wait() => return Err(Stop::ShutDown),
                    page = reader.pages.recv() => page,
                };
                let Some(page) = page else {
                    // The reader stopped after catching up: read here.
                    cursor.ahead = None;
                    continue;
                };
                page
            } else {
                waker.arm();
                self.store
                    .read_feed(cursor.position, filter, self.options.batch_size)
                    .await
            };
            match read {
                Ok(page) => return Ok((page, from_ahead)),
                Err(error) if error.is_transient() => {
                    cursor.ahead = None;
                    tracing::warn!(projection = P::NAME, %error, "reading the feed failed; retrying");
                    if !signal.sleep(Duration::from_millis(200)).await {
                        return Err(Stop::ShutDown);
                    }
                }
                Err(error) => {
                    cursor.ahead = None;
                    let at = self.unreadable(conn, error).await?;
                    cursor.position = at;
                    cursor.saved = (at, Instant::now());
                }
            }
        }
    }

    /// A page without events for the projection: move over what it
    /// examined, and once caught up wait for new events, carry out the
    /// retries of parked events asked for, and look for a rebuild request.
    /// Returns whether a rebuild was requested.
    async fn idle(
        &self,
        conn: &mut PgConnection,
        cursor: &mut Cursor,
        page: &FeedPage,
        from_ahead: bool,
        waker: &mut impl es_core::backend::FeedWaker,
        signal: &mut Signal<'_>,
    ) -> Result<bool, Stop> {
        cursor.position = cursor.position.max(page.next);
        if self.save_passed_over(conn, cursor).await? {
            return Ok(true);
        }
        // An empty page: the feed may be held back (then `more` is set).
        if gauge_due(&mut cursor.held_back_measured)
            && let Ok(lag) = self.store.feed_lag().await
        {
            #[allow(clippy::cast_precision_loss)] // a gauge
            metrics::gauge!(observe::FEED_HELD_BACK).set(lag.held_back as f64);
        }
        if page.more {
            return Ok(false);
        }
        metrics::gauge!(observe::PROJECTION_LAG, "projection" => self.key.clone()).set(0.0);
        // Caught up: a new version takes over here, a replaced one ends.
        self.versions_turn(conn, &mut cursor.versions).await?;
        // A page read ahead was read before the waker was armed: read
        // again rather than wait for a wake-up it may have missed.
        if !from_ahead {
            let retry = cursor.versions.retry_in();
            tokio::select! {
                () = signal.wait() => return Err(Stop::ShutDown),
                () = waker.wait() => {}
                () = tokio::time::sleep(retry.unwrap_or_default()), if retry.is_some() => {}
            }
        }
        self.retry_parked(conn, signal).await?;
        let statements = &self.store.statements().projections;
        Ok(projections::rebuild_requested(conn, statements, &self.key).await?)
    }

    /// Sets the lag gauge: the events of the projection's types after
    /// `position` (a count, so only every [`observe::GAUGE_INTERVAL`]).
    async fn measure_lag(&self, position: Position) {
        let statements = &self.store.statements().projections;
        let types: Vec<String> = P::EVENT_TYPES.iter().map(|t| (*t).to_owned()).collect();
        if let Ok(lag) =
            projections::lag(self.store.pool(), statements, &self.key, position, &types).await
        {
            #[allow(clippy::cast_precision_loss)] // a gauge
            metrics::gauge!(observe::PROJECTION_LAG, "projection" => self.key.clone())
                .set(lag as f64);
        } else {
            tracing::debug!(projection = P::NAME, "measuring the lag failed");
        }
    }

    /// Stores the cursor's position as the checkpoint when the runner has
    /// passed over events since the stored one and stored none for a
    /// while: a restart then does not examine again the events that a
    /// projection of rare types skipped. Returns whether a rebuild was
    /// requested.
    async fn save_passed_over(
        &self,
        conn: &mut PgConnection,
        cursor: &mut Cursor,
    ) -> Result<bool, Stop> {
        let (saved, when) = cursor.saved;
        if cursor.position <= saved || when.elapsed() < Self::PASSED_OVER_SAVE_INTERVAL {
            return Ok(false);
        }
        let rebuild = self.checkpoint(conn, cursor.position, 0).await?;
        cursor.saved = (cursor.position, Instant::now());
        Ok(rebuild)
    }

    /// Moves the checkpoint in the caller's transaction; returns whether a
    /// rebuild was requested meanwhile.
    pub(super) async fn checkpoint(
        &self,
        tx: &mut PgConnection,
        position: Position,
        applied: usize,
    ) -> Result<bool, Stop> {
        let statements = &self.store.statements().projections;
        Ok(projections::checkpoint(tx, statements, &self.key, position, applied).await?)
    }

    /// Resets the read model and the checkpoint in one transaction.
    async fn rebuild(&self, conn: &mut PgConnection) -> Result<Position, Stop> {
        tracing::info!(projection = P::NAME, "rebuilding");
        let mut tx = conn.begin().await?;
        if let Err(error) = D::reset(&self.projection, &mut tx).await {
            tx.rollback().await?;
            return Err(Stop::Fatal(ProjectionError::Reset {
                projection: P::NAME.to_owned(),
                error: error.to_string(),
            }));
        }
        projections::reset(&mut tx, &self.store.statements().projections, &self.key).await?;
        tx.commit().await?;
        Ok(Position::START)
    }

    /// Records the projection's state, and its last error if given.
    pub(super) async fn set_state(
        &self,
        conn: &mut PgConnection,
        state: ProjectionState,
        error: Option<&str>,
    ) -> Result<(), Stop> {
        let statements = &self.store.statements().projections;
        Ok(projections::set_state(conn, statements, &self.key, state, error).await?)
    }
}
