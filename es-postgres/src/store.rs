//! [`PgEventStore`]: the event-store contract on PostgreSQL. Control flow
//! only: the statements and row decoding live in [`crate::data`].

use std::sync::Arc;
use std::time::Duration;

use es_core::backend::{FollowOptions, WatchWaker, encode_batch, encode_request, follow};
use es_core::observe;
use es_core::{ARCHIVED_EVENT_TYPE, DELETED_EVENT_TYPE};
use es_core::{
    AppendResult, EventStore, EventStream, ExpectedVersion, FeedFilter, FeedPage, NewEvent,
    Position, RecordedEvent, Snapshot, SnapshotStore, StoreError, StoreLimits, StreamAppend,
    StreamId, StreamRead,
};
use sqlx::PgPool;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::PgStoreOptions;
use crate::convert;
use crate::data::events::{Attempt, Batch, Close, RawEvent, Request, Single, Write};
use crate::data::{self, Statements};
use crate::error::{Failure, classify};
use crate::migrate::{self, MigrateError};
use crate::notify::{self, Wakeups};
use crate::route::Route;
use crate::servers::{self, PgPools, PgServers};

/// An [`EventStore`] in PostgreSQL.
///
/// - An append is one statement whatever the batch size: a server-side
///   function that locks the stream, recognises retries by event id, checks
///   the expected version and inserts the batch from arrays.
/// - The global feed is ordered by (transaction id, sequence) and only
///   returns events of transactions older than every running one, so a
///   transaction that commits late is never skipped. A transaction left open
///   anywhere in the cluster therefore holds the feed back until it ends.
/// - Subscriptions are woken in-process by local appends, across processes
///   by a coalesced `NOTIFY`, and poll as a backstop.
///
/// Cloning is cheap and shares the pool.
///
/// ```no_run
/// use es_core::{EventStore, ExpectedVersion, NewEvent, StreamId};
/// use es_postgres::{PgEventStore, PgStoreOptions};
/// use serde_json::json;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let store = PgEventStore::connect("postgres://localhost/app", PgStoreOptions::default()).await?;
/// store.migrate().await?;
/// let order = StreamId::new("Order-1")?;
/// let placed = NewEvent::new("OrderPlaced", json!({ "total_cents": 500 }));
/// store.append(&order, ExpectedVersion::NoStream, vec![placed]).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct PgEventStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Direct sessions to the primary.
    pool: PgPool,
    /// Appends, reads by id and snapshot writes: the primary, directly or
    /// through a pooler.
    writes: Route,
    /// Stream and feed reads and snapshot loads: the replica, else as
    /// `writes`.
    reads: Route,
    /// Whether `reads` is a replica.
    replica: bool,
    options: PgStoreOptions,
    statements: Statements,
    wakeups: Wakeups,
}

impl PgEventStore {
    /// A store over `pool`. Call [`migrate`](Self::migrate) once before use.
    #[must_use]
    pub fn new(pool: PgPool, options: PgStoreOptions) -> Self {
        Self::with_pools(PgPools::new(pool), options)
    }

    /// A store over `pools`: the primary, and optionally a pooler in front
    /// of it and a streaming replica (see [`PgServers`] for what runs
    /// where).
    #[must_use]
    pub fn with_pools(pools: PgPools, options: PgStoreOptions) -> Self {
        let statements = Statements::new(options.schema());
        let writes = pools
            .pooler
            .map_or_else(|| Route::direct(pools.primary.clone()), Route::pooled);
        let (reads, replica) = match pools.replica {
            Some(replica) => (Route::direct(replica), true),
            None => (writes.clone(), false),
        };
        // Followers reading a replica are woken once it has replayed what
        // woke them.
        let gate = replica.then(|| (pools.primary.clone(), reads.pool().clone()));
        Self {
            inner: Arc::new(Inner {
                pool: pools.primary,
                writes,
                reads,
                replica,
                options,
                statements,
                wakeups: Wakeups::new(gate),
            }),
        }
    }

