//! Reads that the command line and the console share, with their input
//! checked: stream ids, limits, positions.

use es_core::{EventStore as _, StreamId, StreamRead};
use es_postgres::PgEventStore;
use serde::Serialize;
use uuid::Uuid;

use crate::error::CliError;
use crate::view::{EventView, StreamView};

/// The most streams or events one read returns.
pub const MAX_LIMIT: u32 = 100_000;

/// A stream id from user input, or a usage error naming what is wrong.
///
/// # Errors
///
/// [`CliError::Usage`] when `id` is not a valid stream id.
pub fn stream_id(id: &str) -> Result<StreamId, CliError> {
    StreamId::new(id).map_err(|e| CliError::Usage(format!("invalid stream id {id:?}: {e}")))
}

/// A projection name, category or event type from user input, or a usage
/// error naming what is wrong: not empty, at most 255 bytes, no control
/// characters (which the database would refuse, or a terminal obey).
///
/// # Errors
///
/// [`CliError::Usage`] naming `what` and the problem.
pub fn name<'a>(what: &str, text: &'a str) -> Result<&'a str, CliError> {
    let problem = if text.is_empty() {
        Some("it is empty".to_owned())
    } else if text.len() > 255 {
        Some(format!("it is {} bytes long, more than 255", text.len()))
    } else {
        text.chars()
            .find(|c| c.is_control())
            .map(|c| format!("it contains the control character {c:?}"))
    };
    match problem {
        Some(problem) => Err(CliError::Usage(format!(
            "invalid {what} {text:?}: {problem}"
        ))),
        None => Ok(text),
    }
}

/// Checks a limit given by a user.
///
/// # Errors
///
/// [`CliError::Usage`] outside `1..=MAX_LIMIT`.
pub fn limit(limit: u32) -> Result<usize, CliError> {
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(limit as usize)
    } else {
        Err(CliError::Usage(format!(
            "limit {limit} is out of range: give 1 to {MAX_LIMIT}"
        )))
    }
}

/// Up to `limit` streams after `after`, of `category` when given.
///
/// # Errors
///
/// [`CliError::Usage`] for a bad `after` or limit; the store's errors.
pub async fn streams(
    store: &PgEventStore,
    category: Option<&str>,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<StreamView>, CliError> {
    let limit = self::limit(limit)?;
    let after = after.map(stream_id).transpose()?;
    let category = category.map(|c| name("category", c)).transpose()?;
    let streams = store
        .streams(category, after.as_ref(), limit)
        .await
        .map_err(|e| CliError::store("listing streams", e))?;
    Ok(streams.iter().map(StreamView::from).collect())
}

/// Some of a stream's events.
#[derive(Debug, Clone, Serialize)]
pub struct StreamPage {
    /// The stream.
    pub stream_id: String,
    /// Its version (its number of events).
    pub version: u64,
    /// Whether the events are newest first.
    pub backward: bool,
    /// The events read.
    pub events: Vec<EventView>,
}

/// Up to `limit` events of stream `id` from version `from`, newest first
/// when `backward`.
///
/// # Errors
///
/// [`CliError::Usage`] for a bad id or limit, [`CliError::NotFound`] for a
/// stream with no events; the store's errors.
pub async fn stream_page(
    store: &PgEventStore,
    id: &str,
    from: Option<u64>,
    backward: bool,
    limit: u32,
) -> Result<StreamPage, CliError> {
    let stream = stream_id(id)?;
    let limit = self::limit(limit)?;
    let failed = |e| CliError::store(format!("reading stream {id}"), e);
    let last = store
        .read_stream(&stream, StreamRead::backward().limit(1))
        .await
        .map_err(failed)?;
    let Some(version) = last.first().map(|event| event.version) else {
        return Err(CliError::NotFound(format!(
            "unknown stream {id:?}: it has no events"
        )));
    };
    let read = match (backward, from) {
        (false, from) => StreamRead::forward().from_version(from.unwrap_or(1)),
        (true, Some(from)) => StreamRead::backward().from_version(from),
        (true, None) => StreamRead::backward(),
    };
    let events = store
        .read_stream(&stream, read.limit(limit))
        .await
        .map_err(failed)?;
    Ok(StreamPage {
        stream_id: stream.to_string(),
        version,
        backward,
        events: events.iter().map(EventView::from).collect(),
    })
}

/// The event with id `id`.
///
/// # Errors
///
/// [`CliError::Usage`] for an id that is not a UUID,
/// [`CliError::NotFound`] when no such event is stored; the store's errors.
pub async fn event(store: &PgEventStore, id: &str) -> Result<EventView, CliError> {
    let event_id = Uuid::parse_str(id)
        .map_err(|e| CliError::Usage(format!("invalid event id {id:?}: {e}")))?;
    let events = store
        .read_events(&[event_id])
        .await
        .map_err(|e| CliError::store(format!("reading event {id}"), e))?;
    events
        .first()
        .map(EventView::from)
        .ok_or_else(|| CliError::NotFound(format!("unknown event {event_id}")))
}
