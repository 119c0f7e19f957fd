//! The store contract, checked against `MemoryStore`.

use es_core::MemoryStore;

es_core::conformance_suite!(|| async { MemoryStore::new() });
