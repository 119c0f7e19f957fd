//! `--scale N`: what each operation costs as the store grows.
//!
//! One store is filled through the API in steps (10,000 events, a fifth of
//! `N`, then `N`), and at each size the same operations are measured: single
//! appends, stream reads, feed pages (unfiltered, by category, by a common
//! and a rare event type), a category follower from the start, a projection
//! catching up, and the bytes each event takes on disk. The table gives
//! each figure at each size and its growth from the smallest to the
//! largest; the targets are that no page's p99 grows by more than 1.5x and
//! that a category follower reads at least 150,000 events a second at the
//! largest size.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use es_core::Projection as _;
use es_core::{EventStore, ExpectedVersion, FeedFilter, NewEvent, Position, StreamId, StreamRead};
use es_postgres::{PgEventStore, PgStoreOptions, ProjectionRunner, RunnerOptions};
use es_postgres_local as local;
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;

use crate::workloads::{NoOp, Res};

/// The categories of the filled store and their shares of the appends, in
/// percent.
const CATEGORIES: [(&str, u64); 3] = [("Order", 50), ("Customer", 35), ("Audit", 15)];

/// Streams per category; the appends favour low numbers, so stream lengths
/// range from one event to thousands.
const STREAMS: u64 = 50_000;

/// Concurrent writers while filling.
const WRITERS: u64 = 4;

/// Events per feed page.
const PAGE: usize = 500;

/// Samples per latency figure.
const SAMPLES: usize = 1_000;

/// Untimed reads before the samples of a read.
const WARM_UP: usize = 30;

/// Largest growth of a page's p99 from the smallest size to the largest.
const P99_GROWTH: f64 = 1.5;

/// Slowest acceptable category follower at the largest size, in events/s.
const FOLLOWER: f64 = 150_000.0;

/// A small deterministic generator (xorshift64*), so that every run fills
/// the same store.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Below `n`, favouring low numbers: the product of two uniform picks.
    fn skewed(&mut self, n: u64) -> u64 {
        self.below(n) * self.below(n) / n.max(1)
    }
}

/// One append of the fill: a stream picked with a skew, 1 to 20 events
/// (mostly few), event types of different frequencies.
fn fill_append(rng: &mut Rng, n: u64) -> Res<(StreamId, Vec<NewEvent>)> {
    let pick = rng.below(100);
    let mut share = 0;
    let mut category = CATEGORIES[0].0;
    for (name, percent) in CATEGORIES {
        share += percent;
        if pick < share {
            category = name;
            break;
        }
    }
    let stream = StreamId::from_parts(category, rng.skewed(STREAMS))?;
    let events = 1 + rng.skewed(20);
    let batch = (0..events)
        .map(|i| {
            let kind = match rng.below(100) {
                0 => "Rare",
                1..=9 => "Common2",
                10..=39 => "Common1",
                _ => "Common0",
            };
            NewEvent::new(
                kind,
                json!({ "n": n + i, "amount_cents": 1_250, "sku": "SKU-0001", "note": "a typical small event" }),
            )
        })
        .collect();
    Ok((stream, batch))
}

/// A figure at each size.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) unit: &'static str,
    pub(crate) values: Vec<f64>,
    /// The largest size's value over the smallest's.
    pub(crate) growth: Option<f64>,
    /// The target and whether it is met, if the figure has one.
    pub(crate) target: Option<String>,
    pub(crate) met: Option<bool>,
}

/// The result of a scale run.
#[derive(Debug, Serialize)]
pub(crate) struct ScaleReport {
    pub(crate) sizes: Vec<u64>,
    pub(crate) series: Vec<Series>,
}

impl ScaleReport {
    pub(crate) fn missed(&self) -> Vec<&str> {
        self.series
            .iter()
            .filter(|s| s.met == Some(false))
            .map(|s| s.name.as_str())
            .collect()
    }

    pub(crate) fn table(&self) -> String {
        let mut out = format!("{:<26} {:<10}", "figure", "unit");
        for size in &self.sizes {
            let _ = write!(out, " {size:>11}");
        }
        let _ = writeln!(out, " {:>7}  {:<18} met", "growth", "target");
        for s in &self.series {
            let _ = write!(out, "{:<26} {:<10}", s.name, s.unit);
            for v in &s.values {
                let _ = write!(out, " {:>11}", format_value(*v));
            }
            let growth = s
                .growth
                .map_or_else(|| "-".to_owned(), |g| format!("{g:.2}x"));
            let met = match s.met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            };
            let _ = writeln!(
                out,
                " {growth:>7}  {:<18} {met}",
                s.target.as_deref().unwrap_or("-")
            );
        }
        out
    }
}

