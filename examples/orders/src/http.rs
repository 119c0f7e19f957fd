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
//! | `POST /orders/{id}/coupon` | apply a coupon: `{"code": "WELCOME10"}`; a code is redeemed by one order only |
//! | `POST /coupons/{code}` | issue a coupon: `{"discount_cents": 300}` |
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
//! Every command route honours an `Idempotency-Key` request header (1 to
//! 255 visible ASCII characters), with the semantics of the IETF httpapi
//! draft: a request sent again with the same key and the same body takes
//! effect once and gets the original response (status and body; the reply
//! then also carries `idempotent-replayed: true`), whatever was done to the
//! order since; the same key with a different body is 422
//! `idempotency_key_reused`. The key names the command: its id is derived
//! from the key and the method and path, and the events it writes get ids
//! derived from that (see `es_core::command_event_id`), so the key is
//! remembered for as long as the order's events are, at no cost to the
//! first request. A request that wrote nothing (refused, or nothing to do)
//! leaves nothing to remember: sent again, it is decided again. `POST
//! /orders` without an `order_id` derives the new order's id from the key.
//! Without the header, every request is a new command.
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
    CommandContext, CommandError, CommandOutcome, Decide, Event, EventStore, Metadata, StreamId,
    StreamRead,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::coupons::{CouponError, IssueCoupon, coupon_stream};
use crate::domain::{
    AddItem, Cancel, Order, OrderError, OrderEvent, Pay, PlaceOrder, RemoveItem, Ship,
};
use crate::projections::{self, CustomerTotals, OrderSummaries};
use crate::service::{self, Shop, order_stream};

/// The request header carrying the correlation id.
pub const CORRELATION_ID: &str = "x-correlation-id";

/// The request header that names a command across retries.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The reply header set when a request was recognized by its idempotency
/// key and answered with the original outcome.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// The metadata field recording, in each event a keyed request wrote, a
/// fingerprint of the request's body.
const FINGERPRINT: &str = "request_fingerprint";

/// The namespace of command ids derived from idempotency keys, and of
/// request fingerprints (version 5 UUIDs).
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x3d6f_0c4e_51a2_4b7d_9e08_c1f2_a7b4_6d15);

/// The API's routes over `shop`.
pub fn router(shop: Arc<Shop>) -> Router {
    Router::new()
        .route("/orders", post(place_order).get(list_orders))
        .route("/orders/{id}", get(get_order))
        .route("/orders/{id}/events", get(order_events))
        .route("/orders/{id}/items", post(order_command::<AddItem>))
        .route("/orders/{id}/items/{sku}", delete(remove_item))
        .route("/orders/{id}/pay", post(order_command::<Pay>))
        .route("/orders/{id}/ship", post(order_command::<Ship>))
        .route("/orders/{id}/cancel", post(order_command::<Cancel>))
        .route("/orders/{id}/coupon", post(apply_coupon))
        .route("/coupons/{code}", post(issue_coupon))
        .route("/customers", get(list_customers))
        .route("/customers/{id}", get(get_customer))
        .route("/projections", get(projection_status))
        .route("/projections/{name}/rebuild", post(rebuild))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(shop)
}

/// Serves `app` (the [`router`], with more routes if need be) on
/// `listener` until `shutdown` completes.
///
/// # Errors
///
/// When accepting connections fails.
pub async fn serve<F>(listener: TcpListener, app: Router, shutdown: F) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    axum::serve(listener, app)
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

impl ApiError {
    /// A command's failure: its refusal as `rejected` says, a conflict
    /// that retries did not resolve as 409, anything else as 500.
    fn from_command<E>(error: CommandError<E>, rejected: impl FnOnce(E) -> Self) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        match error {
            CommandError::Rejected(rejection) => rejected(rejection),
            conflict @ CommandError::Conflict { .. } => {
                Self::new(StatusCode::CONFLICT, "conflict", conflict.to_string())
            }
            other => Self::internal(&other),
        }
    }

    fn rejected(
        status: StatusCode,
        error: &'static str,
        rejection: &dyn std::fmt::Display,
    ) -> Self {
        Self::new(status, error, rejection.to_string())
    }
}

