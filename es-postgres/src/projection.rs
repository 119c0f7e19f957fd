//! Running projections against the PostgreSQL store: checkpoints, a lease
//! per projection, the error policy, rebuilds and status.
//!
//! A [`ProjectionRunner`] reads the global feed from the projection's
//! checkpoint in batches (only the projection's event types: the filter is
//! part of the SQL), then follows it live. Each batch is applied in one
//! transaction that also stores the new checkpoint:
//!
//! - [`ExactlyOnce`]: the handler gets that transaction (`&mut PgConnection`)
//!   and writes its read model in it, so each event's effect is committed
//!   exactly once with the checkpoint;
//! - [`AtLeastOnce`]: the handler writes elsewhere (`&mut ()`); a crash
//!   between its effect and the checkpoint's commit delivers the event again,
//!   so the handler deduplicates by event id.
//!
//! Only one runner per projection name processes at any moment: it holds a
//! session advisory lock on a dedicated connection, and applies its batches
//! *on that connection*, so a runner that lost its lease cannot commit. The
//! others stand by and take over when the holder's connection closes.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use es_core::subscription::FeedWaker;
use es_core::{
    BoxError, Dispatch, EventStore, FeedFilter, FeedPage, Position, RecordedEvent, Reset,
    StoreError,
};
use sqlx::{Connection, PgConnection, Row};

use crate::PgEventStore;
use crate::convert;

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
#[async_trait::async_trait]
pub trait Delivery<P>: Send + Sync + 'static {
    /// Applies `event` while `tx` (the checkpoint's transaction) is open.
    async fn apply(
        projection: &P,
        event: &RecordedEvent,
        tx: &mut PgConnection,
    ) -> Result<(), BoxError>;

    /// Clears the projection's read model, in `tx`.
    async fn reset(projection: &P, tx: &mut PgConnection) -> Result<(), BoxError>;
}

#[async_trait::async_trait]
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
}

#[async_trait::async_trait]
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
}

/// What to do with an event whose handler keeps failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Stop the runner at the event and report it; nothing after it is
    /// applied until the cause is fixed.
    Stop,
    /// Set the event aside in the dead-letter table with its error, and go on.
    Park,
}

/// Retries, backoff and what follows them.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ErrorPolicy {
    /// Attempts after the first failure (default 3).
    pub retries: u32,
    /// Delay before the first retry, doubled for each next one (default
    /// 100 ms, at most 5 s).
    pub backoff: Duration,
    /// What happens when the retries are used up (default [`OnFailure::Stop`]).
    pub on_failure: OnFailure,
}

impl ErrorPolicy {
    /// Retry `retries` times, then stop.
    #[must_use]
    pub fn stop_after(retries: u32) -> Self {
        Self {
            retries,
            ..Self::default()
        }
    }

    /// Retry `retries` times, then park the event.
    #[must_use]
    pub fn park_after(retries: u32) -> Self {
        Self {
            retries,
            on_failure: OnFailure::Park,
            ..Self::default()
        }
    }

    /// Sets the first retry delay.
    #[must_use]
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }
}

impl Default for ErrorPolicy {
    fn default() -> Self {
        Self {
            retries: 3,
            backoff: Duration::from_millis(100),
            on_failure: OnFailure::Stop,
        }
    }
}

/// Settings of a [`ProjectionRunner`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct RunnerConfig {
    /// Events per batch, and per transaction (default 500). While catching
    /// up, the runner reads 8 batches per query, and holds up to 16
    /// batches in memory.
    pub batch_size: usize,
    /// What to do when a handler fails.
    pub error_policy: ErrorPolicy,
    /// How often a standby runner tries to take the lease (default 500 ms).
    pub standby_interval: Duration,
}

impl RunnerConfig {
    /// Sets the batch size.
    #[must_use]
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Sets the error policy.
    #[must_use]
    pub fn error_policy(mut self, policy: ErrorPolicy) -> Self {
        self.error_policy = policy;
        self
    }

    /// Sets the standby interval.
    #[must_use]
    pub fn standby_interval(mut self, interval: Duration) -> Self {
        self.standby_interval = interval;
        self
    }
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            error_policy: ErrorPolicy::default(),
            standby_interval: Duration::from_millis(500),
        }
    }
}

