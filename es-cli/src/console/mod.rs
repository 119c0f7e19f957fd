//! `es console`: a web console over the store, served by axum.
//!
//! Pages are rendered on the server (askama templates in `templates/`); a
//! small script (`assets/console.js`) replaces parts of a page with the
//! fragments that the server sends as server-sent events, so the dashboard
//! and a projection's page stay current without reloading.
//!
//! Security (`guard.rs`): the console binds to loopback unless given a
//! token; with a token every request must carry it; `--read-only` hides
//! every action and refuses its POST; actions are POSTs whose `Origin` (or
//! `Referer`) must be the console itself.

mod actions;
mod guard;
mod live;
mod pages;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};
use es_postgres::PgEventStore;

use crate::args::ConsoleArgs;
use crate::error::CliError;
use crate::query;
use crate::view::{self, ProjectionView};

/// What every handler shares.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

struct Inner {
    store: PgEventStore,
    /// The port it is served on (the token's cookie names it).
    port: u16,
    token: Option<String>,
    read_only: bool,
    /// Becomes `true` when the console shuts down: live updates end then,
    /// so that open pages do not hold the shutdown up.
    stopping: tokio::sync::watch::Sender<bool>,
    /// The projections' statuses as last read, and when: every page and
    /// live update within [`STATUS_FRESH`] shares one read (each status
    /// counts the events after the projection's checkpoint).
    statuses: tokio::sync::Mutex<Option<(Instant, Vec<ProjectionView>)>>,
}

/// How long a read of the projections' statuses serves every page.
const STATUS_FRESH: Duration = Duration::from_secs(1);

impl Console {
    /// A console over `store`, served on `port`; with `token`, every
    /// request must carry it.
    #[must_use]
    pub fn new(store: PgEventStore, port: u16, token: Option<String>, read_only: bool) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                port,
                token,
                read_only,
                stopping: tokio::sync::watch::Sender::new(false),
                statuses: tokio::sync::Mutex::new(None),
            }),
        }
    }

    fn store(&self) -> &PgEventStore {
        &self.inner.store
    }

    fn read_only(&self) -> bool {
        self.inner.read_only
    }

    /// Every projection's status, read at most [`STATUS_FRESH`] ago.
    async fn projections(&self) -> Result<Vec<ProjectionView>, CliError> {
        let mut cached = self.inner.statuses.lock().await;
        if let Some((at, statuses)) = &*cached
            && at.elapsed() < STATUS_FRESH
        {
            return Ok(statuses.clone());
        }
        let statuses = view::projections(self.store()).await?;
        *cached = Some((Instant::now(), statuses.clone()));
        Ok(statuses)
    }

    /// Projection `name`'s status, read at most [`STATUS_FRESH`] ago.
    async fn projection(&self, name: &str) -> Result<ProjectionView, CliError> {
        query::name("projection name", name)?;
        self.projections()
            .await?
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| view::unknown_projection(name))
    }

    /// Drops the statuses read, after an action changed them.
    async fn forget_statuses(&self) {
        *self.inner.statuses.lock().await = None;
    }

    /// Ends live updates and lets the server finish its requests.
    pub fn stop(&self) {
        self.inner.stopping.send_replace(true);
    }

    /// Completes when the console shuts down.
    pub async fn stopped(&self) {
        let mut stopping = self.inner.stopping.subscribe();
        let _ = stopping.wait_for(|stopping| *stopping).await;
    }

    /// The console's routes, behind its guard.
    pub fn router(self) -> Router {
        Router::new()
            .route("/", get(pages::dashboard))
            .route("/streams", get(pages::streams))
            .route("/stream", get(pages::stream))
            .route("/events/{id}", get(pages::event))
            .route("/projection", get(pages::projection))
            .route("/projection/rebuild", post(actions::rebuild))
            .route("/projection/retry", post(actions::retry))
            .route("/projection/discard", post(actions::discard))
            .route("/live/dashboard", get(live::dashboard))
            .route("/live/projection", get(live::projection))
            .route("/assets/console.js", get(pages::script))
            .route("/assets/console.css", get(pages::stylesheet))
            .fallback(pages::not_found)
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                guard::check,
            ))
            .with_state(self)
    }
}

/// Checks the console's arguments (before connecting to anything).
///
/// # Errors
///
/// [`CliError::Usage`] for a non-loopback address without a token, or a
/// token that is empty or holds characters a cookie cannot carry.
pub fn check(args: &ConsoleArgs) -> Result<(), CliError> {
    if let Some(token) = &args.token {
        let usable = token.len() >= 8
            && token
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'"' | b'\\'));
        if !usable {
            return Err(CliError::Usage(
                "the token must be at least 8 visible ASCII characters, without ; , \" or \\"
                    .to_owned(),
            ));
        }
    }
    if !args.bind.ip().is_loopback() && args.token.is_none() {
        return Err(CliError::Usage(format!(
            "binding to {} exposes the console beyond this machine: pass --token (or set ES_CONSOLE_TOKEN)",
            args.bind
        )));
    }
    Ok(())
}

/// Serves the console until Ctrl-C.
///
/// # Errors
///
/// [`CliError::Usage`] for a non-loopback address without a token, an
/// empty token, or an address that cannot be bound.
pub async fn serve(store: PgEventStore, args: ConsoleArgs) -> Result<(), CliError> {
    check(&args)?;
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|e| CliError::Usage(format!("cannot listen on {}: {e}", args.bind)))?;
    let address = listener.local_addr()?;
    crate::output::print(&format!(
        "es console listening on http://{address}/{}{}\n",
        if args.token.is_some() {
            " (token required)"
        } else {
            ""
        },
        if args.read_only { " (read-only)" } else { "" },
    ))?;
    let console = Console::new(store, address.port(), args.token, args.read_only);
    let app = console.clone().router();
    tokio::spawn({
        let console = console.clone();
        async move {
            let _ = tokio::signal::ctrl_c().await;
            console.stop();
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { console.stopped().await })
        .await?;
    Ok(())
}