fn format_value(v: f64) -> String {
    if v >= 1_000.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The sizes measured for a run to `target` events.
pub(crate) fn sizes(target: u64) -> Vec<u64> {
    let mut sizes = vec![10_000.min(target), target / 5, target];
    sizes.retain(|&s| s >= 1_000.min(target));
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// Fills a store step by step and measures it at each size.
pub(crate) async fn run(target: u64, verbose: bool) -> Res<ScaleReport> {
    let say = |text: &str| {
        if verbose {
            eprintln!("{text}");
        }
    };
    let url = local::shared().await?.create_database().await?;
    let store = PgEventStore::connect(&url, PgStoreOptions::default()).await?;
    store.migrate().await?;
    let sizes = sizes(target);
    let mut rows: Vec<(String, &'static str, Vec<f64>)> = Vec::new();
    let mut filled = 0;
    for (step, &size) in sizes.iter().enumerate() {
        let started = Instant::now();
        filled = fill(&store, filled, size).await?;
        say(&format!(
            "scale: {filled} events after {:.0} s of filling",
            started.elapsed().as_secs_f64()
        ));
        // As after a bulk load in production: vacuumed and analyzed, and
        // the pages that wrote out (a checkpoint), so that the timings
        // measure the store rather than the aftermath of the fill.
        for settle in ["VACUUM ANALYZE es.events", "CHECKPOINT"] {
            sqlx::raw_sql(settle).execute(store.pool()).await?;
        }
        let figures = measure(&store, step, &say).await?;
        for (index, (name, unit, value)) in figures.into_iter().enumerate() {
            if step == 0 {
                rows.push((name, unit, Vec::new()));
            }
            rows[index].2.push(value);
        }
    }
    let series = rows
        .into_iter()
        .map(|(name, unit, values)| judge(name, unit, values))
        .collect();
    Ok(ScaleReport { sizes, series })
}

/// A series with its growth and, for the figures that have one, its target.
fn judge(name: String, unit: &'static str, values: Vec<f64>) -> Series {
    let growth = match (values.first(), values.last()) {
        (Some(&first), Some(&last)) if first > 0.0 && values.len() > 1 => Some(last / first),
        _ => None,
    };
    let (target, met) = if name.starts_with("page_") && name.ends_with("_p99") {
        (
            Some(format!("growth <= {P99_GROWTH}x")),
            growth.map(|g| g <= P99_GROWTH),
        )
    } else if name == "category_follower" {
        (
            Some(format!(">= {FOLLOWER:.0} at end")),
            values.last().map(|&v| v >= FOLLOWER),
        )
    } else {
        (None, None)
    };
    Series {
        name,
        unit,
        values,
        growth,
        target,
        met,
    }
}

/// Appends until the store holds at least `size` events (counting from
/// `filled`), with [`WRITERS`] concurrent writers; returns the count.
async fn fill(store: &PgEventStore, filled: u64, size: u64) -> Res<u64> {
    let written = Arc::new(AtomicU64::new(filled));
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        let written = Arc::clone(&written);
        writers.push(tokio::spawn(async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (filled + 1) ^ (writer << 40));
            while written.load(Ordering::Relaxed) < size {
                let n = written.load(Ordering::Relaxed);
                let (stream, batch) = fill_append(&mut rng, n)?;
                let count = batch.len() as u64;
                store.append(&stream, ExpectedVersion::Any, batch).await?;
                written.fetch_add(count, Ordering::Relaxed);
            }
            Res::Ok(())
        }));
    }
    for writer in writers {
        writer.await??;
    }
    Ok(written.load(Ordering::Relaxed))
}

