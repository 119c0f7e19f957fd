//! The typed data layer: one module per table or concern, each building all
//! of its statements once per schema and decoding rows by column name into
//! typed values, with out-of-range values as typed errors. The code above
//! (`store.rs`, `projection/`, `notify.rs`) holds only control flow.

pub(crate) mod catalog;
pub(crate) mod events;
pub(crate) mod feed;
pub(crate) mod listeners;
pub(crate) mod projections;
mod rows;
pub(crate) mod snapshots;
pub(crate) mod versions;

/// Every statement of one schema, built once per store.
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) catalog: catalog::Statements,
    pub(crate) events: events::Statements,
    pub(crate) feed: feed::Statements,
    pub(crate) snapshots: snapshots::Statements,
    pub(crate) projections: projections::Statements,
    pub(crate) listeners: listeners::Statements,
    pub(crate) versions: versions::Statements,
}

impl Statements {
    pub(crate) fn new(schema: &str) -> Self {
        Self {
            catalog: catalog::Statements::new(schema),
            events: events::Statements::new(schema),
            feed: feed::Statements::new(schema),
            snapshots: snapshots::Statements::new(schema),
            projections: projections::Statements::new(schema),
            listeners: listeners::Statements::new(schema),
            versions: versions::Statements::new(schema),
        }
    }
}
