//! Running projections against the PostgreSQL store: checkpoints, a lease
//! per projection, the error policy, rebuilds and status.
//!
//! A [`ProjectionRunner`] reads the global feed from the projection's
//! checkpoint in batches (only the projection's event types: the filter is
//! part of the SQL), then follows it live. Each batch is applied in one
//! transaction that also stores the new checkpoint:
//!
//! - [`ExactlyOnce`] ([`ProjectionRunner::new`]): the handler gets that
//!   transaction (`&mut PgConnection`) and writes its read model in it, so
//!   each event's effect is committed exactly once with the checkpoint;
//! - [`AtLeastOnce`] ([`ProjectionRunner::at_least_once`]): the handler
//!   writes elsewhere (`&mut ()`); a crash between its effect and the
//!   checkpoint's commit delivers the event again, so the handler
//!   deduplicates by event id.
//!
//! Only one runner per projection name processes at any moment: it holds a
//! session advisory lock on a dedicated connection, and applies its batches
//! *on that connection*, so a runner that lost its lease cannot commit. The
//! others stand by and take over when the holder's connection closes.
//!
//! [`ProjectionRunner::spawn`] returns a [`ProjectionHandle`] that stops,
//! inspects and rebuilds the projection; the store itself answers for every
//! projection it knows ([`PgEventStore::projection_statuses`], parked events,
//! rebuild requests), without the projections at hand.
//!
//! The modules: `options` (policy and batch size), `delivery` (the two
//! modes), `lease`, `read_ahead`, `runner` (the run loop), `apply` (the
//! error policy, parking, retries of parked events), `status` (what the
//! store answers), `handle`.
//!
//! A PostgreSQL read model handles its events in the transaction that also
//! moves its checkpoint, and truncates its table for a rebuild:
//!
//! ```no_run
//! use es_core::{BoxError, Event, Handle, Projection, RecordedEvent, Reset};
//! use es_postgres::{PgEventStore, PgStoreOptions, ProjectionRunner, RunnerOptions};
//! use serde::{Deserialize, Serialize};
//! use sqlx::PgConnection;
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! struct Deposited { cents: i64 }
//!
//! #[derive(Debug, Event)]
//! enum AccountEvent { Deposited(Deposited) }
//!
//! // `CREATE TABLE balances (account text PRIMARY KEY, cents bigint NOT NULL)`
//! #[derive(Projection)]
//! #[es(name = "balances", handles(AccountEvent::Deposited))]
//! struct Balances;
//!
//! impl Handle<Deposited, PgConnection> for Balances {
//!     async fn handle(
//!         &self,
//!         deposit: Deposited,
//!         envelope: &RecordedEvent,
//!         tx: &mut PgConnection,
//!     ) -> Result<(), BoxError> {
//!         sqlx::query(
//!             "INSERT INTO balances (account, cents) VALUES ($1, $2) \
//!              ON CONFLICT (account) DO UPDATE SET cents = balances.cents + EXCLUDED.cents",
//!         )
//!         .bind(envelope.stream_id.as_str())
//!         .bind(deposit.cents)
//!         .execute(tx)
//!         .await?;
//!         Ok(())
//!     }
//! }
//!
//! impl Reset<PgConnection> for Balances {
//!     async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
//!         sqlx::query("TRUNCATE balances").execute(tx).await?;
//!         Ok(())
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PgEventStore::connect("postgres://localhost/app", PgStoreOptions::default()).await?;
//! store.migrate().await?;
//! let balances = ProjectionRunner::new(store, Balances, RunnerOptions::default()).spawn();
//!
//! // Later: how far behind is it?
//! let status = balances.status().await?;
//! println!("{} at {}, {} events behind", status.name, status.position, status.lag);
//!
//! // Ask for a rebuild, then shut down after the batch in progress.
//! balances.rebuild().await?;
//! balances.stop().await?;
//! # Ok(())
//! # }
//! ```

mod apply;
mod delivery;
mod handle;
mod lease;
mod options;
mod read_ahead;
mod runner;
mod signal;
mod status;
mod versions;

use es_core::{Position, StoreError};

pub use crate::data::projections::{LeaseHolder, ParkedEvent, ProjectionState};
pub use delivery::{AtLeastOnce, Delivery, ExactlyOnce};
pub use handle::ProjectionHandle;
pub use options::{ErrorPolicy, OnFailure, RunnerOptions};
pub use runner::ProjectionRunner;
pub use status::ProjectionStatus;
pub use versions::projection_key;

#[cfg(doc)]
use crate::PgEventStore;
use crate::data::projections::Failed;

/// Why a runner stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// An event kept failing and the policy is [`OnFailure::Stop`]. The
    /// checkpoint stays before it.
    #[error(
        "projection {projection} stopped at event {event_id} ({event_type}, stream {stream_id} version {version}, position {position}) after {attempts} attempts: {error}"
    )]
    Stopped {
        /// The projection.
        projection: String,
        /// The failing event.
        event_id: uuid::Uuid,
        /// Its type.
        event_type: String,
        /// Its stream.
        stream_id: String,
        /// Its version in the stream.
        version: u64,
        /// Its position in the feed.
        position: Position,
        /// How many times it was tried.
        attempts: u32,
        /// The handler's last error.
        error: String,
    },
    /// The reset hook of a rebuild failed; nothing was changed.
    #[error("resetting projection {projection} for a rebuild failed: {error}")]
    Reset {
        /// The projection.
        projection: String,
        /// The hook's error.
        error: String,
    },
    /// The switch hook of a new version failed; the previous version
    /// keeps serving.
    #[error("switching projection {projection} to version {version} failed: {error}")]
    Switch {
        /// The projection.
        projection: String,
        /// The version that was to take over.
        version: u32,
        /// The hook's error.
        error: String,
    },
    /// Reading the feed or the projection's own records failed with an
    /// error that retrying cannot fix.
    #[error("projection {projection} could not read the feed or its records")]
    Store {
        /// The projection.
        projection: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// The runner's task panicked (see [`ProjectionHandle`]).
    #[error("the runner of projection {projection} panicked: {error}")]
    Panicked {
        /// The projection.
        projection: String,
        /// What the task's join reported.
        error: String,
    },
}

/// Why a leased runner's loop ended.
enum Stop {
    /// The database failed (a lost connection, a server error): stand by,
    /// then take the lease again and resume from the checkpoint.
    Db(String),
    /// A store error that retrying cannot fix: stop the runner with it.
    Store(StoreError),
    /// Stop the runner with this error.
    Fatal(ProjectionError),
    /// The shutdown future completed.
    ShutDown,
    /// A newer version serves: this one ends.
    Retired {
        /// The version served.
        serving: u32,
    },
}

impl Stop {
    /// A store error: retrying may fix a transient one; any other stops
    /// the runner.
    fn store(error: StoreError) -> Self {
        if error.is_transient() {
            Self::Db(error.to_string())
        } else {
            Self::Store(error)
        }
    }
}

impl From<sqlx::Error> for Stop {
    fn from(error: sqlx::Error) -> Self {
        Self::Db(error.to_string())
    }
}

impl From<Failed> for Stop {
    fn from(failed: Failed) -> Self {
        match failed {
            Failed::Database(error) => Self::Db(error.to_string()),
            Failed::Corrupt(error) => Self::store(error),
        }
    }
}