/// Why a runner stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// An event kept failing and the policy is [`OnFailure::Stop`]. The
    /// checkpoint stays before it.
    #[error(
        "projection {projection} stopped at event {event_id} ({event_type}, stream {stream_id} version {version}, position {position}) after {attempts} attempts: {error}"
    )]
    Stopped {
        /// The projection.
        projection: String,
        /// The failing event.
        event_id: uuid::Uuid,
        /// Its type.
        event_type: String,
        /// Its stream.
        stream_id: String,
        /// Its version in the stream.
        version: u64,
        /// Its position in the feed.
        position: Position,
        /// How many times it was tried.
        attempts: u32,
        /// The handler's last error.
        error: String,
    },
    /// The reset hook of a rebuild failed; nothing was changed.
    #[error("resetting projection {projection} for a rebuild failed: {error}")]
    Reset {
        /// The projection.
        projection: String,
        /// The hook's error.
        error: String,
    },
    /// Reading the feed failed with an error that retrying cannot fix.
    #[error("projection {projection} could not read the feed")]
    Store {
        /// The projection.
        projection: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
}

/// Observable state of one projection (see [`projection_status`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ProjectionStatus {
    /// The projection's name.
    pub name: String,
    /// Position of the last applied event.
    pub position: Position,
    /// Events of the projection's types after its position: how far it lags
    /// behind the head of the feed.
    pub lag: u64,
    /// `running`, `stopped` or `failed`, as last recorded.
    pub state: String,
    /// Whether a runner holds the projection's lease right now.
    pub active: bool,
    /// The last handler error, if any.
    pub last_error: Option<String>,
    /// Events applied since the projection was created or last rebuilt.
    pub events_applied: u64,
    /// Events set aside in the dead-letter table.
    pub parked: u64,
    /// When the checkpoint last moved.
    pub updated_at: DateTime<Utc>,
}

