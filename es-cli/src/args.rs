//! The command line, as clap parses it.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};

/// Inspect and operate an es-postgres event store.
#[derive(Debug, Parser)]
#[command(name = "es", version, about, propagate_version = true)]
pub struct Cli {
    /// The database to connect to.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub url: Option<String>,
    /// The PostgreSQL schema that holds the store.
    #[arg(long, default_value = "es", global = true)]
    pub schema: String,
    /// Print JSON (one document, or one line per event for `tail`) instead
    /// of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the schema and apply pending migrations.
    Migrate,
    /// Events, streams, categories, the feed's head, events held back by
    /// open transactions, and the projections.
    Status,
    /// List streams, by category then id.
    Streams(StreamsArgs),
    /// Show a stream's events.
    Stream(StreamArgs),
    /// Follow the feed live until interrupted (Ctrl-C).
    Tail(TailArgs),
    /// List the projections with their state and lag.
    Projections,
    /// Show one projection: state, position, lag, lease holder, last error,
    /// parked events.
    Projection {
        /// The projection's name.
        name: String,
    },
    /// Ask the projection's runner to rebuild it from the start of the feed.
    Rebuild(RebuildArgs),
    /// List a projection's parked events, or retry or discard them.
    Parked(ParkedArgs),
    /// Archive a stream (a soft delete): its reads fail until an append
    /// restores it; its events stay in the feed.
    Archive(CloseArgs),
    /// Delete a stream for good (a tombstone): it can never be written or
    /// read again; its events stay in the feed.
    Delete(CloseArgs),
    /// Serve the web console.
    Console(ConsoleArgs),
}

/// `es streams`.
#[derive(Debug, Args)]
pub struct StreamsArgs {
    /// Only streams of this category.
    #[arg(long)]
    pub category: Option<String>,
    /// List streams after this one (the last of the previous page).
    #[arg(long)]
    pub after: Option<String>,
    /// At most this many streams.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub limit: u32,
}

/// `es stream`.
#[derive(Debug, Args)]
pub struct StreamArgs {
    /// The stream's id.
    pub id: String,
    /// Start at this version (the newest when reading backward).
    #[arg(long)]
    pub from: Option<u64>,
    /// Newest events first.
    #[arg(long)]
    pub backward: bool,
    /// At most this many events.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub limit: u32,
}

/// `es tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// Only events of this category.
    #[arg(long)]
    pub category: Option<String>,
    /// Only events of this type (repeat for several).
    #[arg(long = "type")]
    pub event_types: Vec<String>,
    /// Start after this position (`commit/sequence`, or `start` for the
    /// whole feed); the default is the feed's head: only new events.
    #[arg(long)]
    pub from: Option<String>,
}

/// `es rebuild`.
#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// The projection's name.
    pub name: String,
    /// Wait for the rebuild to finish, showing its progress.
    #[arg(long)]
    pub wait: bool,
}

/// `es parked`.
#[derive(Debug, Args)]
pub struct ParkedArgs {
    /// The projection's name.
    pub name: String,
    /// What to do with its parked events (list them when absent).
    #[command(subcommand)]
    pub action: Option<ParkedAction>,
}

/// What to do with parked events.
#[derive(Debug, Subcommand)]
pub enum ParkedAction {
    /// Ask the runner to apply parked events again.
    Retry {
        /// The parked event's id (as `es parked <name>` lists it).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Every parked event of the projection.
        #[arg(long)]
        all: bool,
    },
    /// Delete a parked event for good: the projection will never apply it.
    Discard {
        /// The parked event's id.
        id: i64,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

/// `es archive` and `es delete`.
#[derive(Debug, Args)]
pub struct CloseArgs {
    /// The stream's id.
    pub stream: String,
    /// Only if the stream is at this version (by default, whatever it is).
    #[arg(long)]
    pub expected_version: Option<u64>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

/// `es console`.
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// The address to serve on; anything but loopback needs `--token`.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub bind: SocketAddr,
    /// A secret that every request must carry (`Authorization: Bearer`,
    /// or once as `?token=` in the browser, which keeps it in a cookie).
    #[arg(long, env = "ES_CONSOLE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Show, never change: no rebuild, retry or discard.
    #[arg(long)]
    pub read_only: bool,
}
