//! `es projections` and `es projection <name>`.

use es_postgres::PgEventStore;

use crate::error::CliError;
use crate::output::{self, Table, or_dash};
use crate::view::{self, ProjectionView};

/// The projections as a table.
pub(super) fn table(projections: &[ProjectionView]) -> Table {
    let mut table = Table::new(&[
        "PROJECTION",
        "STATE",
        "POSITION",
        "LAG",
        "PARKED",
        "LEASE",
        "LAST ERROR",
    ]);
    for p in projections {
        table.row(vec![
            p.name.clone(),
            p.state.clone(),
            p.position.clone(),
            p.lag.to_string(),
            p.parked.to_string(),
            p.lease(),
            or_dash(p.last_error.as_ref()),
        ]);
    }
    table
}

/// `es projections`.
pub(super) async fn list(store: &PgEventStore, json: bool) -> Result<(), CliError> {
    let projections = view::projections(store).await?;
    if json {
        return output::json(&projections);
    }
    table(&projections).print()
}

/// `es projection <name>`.
pub(super) async fn show(store: &PgEventStore, name: &str, json: bool) -> Result<(), CliError> {
    let p = view::projection(store, name).await?;
    if json {
        return output::json(&p);
    }
    let types = if p.event_types.is_empty() {
        "(all)".to_owned()
    } else {
        p.event_types.join(", ")
    };
    output::print(&format!(
        "projection        {}\nstate             {}\nposition          {}\nlag               {}\n\
         events applied    {}\nparked            {}\nlease holder      {}\nlast error        {}\n\
         rebuild requested {}\nevent types       {}\nupdated at        {}\n",
        p.name,
        p.state,
        p.position,
        p.lag,
        p.events_applied,
        p.parked,
        p.lease(),
        or_dash(p.last_error.as_ref()),
        if p.rebuild_requested { "yes" } else { "no" },
        types,
        p.updated_at,
    ))
}
