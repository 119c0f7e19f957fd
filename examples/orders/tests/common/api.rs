//! Requests to the HTTP API in process, and their replies.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) correlation_id: Option<String>,
    /// Whether the reply says it answers a request sent before.
    pub(crate) replayed: bool,
    pub(crate) body: Value,
}

pub(crate) async fn call(app: &Router, method: Method, uri: &str, body: Option<&str>) -> Reply {
    call_with(app, method, uri, body, None).await
}

pub(crate) async fn call_with(
    app: &Router,
    method: Method,
    uri: &str,
    body: Option<&str>,
    correlation_id: Option<&str>,
) -> Reply {
    let headers: Vec<(&str, &str)> = correlation_id
        .map(|id| ("x-correlation-id", id))
        .into_iter()
        .collect();
    send(app, method, uri, body, &headers).await
}

pub(crate) async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = Request::builder().method(method).uri(uri);
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Body::from(body.unwrap_or_default().to_owned()))
        .expect("a valid request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let replayed = response.headers().get("idempotent-replayed").is_some();
    let correlation_id = response
        .headers()
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("reading the body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{uri}: not JSON ({e}): {bytes:?}"))
    };
    Reply {
        status,
        correlation_id,
        replayed,
        body,
    }
}

/// Polls `uri` until `done` holds for its body (the read models are updated
/// a moment after a command).
pub(crate) async fn eventually(app: &Router, uri: &str, done: impl Fn(&Reply) -> bool) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = call(app, Method::GET, uri, None).await;
        if done(&reply) {
            return reply;
        }
        assert!(
            Instant::now() < deadline,
            "{uri} never got there: {} {}",
            reply.status,
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
