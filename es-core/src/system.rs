//! The events a store writes itself: [`StreamArchived`] and
//! [`StreamDeleted`], appended by
//! [`EventStore::archive_stream`](crate::EventStore::archive_stream) and
//! [`EventStore::delete_stream`](crate::EventStore::delete_stream).
//!
//! They are events of the stream they close, in the feed like any other,
//! with empty data. A projection that must forget what it built from a
//! deleted stream lists the variant among those it handles and reacts in
//! feed order; a projection that does not list them never reads them.
//!
//! ```
//! use es_core::system::{StreamDeleted, SystemEvent};
//! use es_core::{BoxError, Handle, Projection, RecordedEvent};
//!
//! #[derive(Projection)]
//! #[es(name = "open_streams", handles(SystemEvent::Deleted))]
//! struct OpenStreams;
//!
//! impl Handle<StreamDeleted, ()> for OpenStreams {
//!     async fn handle(&self, _: StreamDeleted, deleted: &RecordedEvent, (): &mut ()) -> Result<(), BoxError> {
//!         println!("{} is gone", deleted.stream_id);
//!         Ok(())
//!     }
//! }
//!
//! assert_eq!(OpenStreams::EVENT_TYPES, ["$deleted"]);
//! ```

use serde::{Deserialize, Serialize};

/// The payload of the event that archives a stream (`$archived`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamArchived {}

/// The payload of the event that deletes a stream (`$deleted`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamDeleted {}

/// The events a store writes itself, as an event enum that projections can
/// name in `handles(...)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, crate::Event)]
#[es(crate = "crate")]
pub enum SystemEvent {
    /// The stream was archived.
    #[es(name = "$archived")]
    Archived(StreamArchived),
    /// The stream was deleted.
    #[es(name = "$deleted")]
    Deleted(StreamDeleted),
}