/// Runs one projection: lease, catch-up, live, error policy, rebuilds.
///
/// `D` is [`ExactlyOnce`] (the default; a PostgreSQL read model) or
/// [`AtLeastOnce`] (another sink).
///
/// A PostgreSQL read model handles its events in the transaction that also
/// moves its checkpoint, and truncates its table for a rebuild:
///
/// ```no_run
/// use es_core::{BoxError, Event, Handle, Projection, RecordedEvent, Reset};
/// use es_postgres::{PgEventStore, PgStoreConfig, ProjectionRunner, RunnerConfig};
/// use serde::{Deserialize, Serialize};
/// use sqlx::PgConnection;
///
/// #[derive(Debug, Serialize, Deserialize)]
/// struct Deposited { cents: i64 }
///
/// #[derive(Debug, Event)]
/// enum AccountEvent { Deposited(Deposited) }
///
/// /// `CREATE TABLE balances (account text PRIMARY KEY, cents bigint NOT NULL)`
/// #[derive(Projection)]
/// #[es(name = "balances", handles(AccountEvent::Deposited))]
/// struct Balances;
///
/// #[async_trait::async_trait]
/// impl Handle<AccountEvent, PgConnection> for Balances {
///     async fn handle(
///         &self,
///         event: AccountEvent,
///         envelope: &RecordedEvent,
///         tx: &mut PgConnection,
///     ) -> Result<(), BoxError> {
///         let AccountEvent::Deposited(deposit) = event;
///         sqlx::query(
///             "INSERT INTO balances (account, cents) VALUES ($1, $2) \
///              ON CONFLICT (account) DO UPDATE SET cents = balances.cents + EXCLUDED.cents",
///         )
///         .bind(envelope.stream_id.as_str())
///         .bind(deposit.cents)
///         .execute(tx)
///         .await?;
///         Ok(())
///     }
/// }
///
/// #[async_trait::async_trait]
/// impl Reset<PgConnection> for Balances {
///     async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
///         sqlx::query("TRUNCATE balances").execute(tx).await?;
///         Ok(())
///     }
/// }
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let store = PgEventStore::connect("postgres://localhost/app", PgStoreConfig::default()).await?;
/// store.migrate().await?;
/// let runner: ProjectionRunner<Balances> =
///     ProjectionRunner::new(store.clone(), Balances, RunnerConfig::default());
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let running = tokio::spawn(async move {
///     runner.run(async { let _ = stopped.await; }).await
/// });
///
/// // Later: how far behind is it?
/// let status = es_postgres::projection_status(&store, &[(Balances::NAME, Balances::EVENT_TYPES)]).await?;
/// println!("{} at {}, {} events behind", status[0].name, status[0].position, status[0].lag);
///
/// // Ask for a rebuild, then shut down after the batch in progress.
/// es_postgres::request_rebuild(&store, Balances::NAME).await?;
/// let _ = stop.send(());
/// running.await??;
/// # Ok(())
/// # }
/// ```
pub struct ProjectionRunner<P, D = ExactlyOnce> {
    store: PgEventStore,
    projection: Arc<P>,
    config: RunnerConfig,
    delivery: PhantomData<fn() -> D>,
}

impl<P, D> std::fmt::Debug for ProjectionRunner<P, D>
where
    P: es_core::Projection,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionRunner")
            .field("projection", &P::NAME)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Pages of the feed read ahead by a task of their own, while the runner
/// applies earlier ones: each read fetches several batches, and at most
/// about two reads' worth of events wait in memory. The task stops after
/// the first page that caught up (or an error), and when dropped.
struct ReadAhead {
    pages: tokio::sync::mpsc::Receiver<Result<FeedPage, StoreError>>,
    task: tokio::task::JoinHandle<()>,
}

impl ReadAhead {
    /// Batches read ahead and not yet applied, at most.
    const DEPTH: usize = 8;
    /// Batches read by one query: fewer, larger reads cost less per event.
    const BATCHES_PER_READ: usize = 8;

    fn start(store: PgEventStore, filter: FeedFilter, after: Position, batch: usize) -> Self {
        let (sender, pages) = tokio::sync::mpsc::channel(Self::DEPTH);
        let task = tokio::spawn(async move {
            let mut after = after;
            loop {
                let read = store
                    .read_feed(after, &filter, batch.saturating_mul(Self::BATCHES_PER_READ))
                    .await;
                let next = match &read {
                    Ok(page) if page.more => Some(page.next),
                    _ => None,
                };
                let batches = match read {
                    Ok(page) => Self::split(page, batch).into_iter().map(Ok).collect(),
                    Err(error) => vec![Err(error)],
                };
                for read in batches {
                    if sender.send(read).await.is_err() {
                        return;
                    }
                }
                match next {
                    Some(position) => after = position,
                    None => return,
                }
            }
        });
        Self { pages, task }
    }

    /// `page` as pages of at most `batch` events; all but the last end at
    /// their last event and have more after them.
    fn split(page: FeedPage, batch: usize) -> Vec<FeedPage> {
        if page.events.len() <= batch {
            return vec![page];
        }
        let (next, more) = (page.next, page.more);
        let mut events = page.events;
        let mut batches = Vec::with_capacity(events.len().div_ceil(batch));
        while events.len() > batch {
            let rest = events.split_off(batch);
            let end = events.last().map_or(next, |e| e.position);
            batches.push(FeedPage::new(events, end, true));
            events = rest;
        }
        batches.push(FeedPage::new(events, next, more));
        batches
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Shutdown<'a> = Pin<&'a mut (dyn Future<Output = ()> + Send)>;

/// A shutdown signal that can be awaited repeatedly.
struct Signal<'a> {
    future: Shutdown<'a>,
    fired: bool,
}

impl Signal<'_> {
    async fn wait(&mut self) {
        if !self.fired {
            self.future.as_mut().await;
            self.fired = true;
        }
    }

    fn fired(&mut self) -> bool {
        if !self.fired {
            let waker = futures::task::noop_waker();
            let mut cx = std::task::Context::from_waker(&waker);
            self.fired = self.future.as_mut().poll(&mut cx).is_ready();
        }
        self.fired
    }

    /// Sleeps for `duration`; false when shut down meanwhile.
    async fn sleep(&mut self, duration: Duration) -> bool {
        tokio::select! {
            () = self.wait() => false,
            () = tokio::time::sleep(duration) => true,
        }
    }
}

/// A batch failed to commit because of the database (not the handler).
struct DbFailure(sqlx::Error);

/// An event to set aside in the dead-letter table.
struct DeadLetter<'a> {
    event_id: uuid::Uuid,
    stream_id: &'a str,
    version: u64,
    position: Position,
    event_type: &'a str,
    error: &'a str,
    attempts: u32,
    /// The stored data and metadata text of an event that cannot be read.
    raw: Option<(String, String)>,
}

impl From<sqlx::Error> for DbFailure {
    fn from(error: sqlx::Error) -> Self {
        Self(error)
    }
}

enum Stop {
    Db(DbFailure),
    Fatal(ProjectionError),
    ShutDown,
}

impl From<DbFailure> for Stop {
    fn from(error: DbFailure) -> Self {
        Self::Db(error)
    }
}

impl From<sqlx::Error> for Stop {
    fn from(error: sqlx::Error) -> Self {
        Self::Db(DbFailure(error))
    }
}

impl<P, D> ProjectionRunner<P, D>
where
    P: es_core::Projection,
    D: Delivery<P>,
{
    /// How often, at most, the stored checkpoint moves over events that
    /// none of the projection's types are among.
    const PASSED_OVER_SAVE_INTERVAL: Duration = Duration::from_secs(1);

    /// A runner of `projection` over `store`'s feed.
    #[must_use]
    pub fn new(store: PgEventStore, projection: P, config: RunnerConfig) -> Self {
        Self {
            store,
            projection: Arc::new(projection),
            config,
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
    /// [`OnFailure::Stop`]; [`ProjectionError::Reset`] when a requested
    /// rebuild's reset hook fails; [`ProjectionError::Store`] when the feed
    /// cannot be read for a reason retrying cannot fix.
    pub async fn run<F>(&self, shutdown: F) -> Result<(), ProjectionError>
    where
        F: Future<Output = ()> + Send,
    {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut signal = Signal {
            future: shutdown.as_mut(),
            fired: false,
        };
        let mut backoff = Duration::from_millis(50);
        loop {
            let Some(mut lease) = self.acquire_lease(&mut signal).await else {
                return Ok(());
            };
            match self.run_leased(&mut lease, &mut signal).await {
                Ok(()) | Err(Stop::ShutDown) => {
                    let _ = self.set_state(&mut lease, "stopped", None).await;
                    self.release(lease).await;
                    return Ok(());
                }
                Err(Stop::Fatal(error)) => {
                    self.release(lease).await;
                    return Err(error);
                }
                Err(Stop::Db(DbFailure(error))) => {
                    tracing::warn!(projection = P::NAME, %error, "projection lost its database connection; standing by");
                    drop(lease);
                    if !signal.sleep(backoff).await {
                        return Ok(());
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Asks the runner holding the lease (in any process) to rebuild the
    /// projection: reset its read model, move the checkpoint to the start,
    /// clear its dead letters and replay the feed. A runner started later
    /// picks the request up as well.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the request cannot be recorded.
    pub async fn request_rebuild(&self) -> Result<(), StoreError> {
        request_rebuild(&self.store, P::NAME).await
    }

    /// Gives the lease up at once (closing the connection would release it
    /// only when the server notices).
    async fn release(&self, mut lease: PgConnection) {
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(lease_key(self.store.config().schema(), P::NAME))
            .execute(&mut lease)
            .await;
        let _ = lease.close().await;
    }

    async fn acquire_lease(&self, signal: &mut Signal<'_>) -> Option<PgConnection> {
        let options = self.store.pool().connect_options();
        loop {
            if signal.fired() {
                return None;
            }
            match PgConnection::connect_with(&options).await {
                Ok(mut conn) => {
                    let taken: Result<bool, sqlx::Error> =
                        sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                            .bind(lease_key(self.store.config().schema(), P::NAME))
                            .fetch_one(&mut conn)
                            .await;
                    match taken {
                        Ok(true) => return Some(conn),
                        Ok(false) => drop(conn.close().await),
                        Err(error) => {
                            tracing::debug!(projection = P::NAME, %error, "taking the lease failed");
                        }
                    }
                }
                Err(error) => {
                    tracing::debug!(projection = P::NAME, %error, "connecting for the lease failed");
                }
            }
            if !signal.sleep(self.config.standby_interval).await {
                return None;
            }
        }
    }

    /// Marks the projection running and returns its checkpoint, after a
    /// rebuild if one was requested.
    async fn start(&self, conn: &mut PgConnection) -> Result<Position, Stop> {
        let table = self.table();
        sqlx::query(&format!(
            "INSERT INTO {table} (name) VALUES ($1) ON CONFLICT (name) DO NOTHING"
        ))
        .bind(P::NAME)
        .execute(&mut *conn)
        .await?;
        let row = sqlx::query(&format!(
            "UPDATE {table} SET state = 'running', updated_at = now() WHERE name = $1 \
             RETURNING tx_id, seq, rebuild_requested"
        ))
        .bind(P::NAME)
        .fetch_one(&mut *conn)
        .await?;
        let position = convert::position(row.try_get("tx_id")?, row.try_get("seq")?)
            .map_err(|reason| Self::fatal_store(Self::corrupt_checkpoint(reason)))?;
        if row.try_get("rebuild_requested")? {
            return self.rebuild(conn).await;
        }
        Ok(position)
    }

    async fn run_leased(
        &self,
        conn: &mut PgConnection,
        signal: &mut Signal<'_>,
    ) -> Result<(), Stop> {
        let mut position = self.start(conn).await?;
        let filter = P::filter();
        let mut waker = self.store.waker();
        // While catching up, a task reads the next pages (on pooled
        // connections) while this one applies and checkpoints on the lease.
        let mut ahead: Option<ReadAhead> = None;
        // The checkpoint as stored, and when it was.
        let mut saved = (position, std::time::Instant::now());
        loop {
            if signal.fired() {
                return Err(Stop::ShutDown);
            }
            let from_ahead = ahead.is_some();
            let read = if let Some(reader) = &mut ahead {
                let page = tokio::select! {
                    () = signal.wait() => return Err(Stop::ShutDown),
                    page = reader.pages.recv() => page,
                };
                if let Some(page) = page {
                    page
                } else {
                    // The reader stopped after catching up: read here again.
                    ahead = None;
                    continue;
                }
            } else {
                waker.arm();
                self.store
                    .read_feed(position, &filter, self.config.batch_size)
                    .await
            };
            let page = match read {
                Ok(page) => page,
                Err(error) if error.is_transient() => {
                    ahead = None;
                    tracing::warn!(projection = P::NAME, %error, "reading the feed failed; retrying");
                    if !signal.sleep(Duration::from_millis(200)).await {
                        return Err(Stop::ShutDown);
                    }
                    continue;
                }
                Err(error) => {
                    ahead = None;
                    let at = self.unreadable(conn, error).await?;
                    position = at;
                    saved = (at, std::time::Instant::now());
                    continue;
                }
            };
            if page.events.is_empty() {
                // Nothing for this projection up to `next`.
                position = position.max(page.next);
                let mut rebuild = self.save_passed_over(conn, position, &mut saved).await?;
                if !rebuild && !page.more {
                    // A page read ahead was read before the waker was armed:
                    // read again rather than wait for a wake-up it may have
                    // missed.
                    if !from_ahead {
                        tokio::select! {
                            () = signal.wait() => return Err(Stop::ShutDown),
                            () = waker.wait() => {}
                        }
                    }
                    rebuild = self.rebuild_requested(conn).await?;
                }
                if rebuild {
                    ahead = None;
                    position = self.rebuild(conn).await?;
                    saved.0 = position;
                }
                continue;
            }
            if !from_ahead && page.more {
                ahead = Some(ReadAhead::start(
                    self.store.clone(),
                    filter.clone(),
                    page.next,
                    self.config.batch_size,
                ));
            }
            let (applied, rebuild) = self.apply_batch(conn, &page.events, signal).await?;
            saved = (applied, std::time::Instant::now());
            position = applied.max(page.next);
            if rebuild {
                ahead = None;
                position = self.rebuild(conn).await?;
                saved.0 = position;
            }
        }
    }

    /// Stores `position` as the checkpoint when the runner has passed over
    /// events since the stored one (`saved`) and stored none for a while:
    /// a restart then does not examine again the events that a projection
    /// of rare types skipped. Returns whether a rebuild was requested.
    async fn save_passed_over(
        &self,
        conn: &mut PgConnection,
        position: Position,
        saved: &mut (Position, std::time::Instant),
    ) -> Result<bool, Stop> {
        if position <= saved.0 || saved.1.elapsed() < Self::PASSED_OVER_SAVE_INTERVAL {
            return Ok(false);
        }
        let rebuild = self.checkpoint(conn, position, 0).await?;
        *saved = (position, std::time::Instant::now());
        Ok(rebuild)
    }

    /// Applies `events` in one transaction with the checkpoint; on a handler
    /// failure, falls back to one transaction per event with the error
    /// policy. Returns the new position and whether a rebuild was requested.
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[RecordedEvent],
        signal: &mut Signal<'_>,
    ) -> Result<(Position, bool), Stop> {
        let mut tx = conn.begin().await?;
        let mut failed = false;
        for event in events {
            if let Err(error) = D::apply(&self.projection, event, &mut tx).await {
                tracing::debug!(projection = P::NAME, %error, event_id = %event.event_id, "handler failed; retrying the batch event by event");
                failed = true;
                break;
            }
        }
        if !failed {
            let last = events.last().map_or(Position::START, |e| e.position);
            let rebuild = self.checkpoint(&mut tx, last, events.len()).await?;
            tx.commit().await?;
            return Ok((last, rebuild));
        }
        tx.rollback().await?;
        let mut rebuild = false;
        for event in events {
            rebuild |= self.apply_one(conn, event, signal).await?;
        }
        let last = events.last().map_or(Position::START, |e| e.position);
        Ok((last, rebuild))
    }

    /// Applies one event in its own transaction, with retries and the
    /// failure policy.
    async fn apply_one(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
        signal: &mut Signal<'_>,
    ) -> Result<bool, Stop> {
        let policy = self.config.error_policy;
        let mut delay = policy.backoff;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut tx = conn.begin().await?;
            match D::apply(&self.projection, event, &mut tx).await {
                Ok(()) => {
                    let rebuild = self.checkpoint(&mut tx, event.position, 1).await?;
                    tx.commit().await?;
                    return Ok(rebuild);
                }
                Err(error) => {
                    tx.rollback().await?;
                    let text = error.to_string();
                    if attempts <= policy.retries {
                        tracing::warn!(projection = P::NAME, event_id = %event.event_id, attempts, error = %text, "handler failed; retrying");
                        if !signal.sleep(delay).await {
                            return Err(Stop::ShutDown);
                        }
                        delay = (delay * 2).min(Duration::from_secs(5));
                        continue;
                    }
                    return match policy.on_failure {
                        OnFailure::Park => {
                            tracing::error!(projection = P::NAME, event_id = %event.event_id, attempts, error = %text, "handler failed; parking the event");
                            self.park(conn, event, &text, attempts).await
                        }
                        OnFailure::Stop => {
                            tracing::error!(projection = P::NAME, event_id = %event.event_id, attempts, error = %text, "handler failed; stopping");
                            let failure =
                                format!("event {} ({}): {text}", event.event_id, event.event_type);
                            self.set_state(conn, "failed", Some(&failure)).await?;
                            Err(Stop::Fatal(ProjectionError::Stopped {
                                projection: P::NAME.to_owned(),
                                event_id: event.event_id,
                                event_type: event.event_type.clone(),
                                stream_id: event.stream_id.to_string(),
                                version: event.version,
                                position: event.position,
                                attempts,
                                error: text,
                            }))
                        }
                    };
                }
            }
        }
    }

    async fn park(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
        error: &str,
        attempts: u32,
    ) -> Result<bool, Stop> {
        let failure = format!(
            "parked event {} ({}): {error}",
            event.event_id, event.event_type
        );
        let letter = DeadLetter {
            event_id: event.event_id,
            stream_id: event.stream_id.as_str(),
            version: event.version,
            position: event.position,
            event_type: &event.event_type,
            error,
            attempts,
            raw: None,
        };
        self.store_dead_letter(conn, &letter, &failure).await
    }

    /// Parks `letter` and moves the checkpoint to it, in one transaction;
    /// returns whether a rebuild was requested.
    async fn store_dead_letter(
        &self,
        conn: &mut PgConnection,
        letter: &DeadLetter<'_>,
        failure: &str,
    ) -> Result<bool, Stop> {
        let corrupt = |reason: String| Self::fatal_store(Self::corrupt_checkpoint(reason));
        let version = i64::try_from(letter.version)
            .map_err(|_| corrupt(format!("version {} of a parked event", letter.version)))?;
        let (tx_id, seq) = convert::checkpoint(letter.position, P::NAME)
            .map_err(|source| Self::fatal_store(source))?;
        let (raw_data, raw_metadata) = letter.raw.as_ref().map(|(d, m)| (d, m)).unzip();
        let mut tx = conn.begin().await?;
        sqlx::query(&format!(
            "INSERT INTO {} (projection, event_id, stream_id, version, tx_id, seq, event_type, error, \
             attempts, raw_data, raw_metadata) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (projection, event_id) DO NOTHING",
            self.dead_letters()
        ))
        .bind(P::NAME)
        .bind(letter.event_id)
        .bind(letter.stream_id)
        .bind(version)
        .bind(tx_id)
        .bind(seq)
        .bind(letter.event_type)
        .bind(letter.error)
        .bind(i64::from(letter.attempts))
        .bind(raw_data)
        .bind(raw_metadata)
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "UPDATE {} SET last_error = $2 WHERE name = $1",
            self.table()
        ))
        .bind(P::NAME)
        .bind(failure)
        .execute(&mut *tx)
        .await?;
        let rebuild = self.checkpoint(&mut tx, letter.position, 0).await?;
        tx.commit().await?;
        Ok(rebuild)
    }

    /// Handles a feed read that failed for good. An event that cannot be
    /// read back is parked with its stored text (under [`OnFailure::Park`];
    /// the runner goes on after it, and this returns its position) or
    /// stops the runner at it (under [`OnFailure::Stop`], recorded in the
    /// projection's status). Retrying cannot make it readable, so neither
    /// waits for the policy's retries.
    async fn unreadable(
        &self,
        conn: &mut PgConnection,
        error: StoreError,
    ) -> Result<Position, Stop> {
        let park = self.config.error_policy.on_failure == OnFailure::Park;
        if let StoreError::CorruptEvent {
            position: Some(at),
            reason,
            ..
        } = &error
        {
            let raw = self
                .store
                .raw_event(*at)
                .await
                .map_err(|source| Self::fatal_store(source))?;
            if let (true, Some(raw)) = (park, raw) {
                tracing::error!(projection = P::NAME, position = %at, %error, "the event cannot be read; parking it");
                let letter = DeadLetter {
                    event_id: raw.event_id,
                    stream_id: &raw.stream_id,
                    version: raw.version,
                    position: *at,
                    event_type: &raw.event_type,
                    error: reason,
                    attempts: 0,
                    raw: Some((raw.data, raw.metadata)),
                };
                let failure = format!("parked the unreadable event at position {at}: {reason}");
                self.store_dead_letter(conn, &letter, &failure).await?;
                return Ok(*at);
            }
        }
        tracing::error!(projection = P::NAME, %error, "the feed cannot be read; stopping");
        self.set_state(conn, "failed", Some(&error.to_string()))
            .await?;
        Err(Self::fatal_store(error))
    }

    fn fatal_store(source: StoreError) -> Stop {
        Stop::Fatal(ProjectionError::Store {
            projection: P::NAME.to_owned(),
            source,
        })
    }

    fn corrupt_checkpoint(reason: String) -> StoreError {
        StoreError::CorruptRecord {
            location: format!("checkpoint of projection {}", P::NAME),
            reason,
        }
    }

    /// Moves the checkpoint in the caller's transaction; returns whether a
    /// rebuild was requested meanwhile.
    async fn checkpoint(
        &self,
        tx: &mut PgConnection,
        position: Position,
        applied: usize,
    ) -> Result<bool, Stop> {
        let (tx_id, seq) =
            convert::checkpoint(position, P::NAME).map_err(|source| Self::fatal_store(source))?;
        let applied = convert::count(applied, "save a checkpoint")
            .map_err(|source| Self::fatal_store(source))?;
        let rebuild: bool = sqlx::query_scalar(&format!(
            "UPDATE {} SET tx_id = $2, seq = $3, events_applied = events_applied + $4, \
             state = 'running', updated_at = now() WHERE name = $1 RETURNING rebuild_requested",
            self.table()
        ))
        .bind(P::NAME)
        .bind(tx_id)
        .bind(seq)
        .bind(applied)
        .fetch_one(tx)
        .await?;
        Ok(rebuild)
    }

    async fn rebuild_requested(&self, conn: &mut PgConnection) -> Result<bool, DbFailure> {
        Ok(sqlx::query_scalar(&format!(
            "SELECT rebuild_requested FROM {} WHERE name = $1",
            self.table()
        ))
        .bind(P::NAME)
        .fetch_one(conn)
        .await?)
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
        sqlx::query(&format!(
            "UPDATE {} SET tx_id = 0, seq = 0, events_applied = 0, rebuild_requested = false, \
             last_error = NULL, state = 'running', updated_at = now() WHERE name = $1",
            self.table()
        ))
        .bind(P::NAME)
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "DELETE FROM {} WHERE projection = $1",
            self.dead_letters()
        ))
        .bind(P::NAME)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Position::START)
    }

    async fn set_state(
        &self,
        conn: &mut PgConnection,
        state: &str,
        error: Option<&str>,
    ) -> Result<(), DbFailure> {
        sqlx::query(&format!(
            "UPDATE {} SET state = $2, last_error = coalesce($3, last_error), updated_at = now() \
             WHERE name = $1",
            self.table()
        ))
        .bind(P::NAME)
        .bind(state)
        .bind(error)
        .execute(conn)
        .await?;
        Ok(())
    }

    fn table(&self) -> String {
        format!("\"{}\".projections", self.store.config().schema())
    }

    fn dead_letters(&self) -> String {
        format!(
            "\"{}\".projection_dead_letters",
            self.store.config().schema()
        )
    }
}

/// Asks for a rebuild of the projection `name` (see
/// [`ProjectionRunner::request_rebuild`]).
///
/// # Errors
///
/// [`StoreError::Backend`] when the request cannot be recorded.
pub async fn request_rebuild(store: &PgEventStore, name: &str) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO \"{}\".projections (name, rebuild_requested) VALUES ($1, true) \
         ON CONFLICT (name) DO UPDATE SET rebuild_requested = true",
        store.config().schema()
    ))
    .bind(name)
    .execute(store.pool())
    .await
    .map_err(|e| StoreError::backend("request rebuild", e))?;
    store.wake();
    Ok(())
}

