//! PostgreSQL past one server: appends through a transaction-pooling
//! pooler against the same appends on direct sessions, and how far a
//! streaming replica trails the primary.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use es_core::{EventStore, ExpectedVersion, FeedFilter, NewEvent, Position, StreamRead};
use es_postgres::{PgEventStore, PgServers, PgStoreOptions};
use es_postgres_local as local;
use futures::StreamExt as _;
use serde_json::json;

use crate::report::Workload;
use crate::workloads::{Bench, Res, single_appends, stream};

impl Bench {
    /// Single-event appends by `writers` tasks through PgBouncer in
    /// transaction pooling mode, against the same appends on direct
    /// sessions to the same server (the baseline).
    pub(crate) async fn pooler_append(&self, writers: u64, name: &str) -> Res<Workload> {
        let bouncer = local::shared_pooler().await?;
        let servers = PgServers::new(self.url()).pooler(bouncer.url(self.url()));
        let pooled = PgEventStore::connect_servers(&servers, PgStoreOptions::default()).await?;
        let generation = AtomicU64::new(0);
        let run = |store: &PgEventStore, deadline: Instant| {
            let run = generation.fetch_add(1, Ordering::Relaxed);
            single_appends(store, writers, &format!("Pooled{writers}-{run}"), deadline)
        };
        let (through, direct) = self
            .alternate(
                name,
                |deadline| run(&pooled, deadline),
                |deadline| run(self.store(), deadline),
            )
            .await?;
        Ok(Workload::compared(
            name,
            "appends/s",
            through,
            direct,
            None,
            true,
            format!(
                "{writers} writer(s) through PgBouncer 1.18 (transaction pooling: each append \
                 BEGIN, unnamed statement, COMMIT); baseline the same appends on direct sessions"
            ),
        ))
    }

    /// How long after an append returns on the primary a streaming replica
    /// has it: a stream read on the replica, polled, and a subscriber of the
    /// replica's feed against a subscriber of the primary's (the baseline).
    pub(crate) async fn replica_lag(&self) -> Res<Vec<Workload>> {
        let samples = if self.full() { 400 } else { 150 };
        let pair = local::replicated().await?;
        let url = pair.primary().create_database().await?;
        let primary = PgEventStore::connect(&url, PgStoreOptions::default()).await?;
        primary.migrate().await?;
        pair.wait_for_replay().await?;
        let servers = PgServers::new(&url).replica(pair.standby_url(&url));
        let replica = PgEventStore::connect_servers(&servers, PgStoreOptions::default()).await?;
        let on_primary = arrivals(&primary, samples);
        let on_replica = arrivals(&replica, samples);
        let s = stream("Lag-1")?;
        let (mut read, mut sent) = (Vec::new(), Vec::new());
        for n in 0..samples {
            let event = NewEvent::new("Lagged", json!({ "n": n }));
            let appended = primary
                .append(&s, ExpectedVersion::Any, vec![event])
                .await?;
            let at = Instant::now();
            sent.push(at);
            loop {
                let seen = replica
                    .read_stream(
                        &s,
                        StreamRead::forward().from_version(appended.stream_version),
                    )
                    .await?;
                if !seen.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_micros(100)).await;
            }
            read.push(ms(at, Instant::now()));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut live = latencies(&sent, on_replica.await??);
        let mut live_primary = latencies(&sent, on_primary.await??);
        drop((primary, replica));
        tokio::task::spawn_blocking(move || drop(pair)).await?;
        let (read50, read99) = percentiles(&mut read);
        let (live50, live99) = percentiles(&mut live);
        let (base50, base99) = percentiles(&mut live_primary);
        self.say(&format!(
            "replica: read p50 {read50:.2} ms p99 {read99:.2} ms; live p99 {live99:.2} ms against {base99:.2} ms"
        ));
        Ok(vec![
            Workload::measured(
                "replica_read_lag_p99",
                "ms",
                read99,
                format!(
                    "from an append's return on the primary until a stream read on the hot \
                     standby returns it (polled every 0.1 ms), {samples} appends; p50 {read50:.2} ms"
                ),
            ),
            Workload::compared(
                "replica_live_p99",
                "ms",
                live99,
                base99,
                None,
                false,
                format!(
                    "from an append's return until a subscriber of the replica's feed has it \
                     (woken once the standby replayed it); baseline a subscriber of the \
                     primary's feed; p50 {live50:.2} ms against {base50:.2} ms"
                ),
            ),
        ])
    }
}

/// Milliseconds from `from` to `to`.
fn ms(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64() * 1e3
}

/// A task that follows `store`'s feed from the start and notes when each
/// of the first `count` events arrives.
fn arrivals(store: &PgEventStore, count: usize) -> tokio::task::JoinHandle<Res<Vec<Instant>>> {
    let mut subscription = store.subscribe(Position::START, FeedFilter::all());
    tokio::spawn(async move {
        let mut arrived = Vec::with_capacity(count);
        while arrived.len() < count {
            tokio::time::timeout(Duration::from_secs(30), subscription.next())
                .await?
                .ok_or("a subscription ended")??;
            arrived.push(Instant::now());
        }
        Ok(arrived)
    })
}

/// Each event's arrival after its append returned, in milliseconds.
fn latencies(sent: &[Instant], arrived: Vec<Instant>) -> Vec<f64> {
    sent.iter()
        .zip(arrived)
        .map(|(&sent, arrived)| ms(sent, arrived))
        .collect()
}

/// The nearest-rank p50 and p99 of `values`.
fn percentiles(values: &mut [f64]) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |percent: usize| {
        let rank = (values.len() * percent).div_ceil(100).saturating_sub(1);
        values.get(rank).copied().unwrap_or(f64::NAN)
    };
    (at(50), at(99))
}
