//! `es archive <stream>` and `es delete <stream>`.

use es_core::{AppendResult, EventStore as _, ExpectedVersion};
use es_postgres::PgEventStore;
use serde::Serialize;

use super::confirm;
use crate::args::CloseArgs;
use crate::error::CliError;
use crate::output;
use crate::query;

/// Archiving (a soft delete) or deleting (a tombstone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Close {
    Archive,
    Delete,
}

impl Close {
    fn verb(self) -> &'static str {
        match self {
            Self::Archive => "archive",
            Self::Delete => "delete",
        }
    }

    fn done(self) -> &'static str {
        match self {
            Self::Archive => "archived",
            Self::Delete => "deleted",
        }
    }
}

/// What `--json` prints.
#[derive(Serialize)]
struct Closed<'a> {
    stream: &'a str,
    action: &'static str,
    /// The version of the `$archived` or `$deleted` event.
    version: u64,
    position: String,
    /// Whether the stream was already closed that way (nothing written).
    already: bool,
}

/// `es archive` and `es delete`: the stream's marker event appended, if
/// its version is the one given (any when none is).
pub(super) async fn close(
    store: &PgEventStore,
    args: &CloseArgs,
    close: Close,
    json: bool,
) -> Result<(), CliError> {
    let stream = query::stream_id(&args.stream)?;
    let expected = args
        .expected_version
        .map_or(ExpectedVersion::Any, ExpectedVersion::Exact);
    if !args.yes {
        let warning = match close {
            Close::Archive => "its reads will fail until an append restores it",
            Close::Delete => "it can never be written or read again",
        };
        confirm(
            &format!("{} stream {stream} ({warning})?", close.verb()),
            &format!("nothing {}", close.done()),
        )?;
    }
    let operation = format!("{}ing stream {stream}", close.verb().trim_end_matches('e'));
    let result: AppendResult = match close {
        Close::Archive => store.archive_stream(&stream, expected).await,
        Close::Delete => store.delete_stream(&stream, expected).await,
    }
    .map_err(|e| CliError::store(operation, e))?;
    let position = result
        .positions
        .first()
        .map_or_else(String::new, ToString::to_string);
    if json {
        return output::json(&Closed {
            stream: stream.as_str(),
            action: close.verb(),
            version: result.stream_version,
            position,
            already: result.idempotent_replay,
        });
    }
    let already = if result.idempotent_replay {
        " (it already was)"
    } else {
        ""
    };
    println!(
        "{} stream {stream} at version {}, position {position}{already}",
        close.done(),
        result.stream_version
    );
    Ok(())
}