/// The figures at one size, in a fixed order: (name, unit, value).
async fn measure(
    store: &PgEventStore,
    step: usize,
    say: &dyn Fn(&str),
) -> Res<Vec<(String, &'static str, f64)>> {
    // Appends come last: the reads see only the filled store, and no
    // automatic ANALYZE started by the appends holds the feed's horizon
    // back while they are timed.
    let mut figures = Vec::new();
    let (p50, p99) = stream_reads(store).await?;
    figures.push(("stream_read_10_p50".to_owned(), "ms", p50));
    figures.push(("stream_read_10_p99".to_owned(), "ms", p99));
    let filters = [
        ("all", FeedFilter::all()),
        ("category", FeedFilter::all().category("Customer")),
        ("small_category", FeedFilter::all().category("Audit")),
        ("common_type", FeedFilter::all().event_types(["Common0"])),
        ("rare_type", FeedFilter::all().event_types(["Rare"])),
    ];
    let positions = random_positions(store).await?;
    for (name, filter) in &filters {
        if let Some(&after) = positions.first() {
            let plan = store.explain_feed(after, filter, PAGE).await?;
            say(&format!(
                "scale:   plan of a {name} page: {}",
                plan_shape(&plan[0]["Plan"])
            ));
        }
    }
    let filters_only: Vec<&FeedFilter> = filters.iter().map(|(_, filter)| filter).collect();
    let pages = feed_pages(store, &positions, &filters_only).await?;
    for ((name, _), (p50, p99)) in filters.iter().zip(pages) {
        figures.push((format!("page_{name}_p50"), "ms", p50));
        figures.push((format!("page_{name}_p99"), "ms", p99));
    }
    figures.push((
        "category_follower".to_owned(),
        "events/s",
        follower(store).await?,
    ));
    figures.push((
        "projection_catchup".to_owned(),
        "events/s",
        catch_up(store).await?,
    ));
    figures.push((
        "bytes_per_event".to_owned(),
        "bytes",
        bytes_per_event(store).await?,
    ));
    for writers in [1, 8] {
        let (rate, p99) = single_appends(store, step, writers).await?;
        figures.push((format!("append_single_{writers}w"), "appends/s", rate));
        figures.push((format!("append_single_{writers}w_p99"), "ms", p99));
    }
    for (name, unit, value) in &figures {
        say(&format!("scale:   {name} {value:.2} {unit}"));
    }
    Ok(figures)
}

/// The `percent`th percentile of `samples`, in milliseconds.
fn percentile(samples: &mut [Duration], percent: usize) -> f64 {
    samples.sort_unstable();
    let index = (samples.len().saturating_sub(1) * percent).div_ceil(100);
    samples
        .get(index)
        .map_or(0.0, |d| d.as_secs_f64() * 1_000.0)
}

/// A count as a float, for rates.
fn float(count: u64) -> f64 {
    crate::workloads::units(count)
}

/// Single-event appends with an `Exact` check, each writer on a stream of
/// its own, for two seconds: appends/s and the p99 latency.
async fn single_appends(store: &PgEventStore, step: usize, writers: u64) -> Res<(f64, f64)> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let stream = StreamId::new(format!("Single-{step}x{writers}x{writer}"))?;
            let mut latencies = Vec::new();
            let mut version = 0;
            while Instant::now() < deadline {
                let event = NewEvent::new("Probed", json!({ "n": version }));
                let sent = Instant::now();
                store
                    .append(&stream, ExpectedVersion::Exact(version), vec![event])
                    .await?;
                latencies.push(sent.elapsed());
                version += 1;
            }
            Res::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let rate = float(u64::try_from(latencies.len())?) / started.elapsed().as_secs_f64();
    Ok((rate, percentile(&mut latencies, 99)))
}

/// Reads of the newest 10 events of streams that have at least 10, picked
/// at random: the same work at every size, wherever the streams' events
/// lie in the table.
async fn stream_reads(store: &PgEventStore) -> Res<(f64, f64)> {
    let streams: Vec<String> = sqlx::query_scalar(
        "SELECT stream_id FROM es.events WHERE version = 10 AND stream_id NOT LIKE 'Single-%' \
         ORDER BY md5(stream_id) LIMIT 500",
    )
    .fetch_all(store.pool())
    .await?;
    let streams = streams
        .into_iter()
        .map(StreamId::new)
        .collect::<Result<Vec<_>, _>>()?;
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let mut latencies = Vec::with_capacity(SAMPLES);
    for n in 0..SAMPLES + WARM_UP {
        let pick = usize::try_from(rng.below(u64::try_from(streams.len())?))?;
        let Some(stream) = streams.get(pick) else {
            return Err("no stream has 10 events".into());
        };
        let started = Instant::now();
        let read = store
            .read_stream(stream, StreamRead::backward().limit(10))
            .await?;
        if n >= WARM_UP {
            latencies.push(started.elapsed());
        }
        if read.len() != 10 {
            return Err(format!("{stream} read {} events, not 10", read.len()).into());
        }
    }
    Ok((
        percentile(&mut latencies, 50),
        percentile(&mut latencies, 99),
    ))
}

