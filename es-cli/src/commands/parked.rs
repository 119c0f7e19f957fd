//! `es parked <name> [retry <id>|--all | discard <id>]`.

use es_postgres::PgEventStore;
use serde::Serialize;

use super::confirm;
use crate::args::{ParkedAction, ParkedArgs};
use crate::error::CliError;
use crate::output::{self, Table};
use crate::view::{self, ParkedView};

/// What `es parked ... --json` prints for an action.
#[derive(Serialize)]
struct Acted<'a> {
    projection: &'a str,
    action: &'static str,
    ids: Vec<i64>,
}

/// `es parked`.
pub(super) async fn parked(
    store: &PgEventStore,
    args: &ParkedArgs,
    json: bool,
) -> Result<(), CliError> {
    let name = args.name.as_str();
    // An unknown projection is an error, not an empty list.
    view::projection(store, name).await?;
    let parked = list(store, name).await?;
    match &args.action {
        None if json => output::json(&parked),
        None => table(&parked).print(),
        Some(ParkedAction::Retry { id, all }) => {
            let ids: Vec<i64> = if *all {
                parked.iter().map(|p| p.id).collect()
            } else {
                id.iter().copied().collect()
            };
            for &id in &ids {
                let found = store
                    .retry_parked(name, id)
                    .await
                    .map_err(|e| CliError::store(format!("retrying parked event {id}"), e))?;
                if !found {
                    return Err(unknown_parked(name, id));
                }
            }
            report(json, name, "retry", ids, "retry requested for")
        }
        Some(ParkedAction::Discard { id, yes }) => {
            let Some(event) = parked.iter().find(|p| p.id == *id) else {
                return Err(unknown_parked(name, *id));
            };
            if !yes {
                confirm(
                    &format!(
                        "discard parked event {id} ({} {}@{}) of projection {name} for good?",
                        event.event_type, event.stream_id, event.version
                    ),
                    "nothing discarded",
                )?;
            }
            if !store
                .discard_parked(name, *id)
                .await
                .map_err(|e| CliError::store(format!("discarding parked event {id}"), e))?
            {
                return Err(unknown_parked(name, *id));
            }
            report(json, name, "discard", vec![*id], "discarded")
        }
    }
}

async fn list(store: &PgEventStore, name: &str) -> Result<Vec<ParkedView>, CliError> {
    let parked = store
        .parked_events(name)
        .await
        .map_err(|e| CliError::store(format!("listing the parked events of {name}"), e))?;
    Ok(parked.iter().map(ParkedView::from).collect())
}

fn table(parked: &[ParkedView]) -> Table {
    let mut table = Table::new(&[
        "ID", "EVENT", "STREAM", "VERSION", "POSITION", "ATTEMPTS", "RETRY", "ERROR",
    ]);
    for p in parked {
        table.row(vec![
            p.id.to_string(),
            p.event_type.clone(),
            p.stream_id.clone(),
            p.version.to_string(),
            p.position.clone(),
            p.attempts.to_string(),
            if p.retry_requested { "requested" } else { "-" }.to_owned(),
            p.error.clone(),
        ]);
    }
    table
}

fn report(
    json: bool,
    projection: &str,
    action: &'static str,
    ids: Vec<i64>,
    done: &str,
) -> Result<(), CliError> {
    if json {
        return output::json(&Acted {
            projection,
            action,
            ids,
        });
    }
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    if ids.is_empty() {
        return output::print(&format!("projection {projection} has no parked events\n"));
    }
    let noun = if ids.len() == 1 { "event" } else { "events" };
    output::print(&format!(
        "{done} parked {noun} {} of projection {projection}\n",
        ids.join(", ")
    ))
}

fn unknown_parked(name: &str, id: i64) -> CliError {
    CliError::NotFound(format!(
        "projection {name} has no parked event {id} (see `es parked {name}`)"
    ))
}
