//! The workloads, each run through the framework and through its baseline.

use std::error::Error;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use es_core::{
    Aggregate, BoxError, CommandContext, Dispatch, Event, EventStore, ExpectedVersion, NewEvent,
    Projection, RecordedEvent, Repository, RepositoryOptions, Reset, Snapshot, SnapshotStore,
    StreamAppend, StreamId, StreamRead,
};
use es_postgres::{PgEventStore, PgStoreOptions, ProjectionRunner, RunnerOptions};
use es_postgres_local as local;
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgConnection, PgPool};

use uuid::Uuid;

use crate::domain::{Account, AccountEvent, Deposit, Ledger, deposit_event};
use crate::report::Workload;
use crate::{Timing, baseline};

pub(crate) type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// Connections per pool, the same for the framework and the baseline.
const POOL_SIZE: u32 = 10;

/// The shared state of a run: one database, a store and a baseline pool of
/// the same size.
pub(crate) struct Bench {
    timing: Timing,
    verbose: bool,
    url: String,
    store: PgEventStore,
    raw: PgPool,
}

pub(crate) fn payload(n: u64) -> Value {
    json!({ "n": n, "amount_cents": 1_250, "sku": "SKU-0001", "note": "a typical small event" })
}

pub(crate) fn stream(id: &str) -> Res<StreamId> {
    Ok(StreamId::new(id)?)
}

async fn pool(url: &str) -> Res<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        .connect(url)
        .await?)
}

impl Bench {
    pub(crate) async fn setup(timing: Timing, verbose: bool) -> Res<Self> {
        let server = local::shared().await?;
        let url = server.create_database().await?;
        let store = PgEventStore::connect(&url, PgStoreOptions::default()).await?;
        store.migrate().await?;
        let raw = pool(&url).await?;
        sqlx::raw_sql(baseline::SCHEMA).execute(&raw).await?;
        Ok(Self {
            timing,
            verbose,
            url,
            store,
            raw,
        })
    }

    /// The URL of the run's database.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The run's store.
    pub(crate) fn store(&self) -> &PgEventStore {
        &self.store
    }

    /// Whether this is a full run.
    pub(crate) fn full(&self) -> bool {
        self.timing.full
    }

    pub(crate) fn say(&self, text: &str) {
        if self.verbose {
            eprintln!("{text}");
        }
    }

    pub(crate) async fn run_all(&self, only: Option<&str>) -> Res<Vec<Workload>> {
        let wanted = |name: &str| only.is_none_or(|o| name.contains(o));
        let mut results = Vec::new();
        if wanted("append_single_1w") {
            results.push(self.append_single(1, "append_single_1w", 1.0).await?);
        }
        if wanted("append_single_8w") {
            results.push(self.append_single(8, "append_single_8w", 0.9).await?);
        }
        if wanted("append_batch_100") {
            results.push(self.append_batch().await?);
        }
        if wanted("append_two_streams") {
            results.push(self.append_two_streams().await?);
        }
        if wanted("load_10k") {
            let (load, snapshot_load) = self.load_10k().await?;
            results.push(load);
            if wanted("load_10k_snapshot") {
                results.push(snapshot_load);
            }
        }
        if wanted("command_1w") {
            results.push(self.command_1w().await?);
        }
        if wanted("catchup") {
            results.push(self.catchup().await?);
        }
        if wanted("live_latency_p99") {
            results.push(self.live_latency().await?);
        }
        if wanted("pooler_append_1w") {
            results.push(self.pooler_append(1, "pooler_append_1w").await?);
        }
        if wanted("pooler_append_8w") {
            results.push(self.pooler_append(8, "pooler_append_8w").await?);
        }
        if wanted("replica_read_lag_p99") || wanted("replica_live_p99") {
            results.extend(self.replica_lag().await?);
        }
        Ok(results)
    }

