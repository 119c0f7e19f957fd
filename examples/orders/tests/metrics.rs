//! `GET /metrics`: the framework's metrics in Prometheus' text format, as
//! `serve` exposes them, after a few commands through the API. This test
//! binary installs the process's recorder, so it holds this one test.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use orders::service::{Projections, Shop, wait_for_projections};
use orders::telemetry;
use tower::ServiceExt as _;

async fn request(app: &axum::Router, method: &str, uri: &str, body: &str) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .expect("a request");
    let response = app.clone().oneshot(request).await.expect("a response");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("the body");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// The value of the sample `name{labels}` in a Prometheus text page.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_in_prometheus_format() {
    let handle = telemetry::install_prometheus().expect("the only recorder");
    let store = common::fresh_store().await;
    let shop = Arc::new(Shop::open(store).await.expect("opening the shop"));
    let projections = Projections::start(shop.store());
    let app = orders::http::router(Arc::clone(&shop)).merge(telemetry::metrics_route(handle));

    let placed = request(
        &app,
        "POST",
        "/orders",
        r#"{"customer_id":"ada","order_id":"7"}"#,
    )
    .await;
    assert_eq!(placed.0, StatusCode::CREATED, "{}", placed.1);
    let added = r#"{"sku":"TEA-01","quantity":2,"unit_price_cents":450}"#;
    assert_eq!(
        request(&app, "POST", "/orders/7/items", added).await.0,
        StatusCode::OK
    );
    let refused = request(&app, "POST", "/orders/7/ship", r#"{"tracking_number":"T"}"#).await;
    assert_eq!(refused.0, StatusCode::CONFLICT, "{}", refused.1);
    wait_for_projections(
        shop.store(),
        &["order_summaries", "customer_totals"],
        Duration::from_secs(20),
        || async { Ok(true) },
    )
    .await
    .expect("the projections catch up");

    // The runners set their lag gauge to 0 once idle, just after their
    // last checkpoint: read the page until it says so.
    let lag = r#"es_projection_lag_events{projection="order_summaries@v2"}"#;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let page = loop {
        let (status, page) = request(&app, "GET", "/metrics", "").await;
        assert_eq!(status, StatusCode::OK);
        if sample(&page, lag) == Some(0.0) || std::time::Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let applied = r#"es_commands_total{aggregate="Order",outcome="applied"}"#;
    let rejected = r#"es_commands_total{aggregate="Order",outcome="rejected"}"#;
    assert_eq!(sample(&page, applied), Some(2.0), "{page}");
    assert_eq!(sample(&page, rejected), Some(1.0), "{page}");
    assert_eq!(
        sample(&page, "es_events_appended_total"),
        Some(2.0),
        "{page}"
    );
    assert_eq!(
        sample(&page, r#"es_appends_total{outcome="written"}"#),
        Some(2.0),
        "{page}"
    );
    assert!(page.contains("es_command_duration_seconds"), "{page}");
    assert_eq!(sample(&page, lag), Some(0.0), "{page}");
    assert!(page.contains("es_append_duration_seconds"), "{page}");
    projections.stop().await.expect("stopping the runners");
}