/// Positions of events picked at random over the whole store.
async fn random_positions(store: &PgEventStore) -> Res<Vec<Position>> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT tx_id::text::bigint, seq FROM es.events \
         TABLESAMPLE BERNOULLI (least(100, 100.0 * $1 / greatest(1, \
           (SELECT reltuples FROM pg_class WHERE oid = 'es.events'::regclass)))) \
         REPEATABLE (7)",
    )
    .bind(i32::try_from(3 * (SAMPLES + WARM_UP))?)
    .fetch_all(store.pool())
    .await?;
    rows.into_iter()
        .map(|(tx, seq)| {
            Ok(Position::from_parts(
                u64::try_from(tx)?,
                u64::try_from(seq)?,
            ))
        })
        .collect()
}

/// A plan's steps in one line: each step's type, the index or table it
/// reads, and the rows it read, with its inputs in brackets.
fn plan_shape(plan: &serde_json::Value) -> String {
    let kind = plan["Node Type"].as_str().unwrap_or("?");
    let on = plan["Index Name"]
        .as_str()
        .or_else(|| plan["Relation Name"].as_str())
        .map_or_else(String::new, |name| format!(" {name}"));
    let rows =
        plan["Actual Rows"].as_f64().unwrap_or(0.0) * plan["Actual Loops"].as_f64().unwrap_or(1.0);
    let inputs: Vec<String> = plan["Plans"]
        .as_array()
        .into_iter()
        .flatten()
        .map(plan_shape)
        .collect();
    if inputs.is_empty() {
        format!("{kind}{on} ({rows:.0})")
    } else {
        format!("{kind}{on} ({rows:.0}) [{}]", inputs.join("; "))
    }
}

/// Pages of [`PAGE`] events read after events picked at random, for each
/// filter: its p50 and p99. The filters take turns, one page each, so that
/// a passing disturbance of the machine falls on all of them.
async fn feed_pages(
    store: &PgEventStore,
    positions: &[Position],
    filters: &[&FeedFilter],
) -> Res<Vec<(f64, f64)>> {
    let mut rng = Rng(0xfeed_0000_0000_0001);
    let mut latencies = vec![Vec::with_capacity(SAMPLES); filters.len()];
    // Untimed reads first: each pooled connection prepares the statements
    // on its first use.
    for n in 0..SAMPLES + WARM_UP {
        for (filter, samples) in filters.iter().zip(&mut latencies) {
            let pick = usize::try_from(rng.below(u64::try_from(positions.len())?))?;
            let after = positions.get(pick).copied().unwrap_or(Position::START);
            let started = Instant::now();
            store.read_feed(after, filter, PAGE).await?;
            if n >= WARM_UP {
                samples.push(started.elapsed());
            }
        }
    }
    Ok(latencies
        .iter_mut()
        .map(|samples| (percentile(samples, 50), percentile(samples, 99)))
        .collect())
}

/// A subscription to the `Customer` category from the start, until it has
/// delivered every event the category held: events/s.
async fn follower(store: &PgEventStore) -> Res<f64> {
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM es.events WHERE split_part(stream_id, '-', 1) = 'Customer'",
    )
    .fetch_one(store.pool())
    .await?;
    let total = u64::try_from(total)?;
    let started = Instant::now();
    let mut subscription = store.subscribe(Position::START, FeedFilter::all().category("Customer"));
    let mut seen = 0;
    while seen < total {
        match subscription.next().await {
            Some(event) => {
                event?;
                seen += 1;
            }
            None => return Err("the subscription ended".into()),
        }
    }
    Ok(float(seen) / started.elapsed().as_secs_f64())
}

/// A projection runner with a handler that only counts, from the start of
/// the feed to its end: events/s.
async fn catch_up(store: &PgEventStore) -> Res<f64> {
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM es.events")
        .fetch_one(store.pool())
        .await?;
    let total = u64::try_from(total)?;
    let seen = Arc::new(AtomicU64::new(0));
    // From the start at every size.
    store.request_rebuild(NoOp::NAME).await?;
    let noop = NoOp {
        seen: Arc::clone(&seen),
    };
    let started = Instant::now();
    let runner = ProjectionRunner::new(
        store.clone(),
        noop,
        RunnerOptions::default().batch_size(500),
    )
    .spawn();
    while seen.load(Ordering::Relaxed) < total {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = float(total) / started.elapsed().as_secs_f64();
    runner.stop().await?;
    Ok(rate)
}

/// The events table with its indexes and toasted data, per event.
async fn bytes_per_event(store: &PgEventStore) -> Res<f64> {
    let (bytes, events): (i64, i64) = sqlx::query_as(
        "SELECT pg_total_relation_size('es.events'), (SELECT count(*) FROM es.events)",
    )
    .fetch_one(store.pool())
    .await?;
    Ok(float(u64::try_from(bytes)?) / float(u64::try_from(events.max(1))?))
}
