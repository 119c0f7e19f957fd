//! PostgreSQL storage for `es-core`.

#[cfg(feature = "local")]
pub mod local;
