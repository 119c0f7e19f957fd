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

use std::time::{Duration, Instant};

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

/// How long a runner waits before it first tries again to retire an older
/// version; each failed try doubles it, up to [`RETIRE_BACKOFF_MAX`].
const RETIRE_INTERVAL: Duration = Duration::from_millis(200);
const RETIRE_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How often, at most, a runner that has nothing to do about versions
/// checks that its version was not replaced (at idle turns and between
/// batches; the switch also wakes it).
const CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// A leased runner's standing among the projection's versions.
#[derive(Debug, Clone, Copy)]
pub(super) struct Turns {
    role: Role,
    /// Work remains that no wake-up announces (a takeover to try, older
    /// versions to retire).
    pending: bool,
    /// When the versions were last looked at.
    checked: Instant,
    /// How long to wait before the next try of pending work.
    retry_in: Duration,
    /// Whether the warning that parked events hold the takeover back was
    /// given.
    warned: bool,
}

impl Turns {
    /// A runner that just took its lease: it looks at the versions at its
    /// first idle turn (a serving version retires older ones, a building
    /// one takes over).
    pub(super) fn new(role: Role) -> Self {
        Self {
            role,
            pending: true,
            checked: Instant::now(),
            retry_in: RETIRE_INTERVAL,
            warned: false,
        }
    }

    /// How long an idle runner may wait before its next turn; `None`:
    /// until a wake-up.
    pub(super) fn retry_in(&self) -> Option<Duration> {
        self.pending.then_some(self.retry_in)
    }

    fn due(&self) -> bool {
        self.pending || self.checked.elapsed() >= CHECK_INTERVAL
    }

    /// Pending work was tried and remains: wait longer next time.
    fn back_off(&mut self) {
        self.pending = true;
        self.retry_in = (self.retry_in * 2).min(RETIRE_BACKOFF_MAX);
    }

    fn settle(&mut self) {
        self.pending = false;
        self.retry_in = RETIRE_INTERVAL;
    }
}

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

    /// At an idle turn, caught up, when due: a building version takes over
    /// (unless it has parked events: its model would lack them), a serving
    /// one retires older versions while any is left, a replaced one ends.
    pub(super) async fn versions_turn(
        &self,
        conn: &mut PgConnection,
        turns: &mut Turns,
    ) -> Result<(), Stop> {
        if !turns.due() {
            return Ok(());
        }
        let statements = &self.store.statements().versions;
        let row = versions::read(conn, statements, P::NAME).await?;
        turns.checked = Instant::now();
        turns.role = Role::of::<P>(row.ok_or_else(Self::missing)?.serving);
        match turns.role {
            Role::Retired { serving } => return Err(Stop::Retired { serving }),
            Role::Building { .. } => {
                if versions::has_dead_letters(conn, statements, &self.key).await? {
                    if !turns.warned {
                        tracing::warn!(
                            projection = P::NAME,
                            version = P::VERSION,
                            "caught up with parked events: not taking over until they are retried or discarded"
                        );
                        turns.warned = true;
                    }
                    turns.settle();
                } else {
                    turns.role = self.take_over(conn).await?;
                    if let Role::Retired { serving } = turns.role {
                        return Err(Stop::Retired { serving });
                    }
                    turns.settle();
                    // The versions it replaced are retired next.
                    turns.pending = turns.role == Role::Serving;
                }
            }
            Role::Serving if turns.pending => {
                if self.retire_older(conn).await? {
                    turns.back_off();
                } else {
                    turns.settle();
                }
            }
            Role::Serving => {}
        }
        Ok(())
    }

    /// Between batches, at most every few seconds: ends the runner if a
    /// newer version serves.
    pub(super) async fn still_current(
        &self,
        conn: &mut PgConnection,
        turns: &mut Turns,
    ) -> Result<(), Stop> {
        if turns.checked.elapsed() < CHECK_INTERVAL {
            return Ok(());
        }
        let statements = &self.store.statements().versions;
        let row = versions::read(conn, statements, P::NAME).await?;
        turns.checked = Instant::now();
        match row.map(|row| Role::of::<P>(row.serving)) {
            Some(Role::Retired { serving }) => Err(Stop::Retired { serving }),
            _ => Ok(()),
        }
    }

    /// Makes this version the one served, in one transaction with the
    /// switch hook, if the row still says it may; wakes every runner.
    /// Returns the role after.
    async fn take_over(&self, conn: &mut PgConnection) -> Result<Role, Stop> {
        let statements = &self.store.statements().versions;
        let mut tx = conn.begin().await?;
        let row = self.locked(&mut tx).await?;
        let Role::Building { serving } = Role::of::<P>(row.serving) else {
            tx.commit().await?;
            return Ok(Role::of::<P>(row.serving));
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
        Ok(Role::Serving)
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
                projections::forget(&mut tx, &statements.projections, &old_key).await?;
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
