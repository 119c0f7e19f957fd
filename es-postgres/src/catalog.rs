//! What the store holds, for the people who operate it (the `es` tool and
//! its console read these): counts of events and streams, the streams of a
//! category, the head of the feed, and how many events were recorded in
//! each of the last minutes.

use chrono::{DateTime, Utc};
use es_core::{Position, StoreError, StreamId};

use crate::PgEventStore;
use crate::data::catalog;

/// Events the rate of appends counts at most (see
/// [`PgEventStore::recent_activity`]).
pub const ACTIVITY_CAP: u32 = 10_000;

/// Counts of what the store holds (see [`PgEventStore::summary`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreSummary {
    /// Events stored, in every stream.
    pub events: u64,
    /// Streams with at least one event.
    pub streams: u64,
    /// Each category with its number of streams, by name.
    pub categories: Vec<CategorySummary>,
    /// The position of the newest event the feed returns; `None` while it
    /// returns none.
    pub head: Option<Position>,
}

/// One category of streams.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CategorySummary {
    /// The category (a stream id's text before its first `-`).
    pub name: String,
    /// Its streams.
    pub streams: u64,
}

/// One stream, as [`PgEventStore::streams`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamSummary {
    /// The stream.
    pub stream_id: StreamId,
    /// Its version: the number of its events.
    pub version: u64,
    /// When its first event was recorded.
    pub created_at: DateTime<Utc>,
    /// When its newest event was recorded.
    pub updated_at: DateTime<Utc>,
}

/// Events recorded in one minute (see [`PgEventStore::recent_activity`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MinuteCount {
    /// The minute's start.
    pub minute: DateTime<Utc>,
    /// Events recorded in it.
    pub events: u64,
}

/// The recent rate of appends (see [`PgEventStore::recent_activity`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Activity {
    /// The server's current minute (the minutes below are on its clock).
    pub now: DateTime<Utc>,
    /// Minutes with at least one event, oldest first.
    pub minutes: Vec<MinuteCount>,
    /// Whether the count stopped at [`ACTIVITY_CAP`] events: the oldest
    /// minutes then count fewer than were recorded.
    pub capped: bool,
}

impl PgEventStore {
    /// Counts of events, streams and streams per category, and the head of
    /// the feed.
    ///
    /// Counting events reads the whole table (in parallel where the server
    /// allows), so this costs time in proportion to the store's size: a
    /// tool for operators, not for a request path. Streams are counted on
    /// an index with one entry per stream.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] or [`StoreError::Timeout`] when the server
    /// cannot be asked, [`StoreError::CorruptRecord`] for an impossible
    /// count.
    pub async fn summary(&self) -> Result<StoreSummary, StoreError> {
        catalog::summary(self.pool(), &self.statements().catalog).await
    }

    /// The position of the newest event the feed returns (one index
    /// lookup); `None` while it returns none.
    ///
    /// # Errors
    ///
    /// As [`summary`](Self::summary).
    pub async fn head(&self) -> Result<Option<Position>, StoreError> {
        catalog::head(self.pool(), &self.statements().catalog).await
    }

    /// Up to `limit` streams after `after`, with their versions: of
    /// `category` only, by id, or of every category, by category and then
    /// id. Pass the last stream of a page as `after` to read the next one.
    /// Each stream costs two index lookups, whatever the number of events.
    ///
    /// # Errors
    ///
    /// As [`summary`](Self::summary); [`StoreError::CorruptRecord`] for a
    /// stored stream id that is not valid.
    pub async fn streams(
        &self,
        category: Option<&str>,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<StreamSummary>, StoreError> {
        catalog::streams(
            self.pool(),
            &self.statements().catalog,
            category,
            after,
            limit,
        )
        .await
    }

    /// Events recorded in each of the last `minutes` minutes (those with
    /// none are left out), counted among the newest [`ACTIVITY_CAP`] events
    /// of the feed, so that the cost is bounded however busy the store is.
    ///
    /// # Errors
    ///
    /// As [`summary`](Self::summary).
    pub async fn recent_activity(&self, minutes: u32) -> Result<Activity, StoreError> {
        catalog::activity(
            self.pool(),
            &self.statements().catalog,
            minutes,
            ACTIVITY_CAP,
        )
        .await
    }
}