impl From<CommandError<OrderError>> for ApiError {
    fn from(error: CommandError<OrderError>) -> Self {
        Self::from_command(error, |rejection| match rejection {
            OrderError::Invalid { .. } => {
                Self::rejected(StatusCode::BAD_REQUEST, "invalid_command", &rejection)
            }
            OrderError::NotPlaced => {
                Self::rejected(StatusCode::NOT_FOUND, "unknown_order", &rejection)
            }
            OrderError::NoSuchCoupon { .. } => {
                Self::rejected(StatusCode::NOT_FOUND, "unknown_coupon", &rejection)
            }
            _ => Self::rejected(StatusCode::CONFLICT, "rejected", &rejection),
        })
    }
}

impl From<CommandError<CouponError>> for ApiError {
    fn from(error: CommandError<CouponError>) -> Self {
        Self::from_command(error, |rejection| match rejection {
            CouponError::InvalidDiscount => {
                Self::rejected(StatusCode::BAD_REQUEST, "invalid_command", &rejection)
            }
            CouponError::AlreadyIssued => {
                Self::rejected(StatusCode::CONFLICT, "rejected", &rejection)
            }
        })
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

/// A JSON body whose rejection is a JSON 400, with a fingerprint of its
/// bytes.
struct Body<T> {
    value: T,
    fingerprint: Uuid,
}

impl<S, T> FromRequest<S> for Body<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
            .await
            .map_err(|e| ApiError::bad_request(format!("cannot read the body: {e}")))?;
        let fingerprint = fingerprint(&bytes);
        let request = Request::from_parts(parts, axum::body::Body::from(bytes));
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self { value, fingerprint }),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

/// The largest request body read.
const MAX_BODY_BYTES: usize = 1 << 20;

/// A fingerprint of a request body: the version 5 UUID of its bytes.
fn fingerprint(body: &[u8]) -> Uuid {
    Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, body)
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    ApiError::bad_request(rejection.body_text())
}

/// The command metadata of a request: its command id (the causation id),
/// derived from the `Idempotency-Key` header or fresh without one, and the
/// correlation id from the `x-correlation-id` header, or the command id when
/// there is none.
struct RequestContext {
    context: CommandContext,
    correlation_id: String,
    /// Whether the request carried an idempotency key.
    keyed: bool,
}

impl RequestContext {
    /// The command's context; a keyed request's events also record the
    /// fingerprint of its body.
    fn command_context(&self, fingerprint: Uuid) -> CommandContext {
        if self.keyed {
            (self.context.clone()).with_custom(FINGERPRINT, fingerprint.to_string())
        } else {
            self.context.clone()
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let key = header_text(&parts.headers, IDEMPOTENCY_KEY, 255)?;
        // The key names the command on this route; without one, the
        // request is a new command, with a fresh id as its causation id.
        let command_id = key.as_ref().map_or_else(Uuid::now_v7, |key| {
            let name = format!("{} {}\n{key}", parts.method, parts.uri.path());
            Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, name.as_bytes())
        });
        let correlation_id = header_text(&parts.headers, CORRELATION_ID, 128)?
            .unwrap_or_else(|| command_id.to_string());
        let context = if key.is_some() {
            CommandContext::for_command(command_id)
        } else {
            CommandContext::from_metadata(Metadata::default().with_causation_id(command_id))
        };
        Ok(Self {
            context: context.with_correlation_id(correlation_id.clone()),
            correlation_id,
            keyed: key.is_some(),
        })
    }
}

/// The text of header `name`, if present: 1 to `max` visible ASCII
/// characters.
fn header_text(headers: &HeaderMap, name: &str, max: usize) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|text| (1..=max).contains(&text.len()))
        .map(|text| Some(text.to_owned()))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{name} must be 1 to {max} visible ASCII characters"
            ))
        })
}

