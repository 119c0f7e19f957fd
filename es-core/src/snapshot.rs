//! Snapshots: an aggregate's state at a stream version, so that loading it
//! reads only the events after that version.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{StoreError, StreamId};

/// An aggregate's serialized state as of a stream version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Snapshot {
    /// The aggregate's stream.
    pub stream_id: StreamId,
    /// The stream version the state includes (the last applied event).
    pub version: u64,
    /// The version of the snapshot's own format, chosen by the aggregate. A
    /// snapshot whose format version differs from the aggregate's current
    /// one is ignored and the stream replayed.
    pub schema_version: u32,
    /// The serialized state.
    pub data: Value,
    /// When the snapshot was taken.
    pub taken_at: DateTime<Utc>,
}

impl Snapshot {
    /// A snapshot of `stream_id` at `version`, taken now.
    #[must_use]
    pub fn new(stream_id: StreamId, version: u64, schema_version: u32, data: Value) -> Self {
        Self {
            stream_id,
            version,
            schema_version,
            data,
            taken_at: Utc::now(),
        }
    }
}

/// Keeps the latest snapshot of each stream.
///
/// Snapshots are a cache: losing one only costs a longer load, so stores
/// keep just the newest per stream and may drop them at any time.
#[async_trait::async_trait]
pub trait SnapshotStore: Send + Sync {
    /// The newest snapshot of `stream`, if any.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when storage fails,
    /// [`StoreError::CorruptRecord`] when the stored snapshot cannot be read
    /// back.
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, StoreError>;

    /// Stores `snapshot`, replacing an older one of the same stream. A
    /// snapshot older than the stored one (by version) is ignored.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidSnapshot`] before any I/O when the snapshot
    /// could not be read back equal (see
    /// [`backend::encode_snapshot`](crate::backend::encode_snapshot));
    /// [`StoreError::StreamDeleted`] when the stream was deleted (nothing
    /// is stored: a deletion drops the stream's snapshot for good);
    /// [`StoreError::Backend`] when storage fails.
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError>;
}