    /// Runs `framework` and `baseline` alternately for the configured slices;
    /// each returns how many units it did. Returns units per second of each.
    pub(crate) async fn alternate<F, B, FF, BF>(
        &self,
        name: &str,
        mut framework: F,
        mut baseline: B,
    ) -> Res<(f64, f64)>
    where
        F: FnMut(Instant) -> FF,
        B: FnMut(Instant) -> BF,
        FF: Future<Output = Res<u64>>,
        BF: Future<Output = Res<u64>>,
    {
        let (mut fw_units, mut fw_time, mut bl_units, mut bl_time) = (0, 0.0, 0, 0.0);
        for round in 0..self.timing.slices {
            // Alternate which side goes first, so neither always runs warm.
            for side in [round % 2, 1 - round % 2] {
                let started = Instant::now();
                let deadline = started + self.timing.slice;
                if side == 0 {
                    fw_units += framework(deadline).await?;
                    fw_time += started.elapsed().as_secs_f64();
                } else {
                    bl_units += baseline(deadline).await?;
                    bl_time += started.elapsed().as_secs_f64();
                }
            }
        }
        let rates = (units(fw_units) / fw_time, units(bl_units) / bl_time);
        self.say(&format!(
            "{name}: framework {:.0}/s, baseline {:.0}/s",
            rates.0, rates.1
        ));
        Ok(rates)
    }

    async fn append_single(&self, writers: u64, name: &str, target: f64) -> Res<Workload> {
        let generation = AtomicU64::new(0);
        let (fw, bl) = self
            .alternate(
                name,
                |deadline| {
                    let run = generation.fetch_add(1, Ordering::Relaxed);
                    single_appends(
                        &self.store,
                        writers,
                        &format!("Single{writers}-{run}"),
                        deadline,
                    )
                },
                |deadline| {
                    let run = generation.fetch_add(1, Ordering::Relaxed);
                    let tasks: Vec<_> = (0..writers)
                        .map(|w| {
                            let raw = self.raw.clone();
                            tokio::spawn(async move {
                                let s = format!("Single{writers}-{run}-{w}");
                                single_inserts(&raw, &s, deadline).await
                            })
                        })
                        .collect();
                    join_counts(tasks)
                },
            )
            .await?;
        Ok(Workload::compared(
            name,
            "appends/s",
            fw,
            bl,
            Some(target),
            true,
            format!(
                "{writers} writer(s), 1 event per append with an Exact check; baseline BEGIN/INSERT/COMMIT"
            ),
        ))
    }

    async fn append_batch(&self) -> Res<Workload> {
        const BATCH: u64 = 100;
        let generation = AtomicU64::new(0);
        let (fw, bl) = self
            .alternate(
                "append_batch_100",
                |deadline| {
                    let run = generation.fetch_add(1, Ordering::Relaxed);
                    let store = self.store.clone();
                    async move {
                        let s = stream(&format!("Batch-{run}"))?;
                        let mut version = 0;
                        while Instant::now() < deadline {
                            let events = (0..BATCH)
                                .map(|i| NewEvent::new("Happened", payload(i)))
                                .collect();
                            store
                                .append(&s, ExpectedVersion::Exact(version), events)
                                .await?;
                            version += BATCH;
                        }
                        Ok(version)
                    }
                },
                |deadline| {
                    let run = generation.fetch_add(1, Ordering::Relaxed);
                    let raw = self.raw.clone();
                    async move {
                        let s = format!("Batch-{run}");
                        let mut version = 0;
                        while Instant::now() < deadline {
                            let data: Vec<Value> = (0..BATCH).map(payload).collect();
                            baseline::insert_batch(&raw, &s, int(version + 1), &data).await?;
                            version += BATCH;
                        }
                        Ok(version)
                    }
                },
            )
            .await?;
        Ok(Workload::compared(
            "append_batch_100",
            "events/s",
            fw,
            bl,
            Some(0.9),
            true,
            "100 events per append into one stream; baseline one UNNEST INSERT per transaction",
        ))
    }