fn stream(order_id: &str) -> Result<StreamId, ApiError> {
    order_stream(order_id).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// What a command returns.
#[derive(Debug, Serialize)]
struct CommandReply {
    order_id: String,
    version: u64,
    event_ids: Vec<Uuid>,
    correlation_id: String,
}

/// Runs `command` on order `order_id` and replies with the new version; a
/// keyed request sent again gets the original reply.
async fn run<C>(
    shop: &Shop,
    order_id: String,
    request: RequestContext,
    (command, fingerprint): (C, Uuid),
    status: StatusCode,
) -> Result<Response, ApiError>
where
    Order: Decide<C, Error = OrderError>,
    C: Sync,
{
    let stream = stream(&order_id)?;
    let context = request.command_context(fingerprint);
    let outcome = shop.execute(&stream, &command, &context).await?;
    reply(shop, order_id, request, &outcome, fingerprint, status).await
}

/// The reply to a command that wrote `outcome` on order `order_id`: its
/// new version and events, or, for a keyed request sent again, the
/// original reply once its body is known to be the same.
async fn reply(
    shop: &Shop,
    order_id: String,
    request: RequestContext,
    outcome: &CommandOutcome,
    fingerprint: Uuid,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let mut headers = HeaderMap::new();
    if outcome.already_applied && request.keyed {
        same_request(shop, &outcome.event_ids, fingerprint).await?;
        headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
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
        event_ids: outcome.event_ids.clone(),
        correlation_id: request.correlation_id,
    };
    Ok((status, headers, Json(reply)).into_response())
}

/// Checks that the request that first wrote `event_ids` had the body whose
/// fingerprint is `fingerprint`: 422 when its idempotency key is reused for
/// another request.
async fn same_request(shop: &Shop, event_ids: &[Uuid], fingerprint: Uuid) -> Result<(), ApiError> {
    let Some(first) = event_ids.first() else {
        return Ok(());
    };
    let stored = shop.store().read_events(&[*first]).await?;
    let recorded = stored
        .first()
        .and_then(|event| event.metadata.custom.get(FINGERPRINT))
        .and_then(Value::as_str);
    if recorded == Some(fingerprint.to_string().as_str()) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
        "this Idempotency-Key was used for a request with another body",
    ))
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
    Body { value, fingerprint }: Body<PlaceBody>,
) -> Result<Response, ApiError> {
    // A keyed request sent again must find the order it created.
    let order_id = value.order_id.unwrap_or_else(|| {
        let id = request.context.command_id();
        id.unwrap_or_else(Uuid::now_v7).simple().to_string()
    });
    let command = PlaceOrder {
        customer_id: value.customer_id,
    };
    run(
        &shop,
        order_id,
        request,
        (command, fingerprint),
        StatusCode::CREATED,
    )
    .await
}

/// A command with a JSON body on order `{id}`: add an item, pay, ship,
/// cancel.
async fn order_command<C>(
    State(shop): State<Arc<Shop>>,
    Path(order_id): Path<String>,
    request: RequestContext,
    Body { value, fingerprint }: Body<C>,
) -> Result<Response, ApiError>
where
    Order: Decide<C, Error = OrderError>,
    C: DeserializeOwned + Send + Sync,
{
    let command = (value, fingerprint);
    run(&shop, order_id, request, command, StatusCode::OK).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CouponBody {
    code: String,
}

/// Applies a coupon to an order: both streams written at once, so a code
/// is redeemed by one order only.
async fn apply_coupon(
    State(shop): State<Arc<Shop>>,
    Path(order_id): Path<String>,
    request: RequestContext,
    Body { value, fingerprint }: Body<CouponBody>,
) -> Result<Response, ApiError> {
    let order = stream(&order_id)?;
    let code = coupon_stream(&value.code).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let context = request.command_context(fingerprint);
    let (outcome, _) = shop.apply_coupon(&order, &code, &context).await?;
    reply(
        &shop,
        order_id,
        request,
        &outcome,
        fingerprint,
        StatusCode::OK,
    )
    .await
}

/// Issues a coupon.
async fn issue_coupon(
    State(shop): State<Arc<Shop>>,
    Path(code): Path<String>,
    request: RequestContext,
    Body { value, fingerprint }: Body<IssueCoupon>,
) -> Result<Response, ApiError> {
    let stream = coupon_stream(&code).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let context = request.command_context(fingerprint);
    let outcome = shop.issue_coupon(&stream, &value, &context).await?;
    let mut headers = HeaderMap::new();
    if outcome.already_applied && request.keyed {
        same_request(&shop, &outcome.event_ids, fingerprint).await?;
        headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    let reply = json!({
        "code": code,
        "version": outcome.stream_version,
        "correlation_id": request.correlation_id,
    });
    Ok((StatusCode::CREATED, headers, Json(reply)).into_response())
}

async fn remove_item(
    State(shop): State<Arc<Shop>>,
    Path((order_id, sku)): Path<(String, String)>,
    request: RequestContext,
) -> Result<Response, ApiError> {
    let command = (RemoveItem { sku }, fingerprint(b""));
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
