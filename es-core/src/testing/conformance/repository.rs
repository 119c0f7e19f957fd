//! Repository conformance: [`Repository`] runs commands the same way on
//! every store: appends and loads, refusals, the state cache against
//! concurrent writers, bounded retries, command metadata and snapshots.
//!
//! The rules use a small bank account aggregate, implemented by hand so that
//! the suite does not need the `derive` feature.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::__private::{payload, unknown_event_type, unsupported_version};
use crate::testing::hooked::{Hooked, Hooks};
use crate::{
    Aggregate, CommandContext, CommandError, Decide, DecideWith, DecodeError, Event, EventStore,
    ExpectedVersion, NewEvent, RecordedEvent, Repository, RepositoryOptions, Snapshot,
    SnapshotPolicy, SnapshotStore, StoreError, StreamId, StreamRead,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Opened {
    owner: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Deposited {
    pub(super) cents: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Withdrawn {
    cents: u64,
}

/// The account's events, stored as `AccountOpened`, `AccountDeposited` and
/// `AccountWithdrawn`, schema version 1.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum AccountEvent {
    Opened(Opened),
    Deposited(Deposited),
    Withdrawn(Withdrawn),
}

const OPENED: &str = "AccountOpened";
const DEPOSITED: &str = "AccountDeposited";
const WITHDRAWN: &str = "AccountWithdrawn";

impl Event for AccountEvent {
    const EVENT_TYPES: &'static [&'static str] = &[OPENED, DEPOSITED, WITHDRAWN];

    fn event_type(&self) -> &'static str {
        match self {
            Self::Opened(_) => OPENED,
            Self::Deposited(_) => DEPOSITED,
            Self::Withdrawn(_) => WITHDRAWN,
        }
    }

    fn schema_version(&self) -> u32 {
        1
    }

    fn to_data(&self) -> Result<Value, serde_json::Error> {
        match self {
            Self::Opened(e) => serde_json::to_value(e),
            Self::Deposited(e) => serde_json::to_value(e),
            Self::Withdrawn(e) => serde_json::to_value(e),
        }
    }

    fn decode(event: &RecordedEvent) -> Result<Self, DecodeError> {
        let known = Self::EVENT_TYPES.contains(&event.event_type.as_str());
        if known && event.schema_version != 1 {
            return Err(unsupported_version(event, 1));
        }
        match event.event_type.as_str() {
            OPENED => payload(event, &event.data).map(Self::Opened),
            DEPOSITED => payload(event, &event.data).map(Self::Deposited),
            WITHDRAWN => payload(event, &event.data).map(Self::Withdrawn),
            _ => Err(unknown_event_type(event)),
        }
    }
}

/// A bank account, snapshotted every 10 events in format version 2.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Account {
    pub(super) owner: Option<String>,
    pub(super) balance: u64,
}

impl Aggregate for Account {
    type Event = AccountEvent;

    const CATEGORY: &'static str = "Account";

    const SNAPSHOT: Option<SnapshotPolicy> = Some(SnapshotPolicy {
        every: 10,
        version: 2,
    });

    fn apply(&mut self, event: AccountEvent) {
        match event {
            AccountEvent::Opened(e) => self.owner = Some(e.owner),
            AccountEvent::Deposited(e) => self.balance += e.cents,
            AccountEvent::Withdrawn(e) => self.balance = self.balance.saturating_sub(e.cents),
        }
    }

    fn to_snapshot(&self) -> Result<Value, serde_json::Error> {
        serde_json::to_value(self)
    }

    fn from_snapshot(data: &Value) -> Result<Self, serde_json::Error> {
        Self::deserialize(data)
    }
}

