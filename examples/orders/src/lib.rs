//! An order-fulfilment service on `es-core` and `es-postgres`, end to end.
//!
//! `cargo run -p orders` runs a scripted [`demo`] against a throwaway
//! PostgreSQL; `cargo run -p orders -- serve` starts the [`http`] API. The
//! crate is a library with a thin `main`, so that its tests run the same
//! demo and drive the same router.
//!
//! - [`domain`]: the `Order` aggregate, its events (one at schema version 2
//!   with an upcaster from version 1), its commands and its rules;
//! - [`projections`]: two read models in PostgreSQL, `order_summaries` and
//!   `customer_totals`, kept exactly once by `es_postgres::ProjectionRunner`;
//! - [`service`]: the [`Shop`](service::Shop) (store and repository) and the
//!   projection runners;
//! - [`http`]: an axum router over the shop, with correlation ids from the
//!   `x-correlation-id` header;
//! - [`demo`]: the scripted tour.
//!
//! The path of a command: an HTTP handler ([`http`]) turns the request into
//! a command and a `CommandContext` → [`Shop::execute`](service::Shop::execute)
//! → `Repository::execute` loads the order (cache, snapshot, tail), calls
//! `Decide` ([`domain`]) and appends the events → the runners read them from
//! the global feed and update the tables ([`projections`]) → `GET` handlers
//! read those tables.
//!
//! ```no_run
//! use es_core::CommandContext;
//! use es_postgres::{PgEventStore, PgStoreOptions};
//! use orders::domain::{AddItem, PlaceOrder};
//! use orders::service::{Projections, Shop, order_stream};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PgEventStore::connect("postgres://localhost/shop", PgStoreOptions::default()).await?;
//! let shop = Shop::open(store).await?;
//! let projections = Projections::start(shop.store());
//!
//! let order = order_stream("1001")?;
//! let context = CommandContext::new().with_correlation_id("checkout-1001");
//! shop.execute(&order, &PlaceOrder { customer_id: "ada".into() }, &context).await?;
//! let outcome = shop
//!     .execute(
//!         &order,
//!         &AddItem { sku: "TEA-01".into(), quantity: 2, unit_price_cents: 450 },
//!         &context,
//!     )
//!     .await?;
//! assert_eq!(outcome.stream_version, 2);
//! projections.stop().await?;
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use es_core::{CommandError, DecodeError, StoreError};
use es_postgres::{MigrateError, ProjectionError};
use es_postgres_local::LocalError;

pub mod coupons;
pub mod demo;
pub mod domain;
pub mod http;
pub mod projections;
pub mod service;
pub mod telemetry;

/// What can go wrong running the service or the demo.
///
/// The larger errors are boxed, so that a `Result` stays small.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No PostgreSQL server could be found or started.
    #[error(transparent)]
    Local(Box<LocalError>),
    /// The event store failed (its migrations, a read, a stored event that
    /// does not decode).
    #[error(transparent)]
    Store(Box<StoreError>),
    /// A query of the read models failed.
    #[error("read model query failed")]
    Sql(#[source] Box<sqlx::Error>),
    /// A command failed.
    #[error(transparent)]
    Command(Box<CommandError<domain::OrderError>>),
    /// An order id is invalid.
    #[error(transparent)]
    OrderId(#[from] service::InvalidOrderId),
    /// A projection runner stopped on an error.
    #[error(transparent)]
    Projection(Box<ProjectionError>),
    /// Something took too long.
    #[error("timed out after {within:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// How long.
        within: Duration,
    },
    /// Writing the output or serving failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The demo saw something other than what it shows.
    #[error("unexpected demo outcome: {0}")]
    Unexpected(String),
}

impl From<MigrateError> for Error {
    fn from(error: MigrateError) -> Self {
        Self::Store(Box::new(error.into()))
    }
}

impl From<DecodeError> for Error {
    fn from(error: DecodeError) -> Self {
        Self::Store(Box::new(error.into()))
    }
}

macro_rules! from_boxed {
    ($($variant:ident($error:ty)),* $(,)?) => {
        $(
            impl From<$error> for Error {
                fn from(error: $error) -> Self {
                    Self::$variant(Box::new(error))
                }
            }
        )*
    };
}

from_boxed!(
    Local(LocalError),
    Store(StoreError),
    Sql(sqlx::Error),
    Command(CommandError<domain::OrderError>),
    Projection(ProjectionError),
);
