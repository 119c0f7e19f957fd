//! The store contract, checked against `PgEventStore` on a real server.

mod common;

es_core::conformance_suite!(common::fresh_store);