    /// One event into each of two streams, written atomically with one
    /// `append_many` (each stream checked at its exact version), against a
    /// hand-written transaction inserting both rows.
    async fn append_two_streams(&self) -> Res<Workload> {
        let generation = AtomicU64::new(0);
        let (fw, bl) = self
            .alternate(
                "append_two_streams",
                |deadline| {
                    let run = generation.fetch_add(1, Ordering::Relaxed);
                    let store = self.store.clone();
                    async move {
                        let pair = [
                            stream(&format!("Order-{run}"))?,
                            stream(&format!("Coupon-{run}"))?,
                        ];
                        let mut version = 0;
                        while Instant::now() < deadline {
                            let request = pair
                                .iter()
                                .map(|s| {
                                    StreamAppend::new(
                                        s.clone(),
                                        ExpectedVersion::Exact(version),
                                        vec![NewEvent::new("Happened", payload(version))],
                                    )
                                })
                                .collect();
                            store.append_many(request).await?;
                            version += 1;
                        }
                        Ok(version)
                    }
                },
                |deadline| {
                    let run = generation.fetch_add(1, Ordering::Relaxed);
                    let raw = self.raw.clone();
                    async move {
                        let pair = [format!("Order-{run}"), format!("Coupon-{run}")];
                        let pair = [pair[0].as_str(), pair[1].as_str()];
                        let mut version = 0;
                        while Instant::now() < deadline {
                            baseline::insert_across(
                                &raw,
                                &pair,
                                int(version + 1),
                                &payload(version),
                            )
                            .await?;
                            version += 1;
                        }
                        Ok(version)
                    }
                },
            )
            .await?;
        Ok(Workload::compared(
            "append_two_streams",
            "requests/s",
            fw,
            bl,
            Some(0.8),
            true,
            "1 writer, one event into each of two streams, all or nothing, each with an Exact check; \
             baseline one transaction inserting both rows",
        ))
    }

    /// Loads a 10,000-event aggregate through the repository (no cache, no
    /// snapshot) against a SELECT of the same rows with JSON decoding; then
    /// the same aggregate with a snapshot at 9,990.
    async fn load_10k(&self) -> Res<(Workload, Workload)> {
        const EVENTS: u64 = 10_000;
        let loads = if self.timing.full { 20 } else { 8 };
        let ledger = Ledger::stream_id("bench")?;
        let account = Account::stream_id("bench-snapshot")?;
        for s in [&ledger, &account] {
            for batch in 0..EVENTS / 1_000 {
                let events = (0..1_000)
                    .map(|i| deposit_event(batch * 1_000 + i))
                    .collect();
                self.store.append(s, ExpectedVersion::Any, events).await?;
            }
        }
        let uncached = RepositoryOptions::default().cache_capacity(0);
        let ledgers: Repository<Ledger, PgEventStore> =
            Repository::with_options(self.store.clone(), uncached);
        // A snapshot at 9,990, taken from the state the first 9,990 events give.
        let mut state = Account::default();
        for event in self
            .store
            .read_stream(&account, StreamRead::forward().limit(9_990))
            .await?
        {
            state.apply(AccountEvent::decode(&event)?);
        }
        self.store
            .save_snapshot(Snapshot::new(
                account.clone(),
                9_990,
                1,
                state.to_snapshot()?,
            ))
            .await?;
        let accounts: Repository<Account, PgEventStore> =
            Repository::with_options(self.store.clone(), uncached);

        let (mut fw, mut bl, mut snap) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..loads {
            let started = Instant::now();
            let loaded = ledgers.load(&ledger).await?;
            fw.push(started.elapsed());
            if loaded.version != EVENTS {
                return Err(format!("loaded version {}", loaded.version).into());
            }
            let started = Instant::now();
            let (version, balance) = baseline::load_account(&self.raw, ledger.as_str()).await?;
            bl.push(started.elapsed());
            if version != 10_000 || balance != loaded.state.balance {
                return Err("the baseline read the wrong rows".into());
            }
        }
        // Loads from the snapshot in a loop of their own: right after a
        // 10,000-event load, the allocator is still returning its memory,
        // which added a millisecond to a sub-millisecond load.
        for _ in 0..loads {
            let started = Instant::now();
            let loaded = accounts.load(&account).await?;
            snap.push(started.elapsed());
            if loaded.snapshot_version != Some(9_990) || loaded.events_read != 10 {
                return Err(format!(
                    "snapshot load read {} events from {:?}",
                    loaded.events_read, loaded.snapshot_version
                )
                .into());
            }
        }
        let (fw, bl, snap) = (median_ms(&mut fw), median_ms(&mut bl), median_ms(&mut snap));
        self.say(&format!(
            "load_10k: framework {fw:.2} ms, baseline {bl:.2} ms, from snapshot {snap:.3} ms"
        ));
        Ok((
            Workload::compared(
                "load_10k",
                "ms",
                fw,
                bl,
                Some(1.2),
                false,
                format!(
                    "median of {loads}: repository load of 10,000 events (decode + apply); baseline SELECT + serde_json decode + fold"
                ),
            ),
            Workload::compared(
                "load_10k_snapshot",
                "ms",
                snap,
                fw,
                Some(0.1),
                false,
                "same aggregate, snapshot at 9,990 + 10 events; baseline is load_10k through the framework",
            ),
        ))
    }

