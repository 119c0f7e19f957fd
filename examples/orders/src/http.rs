//! The HTTP API: commands on orders, and the read models.
//!
//! | Method and path | What |
//! |---|---|
//! | `POST /orders` | place an order: `{"customer_id": "ada", "order_id": "1001"}` (`order_id` optional) |
//! | `POST /orders/{id}/items` | add items: `{"sku": "TEA-01", "quantity": 2, "unit_price_cents": 450}` |
//! | `DELETE /orders/{id}/items/{sku}` | remove an article's line |
//! | `POST /orders/{id}/pay` | pay: `{"amount_cents": 900}` |
//! | `POST /orders/{id}/ship` | ship: `{"tracking_number": "TRK-1"}` |
//! | `POST /orders/{id}/cancel` | cancel: `{"reason": "..."}` |
//! | `GET /orders`, `GET /orders?customer_id=ada` | order summaries (read model) |
//! | `GET /orders/{id}` | one order's summary (read model) |
//! | `GET /orders/{id}/events` | the order's events, upcast to the current schema |
//! | `GET /customers`, `GET /customers/{id}` | per-customer totals (read model) |
//! | `GET /projections` | projection status: position, lag, state |
//! | `POST /projections/{name}/rebuild` | rebuild a read model from the events |
//!
//! Commands take the correlation id of their events from the
//! `x-correlation-id` request header (a fresh one when it is missing) and
//! echo it in the response. Read models are updated a moment after a
//! command returns: they are eventually consistent.
//!
//! Errors are JSON, `{"error": "...", "message": "..."}`, with status 400
//! for bad input, 404 for an unknown order, 409 when a rule of the order
//! refuses the command or concurrent writers kept conflicting, and 500
//! otherwise.

use std::future::Future;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use es_core::{
    CommandContext, CommandError, Decide, Event, EventStore, Metadata, StreamId, StreamRead,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::domain::{
    AddItem, Cancel, Order, OrderError, OrderEvent, Pay, PlaceOrder, RemoveItem, Ship,
};
use crate::projections::{self, CustomerTotals, OrderSummaries};
use crate::service::{self, Shop, order_stream};

/// The request header carrying the correlation id.
pub const CORRELATION_ID: &str = "x-correlation-id";

/// The API's routes over `shop`.
pub fn router(shop: Arc<Shop>) -> Router {
    Router::new()
        .route("/orders", post(place_order).get(list_orders))
        .route("/orders/{id}", get(get_order))
        .route("/orders/{id}/events", get(order_events))
        .route("/orders/{id}/items", post(add_item))
        .route("/orders/{id}/items/{sku}", delete(remove_item))
        .route("/orders/{id}/pay", post(pay))
        .route("/orders/{id}/ship", post(ship))
        .route("/orders/{id}/cancel", post(cancel))
        .route("/customers", get(list_customers))
        .route("/customers/{id}", get(get_customer))
        .route("/projections", get(projection_status))
        .route("/projections/{name}/rebuild", post(rebuild))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(shop)
}

/// Serves the API on `listener` until `shutdown` completes.
///
/// # Errors
///
/// When accepting connections fails.
pub async fn serve<F>(listener: TcpListener, shop: Arc<Shop>, shutdown: F) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    axum::serve(listener, router(shop))
        .with_graceful_shutdown(shutdown)
        .await
}

/// An error response: a status and a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// A failure the client cannot act on: logged here, not shown.
    fn internal(error: &dyn std::error::Error) -> Self {
        eprintln!("internal error: {error}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }

    /// The response's status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": self.error, "message": self.message }));
        (self.status, body).into_response()
    }
}

impl From<CommandError<OrderError>> for ApiError {
    fn from(error: CommandError<OrderError>) -> Self {
        match error {
            CommandError::Rejected(rejection @ OrderError::Invalid { .. }) => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_command",
                rejection.to_string(),
            ),
            CommandError::Rejected(OrderError::NotPlaced) => Self::new(
                StatusCode::NOT_FOUND,
                "unknown_order",
                OrderError::NotPlaced.to_string(),
            ),
            CommandError::Rejected(rejection) => {
                Self::new(StatusCode::CONFLICT, "rejected", rejection.to_string())
            }
            conflict @ CommandError::Conflict { .. } => {
                Self::new(StatusCode::CONFLICT, "conflict", conflict.to_string())
            }
            other => Self::internal(&other),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        Self::internal(&error)
    }
}

