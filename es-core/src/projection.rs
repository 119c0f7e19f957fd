//! Projections: read models built from the global feed.
//!
//! A projection declares its name and the event types it reads
//! ([`Projection`]), and handles each event with a sink context `Cx`: for a
//! PostgreSQL read model, the transaction that also stores the checkpoint;
//! for other sinks, `()` ([`Dispatch`]). `#[derive(Projection)]` generates
//! both from a list of handled variants, decoding each event and calling the
//! projection's [`Handle`] implementation for the variant's payload. A
//! runner (in `es-postgres`) feeds it batches from its checkpoint and
//! applies the error policy.

use crate::{BoxError, FeedFilter, RecordedEvent};

/// A named projection and the event types it reads.
///
/// Derive it with `#[derive(Projection)]`, which also implements
/// [`Dispatch`]: each recorded event of a handled type is decoded (upcasts
/// included) and its payload handed to the projection's [`Handle`]
/// implementation for that payload type. Handlers are `async fn`s; no
/// attribute macro is needed. A handled variant whose payload has no
/// handler for the sink is a compile error where the projection is run.
///
/// | Setting | Meaning |
/// |---|---|
/// | `name = "order_summaries"` | the projection's name (default: the struct's name in snake case) |
/// | `handles(OrderEvent::Placed, ...)` | the variants it reads, from one or more event enums (required) |
/// | `crate = "path"` | the path of `es_core`, when re-exported elsewhere |
///
/// A variant that is not listed is never read: its stored names are left
/// out of [`EVENT_TYPES`](Self::EVENT_TYPES), which the runner pushes down
/// into its feed query. A listed variant that does not exist is a compile
/// error.
///
/// For a PostgreSQL read model, implement `Handle<Payload, sqlx::PgConnection>`
/// and `Reset<sqlx::PgConnection>` and run it with
/// `es_postgres::ProjectionRunner` (exactly once: the handler writes in the
/// checkpoint's transaction); `examples/orders/src/projections.rs` has two.
/// For any other sink the context is `()`, as here:
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// use es_core::{BoxError, Dispatch, Event, Handle, Position, Projection, RecordedEvent, StreamId};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Serialize, Deserialize)]
/// struct Deposited { cents: u64 }
/// #[derive(Debug, Serialize, Deserialize)]
/// struct Withdrawn { cents: u64 }
///
/// #[derive(Debug, Event)]
/// enum AccountEvent {
///     Deposited(Deposited),
///     Withdrawn(Withdrawn),
/// }
///
/// /// The sum of all deposits.
/// #[derive(Default, Projection)]
/// #[es(name = "deposits", handles(AccountEvent::Deposited))]
/// struct Deposits { cents: AtomicU64 }
///
/// impl Handle<Deposited, ()> for Deposits {
///     async fn handle(&self, deposit: Deposited, _: &RecordedEvent, (): &mut ()) -> Result<(), BoxError> {
///         self.cents.fetch_add(deposit.cents, Ordering::Relaxed);
///         Ok(())
///     }
/// }
///
/// assert_eq!(Deposits::NAME, "deposits");
/// assert_eq!(Deposits::EVENT_TYPES, ["Deposited"]);
///
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// let projection = Deposits::default();
/// let event = RecordedEvent::new(
///     AccountEvent::Deposited(Deposited { cents: 250 }).encode()?,
///     StreamId::new("Account-1")?,
///     1,
///     Position::from_parts(1, 1),
///     chrono::Utc::now(),
/// );
/// projection.dispatch(&event, &mut ()).await?;
/// assert_eq!(projection.cents.load(Ordering::Relaxed), 250);
/// # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
/// ```
pub trait Projection: Send + Sync + 'static {
    /// The projection's unique name: it keys the checkpoint, the lease and
    /// the dead letters.
    const NAME: &'static str;

    /// The stored event types the projection reads (current names and
    /// aliases). A runner pushes them into its feed query, so the
    /// projection reads only these rows. Empty: every event.
    const EVENT_TYPES: &'static [&'static str];

    /// The version of the read model this code builds (from 1;
    /// `#[es(version = N)]`). Raising it asks for a rebuild that keeps the
    /// read model up: a runner of the new version builds it alongside the
    /// version being served, which keeps following the feed, and takes
    /// over once caught up (see [`Reset::switch`]).
    const VERSION: u32 = 1;

    /// The feed filter for [`EVENT_TYPES`](Self::EVENT_TYPES).
    #[must_use]
    fn filter() -> FeedFilter {
        FeedFilter::all().event_types(Self::EVENT_TYPES.iter().copied())
    }
}

