//! `es tail`: the feed, live, until Ctrl-C.

use es_core::{EventStore as _, FeedFilter, Position};
use es_postgres::PgEventStore;
use futures::StreamExt as _;

use crate::args::TailArgs;
use crate::error::CliError;
use crate::output;
use crate::query;
use crate::view::EventView;

/// Where `--from` says to start: after a position, from the start of the
/// feed, or (by default) after its head.
async fn start(store: &PgEventStore, from: Option<&str>) -> Result<Position, CliError> {
    match from {
        None => Ok(store
            .head()
            .await
            .map_err(|e| CliError::store("reading the feed's head", e))?
            .unwrap_or(Position::START)),
        Some("start") => Ok(Position::START),
        Some(text) => text
            .parse()
            .map_err(|e| CliError::Usage(format!("--from: {e}, or `start`"))),
    }
}

/// `es tail`.
pub(super) async fn tail(
    store: &PgEventStore,
    args: &TailArgs,
    json: bool,
) -> Result<(), CliError> {
    let after = start(store, args.from.as_deref()).await?;
    let mut filter = FeedFilter::all();
    if let Some(category) = &args.category {
        filter = filter.category(query::name("category", category)?);
    }
    if !args.event_types.is_empty() {
        for event_type in &args.event_types {
            query::name("event type", event_type)?;
        }
        filter = filter.event_types(args.event_types.iter().cloned());
    }
    let mut events = store.subscribe(after, filter);
    eprintln!("following the feed after {after} (Ctrl-C to stop)");
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            _ = &mut interrupted => break,
            next = events.next() => match next {
                Some(Ok(event)) => {
                    let view = EventView::from(&event);
                    if json {
                        output::json_line(&view)?;
                    } else {
                        output::print(&format!(
                            "{} {}@{} {} v{} {}\n",
                            view.position,
                            view.stream_id,
                            view.version,
                            view.event_type,
                            view.schema_version,
                            view.data
                        ))?;
                    }
                }
                Some(Err(e)) => return Err(CliError::store("following the feed", e)),
                None => break,
            },
        }
    }
    eprintln!("stopped");
    Ok(())
}
