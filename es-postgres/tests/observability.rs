//! Spans and metrics: what appends, commands and a projection runner
//! report, checked with a subscriber that keeps every span's fields and
//! `metrics-util`'s debugging recorder (both installed for this whole test
//! binary, which holds this one test so that nothing else reports).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use common::{fresh_store, runtime, stream};
use es_core::observe;
use es_core::{
    Aggregate, BoxError, CommandContext, Decide, Dispatch, Event, EventStore as _, ExpectedVersion,
    NewEvent, On, Projection, RecordedEvent, Repository, Reset, StoreError,
};
use es_postgres::{ProjectionRunner, RunnerOptions};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;

/// A span's name and its fields as recorded so far.
type SpanRecord = (String, BTreeMap<String, String>);

/// Every span opened.
#[derive(Clone, Default)]
struct Spans {
    next: Arc<AtomicU64>,
    spans: Arc<Mutex<HashMap<u64, SpanRecord>>>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl Spans {
    /// The fields of every span named `name`, in the order they opened.
    fn named(&self, name: &str) -> Vec<BTreeMap<String, String>> {
        let spans = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        let mut found: Vec<(u64, BTreeMap<String, String>)> = spans
            .iter()
            .filter(|(_, (span, _))| span == name)
            .map(|(id, (_, fields))| (*id, fields.clone()))
            .collect();
        found.sort_by_key(|(id, _)| *id);
        found.into_iter().map(|(_, fields)| fields).collect()
    }
}

impl tracing::Subscriber for Spans {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attributes: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let id = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        let mut fields = BTreeMap::new();
        attributes.record(&mut Fields(&mut fields));
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, (attributes.metadata().name().to_owned(), fields));
        tracing::span::Id::from_u64(id)
    }

    fn record(&self, span: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut spans = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, fields)) = spans.get_mut(&span.into_u64()) {
            values.record(&mut Fields(fields));
        }
    }

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// The metrics as the recorder holds them, by name and sorted labels. A
/// snapshot drains counters and histograms: counters are added up here
/// (`read` returns their totals), histograms' samples in `samples`.
struct Metrics {
    snapshotter: Snapshotter,
    counters: HashMap<(String, Labels), u64>,
    samples: HashMap<String, usize>,
    gauges: GaugeHistory,
}

type Labels = Vec<(String, String)>;

impl Metrics {
    fn read(&mut self) -> HashMap<(String, Labels), DebugValue> {
        let mut read = HashMap::new();
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let key = key.key();
            let mut labels: Labels = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            if let DebugValue::Histogram(values) = &value {
                *self.samples.entry(key.name().to_owned()).or_default() += values.len();
            }
            let name = (key.name().to_owned(), labels);
            if let DebugValue::Counter(n) = value {
                *self.counters.entry(name.clone()).or_default() += n;
            }
            read.insert(name, value);
        }
        for (name, total) in &self.counters {
            read.insert(name.clone(), DebugValue::Counter(*total));
        }
        read
    }
}

fn counter_or_zero(
    read: &HashMap<(String, Labels), DebugValue>,
    name: &str,
    pairs: &[(&str, &str)],
) -> u64 {
    match read.get(&(name.to_owned(), labels(pairs))) {
        Some(DebugValue::Counter(n)) => *n,
        _ => 0,
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    let mut labels: Labels = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.sort();
    labels
}

fn counter(
    read: &HashMap<(String, Labels), DebugValue>,
    name: &str,
    pairs: &[(&str, &str)],
) -> u64 {
    match read.get(&(name.to_owned(), labels(pairs))) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name} {pairs:?}: {other:?}"),
    }
}

/// Every value each gauge was set to, in order, by name and labels.
type GaugeHistory = Arc<Mutex<Vec<(String, Labels, f64)>>>;

/// The debugging recorder for counters and histograms; gauges kept as
/// their history instead (a snapshot of the debugging recorder resets a
/// gauge to 0, which would hide whether it was set to 0).
struct Tee {
    inner: DebuggingRecorder,
    gauges: GaugeHistory,
}

struct GaugeSets {
    name: String,
    labels: Labels,
    gauges: GaugeHistory,
}

impl metrics::GaugeFn for GaugeSets {
    fn increment(&self, _: f64) {}
    fn decrement(&self, _: f64) {}
    fn set(&self, value: f64) {
        self.gauges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((self.name.clone(), self.labels.clone(), value));
    }
}

impl metrics::Recorder for Tee {
    fn describe_counter(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        text: metrics::SharedString,
    ) {
        self.inner.describe_counter(key, unit, text);
    }
    fn describe_gauge(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        text: metrics::SharedString,
    ) {
        self.inner.describe_gauge(key, unit, text);
    }
    fn describe_histogram(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        text: metrics::SharedString,
    ) {
        self.inner.describe_histogram(key, unit, text);
    }
    fn register_counter(
        &self,
        key: &metrics::Key,
        metadata: &metrics::Metadata<'_>,
    ) -> metrics::Counter {
        self.inner.register_counter(key, metadata)
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        let mut labels: Labels = key
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        labels.sort();
        metrics::Gauge::from_arc(Arc::new(GaugeSets {
            name: key.name().to_owned(),
            labels,
            gauges: Arc::clone(&self.gauges),
        }))
    }
    fn register_histogram(
        &self,
        key: &metrics::Key,
        metadata: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        self.inner.register_histogram(key, metadata)
    }
}

