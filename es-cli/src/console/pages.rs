//! The console's pages and the fragments that live updates replace.

use std::collections::HashMap;
use std::fmt::Write as _;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::Duration;
use es_postgres::PgEventStore;
use es_postgres::catalog::ACTIVITY_CAP;
use uuid::Uuid;

use super::Console;
use crate::error::{CliError, chain};
use crate::query::{self, StreamPage};
use crate::view::{self, HeldBackView, ParkedView, ProjectionView, StatusView, StreamView};

/// The most rows a console page shows.
const PAGE_LIMIT: u32 = 1_000;
/// Rows a page shows unless asked for another number.
const DEFAULT_LIMIT: u32 = 100;
/// Minutes the append-rate chart covers.
const RATE_MINUTES: u32 = 15;

/// The query parameters of a page, all optional text: each page parses
/// what it uses and answers 400 naming what is wrong.
pub(super) type Params = Query<HashMap<String, String>>;

/// A page for an error, with its status.
pub(super) fn error_page(status: StatusCode, message: &str) -> Response {
    let page = ErrorPage {
        read_only: false,
        status: status.to_string(),
        message,
    };
    (status, html(&page)).into_response()
}

/// A template rendered, or a page saying that it could not be.
fn html<T: Template>(template: &T) -> Response {
    match template.render() {
        Ok(text) => Html(text).into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering the page failed: {error}"),
        )
            .into_response(),
    }
}

/// A [`CliError`] as a page: bad input is 400, what does not exist 404,
/// a store that cannot be read 503.
pub(super) fn failure(error: &CliError) -> Response {
    let status = match error {
        CliError::Usage(_) => StatusCode::BAD_REQUEST,
        CliError::NotFound(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    error_page(status, &chain(error))
}

/// Parameter `name` as a number in `1..=max`, or `default` when absent.
pub(super) fn number(params: &Params, name: &str, default: u32, max: u32) -> Result<u32, CliError> {
    let Some(text) = params.get(name).filter(|t| !t.is_empty()) else {
        return Ok(default);
    };
    match text.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(CliError::Usage(format!(
            "{name} must be a number from 1 to {max}, not {text:?}"
        ))),
    }
}

/// Parameter `name` when given and not empty.
pub(super) fn text<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|t| !t.is_empty())
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    read_only: bool,
    status: String,
    message: &'a str,
}

/// The feed's head and what holds it back.
pub(super) struct FeedView {
    head: Option<String>,
    held_back: HeldBackView,
}

/// One minute of the append-rate chart.
pub(super) struct Bar {
    label: String,
    events: u64,
    percent: u64,
}

/// The append-rate chart.
pub(super) struct RateView {
    minutes: u32,
    total: u64,
    capped: bool,
    cap: u32,
    bars: Vec<Bar>,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct Dashboard {
    read_only: bool,
    status: StatusView,
    feed: FeedView,
    rate: RateView,
    projections: Vec<ProjectionView>,
}

#[derive(Template)]
#[template(path = "_feed.html")]
pub(super) struct FeedFragment<'a> {
    pub(super) feed: &'a FeedView,
}

#[derive(Template)]
#[template(path = "_rate.html")]
pub(super) struct RateFragment<'a> {
    pub(super) rate: &'a RateView,
}

#[derive(Template)]
#[template(path = "_projections.html")]
pub(super) struct ProjectionsFragment<'a> {
    pub(super) projections: &'a [ProjectionView],
}

/// The head of the feed and what holds it back.
pub(super) async fn feed(store: &PgEventStore) -> Result<FeedView, CliError> {
    let head = store
        .head()
        .await
        .map_err(|e| CliError::store("reading the feed's head", e))?;
    let lag = store
        .feed_lag()
        .await
        .map_err(|e| CliError::store("reading the feed's lag", e))?;
    Ok(FeedView {
        head: head.map(|p| p.to_string()),
        held_back: HeldBackView::from(&lag),
    })
}

