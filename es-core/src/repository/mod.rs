//! [`Repository`]: runs commands against aggregates kept in an event store.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tracing::Instrument as _;

use uuid::Uuid;

mod joint;

pub use joint::DecideWith;

use crate::aggregate::SnapshotPolicy;
use crate::observe;
use crate::store::is_system_event_type;
use crate::typed::{DecodeError, EncodeError};
use crate::{
    Aggregate, AppendResult, CommandContext, Decide, Event, EventStore, ExpectedVersion, NewEvent,
    Position, RecordedEvent, Snapshot, SnapshotStore, StoreError, StreamId, StreamRead,
    command_event_id,
};

/// How a [`Repository`] caches and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepositoryOptions {
    /// How many aggregate states the in-process cache keeps (default 1,000);
    /// the oldest entry is evicted first. 0 disables the cache.
    pub cache_capacity: usize,
    /// How many times a command is decided again after a concurrent write
    /// changed its stream (default 3).
    pub max_retries: u32,
    /// Whether to decide on a cached state without first reading the
    /// stream's tail (default `true`: the append's version check keeps it
    /// safe). See [`Repository`].
    pub trust_cache: bool,
    /// Whether to skip stored events whose type the aggregate's event enum
    /// does not know, instead of failing (default `false`).
    pub skip_unknown_events: bool,
}

impl RepositoryOptions {
    /// Sets [`cache_capacity`](Self::cache_capacity).
    #[must_use]
    pub const fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// Sets [`max_retries`](Self::max_retries).
    #[must_use]
    pub const fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Sets [`trust_cache`](Self::trust_cache).
    #[must_use]
    pub const fn trust_cache(mut self, trust: bool) -> Self {
        self.trust_cache = trust;
        self
    }

    /// Sets [`skip_unknown_events`](Self::skip_unknown_events).
    #[must_use]
    pub const fn skip_unknown_events(mut self, skip: bool) -> Self {
        self.skip_unknown_events = skip;
        self
    }
}

impl Default for RepositoryOptions {
    fn default() -> Self {
        Self {
            cache_capacity: 1_000,
            max_retries: 3,
            trust_cache: true,
            skip_unknown_events: false,
        }
    }
}

/// An aggregate loaded from the store.
#[derive(Debug)]
#[non_exhaustive]
pub struct Loaded<A> {
    /// The state.
    pub state: A,
    /// The stream version the state includes (0: no events).
    pub version: u64,
    /// The stream version of the snapshot the load started from, if any.
    pub snapshot_version: Option<u64>,
    /// How many events were read from the store after the snapshot.
    pub events_read: usize,
}

/// The result of a command that the aggregate accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommandOutcome {
    /// The stream's version after the command (unchanged if it decided no
    /// events).
    pub stream_version: u64,
    /// The ids of the appended events, in order.
    pub event_ids: Vec<Uuid>,
    /// Their feed positions, in order.
    pub positions: Vec<Position>,
    /// How many times the command was decided (1 without conflicts).
    pub attempts: u32,
    /// How many events were read from the store to run the command.
    pub events_read: usize,
    /// Whether the command had been applied before (it was sent again):
    /// nothing was written, and the stream version, event ids and positions
    /// are those of its first application.
    pub already_applied: bool,
}

/// Running a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError<E> {
    /// The aggregate refused the command; nothing was written.
    #[error("command rejected: {0}")]
    Rejected(#[source] E),
    /// Other writers kept changing the stream: the command was decided
    /// `attempts` times and each append found a newer version; nothing was
    /// written.
    #[error("stream {stream} kept changing; gave up after {attempts} attempts")]
    Conflict {
        /// The aggregate's stream.
        stream: StreamId,
        /// How many appends were tried.
        attempts: u32,
    },
    /// A decided event could not be serialized; nothing was written.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// Reading the aggregate failed (the store, or a stored event that does
    /// not decode: [`StoreError::Decode`]), or the append did. If the append
    /// itself failed with a transient error it may have taken effect.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl<E> CommandError<E> {
    /// The domain error, if the aggregate refused the command.
    #[must_use]
    pub fn rejection(&self) -> Option<&E> {
        match self {
            Self::Rejected(e) => Some(e),
            _ => None,
        }
    }
}

