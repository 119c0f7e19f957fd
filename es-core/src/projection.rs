//! Projections: read models built from the global feed.
//!
//! A projection declares its name and the event types it reads
//! ([`Projection`]), and handles each event with a sink context `Cx`: for a
//! PostgreSQL read model, the transaction that also stores the checkpoint;
//! for other sinks, `()` ([`Dispatch`]). `#[derive(Projection)]` generates
//! both from a list of handled events, calling the projection's [`Handle`]
//! implementation for each event enum. A runner (in `es-postgres`) feeds it
//! batches from its checkpoint and applies the error policy.

use crate::{BoxError, Event, FeedFilter, RecordedEvent};

/// A named projection and the event types it reads.
pub trait Projection: Send + Sync + 'static {
    /// The projection's unique name: it keys the checkpoint, the lease and
    /// the dead letters.
    const NAME: &'static str;

    /// The stored event types the projection reads (current names and
    /// aliases). A runner pushes them into its feed query, so the
    /// projection reads only these rows. Empty: every event.
    const EVENT_TYPES: &'static [&'static str];

    /// The feed filter for [`EVENT_TYPES`](Self::EVENT_TYPES).
    #[must_use]
    fn filter() -> FeedFilter {
        FeedFilter::all().event_types(Self::EVENT_TYPES.iter().copied())
    }
}

/// Applies one recorded event to the projection's sink `Cx`.
#[async_trait::async_trait]
pub trait Dispatch<Cx: Send + ?Sized>: Projection {
    /// Applies `event`. Events of types the projection does not read are
    /// ignored.
    ///
    /// # Errors
    ///
    /// Whatever the handler returns, or the event's decode error; the runner
    /// then applies its error policy.
    async fn dispatch(&self, event: &RecordedEvent, cx: &mut Cx) -> Result<(), BoxError>;
}

/// Handles the events of one event enum `E` with the sink context `Cx`.
#[async_trait::async_trait]
pub trait Handle<E: Event, Cx: Send + ?Sized>: Send + Sync {
    /// Applies one decoded event; `envelope` is the recorded event (id for
    /// deduplication, stream, version, position, metadata).
    ///
    /// # Errors
    ///
    /// Any error; the runner applies its error policy.
    async fn handle(&self, event: E, envelope: &RecordedEvent, cx: &mut Cx)
    -> Result<(), BoxError>;
}

/// Clears a projection's read model before a rebuild (for example,
/// truncates its tables).
#[async_trait::async_trait]
pub trait Reset<Cx: Send + ?Sized>: Projection {
    /// Removes everything the projection wrote.
    ///
    /// # Errors
    ///
    /// Any error; the rebuild is then abandoned and nothing is changed.
    async fn reset(&self, cx: &mut Cx) -> Result<(), BoxError>;
}