/// The status of every projection known to the store: position, lag behind
/// the head of the feed, state, whether a runner holds its lease, and its
/// last error.
///
/// `event_types` gives each projection's event types (as in
/// [`Projection::EVENT_TYPES`](es_core::Projection::EVENT_TYPES)) for its
/// lag; a projection missing from it is measured against every event.
///
/// # Errors
///
/// [`StoreError::Backend`] when the status cannot be read.
pub async fn projection_status(
    store: &PgEventStore,
    event_types: &[(&str, &[&str])],
) -> Result<Vec<ProjectionStatus>, StoreError> {
    let schema = store.config().schema();
    let rows = sqlx::query(&format!(
        "SELECT p.name, p.tx_id, p.seq, p.state, p.last_error, p.events_applied, p.updated_at, \
         (SELECT count(*) FROM \"{schema}\".projection_dead_letters d WHERE d.projection = p.name) AS parked \
         FROM \"{schema}\".projections p ORDER BY p.name"
    ))
    .fetch_all(store.pool())
    .await
    .map_err(|e| StoreError::backend("projection status", e))?;
    let mut statuses = Vec::with_capacity(rows.len());
    for row in rows {
        let get = |e: sqlx::Error| StoreError::backend("projection status", e);
        let name: String = row.try_get("name").map_err(get)?;
        let tx: i64 = row.try_get("tx_id").map_err(get)?;
        let seq: i64 = row.try_get("seq").map_err(get)?;
        let corrupt = |reason: String| StoreError::CorruptRecord {
            location: format!("status of projection {name}"),
            reason,
        };
        let unsigned = |value: i64, what: &str| convert::unsigned(value, what).map_err(corrupt);
        let types: Vec<String> = event_types
            .iter()
            .find(|(n, _)| *n == name)
            .map_or_else(Vec::new, |(_, t)| {
                t.iter().map(|s| (*s).to_owned()).collect()
            });
        let lag: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM \"{schema}\".events \
             WHERE (tx_id, seq) > ($1::bigint::text::xid8, $2) \
             AND (cardinality($3::text[]) = 0 OR event_type = ANY($3))"
        ))
        .bind(tx)
        .bind(seq)
        .bind(&types)
        .fetch_one(store.pool())
        .await
        .map_err(get)?;
        let active: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND ((classid::bigint << 32) | objid::bigint) = $1 AND objsubid = 1)",
        )
        .bind(lease_key(schema, &name))
        .fetch_one(store.pool())
        .await
        .map_err(get)?;
        statuses.push(ProjectionStatus {
            position: convert::position(tx, seq).map_err(corrupt)?,
            lag: unsigned(lag, "the lag")?,
            state: row.try_get("state").map_err(get)?,
            active,
            last_error: row.try_get("last_error").map_err(get)?,
            events_applied: unsigned(
                row.try_get("events_applied").map_err(get)?,
                "events_applied",
            )?,
            parked: unsigned(row.try_get("parked").map_err(get)?, "the parked count")?,
            updated_at: row.try_get("updated_at").map_err(get)?,
            name,
        });
    }
    Ok(statuses)
}