    /// Connects a pool of up to 10 connections to `url` and builds a store.
    ///
    /// The sessions run with `jit = off`: every statement of the store reads
    /// a bounded number of rows, and a plan estimated as expensive (a
    /// generic plan, a misestimate) would otherwise be compiled again on
    /// each execution, tens of milliseconds each time.
    ///
    /// The pool does not test a connection before handing it out (a round
    /// trip per operation): an append whose connection turns out broken runs
    /// once more on a fresh one, which is safe because appends are
    /// idempotent by event id, and subscriptions and projection runners
    /// retry reads. A pool of your own (see [`PgEventStore::new`]) works too.
    ///
    /// Sessions report the program's name as `application_name` unless
    /// `url` (or `PGAPPNAME`) sets one, so that an operator sees whose session holds a
    /// projection's lease or the feed's horizon.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the server cannot be reached or refuses
    /// the session (with the server's reason), [`StoreError::Timeout`] when
    /// it does not answer within 30 seconds.
    pub async fn connect(url: &str, options: PgStoreOptions) -> Result<Self, StoreError> {
        Self::connect_servers(&PgServers::new(url), options).await
    }

    /// Connects to the primary, and to the pooler and the replica of
    /// `servers` when it names them, as [`connect`](Self::connect) does to
    /// one server. Through a pooler, sessions cannot be given `jit = off`:
    /// set it for the role or the database (`ALTER ROLE app SET jit =
    /// off`).
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect), for each server.
    pub async fn connect_servers(
        servers: &PgServers,
        options: PgStoreOptions,
    ) -> Result<Self, StoreError> {
        Ok(Self::with_pools(servers::connect(servers).await?, options))
    }

    /// Creates the schema and applies pending migrations. Idempotent, and
    /// safe to run from several processes at once.
    ///
    /// # Errors
    ///
    /// [`MigrateError`] when a migration fails or the applied migrations
    /// differ from the embedded ones.
    pub async fn migrate(&self) -> Result<(), MigrateError> {
        migrate::run(&self.inner.pool, &self.inner.options).await
    }

    /// The migrations that [`migrate`](Self::migrate) would apply, as
    /// `version description`, oldest first: all of them when the schema
    /// holds no store yet, none when it is up to date.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the server cannot be asked.
    pub async fn pending_migrations(&self) -> Result<Vec<String>, StoreError> {
        migrate::pending(&self.inner.pool, &self.inner.options)
            .await
            .map_err(|e| crate::error::read_error("read the applied migrations", e))
    }

    /// The pool of direct sessions to the primary (migrations, listening,
    /// projections, operators' questions).
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Whether stream and feed reads go to a replica.
    #[must_use]
    pub fn reads_from_replica(&self) -> bool {
        self.inner.replica
    }

    /// Whether appends and reads go through a transaction-pooling pooler.
    #[must_use]
    pub fn through_pooler(&self) -> bool {
        self.inner.writes.is_pooled()
    }

    /// The store's options.
    #[must_use]
    pub fn options(&self) -> &PgStoreOptions {
        &self.inner.options
    }

    /// The store's statements.
    pub(crate) fn statements(&self) -> &Statements {
        &self.inner.statements
    }

    /// A waker for followers of this store's feed: local appends, NOTIFYs
    /// from other processes, and the poll interval as backstop.
    pub(crate) fn waker(&self) -> WatchWaker<u64> {
        let wakeups = self.inner.wakeups.subscribe(
            &self.inner.pool,
            self.inner.options.channel(),
            self.inner.statements.listeners.clone(),
        );
        WatchWaker::new(wakeups, Some(self.inner.options.poll_interval))
    }

    /// Wakes this process's followers of the feed.
    pub(crate) fn wake(&self) {
        self.inner.wakeups.wake();
    }

    /// An append without its span and metrics: the checks, then the
    /// append function, run again after a lost race or a broken connection.
    async fn append_batch(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        let encoded = encode_batch(stream, &events, &self.inner.options.effective_limits())?;
        let batch = Batch::new(stream, events, encoded)?;
        let result = self
            .retrying(
                stream,
                &Single {
                    stream,
                    expected,
                    batch: &batch,
                },
            )
            .await?;
        if batch.len() > 0 && !result.idempotent_replay {
            self.written();
        }
        Ok(result)
    }

    /// An append across streams without its span and metrics.
    async fn append_request(
        &self,
        appends: Vec<StreamAppend>,
    ) -> Result<Vec<AppendResult>, StoreError> {
        let encoded = encode_request(&appends, &self.inner.options.effective_limits())?;
        let request = Request::new(appends, encoded)?;
        let Some(first) = request.streams().first() else {
            return Ok(Vec::new());
        };
        let results = self.retrying(first, &request).await?;
        if !request.is_empty() && !results.iter().any(|r| r.idempotent_replay) {
            self.written();
        }
        Ok(results)
    }

    /// Archives or deletes a stream: appends its `marker` event.
    async fn close_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        marker: &str,
    ) -> Result<AppendResult, StoreError> {
        let close = Close {
            stream,
            expected,
            marker,
        };
        let result = self.retrying(stream, &close).await?;
        if !result.idempotent_replay {
            self.written();
        }
        Ok(result)
    }

    /// Wakes followers after a write, and now and then sweeps the
    /// listeners of sessions that ended.
    fn written(&self) {
        self.inner.wakeups.wake();
        notify::sweep(
            &self.inner.wakeups,
            &self.inner.pool,
            &self.inner.statements.listeners.sweep,
        );
    }

    /// Runs `append` on a write session (in a transaction of its own
    /// through a pooler) until it decides, at most `append_retries` times
    /// more after a lost race or a broken connection; each run after the
    /// first looks the ids up (`check`).
    async fn retrying<W: Write>(
        &self,
        stream: &StreamId,
        write: &W,
    ) -> Result<W::Output, StoreError> {
        let max_retries = self.inner.options.append_retries;
        let (mut retries, mut check) = (0, false);
        loop {
            let run = async {
                let mut session =
                    (self.inner.writes.session().await).map_err(|e| classify("append", e))?;
                let statements = &self.inner.statements.events;
                let attempt = write.run(&mut session, statements, check).await?;
                // A commit that fails may have landed: the append runs
                // again and looks its ids up.
                session.finish().await.map_err(|e| classify("append", e))?;
                Ok(attempt)
            };
            let (why, error) = match run.await {
                Ok(Attempt::Done(result)) => return Ok(result),
                // Nothing was written: a unique violation means some ids are
                // stored, so the next run looks them up (replay or conflict).
                Ok(Attempt::Retry) | Err(Failure::Retry) => ("lost a race", None),
                // The pool hands out connections without testing them first
                // (see `connect`): a connection the server dropped fails
                // here, and the append runs once more on a fresh one,
                // looking its ids up in case the first run landed.
                Err(Failure::Reconnect(error)) => ("its connection broke", Some(error)),
                Err(Failure::Fail(error)) => return Err(error),
            };
            if retries >= max_retries {
                return Err(error.unwrap_or_else(|| {
                    StoreError::backend(
                        "append",
                        format!(
                            "the append to {stream} {why} {} times in a row",
                            retries + 1
                        ),
                    )
                }));
            }
            retries += 1;
            check = true;
            tracing::debug!(%stream, retries, "append {why}; running it again");
        }
    }

    /// Reads a page of the feed, and whether committed events are still
    /// held back behind the horizon.
    ///
    /// A short page with committed events held back waits for them a
    /// little: they become readable as soon as the older transaction ends,
    /// usually within milliseconds, and a caller that just appended then
    /// reads its own writes.
    async fn read_feed_waiting(
        &self,
        after: Position,
        filter: &FeedFilter,
        limit: usize,
    ) -> Result<(FeedPage, bool), StoreError> {
        let Some(key) = convert::feed_after(after).filter(|_| limit > 0) else {
            // Nothing asked for, or nothing stored that far.
            return Ok((FeedPage::new(Vec::new(), after, false), false));
        };
        let sql = self.inner.statements.feed.page(filter, limit);
        let deadline = tokio::time::Instant::now() + self.inner.options.feed_wait;
        let mut pause = Duration::from_millis(2);
        loop {
            let (page, held_back) = (self.inner.reads)
                .run("read feed", async |session| {
                    data::feed::read_page(session, &sql, key, filter, limit).await
                })
                .await?
                .into_feed_page(after, limit)?;
            if page.more || !held_back || tokio::time::Instant::now() >= deadline {
                return Ok((page, held_back));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Runs the read of [`read_feed`](EventStore::read_feed) once under
    /// `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)` and returns the server's
    /// plan with the rows each step actually read: a diagnostic for a read
    /// that is slower than it should be, and how the tests check that no
    /// read's cost grows with the store.
    ///
    /// `Null` when the read needs no statement (a limit of 0, or a position
    /// past any the store can hold).
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the server refuses the statement.
    pub async fn explain_feed(
        &self,
        after: Position,
        filter: &FeedFilter,
        limit: usize,
    ) -> Result<serde_json::Value, StoreError> {
        let Some(key) = convert::feed_after(after).filter(|_| limit > 0) else {
            return Ok(serde_json::Value::Null);
        };
        let statements = &self.inner.statements.feed;
        (self.inner.reads)
            .run("explain a feed read", async |session| {
                data::feed::explain_page(session, statements, key, filter, limit).await
            })
            .await
    }

    /// The stored row at `position`, as text, if there is one.
    pub(crate) async fn raw_event(
        &self,
        position: Position,
    ) -> Result<Option<RawEvent>, StoreError> {
        let statements = &self.inner.statements.events;
        (self.inner.reads)
            .run("read a stored event", async |session| {
                data::events::raw_event(session, statements, position).await
            })
            .await
    }
}

#[async_trait::async_trait]
impl EventStore for PgEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        let span = tracing::info_span!(
            "es.append",
            db.system.name = "postgresql",
            db.operation.name = "append",
            es.stream = %stream,
            es.expected_version = %expected,
            es.event_count = events.len(),
            es.outcome = tracing::field::Empty,
            es.stream_version = tracing::field::Empty,
        );
        let count = events.len();
        let started = std::time::Instant::now();
        let result = self
            .append_batch(stream, expected, events)
            .instrument(span.clone())
            .await;
        observe::record_append(&span, &result, count, started.elapsed());
        result
    }

    async fn append_many(
        &self,
        appends: Vec<StreamAppend>,
    ) -> Result<Vec<AppendResult>, StoreError> {
        let span = tracing::info_span!(
            "es.append",
            db.system.name = "postgresql",
            db.operation.name = "append_many",
            es.stream = tracing::field::Empty,
            es.stream_count = appends.len(),
            es.event_count = tracing::field::Empty,
            es.outcome = tracing::field::Empty,
            es.stream_version = tracing::field::Empty,
        );
        if let Some(first) = appends.first() {
            span.record("es.stream", tracing::field::display(&first.stream));
        }
        let count = appends.iter().map(|a| a.events.len()).sum();
        span.record("es.event_count", count);
        let started = std::time::Instant::now();
        let results = self.append_request(appends).instrument(span.clone()).await;
        observe::record_append_many(&span, &results, count, started.elapsed());
        results
    }

    async fn archive_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<AppendResult, StoreError> {
        self.close_stream(stream, expected, ARCHIVED_EVENT_TYPE)
            .instrument(tracing::info_span!("es.archive_stream", es.stream = %stream))
            .await
    }

    async fn delete_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<AppendResult, StoreError> {
        self.close_stream(stream, expected, DELETED_EVENT_TYPE)
            .instrument(tracing::info_span!("es.delete_stream", es.stream = %stream))
            .await
    }

    async fn read_events(&self, ids: &[Uuid]) -> Result<Vec<RecordedEvent>, StoreError> {
        let statements = &self.inner.statements.events;
        (self.inner.writes)
            .run("read events by id", async |session| {
                data::events::read_by_id(session, statements, ids).await
            })
            .instrument(tracing::debug_span!(
                "es.read_events",
                db.system.name = "postgresql",
                db.operation.name = "read_events",
                es.id_count = ids.len(),
            ))
            .await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        read: StreamRead,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let span = tracing::debug_span!(
            "es.read_stream",
            db.system.name = "postgresql",
            db.operation.name = "read_stream",
            es.stream = %stream,
            es.from = read.from,
            es.direction = ?read.direction,
            es.event_count = tracing::field::Empty,
            es.replica = tracing::field::Empty,
        );
        let statements = &self.inner.statements.events;
        // A `latest` read must see every committed event: the primary's.
        let route = if read.latest {
            &self.inner.writes
        } else {
            &self.inner.reads
        };
        span.record("es.replica", self.inner.replica && !read.latest);
        let events = route
            .run("read stream", async |session| {
                data::events::read_stream(session, statements, stream, read).await
            })
            .instrument(span.clone())
            .await?;
        span.record("es.event_count", events.len());
        Ok(events)
    }

    async fn read_all(
        &self,
        after: Position,
        filter: &FeedFilter,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        // A windowed read may stop before it found `limit` events: read on
        // from where it stopped until the page is full or the feed ends.
        let mut events = Vec::new();
        let mut after = after;
        while events.len() < limit {
            let page = match self
                .read_feed_waiting(after, filter, limit - events.len())
                .await
            {
                Ok((page, _)) => page,
                // The events before an unreadable one go out first; the
                // next read starts at it and reports it.
                Err(StoreError::CorruptEvent { .. }) if !events.is_empty() => break,
                Err(error) => return Err(error),
            };
            let done = !page.more || page.events.len() >= limit - events.len();
            after = page.next;
            events.extend(page.events);
            if done {
                break;
            }
        }
        Ok(events)
    }

    async fn read_feed(
        &self,
        after: Position,
        filter: &FeedFilter,
        limit: usize,
    ) -> Result<FeedPage, StoreError> {
        let span = tracing::debug_span!(
            "es.read_feed",
            db.system.name = "postgresql",
            db.operation.name = "read_feed",
            es.after = %after,
            es.limit = limit,
            es.categories = ?filter.categories,
            es.event_types = ?filter.event_types,
            es.event_count = tracing::field::Empty,
            es.next = tracing::field::Empty,
            es.held_back = tracing::field::Empty,
        );
        let (page, held_back) = self
            .read_feed_waiting(after, filter, limit)
            .instrument(span.clone())
            .await?;
        span.record("es.event_count", page.events.len());
        span.record("es.next", tracing::field::display(page.next));
        span.record("es.held_back", held_back);
        // Events still held back after the wait: the follower reads on
        // rather than wait for a wake-up that was already sent.
        Ok(FeedPage::new(
            page.events,
            page.next,
            page.more || held_back,
        ))
    }

    fn subscribe(&self, after: Position, filter: FeedFilter) -> EventStream {
        follow(
            self.clone(),
            after,
            filter,
            self.waker(),
            FollowOptions::default(),
        )
    }

    fn limits(&self) -> StoreLimits {
        self.inner.options.effective_limits()
    }

    fn reads_may_lag(&self) -> bool {
        self.inner.replica
    }
}

#[async_trait::async_trait]
impl SnapshotStore for PgEventStore {
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        let statements = &self.inner.statements.snapshots;
        (self.inner.reads)
            .run("load snapshot", async |session| {
                data::snapshots::load(session, statements, stream).await
            })
            .await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let statements = &self.inner.statements.snapshots;
        (self.inner.writes)
            .run("save snapshot", async |session| {
                data::snapshots::save(session, statements, &snapshot).await
            })
            .await
    }
}
