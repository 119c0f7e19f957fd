//! Versioned rebuilds: a new version of a projection builds alongside the
//! one served and takes over once caught up; the old one's data is then
//! dropped.
//!
//! Each version runs under its own key ([`projection_key`]): its own
//! checkpoint, lease and dead letters, so the two never touch each other's
//! records. `projection_versions` says which version readers are served.
//! A runner decides its role when it takes its lease ([`Role`]):
//!
//! - serving: it runs as any runner does;
//! - building (a newer version than the one served): it catches up, and
//!   at its first idle turn once caught up (with no parked events) takes
//!   over: in one transaction it locks the row, runs the projection's
//!   switch hook and records its version as served, and wakes every runner
//!   of the schema;
//! - retired (older than the one served): it ends, checking at each idle
//!   turn and every few seconds between batches, so the runner of the
//!   replaced version ends at the wake-up that the switch sends.
//!
//! The serving runner retires every older version whose records remain,
//! each once no runner of it holds its lease: it takes that lease itself,
//! runs the retire hook and forgets that version's checkpoint and dead
//! letters in one transaction.

use std::time::Duration;

use es_core::Projection;
use sqlx::{Connection as _, PgConnection};

use super::delivery::Delivery;
use super::{ProjectionError, ProjectionRunner, Stop};
use crate::PgEventStore;
use crate::data::projections::{self, Failed};
use crate::data::versions::{self, Versions};
use crate::error::read_error;
use es_core::StoreError;

/// The key under which version `P::VERSION` of projection `P` keeps its
/// checkpoint, lease and dead letters, and under which its status is
/// listed: the projection's name for version 1, `name@vN` for version `N`
/// after it.
#[must_use]
pub fn projection_key<P: Projection>() -> String {
    key(P::NAME, P::VERSION)
}

/// How the store's projection API names version `P::VERSION` of `P`,
/// whichever version serves: `name@vN`.
pub(super) fn address<P: Projection>() -> String {
    format!("{}@v{}", P::NAME, P::VERSION)
}

fn key(name: &str, version: u32) -> String {
    if version == 1 {
        name.to_owned()
    } else {
        format!("{name}@v{version}")
    }
}

impl PgEventStore {
    /// The key of the run that `name` addresses in the store's projection
    /// API: `name@vN` addresses version `N`; a bare name, the version
    /// served (the name itself when no version has been recorded).
    pub(super) async fn resolve_projection(
        &self,
        name: &str,
        operation: &'static str,
    ) -> Result<String, StoreError> {
        if let Some((base, version)) = name.rsplit_once("@v")
            && let Ok(version) = version.parse::<u32>()
        {
            return Ok(key(base, version));
        }
        let mut conn = (self.pool().acquire().await).map_err(|e| read_error(operation, e))?;
        let row = versions::read(&mut conn, &self.statements().versions, name)
            .await
            .map_err(|e| e.into_store_error(operation))?;
        Ok(row.map_or_else(|| name.to_owned(), |row| key(name, row.serving)))
    }
}

/// What a runner's version is to the projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Readers are served this version.
    Serving,
    /// A newer version than the one served: it builds, then takes over.
    Building {
        /// The version served meanwhile.
        serving: u32,
    },
    /// A newer version is served.
    Retired {
        /// That version.
        serving: u32,
    },
}

impl Role {
    fn of<P: Projection>(serving: u32) -> Self {
        match serving.cmp(&P::VERSION) {
            std::cmp::Ordering::Equal => Self::Serving,
            std::cmp::Ordering::Less => Self::Building { serving },
            std::cmp::Ordering::Greater => Self::Retired { serving },
        }
    }
}

/// How long a runner waits, at most, before trying again to retire an
/// older version.
pub(super) const RETIRE_INTERVAL: Duration = Duration::from_millis(200);

/// How often, at most, a runner busy with batches checks that its version
/// was not replaced.
pub(super) const RETIRED_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// The version that run `key` of projection `name` belongs to; `None` for
/// a key of another projection.
fn version_of(name: &str, key: &str) -> Option<u32> {
    if key == name {
        return Some(1);
    }
    key.strip_prefix(name)?.strip_prefix("@v")?.parse().ok()
}

