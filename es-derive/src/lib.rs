//! Derive macros for `es-core`.
//!
//! This crate is an implementation detail of `es-core`, which re-exports its
//! macros behind the default `derive` feature. The derives themselves arrive
//! with their own change; until then the crate exports nothing.