/// Events per minute over the last [`RATE_MINUTES`] minutes.
pub(super) async fn rate(store: &PgEventStore) -> Result<RateView, CliError> {
    let activity = store
        .recent_activity(RATE_MINUTES)
        .await
        .map_err(|e| CliError::store("counting recent appends", e))?;
    let now = activity.now;
    let counts: Vec<(String, u64)> = (0..i64::from(RATE_MINUTES))
        .rev()
        .map(|ago| {
            let minute = now - Duration::minutes(ago);
            let events = activity
                .minutes
                .iter()
                .find(|m| m.minute == minute)
                .map_or(0, |m| m.events);
            (minute.format("%H:%M").to_string(), events)
        })
        .collect();
    let highest = counts.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    Ok(RateView {
        minutes: RATE_MINUTES,
        total: counts.iter().map(|(_, n)| n).sum(),
        capped: activity.capped,
        cap: ACTIVITY_CAP,
        bars: counts
            .into_iter()
            .map(|(label, events)| Bar {
                label,
                events,
                percent: events * 100 / highest,
            })
            .collect(),
    })
}

/// `GET /`.
pub(super) async fn dashboard(State(console): State<Console>) -> Response {
    let read = async {
        let store = console.store();
        let status = StatusView::read(store).await?;
        Ok::<_, CliError>(Dashboard {
            read_only: console.read_only(),
            feed: FeedView {
                head: status.head.clone(),
                held_back: status.held_back.clone(),
            },
            rate: rate(store).await?,
            projections: status.projections.clone(),
            status,
        })
    };
    match read.await {
        Ok(page) => html(&page),
        Err(error) => failure(&error),
    }
}

#[derive(Template)]
#[template(path = "streams.html")]
struct StreamList {
    read_only: bool,
    category: Option<String>,
    streams: Vec<StreamView>,
    next: Option<String>,
}

/// `GET /streams?q=ID` (find one) or `?category=C&after=ID&limit=N`.
pub(super) async fn streams(State(console): State<Console>, params: Params) -> Response {
    let store = console.store();
    if let Some(id) = text(&params, "q") {
        let id = id.trim();
        return match query::stream_page(store, id, None, false, 1).await {
            Ok(_) => Redirect::to(&format!("/stream?id={}", encode(id))).into_response(),
            Err(error) => failure(&error),
        };
    }
    let category = text(&params, "category").map(str::to_owned);
    let read = async {
        let limit = number(&params, "limit", DEFAULT_LIMIT, PAGE_LIMIT)?;
        let streams =
            query::streams(store, category.as_deref(), text(&params, "after"), limit).await?;
        let next = (streams.len() == limit as usize)
            .then(|| streams.last())
            .flatten()
            .map(|last| {
                let mut link = format!("/streams?limit={limit}&after={}", encode(&last.stream_id));
                if let Some(category) = &category {
                    let _ = write!(link, "&category={}", encode(category));
                }
                link
            });
        Ok::<_, CliError>(StreamList {
            read_only: console.read_only(),
            category: category.clone(),
            streams,
            next,
        })
    };
    match read.await {
        Ok(page) => html(&page),
        Err(error) => failure(&error),
    }
}

#[derive(Template)]
#[template(path = "stream.html")]
struct Stream {
    read_only: bool,
    page: StreamPage,
    newer: Option<String>,
}

/// `GET /stream?id=ID&from=V&backward=true&limit=N`.
pub(super) async fn stream(State(console): State<Console>, params: Params) -> Response {
    let read = async {
        let Some(id) = text(&params, "id") else {
            return Err(CliError::Usage("which stream? give ?id=".to_owned()));
        };
        let limit = number(&params, "limit", DEFAULT_LIMIT, PAGE_LIMIT)?;
        let from = match text(&params, "from") {
            Some(from) => Some(from.parse::<u64>().map_err(|_| {
                CliError::Usage(format!("from must be a version number, not {from:?}"))
            })?),
            None => None,
        };
        let backward = text(&params, "backward") == Some("true");
        let page = query::stream_page(console.store(), id, from, backward, limit).await?;
        let newer = match (backward, page.events.last()) {
            (false, Some(last)) if last.version < page.version => Some(format!(
                "/stream?id={}&from={}&limit={limit}",
                encode(id),
                last.version + 1
            )),
            (true, Some(last)) if last.version > 1 => Some(format!(
                "/stream?id={}&from={}&limit={limit}&backward=true",
                encode(id),
                last.version - 1
            )),
            _ => None,
        };
        Ok(Stream {
            read_only: console.read_only(),
            page,
            newer,
        })
    };
    match read.await {
        Ok(page) => html(&page),
        Err(error) => failure(&error),
    }
}

