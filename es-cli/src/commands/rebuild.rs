//! `es rebuild <name> [--wait]`: ask the projection's runner (in whatever
//! process holds its lease) to rebuild, and follow its progress.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use es_postgres::{PgEventStore, ProjectionState};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::args::RebuildArgs;
use crate::error::CliError;
use crate::output;
use crate::view::{self, ProjectionView};

/// How often the status is read while waiting.
const POLL: Duration = Duration::from_millis(500);
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

/// Polls the projection until its rebuild has started and reached the
/// feed's head as it was when the rebuild was asked for (or caught up);
/// shows a bar on a terminal, plain lines otherwise (the first at once).
async fn follow(store: &PgEventStore, name: &str, bar: bool) -> Result<ProjectionView, CliError> {
    let target = store
        .head()
        .await
        .map_err(|e| CliError::store("reading the feed's head", e))?;
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
        ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr()).with_style(style)
    } else {
        ProgressBar::hidden()
    };
    let started = Instant::now();
    let mut last_line: Option<Instant> = None;
    loop {
        let Some(status) = store
            .projection_status(name)
            .await
            .map_err(|e| CliError::store(format!("reading projection {name}"), e))?
        else {
            return Err(view::unknown_projection(name));
        };
        let rebuilding = !status.rebuild_requested;
        if rebuilding && status.state == ProjectionState::Failed {
            progress.abandon();
            return Err(CliError::store(
                format!("rebuilding projection {name}"),
                format!(
                    "the projection failed: {}",
                    status.last_error.as_deref().unwrap_or("no error recorded")
                ),
            ));
        }
        let total = status.events_applied + status.lag;
        let reached = status.lag == 0 || target.is_none_or(|head| status.position >= head);
        if rebuilding && reached {
            progress.finish_and_clear();
            return Ok(ProjectionView::from(&status));
        }
        let doing = match (rebuilding, status.active) {
            (true, _) => format!("rebuilding {name}"),
            (false, true) => format!("rebuild of {name} requested, waiting for its runner"),
            (false, false) => format!("rebuild of {name} requested; no runner holds its lease"),
        };
        progress.set_message(doing.clone());
        progress.set_length(total);
        progress.set_position(status.events_applied);
        if !bar && last_line.is_none_or(|at| at.elapsed() >= PLAIN_EVERY) {
            last_line = Some(Instant::now());
            let seconds = started.elapsed().as_secs_f64();
            eprintln!(
                "{doing}: {} of {total} events, {:.0} events/s",
                status.events_applied,
                rate(status.events_applied, seconds),
            );
        }
        tokio::time::sleep(POLL).await;
    }
}