impl From<crate::Error> for ApiError {
    fn from(error: crate::Error) -> Self {
        Self::internal(&error)
    }
}

impl From<es_core::StoreError> for ApiError {
    fn from(error: es_core::StoreError) -> Self {
        Self::internal(&error)
    }
}

/// A JSON body whose rejection is a JSON 400.
struct Body<T>(T);

impl<S, T> FromRequest<S> for Body<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    ApiError::bad_request(rejection.body_text())
}

/// The command metadata of a request: a fresh command id (the causation
/// id) and the correlation id from the `x-correlation-id` header, or the
/// command id when there is none.
struct RequestContext {
    context: CommandContext,
    correlation_id: String,
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let command_id = Uuid::now_v7();
        let correlation_id = match parts.headers.get(CORRELATION_ID) {
            None => command_id.to_string(),
            Some(value) => {
                let text = value
                    .to_str()
                    .ok()
                    .filter(|text| (1..=128).contains(&text.len()))
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "x-correlation-id must be 1 to 128 visible ASCII characters",
                        )
                    })?;
                text.to_owned()
            }
        };
        Ok(Self {
            context: CommandContext::for_command(command_id)
                .with_correlation_id(correlation_id.clone()),
            correlation_id,
        })
    }
}

fn stream(order_id: &str) -> Result<StreamId, ApiError> {
    order_stream(order_id).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// What a command returns.
#[derive(Debug, Serialize)]
struct CommandReply {
    order_id: String,
    version: u64,
    attempts: u32,
    event_ids: Vec<Uuid>,
    correlation_id: String,
}

/// Runs `command` on order `order_id` and replies with the new version.
async fn run<C>(
    shop: &Shop,
    order_id: String,
    request: RequestContext,
    command: C,
    status: StatusCode,
) -> Result<Response, ApiError>
where
    Order: Decide<C, Error = OrderError>,
    C: Sync,
{
    let stream = stream(&order_id)?;
    let outcome = shop.execute(&stream, &command, &request.context).await?;
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&request.correlation_id) {
        headers.insert(CORRELATION_ID, value);
    }
    if status == StatusCode::CREATED
        && let Ok(location) = HeaderValue::from_str(&format!("/orders/{order_id}"))
    {
        headers.insert(header::LOCATION, location);
    }
    let reply = CommandReply {
        order_id,
        version: outcome.stream_version,
        attempts: outcome.attempts,
        event_ids: outcome.event_ids,
        correlation_id: request.correlation_id,
    };
    Ok((status, headers, Json(reply)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaceBody {
    customer_id: String,
    #[serde(default)]
    order_id: Option<String>,
}

async fn place_order(
    State(shop): State<Arc<Shop>>,
    request: RequestContext,
    Body(body): Body<PlaceBody>,
) -> Result<Response, ApiError> {
    let order_id = body
        .order_id
        .unwrap_or_else(|| Uuid::now_v7().simple().to_string());
    let command = PlaceOrder {
        customer_id: body.customer_id,
    };
    run(&shop, order_id, request, command, StatusCode::CREATED).await
}

async fn add_item(
    State(shop): State<Arc<Shop>>,
    Path(order_id): Path<String>,
    request: RequestContext,
    Body(command): Body<AddItem>,
) -> Result<Response, ApiError> {
    run(&shop, order_id, request, command, StatusCode::OK).await
}

async fn remove_item(
    State(shop): State<Arc<Shop>>,
    Path((order_id, sku)): Path<(String, String)>,
    request: RequestContext,
) -> Result<Response, ApiError> {
    run(&shop, order_id, request, RemoveItem { sku }, StatusCode::OK).await
}

async fn pay(
    State(shop): State<Arc<Shop>>,
    Path(order_id): Path<String>,
    request: RequestContext,
    Body(command): Body<Pay>,
) -> Result<Response, ApiError> {
    run(&shop, order_id, request, command, StatusCode::OK).await
}

async fn ship(
    State(shop): State<Arc<Shop>>,
    Path(order_id): Path<String>,
    request: RequestContext,
    Body(command): Body<Ship>,
) -> Result<Response, ApiError> {
    run(&shop, order_id, request, command, StatusCode::OK).await
}

async fn cancel(
    State(shop): State<Arc<Shop>>,
    Path(order_id): Path<String>,
    request: RequestContext,
    Body(command): Body<Cancel>,
) -> Result<Response, ApiError> {
    run(&shop, order_id, request, command, StatusCode::OK).await
}

#[derive(Debug, Deserialize)]
struct OrderFilter {
    customer_id: Option<String>,
}

async fn list_orders(
    State(shop): State<Arc<Shop>>,
    Query(filter): Query<OrderFilter>,
) -> Result<Json<Vec<projections::OrderSummary>>, ApiError> {
    let summaries = match filter.customer_id {
        Some(customer) => projections::customer_orders(shop.pool(), &customer).await?,
        None => projections::order_summaries(shop.pool()).await?,
    };
    Ok(Json(summaries))
}

async fn get_order(
    State(shop): State<Arc<Shop>>,
    Path(order_id): Path<String>,
) -> Result<Json<projections::OrderSummary>, ApiError> {
    stream(&order_id)?;
    projections::order_summary(shop.pool(), &order_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("order"))
}

/// One event of an order's stream, upcast to the current schema.
#[derive(Debug, Serialize)]
struct EventView {
    version: u64,
    position: String,
    event_id: Uuid,
    event_type: String,
    /// The schema version it was stored with.
    stored_schema_version: u32,
    /// The payload in the current schema version.
    data: Value,
    metadata: Metadata,
    recorded_at: DateTime<Utc>,
}

async fn order_events(
    State(shop): State<Arc<Shop>>,
    Path(order_id): Path<String>,
) -> Result<Json<Vec<EventView>>, ApiError> {
    let stream = stream(&order_id)?;
    let recorded = shop
        .store()
        .read_stream(&stream, StreamRead::forward())
        .await?;
    if recorded.is_empty() {
        return Err(ApiError::not_found("order"));
    }
    let mut events = Vec::with_capacity(recorded.len());
    for event in recorded {
        let data = OrderEvent::decode(&event)
            .map_err(|e| ApiError::internal(&e))?
            .to_data()
            .map_err(|e| ApiError::internal(&e))?;
        events.push(EventView {
            version: event.version,
            position: event.position.to_string(),
            event_id: event.event_id,
            event_type: event.event_type,
            stored_schema_version: event.schema_version,
            data,
            metadata: event.metadata,
            recorded_at: event.recorded_at,
        });
    }
    Ok(Json(events))
}

async fn list_customers(
    State(shop): State<Arc<Shop>>,
) -> Result<Json<Vec<projections::CustomerTotal>>, ApiError> {
    Ok(Json(projections::customer_totals(shop.pool()).await?))
}

async fn get_customer(
    State(shop): State<Arc<Shop>>,
    Path(customer_id): Path<String>,
) -> Result<Json<projections::CustomerTotal>, ApiError> {
    projections::customer_total(shop.pool(), &customer_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("customer"))
}

/// A projection's status.
#[derive(Debug, Serialize)]
struct StatusView {
    name: String,
    position: String,
    lag: u64,
    state: String,
    active: bool,
    events_applied: u64,
    parked: u64,
    last_error: Option<String>,
    updated_at: DateTime<Utc>,
}

async fn projection_status(
    State(shop): State<Arc<Shop>>,
) -> Result<Json<Vec<StatusView>>, ApiError> {
    let statuses = service::status(shop.store()).await?;
    Ok(Json(
        statuses
            .into_iter()
            .map(|s| StatusView {
                position: s.position.to_string(),
                name: s.name,
                lag: s.lag,
                state: s.state.to_string(),
                active: s.active,
                events_applied: s.events_applied,
                parked: s.parked,
                last_error: s.last_error,
                updated_at: s.updated_at,
            })
            .collect(),
    ))
}

async fn rebuild(
    State(shop): State<Arc<Shop>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    use es_core::Projection as _;
    if name != OrderSummaries::NAME && name != CustomerTotals::NAME {
        return Err(ApiError::not_found("projection"));
    }
    shop.store().request_rebuild(&name).await?;
    let body = Json(json!({ "rebuild_requested": name }));
    Ok((StatusCode::ACCEPTED, body).into_response())
}