pub(super) struct Open(pub(super) &'static str);
pub(super) struct Deposit(pub(super) u64);
/// One deposit per amount, in one append.
struct DepositEach(Vec<u64>);
pub(super) struct Withdraw(pub(super) u64);

#[derive(Debug, PartialEq, thiserror::Error)]
pub(super) enum AccountError {
    #[error("the account is already open")]
    AlreadyOpen,
    #[error("the account is not open")]
    NotOpen,
    #[error("the balance is {balance} cents")]
    InsufficientFunds { balance: u64 },
}

impl Decide<Open> for Account {
    type Error = AccountError;

    fn decide(&self, command: &Open) -> Result<Vec<AccountEvent>, AccountError> {
        if self.owner.is_some() {
            return Err(AccountError::AlreadyOpen);
        }
        Ok(vec![AccountEvent::Opened(Opened {
            owner: command.0.to_owned(),
        })])
    }
}

impl Decide<Deposit> for Account {
    type Error = AccountError;

    fn decide(&self, command: &Deposit) -> Result<Vec<AccountEvent>, AccountError> {
        self.decide(&DepositEach(vec![command.0]))
    }
}

impl Decide<DepositEach> for Account {
    type Error = AccountError;

    fn decide(&self, command: &DepositEach) -> Result<Vec<AccountEvent>, AccountError> {
        if self.owner.is_none() {
            return Err(AccountError::NotOpen);
        }
        Ok(command
            .0
            .iter()
            .map(|&cents| AccountEvent::Deposited(Deposited { cents }))
            .collect())
    }
}

impl Decide<Withdraw> for Account {
    type Error = AccountError;

    fn decide(&self, command: &Withdraw) -> Result<Vec<AccountEvent>, AccountError> {
        if self.balance < command.0 {
            return Err(AccountError::InsufficientFunds {
                balance: self.balance,
            });
        }
        Ok(vec![AccountEvent::Withdrawn(Withdrawn {
            cents: command.0,
        })])
    }
}

/// Moves cents from this account to another, both written together.
struct Transfer(u64);

impl DecideWith<Account, Transfer> for Account {
    type Error = AccountError;

    fn decide_with(
        &self,
        to: &Account,
        command: &Transfer,
    ) -> Result<(Vec<AccountEvent>, Vec<AccountEvent>), AccountError> {
        if to.owner.is_none() {
            return Err(AccountError::NotOpen);
        }
        let withdrawn = self.decide(&Withdraw(command.0))?;
        let deposited = AccountEvent::Deposited(Deposited { cents: command.0 });
        Ok((withdrawn, vec![deposited]))
    }
}

/// Tops the other account up to a balance, paid by this one's owner
/// (which is only checked): it writes to the other stream only, and is
/// refused once the other account holds that much.
struct TopUp(u64);

impl DecideWith<Account, TopUp> for Account {
    type Error = AccountError;

    fn decide_with(
        &self,
        to: &Account,
        command: &TopUp,
    ) -> Result<(Vec<AccountEvent>, Vec<AccountEvent>), AccountError> {
        if self.owner.is_none() {
            return Err(AccountError::NotOpen);
        }
        if to.balance >= command.0 {
            return Err(AccountError::InsufficientFunds {
                balance: to.balance,
            });
        }
        let cents = command.0 - to.balance;
        Ok((
            Vec::new(),
            vec![AccountEvent::Deposited(Deposited { cents })],
        ))
    }
}

/// While set, lets another writer append a deposit of 1 cent to the stream
/// just before each append.
struct Interference(AtomicBool);

#[async_trait::async_trait]
impl<S: EventStore> Hooks<S> for Interference {
    async fn before_append(&self, inner: &S, stream: &StreamId) -> Result<(), StoreError> {
        if self.0.load(Ordering::SeqCst) {
            let other = NewEvent::new(DEPOSITED, json!({ "cents": 1 }));
            inner
                .append(stream, ExpectedVersion::Any, vec![other])
                .await?;
        }
        Ok(())
    }
}

/// Collects the fields of the warnings logged with `tracing`.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

impl Warnings {
    fn logged(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl tracing::Subscriber for Warnings {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                let _ = write!(self.0, "{}={value:?} ", field.name());
            }
        }
        if *event.metadata().level() == tracing::Level::WARN {
            let mut fields = Fields(String::new());
            event.record(&mut fields);
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(fields.0);
        }
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

pub(super) fn account(id: &str) -> StreamId {
    Account::stream_id(id).expect("test account ids are valid")
}

pub(super) async fn stored<S: EventStore>(store: &S, id: &StreamId) -> Vec<RecordedEvent> {
    store
        .read_stream(id, StreamRead::forward())
        .await
        .expect("reading the stream")
}

/// Opens the account of `id` for "ada" and deposits `cents`: version 2.
pub(super) async fn open_with<S: EventStore + SnapshotStore>(
    repo: &Repository<Account, S>,
    id: &StreamId,
    cents: u64,
) {
    let context = CommandContext::new();
    repo.execute(id, &Open("ada"), &context)
        .await
        .expect("opening the account");
    repo.execute(id, &Deposit(cents), &context)
        .await
        .expect("the first deposit");
}

/// Writes a stream of 12 events (an opening and 11 deposits of 1 cent)
/// without a cache, then replaces the snapshot taken at version 10 with
/// `snapshot`.
async fn stream_of_12_with_snapshot<S: EventStore + SnapshotStore + Clone>(
    store: &S,
    snapshot: Snapshot,
) -> StreamId {
    let id = snapshot.stream_id.clone();
    let repo = Repository::<Account, _>::with_options(
        store.clone(),
        RepositoryOptions::default().cache_capacity(0),
    );
    open_with(&repo, &id, 1).await;
    for _ in 0..10 {
        repo.execute(&id, &Deposit(1), &CommandContext::new())
            .await
            .expect("a deposit");
    }
    store
        .save_snapshot(snapshot)
        .await
        .expect("saving the snapshot under test");
    id
}

/// A command appends its events under their stored names; a load folds them.
pub async fn repository_command_appends_and_load_folds_the_stream<S: EventStore + SnapshotStore>(
    store: S,
) {
    let repo = Repository::<Account, _>::new(store);
    let id = account("1");
    open_with(&repo, &id, 500).await;
    let outcome = repo
        .execute(&id, &Withdraw(200), &CommandContext::new())
        .await
        .expect("the withdrawal");
    assert_eq!(outcome.stream_version, 3);
    assert_eq!(outcome.attempts, 1);
    assert_eq!(outcome.event_ids.len(), 1);
    let events = stored(repo.store(), &id).await;
    assert_eq!(
        events
            .iter()
            .map(|e| (e.event_type.as_str(), e.schema_version))
            .collect::<Vec<_>>(),
        [(OPENED, 1), (DEPOSITED, 1), (WITHDRAWN, 1)]
    );
    assert_eq!(events[2].event_id, outcome.event_ids[0]);
    assert_eq!(events[2].position, outcome.positions[0]);
    let loaded = repo.load(&id).await.expect("loading the account");
    assert_eq!(loaded.version, 3);
    assert_eq!(
        loaded.state,
        Account {
            owner: Some("ada".to_owned()),
            balance: 300
        }
    );
}

/// A refused command returns the aggregate's error and writes nothing.
pub async fn repository_refused_command_writes_nothing<S: EventStore + SnapshotStore>(store: S) {
    let repo = Repository::<Account, _>::new(store);
    let id = account("1");
    open_with(&repo, &id, 100).await;
    let error = repo
        .execute(&id, &Withdraw(101), &CommandContext::new())
        .await
        .expect_err("an overdraft is refused");
    assert_eq!(
        error.rejection(),
        Some(&AccountError::InsufficientFunds { balance: 100 })
    );
    assert_eq!(stored(repo.store(), &id).await.len(), 2);
}

/// A command on the state its repository cached reads no events.
pub async fn repository_cached_state_reads_nothing<S: EventStore + SnapshotStore>(store: S) {
    let repo = Repository::<Account, _>::new(store);
    let id = account("1");
    open_with(&repo, &id, 100).await;
    let outcome = repo
        .execute(&id, &Deposit(1), &CommandContext::new())
        .await
        .expect("a deposit");
    assert_eq!(outcome.events_read, 0, "the cached state is current");
}

/// Two repositories on one store see each other's writes.
pub async fn repository_two_repositories_see_each_others_writes<
    S: EventStore + SnapshotStore + Clone,
>(
    store: S,
) {
    let first = Repository::<Account, _>::new(store.clone());
    let second = Repository::<Account, _>::new(store);
    let id = account("1");
    open_with(&first, &id, 100).await;
    // The second writes behind the first's cache.
    second
        .execute(&id, &Withdraw(60), &CommandContext::new())
        .await
        .expect("the second's withdrawal");
    // The first's cache says 100; the tail read brings it to 40.
    let error = first
        .execute(&id, &Withdraw(50), &CommandContext::new())
        .await
        .expect_err("the first sees the balance of 40");
    assert_eq!(
        error.rejection(),
        Some(&AccountError::InsufficientFunds { balance: 40 })
    );
    let outcome = first
        .execute(&id, &Withdraw(40), &CommandContext::new())
        .await
        .expect("the first's withdrawal");
    assert_eq!(outcome.stream_version, 4);
    let loaded = first.load(&id).await.expect("loading the account");
    assert_eq!(loaded.state.balance, 0);
}

/// A stale trusted cache conflicts once, then the command reads the tail and lands.
pub async fn repository_stale_cache_retries_after_the_conflict<
    S: EventStore + SnapshotStore + Clone,
>(
    store: S,
) {
    let options = RepositoryOptions::default().trust_cache(true);
    let first = Repository::<Account, _>::with_options(store.clone(), options);
    let second = Repository::<Account, _>::new(store);
    let id = account("1");
    open_with(&first, &id, 100).await;
    second
        .execute(&id, &Deposit(5), &CommandContext::new())
        .await
        .expect("the second's deposit");
    let outcome = first
        .execute(&id, &Withdraw(100), &CommandContext::new())
        .await
        .expect("the first's withdrawal");
    assert_eq!(outcome.attempts, 2, "the stale append conflicted once");
    assert_eq!(outcome.events_read, 1);
    assert_eq!(outcome.stream_version, 4);
    let loaded = first.load(&id).await.expect("loading the account");
    assert_eq!(loaded.state.balance, 5);
    // Fresh now: one append and no read.
    let outcome = first
        .execute(&id, &Deposit(1), &CommandContext::new())
        .await
        .expect("a deposit");
    assert_eq!((outcome.attempts, outcome.events_read), (1, 0));
}

/// A stale trusted cache does not refuse what the stream's state allows.
pub async fn repository_stale_cache_does_not_refuse_wrongly<
    S: EventStore + SnapshotStore + Clone,
>(
    store: S,
) {
    let options = RepositoryOptions::default().trust_cache(true);
    let first = Repository::<Account, _>::with_options(store.clone(), options);
    let second = Repository::<Account, _>::new(store);
    let id = account("1");
    open_with(&first, &id, 10).await;
    second
        .execute(&id, &Deposit(90), &CommandContext::new())
        .await
        .expect("the second's deposit");
    // The cached balance (10) would refuse; the stream says 100.
    let outcome = first
        .execute(&id, &Withdraw(100), &CommandContext::new())
        .await
        .expect("the first's withdrawal");
    assert_eq!(outcome.stream_version, 4);
}

/// A replica that has replayed a stream up to `version` and no further:
/// reads that are not `latest` miss the newer events.
struct Replica {
    version: u64,
}

#[async_trait::async_trait]
impl<S: EventStore> Hooks<S> for Replica {
    fn lagging_read(&self, mut events: Vec<RecordedEvent>) -> Vec<RecordedEvent> {
        events.retain(|event| event.version <= self.version);
        events
    }

    fn reads_may_lag(&self, _: &S) -> bool {
        true
    }
}

/// Account 1 opened with 10 cents, then `deposit` more (version 3); a
/// repository on `store` and one whose reads only see up to version 2.
async fn behind_a_deposit<S: EventStore + SnapshotStore + Clone>(
    store: S,
    deposit: u64,
) -> (
    StreamId,
    Repository<Account, S>,
    Repository<Account, Hooked<S, Replica>>,
) {
    let primary = Repository::<Account, _>::new(store.clone());
    let id = account("1");
    open_with(&primary, &id, 10).await;
    primary
        .execute(&id, &Deposit(deposit), &CommandContext::new())
        .await
        .expect("a deposit the replica has not replayed");
    let lagging = Repository::<Account, _>::new(Hooked::new(store, Replica { version: 2 }));
    (id, primary, lagging)
}

/// On a store whose reads lag, a refusal is confirmed on the newest
/// version: the replica says 10 cents, the stream says 100.
pub async fn repository_on_lagging_reads_does_not_refuse_wrongly<
    S: EventStore + SnapshotStore + Clone,
>(
    store: S,
) {
    let (id, _, lagging) = behind_a_deposit(store, 90).await;
    let outcome = lagging
        .execute(&id, &Withdraw(100), &CommandContext::new())
        .await
        .expect("the withdrawal, decided on the newest version");
    assert_eq!(outcome.stream_version, 4);
    // And a refusal that holds on the newest version is still a refusal.
    let refused = lagging
        .execute(&id, &Withdraw(1), &CommandContext::new())
        .await;
    assert!(
        matches!(refused, Err(CommandError::Rejected(_))),
        "an empty account refuses: {refused:?}"
    );
}

/// On a store whose reads lag, a decision on a stale tail fails its
/// `Exact` append, and the retry reads the newest tail.
pub async fn repository_on_lagging_reads_retries_on_the_newest_version<
    S: EventStore + SnapshotStore + Clone,
>(
    store: S,
) {
    let (id, primary, lagging) = behind_a_deposit(store, 5).await;
    let outcome = lagging
        .execute(&id, &Deposit(1), &CommandContext::new())
        .await
        .expect("a deposit decided on a stale tail, then on the newest");
    assert_eq!((outcome.stream_version, outcome.attempts), (4, 2));
    let balance = primary.load(&id).await.expect("loading").state.balance;
    assert_eq!(balance, 16, "every deposit counted once");
}

/// Conflicts are retried `max_retries` times, then the command fails with `Conflict`.
pub async fn repository_conflicts_are_retried_a_bounded_number_of_times<
    S: EventStore + SnapshotStore,
>(
    store: S,
) {
    let store = Hooked::new(store, Interference(AtomicBool::new(false)));
    let options = RepositoryOptions::default().max_retries(2);
    let repo = Repository::<Account, _>::with_options(store, options);
    let id = account("1");
    open_with(&repo, &id, 100).await;
    repo.store().hooks.0.store(true, Ordering::SeqCst);
    let error = repo
        .execute(&id, &Deposit(7), &CommandContext::new())
        .await
        .expect_err("every append conflicts");
    match error {
        CommandError::Conflict { stream, attempts } => {
            assert_eq!(stream, id);
            assert_eq!(attempts, 3);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    repo.store().hooks.0.store(false, Ordering::SeqCst);
    // Three interfering deposits of 1 cent landed, ours did not.
    let loaded = repo.load(&id).await.expect("loading the account");
    assert_eq!(loaded.state.balance, 103);
}

/// Every new event carries the command's correlation id, causation id and actor.
pub async fn repository_new_events_carry_correlation_and_causation<
    S: EventStore + SnapshotStore,
>(
    store: S,
) {
    let repo = Repository::<Account, _>::new(store);
    let id = account("1");
    let context = |command_id| {
        CommandContext::for_command(command_id)
            .with_correlation_id("req-7")
            .with_actor("teller-3")
    };
    let (open, deposits) = (Uuid::now_v7(), Uuid::now_v7());
    repo.execute(&id, &Open("ada"), &context(open))
        .await
        .expect("opening the account");
    repo.execute(&id, &DepositEach(vec![1, 2, 3]), &context(deposits))
        .await
        .expect("three deposits");
    let events = stored(repo.store(), &id).await;
    assert_eq!(events.len(), 4);
    for (event, command_id) in events.iter().zip([open, deposits, deposits, deposits]) {
        let meta = &event.metadata;
        assert_eq!(meta.correlation_id.as_deref(), Some("req-7"));
        assert_eq!(meta.causation_id, Some(command_id));
        assert_eq!(meta.actor.as_deref(), Some("teller-3"));
    }

    // A reaction to the opening: caused by it, same flow.
    let opened = &events[0];
    let reaction = CommandContext::caused_by(opened, "welcome_bonus");
    repo.execute(&id, &Deposit(5), &reaction)
        .await
        .expect("the reaction's deposit");
    let events = stored(repo.store(), &id).await;
    let meta = &events[4].metadata;
    assert_eq!(meta.causation_id, Some(opened.event_id));
    assert_eq!(meta.correlation_id.as_deref(), Some("req-7"));
}

/// A snapshot is taken every `every` events; a load then reads only the tail.
pub async fn repository_snapshots_every_n_events_and_loads_read_only_the_tail<
    S: EventStore + SnapshotStore + Clone,
>(
    store: S,
) {
    let repo = Repository::<Account, _>::new(store.clone());
    let id = account("1");
    open_with(&repo, &id, 0).await;
    for _ in 0..23 {
        repo.execute(&id, &Deposit(1), &CommandContext::new())
            .await
            .expect("a deposit");
    }
    // Version 25: snapshots crossed 10 and 20.
    let snapshot = store
        .load_snapshot(&id)
        .await
        .expect("loading the snapshot")
        .expect("a snapshot was taken");
    assert_eq!((snapshot.version, snapshot.schema_version), (20, 2));
    let fresh = Repository::<Account, _>::new(store);
    let loaded = fresh.load(&id).await.expect("loading the account");
    assert_eq!(loaded.snapshot_version, Some(20));
    assert_eq!(loaded.events_read, 5);
    assert_eq!(loaded.version, 25);
    assert_eq!(loaded.state.balance, 23);
}

/// A snapshot of another format version is ignored, then replaced by a command.
pub async fn repository_snapshot_of_another_version_is_ignored<
    S: EventStore + SnapshotStore + Clone,
>(
    store: S,
) {
    let id = account("1");
    // A snapshot in an old format (version 1), claiming a balance of 999.
    let old = Snapshot::new(id.clone(), 11, 1, json!({ "owner": "ada", "balance": 999 }));
    stream_of_12_with_snapshot(&store, old).await;
    let loaded = Repository::<Account, _>::new(store.clone())
        .load(&id)
        .await
        .expect("loading the account");
    assert_eq!(loaded.snapshot_version, None);
    assert_eq!(loaded.events_read, 12);
    assert_eq!(loaded.state.balance, 11);
    // A load only reads: the old snapshot is still there.
    let snapshot = store
        .load_snapshot(&id)
        .await
        .expect("loading the snapshot")
        .expect("the old snapshot");
    assert_eq!((snapshot.version, snapshot.schema_version), (11, 1));
    // A command that has to replay that long writes a fresh snapshot
    // with its append.
    Repository::<Account, _>::new(store.clone())
        .execute(&id, &Deposit(1), &CommandContext::new())
        .await
        .expect("a deposit");
    let snapshot = store
        .load_snapshot(&id)
        .await
        .expect("loading the snapshot")
        .expect("a fresh snapshot");
    assert_eq!((snapshot.version, snapshot.schema_version), (13, 2));
}

/// A snapshot that does not decode is ignored, with a warning naming the stream.
pub async fn repository_snapshot_that_does_not_decode_is_ignored_with_a_warning<
    S: EventStore + SnapshotStore + Clone,
>(
    store: S,
) {
    let warnings = Warnings::default();
    let id = account("1");
    let corrupt = Snapshot::new(id.clone(), 11, 2, json!({ "balance": "lots" }));
    stream_of_12_with_snapshot(&store, corrupt).await;
    let loaded = {
        // The repository runs on this thread, where the guard applies.
        let _guard = tracing::dispatcher::set_default(&tracing::Dispatch::new(warnings.clone()));
        Repository::<Account, _>::new(store)
            .load(&id)
            .await
            .expect("loading the account")
    };
    assert_eq!(loaded.snapshot_version, None);
    assert_eq!(loaded.events_read, 12);
    assert_eq!(loaded.state.balance, 11);
    let warnings = warnings.logged();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("does not decode") && w.contains("Account-1")),
        "{warnings:?}"
    );
}

/// An unknown event type fails the load unless the repository skips unknown types.
pub async fn repository_unknown_event_types_fail_the_load_unless_skipped<
    S: EventStore + SnapshotStore + Clone,
>(
    store: S,
) {
    let id = account("1");
    open_with(&Repository::<Account, _>::new(store.clone()), &id, 5).await;
    store
        .append(
            &id,
            ExpectedVersion::Exact(2),
            vec![NewEvent::new("AccountFrozen", json!({}))],
        )
        .await
        .expect("appending an unknown event type");
    let strict = Repository::<Account, _>::new(store.clone());
    match strict.load(&id).await {
        Err(StoreError::Decode(e)) => {
            assert!(e.is_unknown_event_type());
            assert_eq!((e.version, e.event_type.as_str()), (3, "AccountFrozen"));
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    let lenient = Repository::<Account, _>::with_options(
        store,
        RepositoryOptions::default().skip_unknown_events(true),
    );
    let loaded = lenient.load(&id).await.expect("a lenient load");
    assert_eq!((loaded.version, loaded.state.balance), (3, 5));
    lenient
        .execute(&id, &Deposit(1), &CommandContext::new())
        .await
        .expect("a deposit after the unknown event");
}

/// A command on an archived aggregate fails with the store's
/// `StreamArchived`, cached state or not; once an append restored the
/// stream, loads and commands step over the `$archived` event. A deleted
/// aggregate's commands fail with `StreamDeleted`.
pub async fn repository_on_archived_and_deleted_streams<S: EventStore + SnapshotStore + Clone>(
    store: S,
) {
    let cached = Repository::<Account, _>::new(store.clone());
    let id = account("1");
    open_with(&cached, &id, 100).await;
    store
        .archive_stream(&id, ExpectedVersion::Exact(2))
        .await
        .expect("archiving");
    let fresh = Repository::<Account, _>::new(store.clone());
    for repo in [&cached, &fresh] {
        let refused = repo.execute(&id, &Deposit(1), &CommandContext::new()).await;
        assert!(
            matches!(
                refused,
                Err(CommandError::Store(StoreError::StreamArchived {
                    version: 3,
                    ..
                }))
            ),
            "got {refused:?}"
        );
    }
    let restore = NewEvent::new(DEPOSITED, json!({ "cents": 5 }));
    store
        .append(&id, ExpectedVersion::Exact(3), vec![restore])
        .await
        .expect("restoring with an append");
    let loaded = fresh.load(&id).await.expect("loading the restored stream");
    assert_eq!((loaded.state.balance, loaded.version), (105, 4));
    let outcome = cached
        .execute(&id, &Deposit(1), &CommandContext::new())
        .await
        .expect("a command on the restored stream");
    assert_eq!(outcome.stream_version, 5);

    store
        .delete_stream(&id, ExpectedVersion::Exact(5))
        .await
        .expect("deleting");
    let refused = cached
        .execute(&id, &Deposit(1), &CommandContext::new())
        .await;
    assert!(
        matches!(
            refused,
            Err(CommandError::Store(StoreError::StreamDeleted {
                version: 6,
                ..
            }))
        ),
        "got {refused:?}"
    );
}

/// A command decided on two aggregates writes both streams or neither:
/// eight transfers racing out of one account never overdraw it nor lose a
/// cent, and a transfer sent again takes effect once.
pub async fn repository_command_on_two_aggregates_writes_both_or_neither<
    S: EventStore + SnapshotStore + Clone + 'static,
>(
    store: S,
) {
    let repo = Arc::new(Repository::<Account, _>::new(store.clone()));
    let (from, to) = (account("from"), account("to"));
    open_with(&repo, &from, 100).await;
    repo.execute(&to, &Open("bob"), &CommandContext::new())
        .await
        .expect("opening");
    let context = CommandContext::new().with_command_id(Uuid::from_u128(1));
    let (debit, credit) = repo
        .execute_with(&repo, &from, &to, &Transfer(30), &context)
        .await
        .expect("a transfer");
    assert_eq!((debit.stream_version, credit.stream_version), (3, 2));
    let feed = super::whole_feed(&store).await;
    let (again, _) = repo
        .execute_with(&repo, &from, &to, &Transfer(30), &context)
        .await
        .expect("the transfer sent again");
    assert!(again.already_applied);
    assert_eq!(again.positions, debit.positions);
    assert_eq!(super::whole_feed(&store).await, feed, "nothing was written");

    // A command that wrote to the second stream only is recalled there.
    let top_up = CommandContext::new().with_command_id(Uuid::from_u128(2));
    let (_, topped) = repo
        .execute_with(&repo, &from, &to, &TopUp(50), &top_up)
        .await
        .expect("a top-up");
    let feed = super::whole_feed(&store).await;
    let (first, again) = repo
        .execute_with(&repo, &from, &to, &TopUp(50), &top_up)
        .await
        .expect("the top-up sent again");
    assert!(first.already_applied && again.already_applied);
    assert_eq!(again.positions, topped.positions);
    assert_eq!(super::whole_feed(&store).await, feed, "nothing was written");

    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (repo, from, to) = (Arc::clone(&repo), from.clone(), to.clone());
            let fresh = Repository::<Account, _>::new(store.clone());
            tokio::spawn(async move {
                fresh
                    .execute_with(&repo, &from, &to, &Transfer(20), &CommandContext::new())
                    .await
                    .map(drop)
            })
        })
        .collect();
    let mut accepted = 0;
    for task in tasks {
        match task.await.expect("a task panicked") {
            Ok(()) => accepted += 1,
            Err(CommandError::Rejected(AccountError::InsufficientFunds { .. })) => {}
            Err(other) => panic!("a transfer failed: {other}"),
        }
    }
    assert_eq!(accepted, 3, "70 cents cover three transfers of 20");
    let reader = Repository::<Account, _>::new(store);
    let balances = (
        reader.load(&from).await.expect("loading").state.balance,
        reader.load(&to).await.expect("loading").state.balance,
    );
    assert_eq!(balances, (10, 110));
}
