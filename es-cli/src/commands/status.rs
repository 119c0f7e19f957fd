//! `es migrate` and `es status`.

use std::fmt::Write as _;

use es_postgres::PgEventStore;
use serde::Serialize;

use crate::error::CliError;
use crate::output::{self, Table, or_dash};
use crate::view::StatusView;

/// What `es migrate --json` prints.
#[derive(Serialize)]
struct Migrated<'a> {
    schema: &'a str,
    applied: Vec<String>,
}

/// `es migrate`.
pub(super) async fn migrate(store: &PgEventStore, json: bool) -> Result<(), CliError> {
    let schema = store.options().schema();
    let pending = store
        .pending_migrations()
        .await
        .map_err(|e| CliError::store("reading the applied migrations", e))?;
    store
        .migrate()
        .await
        .map_err(|e| CliError::store(format!("migrating schema {schema:?}"), e))?;
    if json {
        return output::json(&Migrated {
            schema,
            applied: pending,
        });
    }
    if pending.is_empty() {
        output::print(&format!("schema {schema:?} is up to date\n"))
    } else {
        let mut text = format!("schema {schema:?}: applied {} migrations\n", pending.len());
        for migration in &pending {
            let _ = writeln!(text, "  {migration}");
        }
        output::print(&text)
    }
}

/// `es status`.
pub(super) async fn status(store: &PgEventStore, json: bool) -> Result<(), CliError> {
    let status = StatusView::read(store).await?;
    if json {
        return output::json(&status);
    }
    let mut text = format!(
        "schema      {}\nevents      {}\nstreams     {}\ncategories  {}\nfeed head   {}\nheld back   {} event{}, by {}\n\n",
        status.schema,
        status.events,
        status.streams,
        status.categories.len(),
        or_dash(status.head.as_ref()),
        status.held_back.events,
        if status.held_back.events == 1 {
            ""
        } else {
            "s"
        },
        status.held_back.holder(),
    );
    let mut categories = Table::new(&["CATEGORY", "STREAMS"]);
    for category in &status.categories {
        categories.row(vec![category.name.clone(), category.streams.to_string()]);
    }
    text.push_str(&categories.render());
    text.push('\n');
    text.push_str(&super::projections::table(&status.projections).render());
    output::print(&text)
}