/// Applies one recorded event to the projection's sink `Cx`.
///
/// `#[derive(Projection)]` implements it for every sink `Cx` for which the
/// projection has a [`Handle`] implementation for each handled payload.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot apply events to the sink `{Cx}`",
    label = "a handler for a payload it reads is missing",
    note = "`#[derive(Projection)]` requires `Handle<Payload, {Cx}>` for the payload of each variant in `handles(...)`"
)]
pub trait Dispatch<Cx: Send + ?Sized>: Projection {
    /// Applies `event`. Events of types the projection does not read are
    /// ignored.
    ///
    /// # Errors
    ///
    /// Whatever the handler returns, or the event's decode error; the runner
    /// then applies its error policy.
    fn dispatch(
        &self,
        event: &RecordedEvent,
        cx: &mut Cx,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// Handles the events whose payload is `P`, with the sink context `Cx`.
///
/// Implement it with an `async fn`, once per payload the projection reads,
/// as an aggregate implements [`On`](crate::On) once per payload; the
/// example on [`Projection`] shows one. Two variants with the same payload
/// type share the handler, which can tell them apart by
/// `envelope.event_type`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no handler for `{P}` with the sink `{Cx}`",
    label = "no `Handle<{P}, {Cx}>`",
    note = "add `impl Handle<{P}, {Cx}> for {Self}` with `async fn handle(&self, event: {P}, envelope: &RecordedEvent, cx: &mut {Cx}) -> Result<(), BoxError>`"
)]
pub trait Handle<P, Cx: Send + ?Sized>: Send + Sync {
    /// Applies one decoded payload; `envelope` is the recorded event (type,
    /// id for deduplication, stream, version, position, metadata).
    ///
    /// # Errors
    ///
    /// Any error; the runner applies its error policy.
    fn handle(
        &self,
        event: P,
        envelope: &RecordedEvent,
        cx: &mut Cx,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// Clears a projection's read model before a rebuild (for example,
/// truncates its tables). Implement it with an `async fn`.
pub trait Reset<Cx: Send + ?Sized>: Projection {
    /// Removes everything the projection wrote.
    ///
    /// # Errors
    ///
    /// Any error; the rebuild is then abandoned and nothing is changed.
    fn reset(&self, cx: &mut Cx) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// Makes this version ([`Projection::VERSION`]) the one readers see,
    /// after `previous` (none: the first version to serve). A runner calls
    /// it once, when a new version has caught up with the feed, before it
    /// commits the switch; for a read model in the store's database `cx`
    /// is that transaction, so readers move from the old version's data to
    /// the new one's at its commit, never seeing a model that is partly
    /// built. A read model with a version per table points a view (or a
    /// row that readers consult) at this version's tables. Does nothing by
    /// default.
    ///
    /// # Errors
    ///
    /// Any error; the switch is then abandoned, the previous version keeps
    /// serving, and the runner stops.
    fn switch(
        &self,
        previous: Option<u32>,
        cx: &mut Cx,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = (previous, cx);
        async { Ok(()) }
    }

    /// Drops what an older `version`, no longer served nor run, wrote (for
    /// example, its tables). Called by the runner of the version served,
    /// while no runner of `version` holds its lease, until it succeeds: a
    /// failure or a restart may call it again, so it must be idempotent
    /// (`DROP TABLE IF EXISTS`). Does nothing by default.
    ///
    /// # Errors
    ///
    /// Any error; the runner tries again later, waiting longer each time.
    fn retire(
        &self,
        version: u32,
        cx: &mut Cx,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = (version, cx);
        async { Ok(()) }
    }
}