/// A link to an event named by an id in metadata.
struct Link {
    href: String,
    text: String,
}

#[derive(Template)]
#[template(path = "event.html")]
struct EventPage {
    read_only: bool,
    event: view::EventView,
    correlation: Option<Link>,
    causation: Option<Link>,
}

/// A link to the event that `id` names, when it is a stored event's id.
async fn event_link(store: &PgEventStore, id: Option<&str>) -> Option<Link> {
    let id = id?;
    let event_id = Uuid::parse_str(id).ok()?;
    let event = query::event(store, &event_id.to_string()).await.ok()?;
    Some(Link {
        href: format!("/events/{event_id}"),
        text: format!(
            "{id} ({} {}#{})",
            event.event_type, event.stream_id, event.version
        ),
    })
}

/// `GET /events/{id}`.
pub(super) async fn event(State(console): State<Console>, Path(id): Path<String>) -> Response {
    let store = console.store();
    match query::event(store, &id).await {
        Ok(event) => {
            let correlation = event_link(store, event.correlation_id()).await;
            let causation = event_link(store, event.causation_id()).await;
            html(&EventPage {
                read_only: console.read_only(),
                event,
                correlation,
                causation,
            })
        }
        Err(error) => failure(&error),
    }
}

#[derive(Template)]
#[template(path = "projection.html")]
struct ProjectionPage {
    read_only: bool,
    name: String,
    p: ProjectionView,
    parked: Vec<ParkedView>,
    parked_total: usize,
    notice: Option<String>,
}

#[derive(Template)]
#[template(path = "_status.html")]
pub(super) struct StatusFragment<'a> {
    pub(super) p: &'a ProjectionView,
}

#[derive(Template)]
#[template(path = "_parked.html")]
pub(super) struct ParkedFragment<'a> {
    pub(super) read_only: bool,
    pub(super) name: &'a str,
    pub(super) parked: &'a [ParkedView],
    pub(super) parked_total: usize,
}

/// The most parked events a projection's page lists.
const PARKED_SHOWN: usize = 100;

/// A projection's status, its first [`PARKED_SHOWN`] parked events and how
/// many there are.
pub(super) async fn projection_state(
    console: &Console,
    name: &str,
) -> Result<(ProjectionView, Vec<ParkedView>, usize), CliError> {
    let p = console.projection(name).await?;
    let parked = console
        .store()
        .parked_events(name)
        .await
        .map_err(|e| CliError::store(format!("listing the parked events of {name}"), e))?;
    let shown = parked
        .iter()
        .take(PARKED_SHOWN)
        .map(ParkedView::from)
        .collect();
    Ok((p, shown, parked.len()))
}

/// `GET /projection?name=N[&notice=...]`.
pub(super) async fn projection(State(console): State<Console>, params: Params) -> Response {
    let Some(name) = text(&params, "name") else {
        return failure(&CliError::Usage("which projection? give ?name=".to_owned()));
    };
    let notice = match text(&params, "done") {
        Some("rebuild") => Some("Rebuild requested: the runner holding the lease starts it."),
        Some("retry") => {
            Some("Retry requested: the runner applies the event again once caught up.")
        }
        Some("discard") => Some("Parked event discarded."),
        _ => None,
    };
    match projection_state(&console, name).await {
        Ok((p, parked, parked_total)) => html(&ProjectionPage {
            read_only: console.read_only(),
            name: name.to_owned(),
            p,
            parked,
            parked_total,
            notice: notice.map(str::to_owned),
        }),
        Err(error) => failure(&error),
    }
}

/// Percent-encodes `text` for a query parameter.
pub(super) fn encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

/// Unknown paths.
pub(super) async fn not_found() -> Response {
    error_page(StatusCode::NOT_FOUND, "There is no such page.")
}

/// `GET /assets/console.js`.
pub(super) async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../assets/console.js"),
    )
        .into_response()
}

/// `GET /assets/console.css`.
pub(super) async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../assets/console.css"),
    )
        .into_response()
}