impl<E> From<DecodeError> for CommandError<E> {
    fn from(error: DecodeError) -> Self {
        Self::Store(error.into())
    }
}

/// How many derived event ids one read looks up when recognizing a command
/// sent again.
const RECALL_PAGE: u32 = 64;

/// Loads aggregates and runs commands against them.
///
/// A command costs one append when the aggregate's state is cached, and one
/// read of the stream's tail plus one append otherwise:
///
/// 1. Start from the newest state the repository can trust: a state kept in
///    its in-process cache (with the stream version it includes), else the
///    aggregate's latest snapshot, else the empty state.
/// 2. Read only the events after that version and apply them (skipped for a
///    cached state, see below).
/// 3. [Decide](Decide::decide), and append the events with
///    `ExpectedVersion::Exact(version)`, each carrying the
///    [`CommandContext`]'s metadata.
/// 4. On success, apply the new events to the state and cache it, without
///    reading them back; take a snapshot when the append crossed a multiple
///    of the aggregate's [`SnapshotPolicy::every`].
/// 5. If another writer got there first (`WrongExpectedVersion`), read the
///    new tail, decide again, and retry, at most
///    [`max_retries`](RepositoryOptions::max_retries) times; then fail with
///    [`CommandError::Conflict`].
///
/// A cached state is only ever used together with the `Exact` check of the
/// append, so a stale cache (another process wrote to the stream) costs a
/// retry but can never cause a wrong write.
///
/// With [`RepositoryOptions::trust_cache`] (the default), step 2 is skipped
/// when the state comes from the cache: a command is one append. The
/// trade-off: when another process has written meanwhile, the first append
/// is wasted (and retried as above); turn it off when many processes write
/// to the same streams. A decision that writes nothing, or a refusal, is never trusted
/// to a cached state alone: the tail is read and the command decided again
/// when it has new events, so a stale cache cannot cause a wrong refusal.
///
/// **Stores that read from a replica** ([`EventStore::reads_may_lag`]):
/// the snapshot and the tail of step 2 come from the replica and may miss
/// the newest events. A decision to append is still checked by the
/// `Exact` append on the primary; when it fails, the tail of step 5 is a
/// [`latest`](StreamRead::latest) read, which the primary serves. A
/// refusal or an empty decision is confirmed the same way before it is
/// returned, as for a cached state. So every outcome is decided on the
/// newest version; a lagging replica costs a retry, never a wrong answer.
/// [`Repository::load`] only reads, so on such a store it may return a
/// state that misses the newest events.
///
/// **Commands sent again.** A command whose [`CommandContext`] has a command
/// id takes effect at most once: its events get ids derived from the
/// command id ([`command_event_id`]), so when it is sent again (after a
/// timeout, a lost reply or a crash, from several tasks at once) the
/// repository finds its events and returns the first outcome, with
/// [`CommandOutcome::already_applied`] set, however many commands were
/// applied to the stream since. It finds them through the store's
/// idempotent replay when the command decides the same events again, and
/// otherwise (it now decides other events, is refused, or decides nothing)
/// by reading its derived ids ([`EventStore::read_events`]): a new command
/// that is accepted costs nothing more, a refused or empty one one read by
/// id. A command that was refused wrote nothing, so it is decided again.
///
/// ```
/// # use es_core::{Aggregate, Decide, Event, On};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// # struct Deposited { cents: u64 }
/// # #[derive(Debug, PartialEq, Event)]
/// # enum AccountEvent { Deposited(Deposited) }
/// # #[derive(Default, Aggregate)]
/// # #[es(category = "Account", event = AccountEvent)]
/// # struct Account { balance: u64 }
/// # impl On<Deposited> for Account { fn on(&mut self, e: Deposited) { self.balance += e.cents } }
/// # struct Deposit { cents: u64 }
/// # #[derive(Debug, PartialEq, thiserror::Error)]
/// # #[error("a deposit must be positive")]
/// # struct NotPositive;
/// # impl Decide<Deposit> for Account {
/// #     type Error = NotPositive;
/// #     fn decide(&self, c: &Deposit) -> Result<Vec<AccountEvent>, NotPositive> {
/// #         if c.cents == 0 { return Err(NotPositive) }
/// #         Ok(vec![AccountEvent::Deposited(Deposited { cents: c.cents })])
/// #     }
/// # }
/// use es_core::{CommandContext, CommandError, MemoryStore, Repository};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
/// let accounts = Repository::<Account, _>::new(MemoryStore::new());
/// let account = Account::stream_id("42")?;
/// let context = CommandContext::new().with_correlation_id("request-1");
///
/// let outcome = accounts.execute(&account, &Deposit { cents: 500 }, &context).await?;
/// assert_eq!((outcome.stream_version, outcome.attempts), (1, 1));
///
/// let refused = accounts.execute(&account, &Deposit { cents: 0 }, &context).await;
/// assert!(matches!(refused, Err(CommandError::Rejected(NotPositive))));
///
/// assert_eq!(accounts.load(&account).await?.state.balance, 500);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Repository<A, S> {
    store: S,
    options: RepositoryOptions,
    cache: Mutex<StateCache<A>>,
}