/// The advisory-lock key of a projection's lease: a stable 64-bit hash of
/// the schema and name (FNV-1a), so every process computes the same key.
fn lease_key(schema: &str, name: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in schema.bytes().chain(*b":projection:").chain(name.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use es_core::{FeedPage, Metadata, Position, RecordedEvent, StreamId};

    use super::ReadAhead;

    fn page(sequences: std::ops::Range<u64>, next: u64, more: bool) -> FeedPage {
        let events = sequences
            .map(|seq| {
                RecordedEvent::from_parts(
                    uuid::Uuid::new_v4(),
                    StreamId::new("Split-1").expect("a valid id"),
                    seq,
                    Position::from_parts(7, seq),
                    "Happened".to_owned(),
                    1,
                    serde_json::Value::Null,
                    Metadata::default(),
                    chrono::Utc::now(),
                )
            })
            .collect();
        FeedPage::new(events, Position::from_parts(7, next), more)
    }

    fn shape(pages: &[FeedPage]) -> Vec<(usize, u64, bool)> {
        pages
            .iter()
            .map(|p| (p.events.len(), p.next.sequence(), p.more))
            .collect()
    }

    #[test]
    fn a_read_splits_into_batches_that_each_end_at_their_last_event() {
        let pages = ReadAhead::split(page(1..11, 20, false), 4);
        assert_eq!(shape(&pages), [(4, 4, true), (4, 8, true), (2, 20, false)]);
        let all: Vec<u64> = pages
            .iter()
            .flat_map(|p| p.events.iter().map(|e| e.position.sequence()))
            .collect();
        assert_eq!(all, (1..11).collect::<Vec<_>>());
        assert_eq!(
            shape(&ReadAhead::split(page(1..9, 8, true), 4)),
            [(4, 4, true), (4, 8, true)]
        );
        assert_eq!(
            shape(&ReadAhead::split(page(1..1, 30, true), 4)),
            [(0, 30, true)]
        );
    }
}
