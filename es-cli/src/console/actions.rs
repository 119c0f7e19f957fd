//! The console's actions, each a POST from a form (the guard has checked
//! the token, the read-only switch and the origin): rebuild a projection,
//! retry or discard a parked event. Each answers with a redirect to the
//! projection's page (303, so that reloading does not post again).

use std::collections::HashMap;

use axum::Form;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};

use super::Console;
use super::pages::{encode, failure};
use crate::error::CliError;

type Fields = Form<HashMap<String, String>>;

fn field<'a>(fields: &'a Fields, name: &str) -> Result<&'a str, CliError> {
    fields
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| CliError::Usage(format!("the form lacks its {name}")))
}

fn parked_id(fields: &Fields) -> Result<i64, CliError> {
    let id = field(fields, "id")?;
    id.parse()
        .map_err(|_| CliError::Usage(format!("{id:?} is not a parked event's id")))
}

fn done(name: &str, what: &str) -> Response {
    Redirect::to(&format!("/projection?name={}&done={what}", encode(name))).into_response()
}

fn unknown_parked(name: &str, id: i64) -> CliError {
    CliError::NotFound(format!("projection {name} has no parked event {id}"))
}

/// `POST /projection/rebuild` with `name`.
pub(super) async fn rebuild(State(console): State<Console>, fields: Fields) -> Response {
    let act = async {
        let name = field(&fields, "name")?;
        console.projection(name).await?;
        console
            .store()
            .request_rebuild(name)
            .await
            .map_err(|e| CliError::store(format!("requesting a rebuild of {name}"), e))?;
        console.forget_statuses().await;
        Ok::<_, CliError>(done(name, "rebuild"))
    };
    act.await.unwrap_or_else(|error| failure(&error))
}

/// What to do with a parked event.
#[derive(Clone, Copy)]
enum ParkedAction {
    Retry,
    Discard,
}

/// Retries or discards the parked event that the form names.
async fn on_parked(console: &Console, fields: &Fields, action: ParkedAction) -> Response {
    let act = async {
        let name = crate::query::name("projection name", field(fields, "name")?)?;
        let id = parked_id(fields)?;
        let store = console.store();
        let (found, done_as) = match action {
            ParkedAction::Retry => (
                store
                    .retry_parked(name, id)
                    .await
                    .map_err(|e| CliError::store(format!("retrying parked event {id}"), e))?,
                "retry",
            ),
            ParkedAction::Discard => (
                store
                    .discard_parked(name, id)
                    .await
                    .map_err(|e| CliError::store(format!("discarding parked event {id}"), e))?,
                "discard",
            ),
        };
        if !found {
            return Err(unknown_parked(name, id));
        }
        console.forget_statuses().await;
        Ok(done(name, done_as))
    };
    act.await.unwrap_or_else(|error| failure(&error))
}

/// `POST /projection/retry` with `name` and `id`.
pub(super) async fn retry(State(console): State<Console>, fields: Fields) -> Response {
    on_parked(&console, &fields, ParkedAction::Retry).await
}

/// `POST /projection/discard` with `name` and `id`.
pub(super) async fn discard(State(console): State<Console>, fields: Fields) -> Response {
    on_parked(&console, &fields, ParkedAction::Discard).await
}
