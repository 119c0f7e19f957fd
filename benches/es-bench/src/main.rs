//! Measures the framework against a raw-SQL baseline on the same server, in
//! one run, alternating the two so that both see the same machine.
//!
//! `cargo run --release -p es-bench -- [--quick] [--json] [--only NAME]`
//!
//! It uses `DATABASE_URL` when set, or starts a throwaway PostgreSQL cluster.

mod baseline;
mod domain;
mod report;
mod scale;
mod scale_out;
mod workloads;

use std::error::Error;

use clap::Parser;

use crate::report::Workload;

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(about = "The event store against raw SQL on the same server")]
struct Args {
    /// A short run (under 90 seconds of measurement).
    #[arg(long)]
    quick: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Run only the workloads whose name contains this text.
    #[arg(long)]
    only: Option<String>,
    /// Instead of the workloads, fill a store through the API to this many
    /// events and measure every operation at 10,000 events, a fifth of it
    /// and all of it (see BENCHMARKS.md).
    #[arg(long, value_name = "EVENTS")]
    scale: Option<u64>,
}

/// How long each side of a timed workload runs, and how often they alternate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// How long one side runs before the other takes over.
    pub(crate) slice: std::time::Duration,
    /// Slices of each side in a timed workload: many short ones, so that a
    /// drift of the machine (autovacuum, the tables' growth) falls on both.
    pub(crate) slices: u32,
    /// Whether this is a full run: more loads, samples and catch-ups.
    pub(crate) full: bool,
}

fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if let Some(events) = args.scale {
        let report = runtime.block_on(scale::run(events, !args.json))?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            println!("{}", report.table());
        }
        let missed = report.missed();
        if !missed.is_empty() {
            return Err(format!("targets missed: {}", missed.join(", ")).into());
        }
        return Ok(());
    }
    let results: Vec<Workload> = runtime.block_on(async {
        let timing = if args.quick {
            Timing {
                slice: std::time::Duration::from_millis(500),
                slices: 10,
                full: false,
            }
        } else {
            Timing {
                slice: std::time::Duration::from_millis(1_250),
                slices: 12,
                full: true,
            }
        };
        let bench = workloads::Bench::setup(timing, !args.json).await?;
        bench.run_all(args.only.as_deref()).await
    })?;
    if args.json {
        println!("{}", report::json(&results)?);
    } else {
        println!("{}", report::table(&results));
    }
    let missed: Vec<&str> = results
        .iter()
        .filter(|w| w.meets_target() == Some(false))
        .map(|w| w.name.as_str())
        .collect();
    if missed.is_empty() {
        Ok(())
    } else {
        Err(format!("targets missed: {}", missed.join(", ")).into())
    }
}
