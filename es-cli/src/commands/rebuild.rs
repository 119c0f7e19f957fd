//! `es rebuild <name> [--wait]`: ask the projection's runner (in whatever
//! process holds its lease) to rebuild, and follow its progress.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use es_postgres::PgEventStore;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::args::RebuildArgs;
use crate::error::CliError;
use crate::output;
use crate::view::{self, ProjectionView};

/// How often the status is read while waiting.
const POLL: Duration = Duration::from_millis(200);
/// How often a plain progress line is printed without a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(2);

/// What `es rebuild --json` prints.
#[derive(Serialize)]
struct Rebuilt<'a> {
    projection: &'a str,
    requested: bool,
    finished: bool,
    events: Option<u64>,
    seconds: Option<f64>,
}

/// `es rebuild`.
pub(super) async fn rebuild(
    store: &PgEventStore,
    args: &RebuildArgs,
    json: bool,
) -> Result<(), CliError> {
    let name = args.name.as_str();
    let before = view::projection(store, name).await?;
    store
        .request_rebuild(name)
        .await
        .map_err(|e| CliError::store(format!("requesting a rebuild of {name}"), e))?;
    if before.lease_holder.is_none() {
        eprintln!("no runner holds projection {name}'s lease: the rebuild starts when one does");
    }
    if !args.wait {
        if json {
            return output::json(&Rebuilt {
                projection: name,
                requested: true,
                finished: false,
                events: None,
                seconds: None,
            });
        }
        return output::print(&format!(
            "rebuild of projection {name} requested (lease: {})\n",
            before.lease()
        ));
    }
    let started = Instant::now();
    let done = follow(store, name, !json && std::io::stderr().is_terminal()).await?;
    let seconds = started.elapsed().as_secs_f64();
    if json {
        return output::json(&Rebuilt {
            projection: name,
            requested: true,
            finished: true,
            events: Some(done.events_applied),
            seconds: Some(seconds),
        });
    }
    output::print(&format!(
        "rebuilt projection {name}: {} events in {seconds:.1}s ({:.0} events/s), now at {}\n",
        done.events_applied,
        rate(done.events_applied, seconds),
        done.position
    ))
}

fn rate(events: u64, seconds: f64) -> f64 {
    #[allow(clippy::cast_precision_loss)] // a rate to show
    let events = events as f64;
    events / seconds.max(0.001)
}

/// Polls the projection until its rebuild has started and caught up with
/// the feed; shows a bar on a terminal, plain lines otherwise.
async fn follow(store: &PgEventStore, name: &str, bar: bool) -> Result<ProjectionView, CliError> {
    let progress = if bar {
        let style =
            ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} events, {rate}, ETA {eta}")
                .map_err(std::io::Error::other)?
                .with_key(
                    "rate",
                    |state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write| {
                        let _ = write!(out, "{:.0} events/s", state.per_sec());
                    },
                )
                .progress_chars("=> ");
        ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())
            .with_style(style)
            .with_message(format!("rebuilding {name}"))
    } else {
        ProgressBar::hidden()
    };
    let started = Instant::now();
    let mut last_line = Instant::now();
    loop {
        let status = view::projection(store, name).await?;
        if status.state == "failed" {
            progress.abandon();
            return Err(CliError::store(
                format!("rebuilding projection {name}"),
                format!(
                    "the projection failed: {}",
                    status.last_error.as_deref().unwrap_or("no error recorded")
                ),
            ));
        }
        let started_rebuild = !status.rebuild_requested;
        let total = status.events_applied + status.lag;
        if started_rebuild {
            progress.set_length(total);
            progress.set_position(status.events_applied);
            if status.lag == 0 {
                progress.finish_and_clear();
                return Ok(status);
            }
        }
        if !bar && last_line.elapsed() >= PLAIN_EVERY {
            last_line = Instant::now();
            let seconds = started.elapsed().as_secs_f64();
            eprintln!(
                "rebuilding {name}: {} of {total} events, {:.0} events/s{}",
                status.events_applied,
                rate(status.events_applied, seconds),
                if started_rebuild {
                    ""
                } else {
                    " (waiting for its runner)"
                }
            );
        }
        tokio::time::sleep(POLL).await;
    }
}