    /// The full command path (load, decide, append) by one writer on one
    /// aggregate past 1,000 events, against single-row INSERT transactions.
    async fn command_1w(&self) -> Res<Workload> {
        let generation = AtomicU64::new(0);
        let (fw, bl) = self
            .alternate(
                "command_1w",
                |deadline| {
                    let run = generation.fetch_add(1, Ordering::Relaxed);
                    let store = self.store.clone();
                    async move {
                        let id = Account::stream_id(format!("command-{run}"))?;
                        for batch in 0..2 {
                            let events = (0..500).map(|i| deposit_event(batch * 500 + i)).collect();
                            store.append(&id, ExpectedVersion::Any, events).await?;
                        }
                        let repository: Repository<Account, PgEventStore> = Repository::new(store);
                        let mut commands = 0;
                        while Instant::now() < deadline {
                            // Each command with its own command id, as a
                            // client sending idempotent requests does.
                            let context = CommandContext::for_command(Uuid::now_v7());
                            repository
                                .execute(&id, &Deposit { cents: 100 }, &context)
                                .await
                                .map_err(|e| e.to_string())?;
                            commands += 1;
                        }
                        Ok(commands)
                    }
                },
                |deadline| {
                    let run = generation.fetch_add(1, Ordering::Relaxed);
                    let raw = self.raw.clone();
                    async move { single_inserts(&raw, &format!("Command-{run}"), deadline).await }
                },
            )
            .await?;
        Ok(Workload::compared(
            "command_1w",
            "commands/s",
            fw,
            bl,
            Some(0.5),
            true,
            "repository execute (a command id, cached state, decide, one Exact append) on a stream past 1,000 events; baseline BEGIN/INSERT/COMMIT",
        ))
    }

    /// Appends `total` events in batches of 1,000 over 100 streams.
    async fn seed(&self, prefix: &str, total: u64) -> Res<()> {
        for batch in 0..total / 1_000 {
            let events = (0..1_000)
                .map(|i| NewEvent::new("Seeded", payload(i)))
                .collect();
            let s = stream(&format!("{prefix}-{}", batch % 100))?;
            self.store.append(&s, ExpectedVersion::Any, events).await?;
        }
        Ok(())
    }

    async fn catchup(&self) -> Res<Workload> {
        const EVENTS: u64 = 100_000;
        // A database of its own, so that the feed holds exactly these events.
        let url = local::shared().await?.create_database().await?;
        let bench = Self {
            timing: self.timing,
            verbose: self.verbose,
            store: PgEventStore::new(pool(&url).await?, PgStoreOptions::default()),
            raw: pool(&url).await?,
            url,
        };
        bench.store.migrate().await?;
        bench.catchup_in_own_database(EVENTS).await
    }

