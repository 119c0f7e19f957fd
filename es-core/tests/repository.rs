//! `Repository`: commands, the state cache, conflicts, metadata and
//! snapshots, on the in-memory store.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use es_core::{
    Aggregate, AppendResult, CommandContext, CommandError, Decide, Event, EventStore, EventStream,
    ExpectedVersion, FeedFilter, MemoryStore, NewEvent, On, Position, RecordedEvent, Repository,
    RepositoryOptions, Snapshot, SnapshotStore, StoreError, StoreLimits, StreamId, StreamRead,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Opened {
    owner: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Deposited {
    cents: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Withdrawn {
    cents: u64,
}

#[derive(Debug, Clone, PartialEq, Event)]
enum AccountEvent {
    Opened(Opened),
    Deposited(Deposited),
    Withdrawn(Withdrawn),
}

#[derive(Debug, Default, PartialEq, Serialize, Deserialize, Aggregate)]
#[es(category = "Account", event = AccountEvent, snapshot(every = 10, version = 2))]
struct Account {
    owner: Option<String>,
    balance: u64,
}

impl On<Opened> for Account {
    fn on(&mut self, event: Opened) {
        self.owner = Some(event.owner);
    }
}

impl On<Deposited> for Account {
    fn on(&mut self, event: Deposited) {
        self.balance += event.cents;
    }
}

impl On<Withdrawn> for Account {
    fn on(&mut self, event: Withdrawn) {
        self.balance -= event.cents;
    }
}

struct Open(&'static str);
struct Deposit(u64);
struct Withdraw(u64);

#[derive(Debug, PartialEq, thiserror::Error)]
enum AccountError {
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
        if self.owner.is_none() {
            return Err(AccountError::NotOpen);
        }
        Ok(vec![AccountEvent::Deposited(Deposited {
            cents: command.0,
        })])
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

/// A store that counts the events read from streams and can simulate a
/// writer that always gets there first.
#[derive(Clone, Default)]
struct Observed {
    inner: MemoryStore,
    events_read: Arc<AtomicUsize>,
    interfere: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl EventStore for Observed {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        if self.interfere.load(Ordering::SeqCst) {
            let other = AccountEvent::Deposited(Deposited { cents: 1 })
                .encode()
                .unwrap();
            self.inner
                .append(stream, ExpectedVersion::Any, vec![other])
                .await?;
        }
        self.inner.append(stream, expected, events).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        read: StreamRead,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let events = self.inner.read_stream(stream, read).await?;
        self.events_read.fetch_add(events.len(), Ordering::SeqCst);
        Ok(events)
    }

    async fn read_all(
        &self,
        after: Position,
        filter: &FeedFilter,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(after, filter, limit).await
    }

    fn subscribe(&self, after: Position, filter: FeedFilter) -> EventStream {
        self.inner.subscribe(after, filter)
    }

    fn limits(&self) -> StoreLimits {
        self.inner.limits()
    }
}

#[async_trait::async_trait]
impl SnapshotStore for Observed {
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        self.inner.load_snapshot(stream).await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.inner.save_snapshot(snapshot).await
    }
}

fn account(id: &str) -> StreamId {
    Account::stream_id(id).unwrap()
}

fn run<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

async fn open_with(
    repo: &Repository<Account, impl EventStore + SnapshotStore>,
    id: &StreamId,
    cents: u64,
) {
    let context = CommandContext::new();
    repo.execute(id, &Open("ada"), &context).await.unwrap();
    repo.execute(id, &Deposit(cents), &context).await.unwrap();
}

#[test]
fn commands_append_and_loads_fold_the_stream() {
    run(async {
        let repo = Repository::<Account, _>::new(MemoryStore::new());
        let id = account("1");
        open_with(&repo, &id, 500).await;
        let outcome = repo
            .execute(&id, &Withdraw(200), &CommandContext::new())
            .await
            .unwrap();
        assert_eq!(outcome.stream_version, 3);
        assert_eq!(outcome.attempts, 1);
        let loaded = repo.load(&id).await.unwrap();
        assert_eq!(loaded.version, 3);
        assert_eq!(
            loaded.state,
            Account {
                owner: Some("ada".to_owned()),
                balance: 300
            }
        );
    });
}

#[test]
fn a_refused_command_writes_nothing() {
    run(async {
        let store = MemoryStore::new();
        let repo = Repository::<Account, _>::new(store.clone());
        let id = account("1");
        open_with(&repo, &id, 100).await;
        let error = repo
            .execute(&id, &Withdraw(101), &CommandContext::new())
            .await
            .unwrap_err();
        assert_eq!(
            error.rejection(),
            Some(&AccountError::InsufficientFunds { balance: 100 })
        );
        let stored = store.read_stream(&id, StreamRead::forward()).await.unwrap();
        assert_eq!(stored.len(), 2);
    });
}

#[test]
fn a_cached_state_reads_only_the_new_tail() {
    run(async {
        let store = Observed::default();
        let repo = Repository::<Account, _>::new(store.clone());
        let id = account("1");
        open_with(&repo, &id, 100).await;
        let outcome = repo
            .execute(&id, &Deposit(1), &CommandContext::new())
            .await
            .unwrap();
        assert_eq!(outcome.events_read, 0, "the cached state is current");
    });
}

#[test]
fn two_repositories_on_one_store_see_each_others_writes() {
    run(async {
        let store = MemoryStore::new();
        let first = Repository::<Account, _>::new(store.clone());
        let second = Repository::<Account, _>::new(store.clone());
        let id = account("1");
        open_with(&first, &id, 100).await;
        // The second writes behind the first's cache.
        second
            .execute(&id, &Withdraw(60), &CommandContext::new())
            .await
            .unwrap();
        // The first's cache says 100; the tail read brings it to 40.
        let error = first
            .execute(&id, &Withdraw(50), &CommandContext::new())
            .await
            .unwrap_err();
        assert_eq!(
            error.rejection(),
            Some(&AccountError::InsufficientFunds { balance: 40 })
        );
        let outcome = first
            .execute(&id, &Withdraw(40), &CommandContext::new())
            .await
            .unwrap();
        assert_eq!(outcome.stream_version, 4);
        assert_eq!(first.load(&id).await.unwrap().state.balance, 0);
    });
}

#[test]
fn a_trusted_stale_cache_retries_after_the_conflict() {
    run(async {
        let store = MemoryStore::new();
        let options = RepositoryOptions::default().trust_cache(true);
        let first = Repository::<Account, _>::with_options(store.clone(), options);
        let second = Repository::<Account, _>::new(store.clone());
        let id = account("1");
        open_with(&first, &id, 100).await;
        second
            .execute(&id, &Deposit(5), &CommandContext::new())
            .await
            .unwrap();
        let outcome = first
            .execute(&id, &Withdraw(100), &CommandContext::new())
            .await
            .unwrap();
        assert_eq!(outcome.attempts, 2, "the stale append conflicted once");
        assert_eq!(outcome.events_read, 1);
        assert_eq!(outcome.stream_version, 4);
        assert_eq!(first.load(&id).await.unwrap().state.balance, 5);
        // Fresh now: one append and no read.
        let outcome = first
            .execute(&id, &Deposit(1), &CommandContext::new())
            .await
            .unwrap();
        assert_eq!((outcome.attempts, outcome.events_read), (1, 0));
    });
}

#[test]
fn a_trusted_stale_cache_does_not_refuse_wrongly() {
    run(async {
        let store = MemoryStore::new();
        let options = RepositoryOptions::default().trust_cache(true);
        let first = Repository::<Account, _>::with_options(store.clone(), options);
        let second = Repository::<Account, _>::new(store.clone());
        let id = account("1");
        open_with(&first, &id, 10).await;
        second
            .execute(&id, &Deposit(90), &CommandContext::new())
            .await
            .unwrap();
        // The cached balance (10) would refuse; the stream says 100.
        let outcome = first
            .execute(&id, &Withdraw(100), &CommandContext::new())
            .await
            .unwrap();
        assert_eq!(outcome.stream_version, 4);
    });
}

#[test]
fn conflicts_are_retried_a_bounded_number_of_times() {
    run(async {
        let store = Observed::default();
        let options = RepositoryOptions::default().max_retries(2);
        let repo = Repository::<Account, _>::with_options(store.clone(), options);
        let id = account("1");
        open_with(&repo, &id, 100).await;
        store.interfere.store(true, Ordering::SeqCst);
        let error = repo
            .execute(&id, &Deposit(7), &CommandContext::new())
            .await
            .unwrap_err();
        match error {
            CommandError::Conflict { stream, attempts } => {
                assert_eq!(stream, id);
                assert_eq!(attempts, 3);
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        store.interfere.store(false, Ordering::SeqCst);
        // Three interfering deposits of 1 cent landed, ours did not.
        assert_eq!(repo.load(&id).await.unwrap().state.balance, 103);
    });
}

#[test]
fn every_new_event_carries_correlation_and_causation() {
    run(async {
        let store = MemoryStore::new();
        let repo = Repository::<Account, _>::new(store.clone());
        let id = account("1");
        let command_id = Uuid::now_v7();
        let context = CommandContext::for_command(command_id)
            .with_correlation_id("req-7")
            .with_actor("teller-3");
        repo.execute(&id, &Open("ada"), &context).await.unwrap();
        let opened = store.read_stream(&id, StreamRead::forward()).await.unwrap();
        let meta = &opened[0].metadata;
        assert_eq!(meta.correlation_id.as_deref(), Some("req-7"));
        assert_eq!(meta.causation_id, Some(command_id));
        assert_eq!(meta.actor.as_deref(), Some("teller-3"));

        // A reaction to that event: caused by it, same flow.
        let reaction = CommandContext::caused_by(&opened[0]);
        repo.execute(&id, &Deposit(5), &reaction).await.unwrap();
        let stored = store.read_stream(&id, StreamRead::forward()).await.unwrap();
        let meta = &stored[1].metadata;
        assert_eq!(meta.causation_id, Some(opened[0].event_id));
        assert_eq!(meta.correlation_id.as_deref(), Some("req-7"));
    });
}

#[test]
fn snapshots_are_taken_every_n_events_and_shorten_loads() {
    run(async {
        let store = Observed::default();
        let repo = Repository::<Account, _>::new(store.clone());
        let id = account("1");
        open_with(&repo, &id, 0).await;
        for _ in 0..23 {
            repo.execute(&id, &Deposit(1), &CommandContext::new())
                .await
                .unwrap();
        }
        // Version 25: snapshots crossed 10 and 20.
        let snapshot = store.load_snapshot(&id).await.unwrap().unwrap();
        assert_eq!((snapshot.version, snapshot.schema_version), (20, 2));
        let fresh = Repository::<Account, _>::new(store.clone());
        let loaded = fresh.load(&id).await.unwrap();
        assert_eq!(loaded.snapshot_version, Some(20));
        assert_eq!(loaded.events_read, 5);
        assert_eq!(loaded.version, 25);
        assert_eq!(loaded.state.balance, 23);
    });
}

async fn stream_of_12_with_snapshot(store: &MemoryStore, snapshot: Snapshot) -> StreamId {
    let id = snapshot.stream_id.clone();
    let repo = Repository::<Account, _>::with_options(
        store.clone(),
        RepositoryOptions::default().cache_capacity(0),
    );
    open_with(&repo, &id, 1).await;
    for _ in 0..10 {
        repo.execute(&id, &Deposit(1), &CommandContext::new())
            .await
            .unwrap();
    }
    // Replace the snapshot taken at 10 by the one under test.
    store.save_snapshot(snapshot).await.unwrap();
    id
}

#[test]
fn a_snapshot_of_another_version_is_ignored() {
    run(async {
        let store = MemoryStore::new();
        let id = account("1");
        // A snapshot in an old format (version 1), claiming a balance of 999.
        let old = Snapshot::new(id.clone(), 11, 1, json!({ "owner": "ada", "balance": 999 }));
        stream_of_12_with_snapshot(&store, old).await;
        let loaded = Repository::<Account, _>::new(store.clone())
            .load(&id)
            .await
            .unwrap();
        assert_eq!(loaded.snapshot_version, None);
        assert_eq!(loaded.events_read, 12);
        assert_eq!(loaded.state.balance, 11);
        // A load only reads: the old snapshot is still there.
        let snapshot = store.load_snapshot(&id).await.unwrap().unwrap();
        assert_eq!((snapshot.version, snapshot.schema_version), (11, 1));
        // A command that has to replay that long writes a fresh snapshot
        // with its append.
        Repository::<Account, _>::new(store.clone())
            .execute(&id, &Deposit(1), &CommandContext::new())
            .await
            .unwrap();
        let snapshot = store.load_snapshot(&id).await.unwrap().unwrap();
        assert_eq!((snapshot.version, snapshot.schema_version), (13, 2));
    });
}

/// Captures the warnings logged with `tracing`.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

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
            self.0.lock().unwrap().push(fields.0);
        }
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn a_corrupt_snapshot_is_ignored_with_a_warning() {
    let warnings = Warnings::default();
    let loaded = tracing::subscriber::with_default(warnings.clone(), || {
        run(async {
            let store = MemoryStore::new();
            let id = account("1");
            let corrupt = Snapshot::new(id.clone(), 11, 2, json!({ "balance": "lots" }));
            stream_of_12_with_snapshot(&store, corrupt).await;
            Repository::<Account, _>::new(store.clone())
                .load(&id)
                .await
                .unwrap()
        })
    });
    assert_eq!(loaded.snapshot_version, None);
    assert_eq!(loaded.events_read, 12);
    assert_eq!(loaded.state.balance, 11);
    let warnings = warnings.0.lock().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("does not decode") && w.contains("Account-1")),
        "{warnings:?}"
    );
}

#[test]
fn unknown_event_types_fail_the_load_unless_skipped() {
    run(async {
        let store = MemoryStore::new();
        let id = account("1");
        open_with(&Repository::<Account, _>::new(store.clone()), &id, 5).await;
        store
            .append(
                &id,
                ExpectedVersion::Exact(2),
                vec![NewEvent::new("AccountFrozen", json!({}))],
            )
            .await
            .unwrap();
        let strict = Repository::<Account, _>::new(store.clone());
        match strict.load(&id).await {
            Err(StoreError::Decode(e)) => {
                assert!(e.is_unknown_event_type());
                assert_eq!((e.version, e.event_type.as_str()), (3, "AccountFrozen"));
            }
            other => panic!("expected a decode error, got {other:?}"),
        }
        let lenient = Repository::<Account, _>::with_options(
            store.clone(),
            RepositoryOptions::default().skip_unknown_events(true),
        );
        let loaded = lenient.load(&id).await.unwrap();
        assert_eq!((loaded.version, loaded.state.balance), (3, 5));
        lenient
            .execute(&id, &Deposit(1), &CommandContext::new())
            .await
            .unwrap();
    });
}