/// The values gauge `name{pairs}` was set to, in order.
fn gauge_history(gauges: &GaugeHistory, name: &str, pairs: &[(&str, &str)]) -> Vec<f64> {
    let labels = labels(pairs);
    gauges
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|(n, l, _)| n == name && *l == labels)
        .map(|(_, _, value)| *value)
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Deposited {
    cents: u64,
}

#[derive(Debug, Clone, Event)]
enum AccountEvent {
    Deposited(Deposited),
}

#[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
#[es(category = "Account", event = AccountEvent)]
struct Account {
    balance: u64,
}

impl On<Deposited> for Account {
    fn on(&mut self, event: Deposited) {
        self.balance += event.cents;
    }
}

struct Deposit {
    cents: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("nothing to deposit")]
struct Nothing;

impl Decide<Deposit> for Account {
    type Error = Nothing;

    fn decide(&self, command: &Deposit) -> Result<Vec<AccountEvent>, Nothing> {
        if command.cents == 0 {
            return Err(Nothing);
        }
        Ok(vec![AccountEvent::Deposited(Deposited {
            cents: command.cents,
        })])
    }
}

/// A projection that takes a few milliseconds per event, so that its
/// catch-up can be watched.
struct Slow;

impl Projection for Slow {
    const NAME: &'static str = "slow";
    const EVENT_TYPES: &'static [&'static str] = &["Noted"];
}

impl Dispatch<PgConnection> for Slow {
    async fn dispatch(&self, _: &RecordedEvent, _: &mut PgConnection) -> Result<(), BoxError> {
        tokio::time::sleep(Duration::from_millis(3)).await;
        Ok(())
    }
}

impl Reset<PgConnection> for Slow {
    async fn reset(&self, _: &mut PgConnection) -> Result<(), BoxError> {
        Ok(())
    }
}

#[test]
fn appends_commands_and_projections_report_spans_and_metrics() {
    let spans = Spans::default();
    tracing::subscriber::set_global_default(spans.clone()).expect("the only subscriber");
    let recorder = DebuggingRecorder::new();
    let mut metrics = Metrics {
        snapshotter: recorder.snapshotter(),
        counters: HashMap::new(),
        samples: HashMap::new(),
        gauges: GaugeHistory::default(),
    };
    let tee = Tee {
        inner: recorder,
        gauges: Arc::clone(&metrics.gauges),
    };
    metrics::set_global_recorder(tee).expect("the only recorder");

    runtime().block_on(async {
        let store = fresh_store().await;
        appends(&store, &spans, &mut metrics).await;
        commands(&store, &spans, &mut metrics).await;
        projection(&store, &spans, &mut metrics).await;
    });
}

/// A written append, its replay and a wrong expected version.
async fn appends(store: &es_postgres::PgEventStore, spans: &Spans, metrics: &mut Metrics) {
    let events: Vec<NewEvent> = (0..3)
        .map(|n| NewEvent::new("Noted", json!({ "n": n })))
        .collect();
    let target = stream("Log-1");
    store
        .append(&target, ExpectedVersion::NoStream, events.clone())
        .await
        .expect("written");
    let replay = store
        .append(&target, ExpectedVersion::NoStream, events)
        .await
        .expect("a replay");
    assert!(replay.idempotent_replay);
    let wrong = store
        .append(
            &target,
            ExpectedVersion::Exact(1),
            vec![NewEvent::new("Noted", json!({}))],
        )
        .await;
    assert!(matches!(
        wrong,
        Err(StoreError::WrongExpectedVersion { .. })
    ));

    let read = metrics.read();
    assert_eq!(
        counter(&read, observe::EVENTS_APPENDED, &[]),
        3,
        "replays write nothing"
    );
    for outcome in ["written", "idempotent_replay", "wrong_expected_version"] {
        assert_eq!(
            counter(&read, observe::APPENDS, &[("outcome", outcome)]),
            1,
            "{outcome}"
        );
    }
    assert_eq!(metrics.samples.get(observe::APPEND_DURATION), Some(&3));

    let appended = spans.named("es.append");
    let outcomes: Vec<&str> = appended.iter().map(|s| s["es.outcome"].as_str()).collect();
    assert_eq!(
        outcomes,
        ["written", "idempotent_replay", "wrong_expected_version"]
    );
    let first = &appended[0];
    assert_eq!(first["db.system.name"], "postgresql");
    assert_eq!(first["db.operation.name"], "append");
    assert_eq!(first["es.stream"], "Log-1");
    assert_eq!(first["es.expected_version"], "no stream");
    assert_eq!(first["es.event_count"], "3");
    assert_eq!(first["es.stream_version"], "3");
}