    async fn catchup_in_own_database(&self, events: u64) -> Res<Workload> {
        self.say("catchup: appending 100,000 events");
        self.seed("Feed", events).await?;
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM es.events")
            .fetch_one(&self.raw)
            .await?;
        let total = u64::try_from(total)?;
        let rounds = if self.timing.full { 4 } else { 2 };
        let (mut fw_time, mut bl_time) = (0.0, 0.0);
        for _ in 0..rounds {
            let started = Instant::now();
            self.catch_up_once(total).await?;
            fw_time += started.elapsed().as_secs_f64();
            let started = Instant::now();
            let read = baseline::page_feed(&self.raw, 500).await?;
            bl_time += started.elapsed().as_secs_f64();
            if u64::try_from(read)? != total {
                return Err(format!("baseline read {read} of {total} events").into());
            }
        }
        let fw = units(total) * f64::from(rounds) / fw_time;
        let bl = units(total) * f64::from(rounds) / bl_time;
        self.say(&format!("catchup: framework {fw:.0}/s, baseline {bl:.0}/s"));
        Ok(Workload::compared(
            "catchup",
            "events/s",
            fw,
            bl,
            Some(0.8),
            true,
            format!(
                "{total} events, batches of 500, checkpoint per batch; baseline pages SELECTs by (tx_id, seq) and decodes"
            ),
        ))
    }

