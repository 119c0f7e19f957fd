//! Live updates as server-sent events: every few seconds, a JSON object
//! mapping element ids of the page to their fresh HTML (rendered from the
//! same fragments as the page), which `assets/console.js` swaps in.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt as _};

use super::Console;
use super::pages::{
    self, FeedFragment, Params, ParkedFragment, ProjectionsFragment, RateFragment, StatusFragment,
    failure, text,
};
use crate::error::{CliError, chain};

/// How often the dashboard is refreshed.
const DASHBOARD_EVERY: Duration = Duration::from_secs(2);
/// How often a projection's page is refreshed.
const PROJECTION_EVERY: Duration = Duration::from_secs(1);

type Fragments = BTreeMap<&'static str, String>;

fn render(
    fragments: &mut Fragments,
    id: &'static str,
    template: &impl Template,
) -> Result<(), CliError> {
    let html = template
        .render()
        .map_err(|e| CliError::store(format!("rendering {id}"), e))?;
    fragments.insert(id, html);
    Ok(())
}

/// One message: the fragments, or a comment naming why they could not be
/// read (the page keeps what it shows).
fn message(fragments: Result<Fragments, CliError>) -> Event {
    match fragments.and_then(|f| {
        Event::default()
            .json_data(f)
            .map_err(|e| CliError::store("encoding", e))
    }) {
        Ok(event) => event,
        Err(error) => Event::default().comment(chain(&error)),
    }
}

/// A stream of messages made by `read` every `every`, until the console
/// stops.
fn every<F, Fut>(
    console: &Console,
    every: Duration,
    read: F,
) -> impl Stream<Item = Result<Event, Infallible>> + use<F, Fut>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Fragments, CliError>> + Send,
{
    let console = console.clone();
    let stopped = async move { console.stopped().await };
    futures::stream::unfold(true, move |first| {
        let read = read.clone();
        async move {
            if !first {
                tokio::time::sleep(every).await;
            }
            Some((Ok(message(read().await)), false))
        }
    })
    .take_until(Box::pin(stopped))
}

/// `GET /live/dashboard`.
pub(super) async fn dashboard(State(console): State<Console>) -> Response {
    let live = console.clone();
    let read = move || {
        let console = console.clone();
        async move {
            let store = console.store();
            let mut fragments = Fragments::new();
            render(
                &mut fragments,
                "feed",
                &FeedFragment {
                    feed: &pages::feed(store).await?,
                },
            )?;
            render(
                &mut fragments,
                "rate",
                &RateFragment {
                    rate: &pages::rate(store).await?,
                },
            )?;
            let projections = console.projections().await?;
            render(
                &mut fragments,
                "projections",
                &ProjectionsFragment {
                    projections: &projections,
                },
            )?;
            Ok(fragments)
        }
    };
    Sse::new(every(&live, DASHBOARD_EVERY, read))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `GET /live/projection?name=N`.
pub(super) async fn projection(State(console): State<Console>, params: Params) -> Response {
    let Some(name) = text(&params, "name").map(str::to_owned) else {
        return failure(&CliError::Usage("which projection? give ?name=".to_owned()));
    };
    if let Err(error) = console.projection(&name).await {
        return failure(&error);
    }
    let live = console.clone();
    let read = move || {
        let console = console.clone();
        let name = name.clone();
        async move {
            let (p, parked, parked_total) = pages::projection_state(&console, &name).await?;
            let mut fragments = Fragments::new();
            render(&mut fragments, "status", &StatusFragment { p: &p })?;
            let parked = ParkedFragment {
                read_only: console.read_only(),
                name: &name,
                parked: &parked,
                parked_total,
            };
            render(&mut fragments, "parked", &parked)?;
            Ok(fragments)
        }
    };
    Sse::new(every(&live, PROJECTION_EVERY, read))
        .keep_alive(KeepAlive::default())
        .into_response()
}