impl<A, S> std::fmt::Debug for Repository<A, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("aggregate", &std::any::type_name::<A>())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<A, S> Repository<A, S>
where
    A: Aggregate,
    S: EventStore + SnapshotStore,
{
    /// A repository over `store` with the default options.
    pub fn new(store: S) -> Self {
        Self::with_options(store, RepositoryOptions::default())
    }

    /// A repository over `store` with `options`.
    pub fn with_options(store: S, options: RepositoryOptions) -> Self {
        Self {
            store,
            options,
            cache: Mutex::new(StateCache::new(options.cache_capacity)),
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Forgets every cached state.
    pub fn clear_cache(&self) {
        self.cache().clear();
    }

    fn cache(&self) -> MutexGuard<'_, StateCache<A>> {
        // The cache is only a hint checked by each append's version check,
        // so a panic elsewhere cannot leave it in a state that matters.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Loads the aggregate of `stream` from the store: its latest usable
    /// snapshot, then the events after it. Reads only: it neither uses the
    /// cache nor writes a snapshot (commands do, see [`execute`](Self::execute)).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails, or [`StoreError::Decode`] when an
    /// event does not decode.
    pub async fn load(&self, stream: &StreamId) -> Result<Loaded<A>, StoreError> {
        let span = tracing::info_span!(
            "es.load",
            es.aggregate = A::CATEGORY,
            es.stream = %stream,
            es.version = tracing::field::Empty,
            es.snapshot_version = tracing::field::Empty,
            es.events_read = tracing::field::Empty,
        );
        let started = Instant::now();
        let loaded = self.load_from_store(stream).instrument(span.clone()).await;
        metrics::histogram!(observe::LOAD_DURATION, "aggregate" => A::CATEGORY)
            .record(started.elapsed());
        if let Ok(loaded) = &loaded {
            span.record("es.version", loaded.version);
            span.record("es.events_read", loaded.events_read);
            if let Some(version) = loaded.snapshot_version {
                span.record("es.snapshot_version", version);
            }
        }
        loaded
    }

    async fn load_from_store(&self, stream: &StreamId) -> Result<Loaded<A>, StoreError> {
        let (state, snapshot_version) = self.load_snapshot(stream).await;
        let mut loaded = Loaded {
            state,
            version: snapshot_version.map_or(0, |version| version),
            snapshot_version,
            events_read: 0,
        };
        loaded.events_read = self
            .catch_up(stream, &mut loaded.state, &mut loaded.version, false)
            .await?;
        Ok(loaded)
    }

    /// The latest snapshot's state and version, if there is a usable one.
    async fn load_snapshot(&self, stream: &StreamId) -> (A, Option<u64>) {
        let Some(policy) = A::SNAPSHOT else {
            return (A::default(), None);
        };
        match self.store.load_snapshot(stream).await {
            Ok(Some(snapshot)) if snapshot.schema_version == policy.version => {
                match A::from_snapshot(&snapshot.data) {
                    Ok(state) => return (state, Some(snapshot.version)),
                    Err(error) => tracing::warn!(
                        %stream,
                        snapshot_version = snapshot.version,
                        %error,
                        "ignoring a snapshot that does not decode; replaying the stream"
                    ),
                }
            }
            Ok(Some(snapshot)) => tracing::debug!(
                %stream,
                found = snapshot.schema_version,
                current = policy.version,
                "ignoring a snapshot of another format version; replaying the stream"
            ),
            Ok(None) => {}
            Err(error) => tracing::warn!(
                %stream,
                %error,
                "cannot load the snapshot; replaying the stream"
            ),
        }
        (A::default(), None)
    }

    /// Reads the events after `version` and applies them; returns how many
    /// were read. A `latest` read sees every committed event even on a
    /// store that reads from a replica.
    async fn catch_up(
        &self,
        stream: &StreamId,
        state: &mut A,
        version: &mut u64,
        latest: bool,
    ) -> Result<usize, StoreError> {
        let mut read = StreamRead::forward().from_version(*version + 1);
        read.latest = latest;
        let tail = self.store.read_stream(stream, read).await?;
        let read = tail.len();
        for recorded in &tail {
            // The store's own events (a restored stream's `$archived`) are
            // not the aggregate's.
            if is_system_event_type(&recorded.event_type) {
                *version = recorded.version;
                continue;
            }
            match A::Event::decode(recorded) {
                Ok(event) => state.apply(event),
                Err(e) if self.options.skip_unknown_events && e.is_unknown_event_type() => {}
                Err(e) => return Err(e.into()),
            }
            *version = recorded.version;
        }
        Ok(read)
    }

    async fn save_snapshot(
        &self,
        stream: &StreamId,
        state: &A,
        version: u64,
        policy: SnapshotPolicy,
    ) {
        let data = match state.to_snapshot() {
            Ok(data) => data,
            Err(error) => {
                tracing::warn!(%stream, version, %error, "cannot serialize a snapshot");
                return;
            }
        };
        let snapshot = Snapshot::new(stream.clone(), version, policy.version, data);
        if let Err(error) = self.store.save_snapshot(snapshot).await {
            tracing::warn!(%stream, version, %error, "cannot save a snapshot");
        }
    }

    /// Runs `command` against the aggregate of `stream` and appends the
    /// events it decides, each with `context`'s metadata.
    ///
    /// # Errors
    ///
    /// - [`CommandError::Rejected`] with the aggregate's domain error;
    /// - [`CommandError::Conflict`] when other writers changed the stream
    ///   before each of `1 + max_retries` appends;
    /// - [`CommandError::Encode`] or [`CommandError::Store`] when
    ///   serializing, reading (a stored event that does not decode is
    ///   [`StoreError::Decode`]) or appending fails.
    ///
    /// Nothing was written in any case but a transient
    /// [`CommandError::Store`] error of the append itself.
    pub async fn execute<C>(
        &self,
        stream: &StreamId,
        command: &C,
        context: &CommandContext,
    ) -> Result<CommandOutcome, CommandError<A::Error>>
    where
        A: Decide<C>,
        C: Sync,
    {
        let span = tracing::info_span!(
            "es.execute",
            es.aggregate = A::CATEGORY,
            es.stream = %stream,
            es.command = observe::short_type_name::<C>(),
            es.command_id = tracing::field::Empty,
            es.attempts = tracing::field::Empty,
            es.stream_version = tracing::field::Empty,
            es.outcome = tracing::field::Empty,
        );
        if let Some(id) = context.command_id() {
            span.record("es.command_id", tracing::field::display(id));
        }
        let started = Instant::now();
        let result = self
            .execute_decided(stream, command, context)
            .instrument(span.clone())
            .await;
        let outcome = observe::CommandOutcomeKind::of(&result).as_str();
        span.record("es.outcome", outcome);
        match &result {
            Ok(done) => {
                span.record("es.attempts", done.attempts);
                span.record("es.stream_version", done.stream_version);
            }
            Err(CommandError::Conflict { attempts, .. }) => {
                span.record("es.attempts", attempts);
            }
            Err(_) => {}
        }
        metrics::counter!(observe::COMMANDS, "aggregate" => A::CATEGORY, "outcome" => outcome)
            .increment(1);
        metrics::histogram!(
            observe::COMMAND_DURATION,
            "aggregate" => A::CATEGORY,
            "outcome" => outcome
        )
        .record(started.elapsed());
        result
    }

    /// [`execute`](Self::execute) without its span and metrics.
    async fn execute_decided<C>(
        &self,
        stream: &StreamId,
        command: &C,
        context: &CommandContext,
    ) -> Result<CommandOutcome, CommandError<A::Error>>
    where
        A: Decide<C>,
        C: Sync,
    {
        let mut run = self.begin(stream).await?;
        loop {
            let events = match run.state.decide(command) {
                Ok(events) if !events.is_empty() => events,
                // A refusal or an empty decision is never trusted to an
                // unverified cached state: read the tail, decide again if it
                // held events.
                decision => {
                    if !run.verified && self.verify(stream, &mut run).await? > 0 {
                        continue;
                    }
                    // Sent again after it was applied, a command may now be
                    // refused or do nothing: the first outcome stands.
                    if let Some(outcome) = self.recall(stream, context, &run).await? {
                        return Ok(self.replayed(stream, run, outcome));
                    }
                    return self.finish(stream, run, decision);
                }
            };
            match self.append(stream, context, run, events).await? {
                Appended::Done(outcome) => return Ok(outcome),
                Appended::Retry(again) => run = again,
            }
        }
    }

    /// Appends the decided `events` with the run's version as the expected
    /// one: the outcome, or the run to decide again on after another
    /// writer's events.
    async fn append<E>(
        &self,
        stream: &StreamId,
        context: &CommandContext,
        mut run: Run<A>,
        events: Vec<A::Event>,
    ) -> Result<Appended<Run<A>>, CommandError<E>> {
        run.attempts += 1;
        let batch = Self::encode(stream, &events, context)?;
        let event_ids = batch.iter().map(|e| e.event_id).collect();
        let appended = self
            .store
            .append(stream, ExpectedVersion::Exact(run.version), batch)
            .await;
        let outcome = match appended {
            // The command's events were stored before: it was sent again.
            Ok(result) if result.idempotent_replay => {
                let recalled = self.recall(stream, context, &run).await?;
                let outcome = recalled.unwrap_or_else(|| replay_outcome(&run, result, event_ids));
                self.replayed(stream, run, outcome)
            }
            Ok(result) => self.commit(stream, run, events, result, event_ids).await,
            // Some of them were: sent again, the command decided other
            // events this time.
            Err(conflict @ StoreError::IdempotencyConflict { .. }) => {
                match self.recall(stream, context, &run).await? {
                    Some(outcome) => self.replayed(stream, run, outcome),
                    None => return Err(conflict.into()),
                }
            }
            Err(StoreError::WrongExpectedVersion { .. })
                if run.attempts <= self.options.max_retries =>
            {
                // Another writer got there first: read its events and
                // decide again.
                metrics::counter!(observe::COMMAND_CONFLICTS_RETRIED, "aggregate" => A::CATEGORY)
                    .increment(1);
                self.verify(stream, &mut run).await?;
                return Ok(Appended::Retry(run));
            }
            Err(StoreError::WrongExpectedVersion { .. }) => {
                return Err(CommandError::Conflict {
                    stream: stream.clone(),
                    attempts: run.attempts,
                });
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Appended::Done(outcome))
    }

    /// The outcome of the command's first application, if the stream holds
    /// its events: found by their derived ids (see
    /// [`command_event_id`]), in pages of [`RECALL_PAGE`] ids. `None` without
    /// a command id.
    async fn recall(
        &self,
        stream: &StreamId,
        context: &CommandContext,
        run: &Run<A>,
    ) -> Result<Option<CommandOutcome>, StoreError> {
        let Some(command_id) = context.command_id() else {
            return Ok(None);
        };
        let mut found: Vec<RecordedEvent> = Vec::new();
        let mut first = 0_u32;
        loop {
            let ids: Vec<Uuid> = (first..first.saturating_add(RECALL_PAGE))
                .map(|index| command_event_id(command_id, stream, index))
                .collect();
            let events = self.store.read_events(&ids).await?;
            let full = events.len() == ids.len();
            found.extend(events.into_iter().filter(|e| &e.stream_id == stream));
            match first.checked_add(RECALL_PAGE) {
                Some(next) if full => first = next,
                _ => break,
            }
        }
        // In feed order, which within one stream is version order.
        let Some(last) = found.last() else {
            return Ok(None);
        };
        Ok(Some(CommandOutcome {
            stream_version: last.version,
            event_ids: found.iter().map(|e| e.event_id).collect(),
            positions: found.iter().map(|e| e.position).collect(),
            attempts: run.attempts,
            events_read: run.events_read,
            already_applied: true,
        }))
    }

    /// A command recognized as applied before: nothing was written, the
    /// state goes back to the cache as it was.
    fn replayed(&self, stream: &StreamId, run: Run<A>, outcome: CommandOutcome) -> CommandOutcome {
        self.cache().put(stream, run.state, run.version);
        outcome
    }

    /// The state a command starts from: the cached one (trusted as it is
    /// with `trust_cache`), or the latest snapshot and the events after it.
    async fn begin(&self, stream: &StreamId) -> Result<Run<A>, StoreError> {
        let cached = self.cache().take(stream);
        let mut run = if let Some((state, version)) = cached {
            Run {
                cached: true,
                ..Run::new(state, version)
            }
        } else {
            let (state, snapshot) = self.load_snapshot(stream).await;
            Run::new(state, snapshot.map_or(0, |version| version))
        };
        let read_tail = !(run.cached && self.options.trust_cache);
        if read_tail {
            run.replayed = self
                .catch_up(stream, &mut run.state, &mut run.version, false)
                .await?;
            run.events_read += run.replayed;
        }
        // A tail read from a replica may miss the newest events: an append
        // still checks the version, a refusal is confirmed first (`verify`).
        run.verified = read_tail && !self.store.reads_may_lag();
        Ok(run)
    }

    /// Reads and applies the stream's events after the run's version;
    /// returns how many there were.
    async fn verify(&self, stream: &StreamId, run: &mut Run<A>) -> Result<usize, StoreError> {
        run.verified = true;
        let read = self
            .catch_up(stream, &mut run.state, &mut run.version, true)
            .await?;
        run.events_read += read;
        Ok(read)
    }

    /// The decided events, each with the context's metadata and its id:
    /// derived from the command id, or fresh.
    fn encode(
        stream: &StreamId,
        events: &[A::Event],
        context: &CommandContext,
    ) -> Result<Vec<NewEvent>, EncodeError> {
        (0_u32..)
            .zip(events)
            .map(|(index, event)| {
                let mut new = event.encode()?.with_metadata(context.metadata().clone());
                if let Some(command_id) = context.command_id() {
                    new.event_id = command_event_id(command_id, stream, index);
                }
                Ok(new)
            })
            .collect()
    }

    /// A decision that wrote nothing: the refusal, or an outcome without
    /// events; the state goes back to the cache.
    fn finish<E>(
        &self,
        stream: &StreamId,
        run: Run<A>,
        decision: Result<Vec<A::Event>, E>,
    ) -> Result<CommandOutcome, CommandError<E>> {
        let outcome = CommandOutcome {
            stream_version: run.version,
            event_ids: Vec::new(),
            positions: Vec::new(),
            attempts: run.attempts + 1,
            events_read: run.events_read,
            already_applied: false,
        };
        self.cache().put(stream, run.state, run.version);
        match decision {
            Ok(_) => Ok(outcome),
            Err(e) => Err(CommandError::Rejected(e)),
        }
    }

    /// An append that landed: the decided events are applied to the state
    /// without reading them back, a snapshot is taken when one is due, and
    /// the state goes back to the cache.
    async fn commit(
        &self,
        stream: &StreamId,
        mut run: Run<A>,
        events: Vec<A::Event>,
        result: AppendResult,
        event_ids: Vec<Uuid>,
    ) -> CommandOutcome {
        for event in events {
            run.state.apply(event);
        }
        let before = run.version;
        run.version = result.stream_version;
        if let Some(policy) = A::SNAPSHOT {
            // Due when the append crossed a multiple of `every`, or when the
            // command had to replay that many events (the snapshot was
            // missing, or of an old format).
            let every = policy.every.max(1);
            let crossed = run.version / every > before / every;
            if crossed || run.replayed as u64 >= every {
                self.save_snapshot(stream, &run.state, run.version, policy)
                    .await;
            }
        }
        let outcome = CommandOutcome {
            stream_version: run.version,
            event_ids,
            positions: result.positions,
            attempts: run.attempts,
            events_read: run.events_read,
            already_applied: false,
        };
        self.cache().put(stream, run.state, run.version);
        outcome
    }
}

/// What an append of a decision came to.
enum Appended<R, O = CommandOutcome> {
    /// The command's outcome: written now, or recognized as written before.
    Done(O),
    /// Another writer got there first; decide again on this run.
    Retry(R),
}

/// One command's run: the state it decides on and what it cost.
struct Run<A> {
    state: A,
    /// The stream version the state includes.
    version: u64,
    /// Whether the state came from the cache.
    cached: bool,
    /// Whether the state is known to include every event stored when it
    /// was last read.
    verified: bool,
    /// Appends tried.
    attempts: u32,
    /// Events read from the store.
    events_read: usize,
    /// Events replayed before the first decision.
    replayed: usize,
}

impl<A> Run<A> {
    fn new(state: A, version: u64) -> Self {
        Self {
            state,
            version,
            cached: false,
            verified: true,
            attempts: 0,
            events_read: 0,
            replayed: 0,
        }
    }
}

/// Recent aggregate states with the stream version each includes, evicting
/// the least recently stored first.
struct StateCache<A> {
    capacity: usize,
    entries: HashMap<StreamId, CacheEntry<A>>,
    /// Stream of each entry by the tick it was stored at: the first is the
    /// oldest.
    order: BTreeMap<u64, StreamId>,
    tick: u64,
}

struct CacheEntry<A> {
    state: A,
    version: u64,
    tick: u64,
}

impl<A> StateCache<A> {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
        }
    }

    /// Removes and returns the state of `stream`; a command works on it and
    /// puts it back, so concurrent commands on one stream never share it.
    fn take(&mut self, stream: &StreamId) -> Option<(A, u64)> {
        let entry = self.entries.remove(stream)?;
        self.order.remove(&entry.tick);
        Some((entry.state, entry.version))
    }

    fn put(&mut self, stream: &StreamId, state: A, version: u64) {
        if self.capacity == 0 {
            return;
        }
        if let Some(existing) = self.entries.get(stream) {
            // A concurrent command of this repository stored a newer state.
            if existing.version >= version {
                return;
            }
            self.order.remove(&existing.tick);
        }
        self.tick += 1;
        self.order.insert(self.tick, stream.clone());
        self.entries.insert(
            stream.clone(),
            CacheEntry {
                state,
                version,
                tick: self.tick,
            },
        );
        while self.entries.len() > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }
}

/// The outcome of an append that the store recognized as a replay.
fn replay_outcome<T>(
    run: &Run<T>,
    result: AppendResult,
    event_ids: Vec<uuid::Uuid>,
) -> CommandOutcome {
    CommandOutcome {
        stream_version: result.stream_version,
        event_ids,
        positions: result.positions,
        attempts: run.attempts,
        events_read: run.events_read,
        already_applied: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> StreamId {
        StreamId::from_parts("T", n).unwrap()
    }

    #[test]
    fn cache_evicts_the_oldest_entry() {
        let mut cache = StateCache::new(2);
        cache.put(&id(1), "a", 1);
        cache.put(&id(2), "b", 1);
        cache.put(&id(1), "a2", 2);
        cache.put(&id(3), "c", 1);
        assert!(cache.take(&id(2)).is_none(), "2 was stored least recently");
        assert_eq!(cache.take(&id(1)), Some(("a2", 2)));
        assert_eq!(cache.take(&id(3)), Some(("c", 1)));
    }

    #[test]
    fn cache_keeps_the_newer_state() {
        let mut cache = StateCache::new(2);
        cache.put(&id(1), "new", 5);
        cache.put(&id(1), "old", 3);
        assert_eq!(cache.take(&id(1)), Some(("new", 5)));
        assert!(cache.take(&id(1)).is_none());
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let mut cache = StateCache::new(0);
        cache.put(&id(1), "a", 1);
        assert!(cache.take(&id(1)).is_none());
    }
}