impl<P, D> ProjectionRunner<P, D>
where
    P: Projection,
    D: Delivery<P>,
{
    /// This version's role; when no version has served yet, this one
    /// starts serving (its switch hook runs), unless the store holds the
    /// checkpoint of version 1 from before versions were recorded, which
    /// then serves.
    pub(super) async fn role(&self, conn: &mut PgConnection) -> Result<Role, Stop> {
        let statements = &self.store.statements().versions;
        let mut tx = conn.begin().await?;
        if let Some(row) = versions::lock(&mut tx, statements, P::NAME).await? {
            tx.commit().await?;
            return Ok(Role::of::<P>(row.serving));
        }
        let first = if P::VERSION > 1
            && versions::has_checkpoint(&mut tx, statements, &key(P::NAME, 1)).await?
        {
            1
        } else {
            P::VERSION
        };
        let claimed = versions::claim(&mut tx, statements, P::NAME, first).await?;
        let row = self.locked(&mut tx).await?;
        if claimed && row.serving == P::VERSION {
            self.switch_hook(None, &mut tx).await?;
        }
        tx.commit().await?;
        Ok(Role::of::<P>(row.serving))
    }

    /// The projection's row, locked; it must exist.
    async fn locked(&self, tx: &mut PgConnection) -> Result<Versions, Stop> {
        let statements = &self.store.statements().versions;
        let row = versions::lock(tx, statements, P::NAME).await?;
        row.ok_or_else(Self::missing)
    }

    /// The projection's row was removed while its runner ran.
    fn missing() -> Stop {
        Stop::from(Failed::Corrupt(es_core::StoreError::CorruptRecord {
            location: format!("the versions of projection {}", P::NAME),
            reason: "the row is missing".to_owned(),
        }))
    }

    async fn switch_hook(&self, previous: Option<u32>, tx: &mut PgConnection) -> Result<(), Stop> {
        D::switch(&self.projection, previous, tx)
            .await
            .map_err(|error| {
                Stop::Fatal(ProjectionError::Switch {
                    projection: P::NAME.to_owned(),
                    version: P::VERSION,
                    error: error.to_string(),
                })
            })
    }

    /// At an idle turn, caught up: a building version takes over (unless
    /// it has parked events: its model would lack them), a serving one
    /// retires older versions when `pending`, a retired one ends. Returns
    /// the role after the turn, and whether work remains that no wake-up
    /// will announce (a retirement to try again).
    pub(super) async fn versions_turn(
        &self,
        conn: &mut PgConnection,
        pending: bool,
    ) -> Result<(Role, bool), Stop> {
        let statements = &self.store.statements().versions;
        let row = versions::read(conn, statements, P::NAME).await?;
        let row = row.ok_or_else(Self::missing)?;
        match Role::of::<P>(row.serving) {
            Role::Retired { serving } => Err(Stop::Retired { serving }),
            building @ Role::Building { .. } => {
                if versions::has_dead_letters(conn, statements, &self.key).await? {
                    tracing::warn!(
                        projection = P::NAME,
                        version = P::VERSION,
                        "caught up with parked events: not taking over until they are retried or discarded"
                    );
                    return Ok((building, false));
                }
                self.take_over(conn).await
            }
            Role::Serving if pending => Ok((Role::Serving, self.retire_older(conn).await?)),
            Role::Serving => Ok((Role::Serving, false)),
        }
    }

    /// Ends the runner if a newer version serves.
    pub(super) async fn still_current(&self, conn: &mut PgConnection) -> Result<(), Stop> {
        let statements = &self.store.statements().versions;
        let row = versions::read(conn, statements, P::NAME).await?;
        match row.map(|row| Role::of::<P>(row.serving)) {
            Some(Role::Retired { serving }) => Err(Stop::Retired { serving }),
            _ => Ok(()),
        }
    }

    /// Makes this version the one served, in one transaction with the
    /// switch hook, if the row still says it may; wakes every runner.
    /// Returns the role after, and whether older versions are left to
    /// retire.
    async fn take_over(&self, conn: &mut PgConnection) -> Result<(Role, bool), Stop> {
        let statements = &self.store.statements().versions;
        let mut tx = conn.begin().await?;
        let row = self.locked(&mut tx).await?;
        let Role::Building { serving } = Role::of::<P>(row.serving) else {
            tx.commit().await?;
            return Ok((Role::of::<P>(row.serving), true));
        };
        self.switch_hook(Some(serving), &mut tx).await?;
        versions::switch(&mut tx, statements, P::NAME, P::VERSION).await?;
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(self.store.options().channel())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(
            projection = P::NAME,
            version = P::VERSION,
            previous = serving,
            "caught up; now serving"
        );
        Ok((Role::Serving, true))
    }

    /// Retires every older version whose records remain and whose lease is
    /// free; returns whether any is left.
    async fn retire_older(&self, conn: &mut PgConnection) -> Result<bool, Stop> {
        let statements = &self.store.statements().versions;
        let mut left = false;
        for key in versions::keys(conn, statements, P::NAME).await? {
            match version_of(P::NAME, &key) {
                Some(old) if old < P::VERSION => left |= !self.retire(conn, old).await?,
                _ => {}
            }
        }
        Ok(left)
    }

    /// Drops version `old`'s data if no runner of it holds its lease;
    /// returns whether it did.
    async fn retire(&self, conn: &mut PgConnection, old: u32) -> Result<bool, Stop> {
        let statements = &self.store.statements();
        let old_key = key(P::NAME, old);
        if !projections::take_lease(conn, &statements.projections, &old_key).await? {
            return Ok(false);
        }
        let mut tx = conn.begin().await?;
        let retired = match D::retire(&self.projection, old, &mut tx).await {
            Ok(()) => {
                versions::retired(&mut tx, &statements.versions, &old_key).await?;
                tx.commit().await?;
                tracing::info!(projection = P::NAME, version = old, "retired");
                true
            }
            Err(error) => {
                tx.rollback().await?;
                tracing::warn!(projection = P::NAME, version = old, %error, "retiring failed; trying again later");
                false
            }
        };
        projections::release_lease(conn, &statements.projections, &old_key).await?;
        Ok(retired)
    }
}
