//! `es streams` and `es stream <id>`.

use std::fmt::Write as _;

use es_postgres::PgEventStore;

use crate::args::{StreamArgs, StreamsArgs};
use crate::error::CliError;
use crate::output::{self, Table};
use crate::query::{self, StreamPage};
use crate::view::StreamView;

/// `es streams`.
pub(super) async fn list(
    store: &PgEventStore,
    args: &StreamsArgs,
    json: bool,
) -> Result<(), CliError> {
    let streams = query::streams(
        store,
        args.category.as_deref(),
        args.after.as_deref(),
        args.limit,
    )
    .await?;
    if json {
        return output::json(&streams);
    }
    table(&streams).print()
}

fn table(streams: &[StreamView]) -> Table {
    let mut table = Table::new(&["STREAM", "CATEGORY", "VERSION", "CREATED", "UPDATED"]);
    for s in streams {
        table.row(vec![
            s.stream_id.clone(),
            s.category.clone(),
            s.version.to_string(),
            s.created_at.clone(),
            s.updated_at.clone(),
        ]);
    }
    table
}

/// `es stream <id>`.
pub(super) async fn show(
    store: &PgEventStore,
    args: &StreamArgs,
    json: bool,
) -> Result<(), CliError> {
    let page: StreamPage =
        query::stream_page(store, &args.id, args.from, args.backward, args.limit).await?;
    if json {
        return output::json(&page);
    }
    let mut text = format!(
        "stream {} (version {}, {} events shown)\n",
        page.stream_id,
        page.version,
        page.events.len()
    );
    for event in &page.events {
        let _ = writeln!(
            text,
            "\n#{} {} v{}  position {}  {}  id {}",
            event.version,
            event.event_type,
            event.schema_version,
            event.position,
            event.recorded_at,
            event.event_id,
        );
        if event.has_metadata() {
            let _ = writeln!(text, "metadata {}", event.pretty_metadata());
        }
        text.push_str(&event.pretty_data());
        text.push('\n');
    }
    output::print(&text)
}