/// A command applied, one refused, and a load.
async fn commands(store: &es_postgres::PgEventStore, spans: &Spans, metrics: &mut Metrics) {
    let accounts = Repository::<Account, _>::new(store.clone());
    let id = Account::stream_id("7").expect("an id");
    let context = CommandContext::for_command(uuid::Uuid::now_v7());
    accounts
        .execute(&id, &Deposit { cents: 5 }, &context)
        .await
        .expect("applied");
    accounts
        .execute(&id, &Deposit { cents: 0 }, &CommandContext::new())
        .await
        .expect_err("refused");
    let loaded = accounts.load(&id).await.expect("loaded");
    assert_eq!(loaded.state.balance, 5);

    let read = metrics.read();
    let account = ("aggregate", "Account");
    assert_eq!(
        counter(&read, observe::COMMANDS, &[account, ("outcome", "applied")]),
        1
    );
    assert_eq!(
        counter(
            &read,
            observe::COMMANDS,
            &[account, ("outcome", "rejected")]
        ),
        1
    );
    assert_eq!(metrics.samples.get(observe::COMMAND_DURATION), Some(&2));
    assert_eq!(metrics.samples.get(observe::LOAD_DURATION), Some(&1));

    let executed = spans.named("es.execute");
    assert_eq!(executed.len(), 2);
    assert_eq!(executed[0]["es.aggregate"], "Account");
    assert_eq!(executed[0]["es.stream"], "Account-7");
    assert_eq!(executed[0]["es.command"], "Deposit");
    assert_eq!(
        executed[0]["es.command_id"],
        context.command_id().expect("an id").to_string()
    );
    assert_eq!(executed[0]["es.attempts"], "1");
    assert_eq!(executed[0]["es.stream_version"], "1");
    assert_eq!(executed[0]["es.outcome"], "applied");
    assert_eq!(executed[1]["es.outcome"], "rejected");
    let load = spans.named("es.load");
    assert_eq!(load.len(), 1);
    assert_eq!(load[0]["es.version"], "1");
    assert_eq!(load[0]["es.events_read"], "1");
}

/// A runner catching up over 300 events: batches reported, the lag gauge
/// above zero while it catches up, then zero.
async fn projection(store: &es_postgres::PgEventStore, spans: &Spans, metrics: &mut Metrics) {
    for chunk in 0..3 {
        let events = (0..100)
            .map(|n| NewEvent::new("Noted", json!({ "n": chunk * 100 + n })))
            .collect();
        store
            .append(&stream("Log-2"), ExpectedVersion::Any, events)
            .await
            .expect("appending");
    }
    let options = RunnerOptions::default().batch_size(20);
    let handle = ProjectionRunner::new(store.clone(), Slow, options).spawn();
    let slow = ("projection", "slow");
    let mut lags = Vec::new();
    for _ in 0..600 {
        lags = gauge_history(&metrics.gauges, observe::PROJECTION_LAG, &[slow]);
        // The Noted events of the first step count too: 3 + 300.
        let applied = counter_or_zero(&metrics.read(), observe::PROJECTION_EVENTS, &[slow]);
        if applied == 303 && lags.last() == Some(&0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        counter(&metrics.read(), observe::PROJECTION_EVENTS, &[slow]),
        303
    );
    // Measured after the first batch of 20: the other 283 of its types.
    assert_eq!(lags.first(), Some(&283.0), "{lags:?}");
    assert_eq!(
        lags.last(),
        Some(&0.0),
        "the lag falls to zero once caught up: {lags:?}"
    );
    assert!(
        metrics
            .samples
            .get(observe::PROJECTION_BATCH_DURATION)
            .copied()
            .unwrap_or(0)
            >= 16
    );
    let batches = spans.named("es.projection.batch");
    assert!(batches.len() >= 16, "{} batches", batches.len());
    assert!(batches.iter().all(|b| b["es.projection"] == "slow"));
    assert!(batches.iter().all(|b| b.contains_key("es.to_position")));
    assert_eq!(batches[0]["es.event_count"], "20");
    held_back(store, metrics).await;
    handle.stop().await.expect("stopping");
}

/// A transaction left open holds an append back: the running projection's
/// runner reports it in the held-back gauge, then 0 once it ends.
async fn held_back(store: &es_postgres::PgEventStore, metrics: &Metrics) {
    let mut open = store.pool().acquire().await.expect("a connection");
    sqlx::raw_sql("BEGIN; SELECT pg_current_xact_id();")
        .execute(&mut *open)
        .await
        .expect("opening a transaction");
    store
        .append(
            &stream("Log-3"),
            ExpectedVersion::NoStream,
            vec![NewEvent::new("Noted", json!({}))],
        )
        .await
        .expect("appending behind the open transaction");
    let held = || gauge_history(&metrics.gauges, observe::FEED_HELD_BACK, &[]);
    common::wait_until(
        Duration::from_secs(20),
        "the held-back gauge shows the append",
        || async { held().last() == Some(&1.0) },
    )
    .await;
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut *open)
        .await
        .expect("ending the transaction");
    common::wait_until(
        Duration::from_secs(20),
        "the held-back gauge falls to 0",
        || async { held().last() == Some(&0.0) },
    )
    .await;
}