    /// Rebuilds the no-op projection from the start and waits until it has
    /// applied `total` events.
    async fn catch_up_once(&self, total: u64) -> Res<()> {
        let seen = Arc::new(AtomicU64::new(0));
        self.store.request_rebuild(NoOp::NAME).await?;
        let noop = NoOp {
            seen: Arc::clone(&seen),
        };
        let options = RunnerOptions::default().batch_size(500);
        let runner = ProjectionRunner::new(self.store.clone(), noop, options).spawn();
        while seen.load(Ordering::Relaxed) < total {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        runner.stop().await?;
        Ok(())
    }

    async fn live_latency(&self) -> Res<Workload> {
        let samples = if self.timing.full { 400 } else { 150 };
        // The projection runs on its own store (its own pool), as in another
        // process: only PostgreSQL's NOTIFY or the poll wakes it.
        let other = PgEventStore::new(pool(&self.url).await?, PgStoreOptions::default());
        let clock = Instant::now();
        let latencies = Arc::new(Mutex::new(Vec::with_capacity(samples)));
        let probe = Probe {
            clock,
            latencies: Arc::clone(&latencies),
        };
        let runner =
            ProjectionRunner::at_least_once(other, probe, RunnerOptions::default()).spawn();
        // Live means caught up: one event first, and the samples only once
        // it has arrived (the projection examines the whole feed to find it).
        let s = stream("Probe-1")?;
        let started = Instant::now();
        let warm_up = NewEvent::new("Probed", json!({ "sent_ns": 0 }));
        self.store
            .append(&s, ExpectedVersion::Any, vec![warm_up])
            .await?;
        let deadline = started + Duration::from_mins(1);
        while latencies.lock().map_err(|_| "lock")?.is_empty() {
            if Instant::now() > deadline {
                return Err("the live projection did not catch up within 60 s".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let caught_up = started.elapsed();
        latencies.lock().map_err(|_| "lock")?.clear();
        let feed: i64 = sqlx::query_scalar("SELECT count(*) FROM es.events")
            .fetch_one(&self.raw)
            .await?;
        for _ in 0..samples {
            let sent = u64::try_from(clock.elapsed().as_nanos())?;
            let event = NewEvent::new("Probed", json!({ "sent_ns": sent }));
            self.store
                .append(&s, ExpectedVersion::Any, vec![event])
                .await?;
            tokio::time::sleep(Duration::from_millis(7)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while latencies.lock().map_err(|_| "lock")?.len() < samples && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        runner.stop().await?;
        let mut got = latencies.lock().map_err(|_| "lock")?.clone();
        if got.len() < samples {
            return Err(format!("only {} of {samples} live events arrived", got.len()).into());
        }
        got.sort_by(f64::total_cmp);
        // The nearest-rank percentile.
        let at = |percent: usize| got[(got.len() * percent).div_ceil(100).saturating_sub(1)];
        let (p50, p99) = (at(50), at(99));
        self.say(&format!("live latency: p50 {p50:.2} ms, p99 {p99:.2} ms"));
        Ok(Workload {
            name: "live_latency_p99".to_owned(),
            unit: "ms",
            framework: p99,
            baseline: None,
            ratio: None,
            target: None,
            higher_is_better: false,
            note: format!(
                "append to handler in another store instance (NOTIFY wake-up), {samples} events; p50 {p50:.2} ms; \
                 first caught up over {feed} events in {:.2} s",
                caught_up.as_secs_f64()
            ),
        })
    }
}

/// A projection that only counts, for catch-up speed.
pub(crate) struct NoOp {
    pub(crate) seen: Arc<AtomicU64>,
}

impl Projection for NoOp {
    const NAME: &'static str = "bench_noop";
    const EVENT_TYPES: &'static [&'static str] = &[];
}

impl Dispatch<PgConnection> for NoOp {
    async fn dispatch(&self, _: &RecordedEvent, _: &mut PgConnection) -> Result<(), BoxError> {
        self.seen.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl Reset<PgConnection> for NoOp {
    async fn reset(&self, _: &mut PgConnection) -> Result<(), BoxError> {
        Ok(())
    }
}

/// A projection that measures how long after its append each event arrives.
struct Probe {
    clock: Instant,
    latencies: Arc<Mutex<Vec<f64>>>,
}

impl Projection for Probe {
    const NAME: &'static str = "bench_probe";
    const EVENT_TYPES: &'static [&'static str] = &["Probed"];
}

impl Dispatch<()> for Probe {
    async fn dispatch(&self, event: &RecordedEvent, (): &mut ()) -> Result<(), BoxError> {
        let sent = event.data["sent_ns"].as_u64().ok_or("sent_ns missing")?;
        let now = u64::try_from(self.clock.elapsed().as_nanos())?;
        let ms = units(now.saturating_sub(sent)) / 1e6;
        self.latencies.lock().map_err(|_| "lock")?.push(ms);
        Ok(())
    }
}

impl Reset<()> for Probe {
    async fn reset(&self, (): &mut ()) -> Result<(), BoxError> {
        Ok(())
    }
}

/// `writers` tasks appending one event at a time with an `Exact` check,
/// each to its own stream named after `prefix`, until `deadline`; returns
/// how many they appended.
pub(crate) fn single_appends(
    store: &PgEventStore,
    writers: u64,
    prefix: &str,
    deadline: Instant,
) -> impl Future<Output = Res<u64>> + use<> {
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            let s = stream(&format!("{prefix}-{w}"));
            tokio::spawn(async move {
                let s = s?;
                let mut version = 0;
                while Instant::now() < deadline {
                    let event = NewEvent::new("Happened", payload(version));
                    store
                        .append(&s, ExpectedVersion::Exact(version), vec![event])
                        .await?;
                    version += 1;
                }
                Ok::<u64, Box<dyn Error + Send + Sync>>(version)
            })
        })
        .collect();
    join_counts(tasks)
}

/// The baseline's single-event writer: `BEGIN; INSERT; COMMIT` into
/// `stream` until `deadline`; returns how many it wrote.
async fn single_inserts(
    raw: &PgPool,
    stream: &str,
    deadline: Instant,
) -> Result<u64, Box<dyn Error + Send + Sync>> {
    let mut version = 0;
    while Instant::now() < deadline {
        baseline::insert_one(raw, stream, int(version + 1), &payload(version)).await?;
        version += 1;
    }
    Ok(version)
}

pub(crate) async fn join_counts(
    tasks: Vec<tokio::task::JoinHandle<Result<u64, Box<dyn Error + Send + Sync>>>>,
) -> Res<u64> {
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    Ok(total)
}

/// A count as a float for rates; counts here stay far below 2^52.
#[allow(
    clippy::cast_precision_loss,
    reason = "benchmark counts are far below 2^52"
)]
pub(crate) fn units(count: u64) -> f64 {
    count as f64
}

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn median_ms(samples: &mut [Duration]) -> f64 {
    samples.sort_unstable();
    samples
        .get(samples.len() / 2)
        .map_or(0.0, |d| d.as_secs_f64() * 1_000.0)
}
