//! The HTTP API against PostgreSQL: commands with their status codes,
//! correlation ids in the stored metadata, and the read models behind the
//! `GET` routes.

mod common;

use common::api::{call, call_with, eventually, send};

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use es_core::{EventStore, ExpectedVersion, NewEvent};
use orders::domain::legacy_item_added;
use orders::service::{Projections, Shop, order_stream};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn open_shop() -> (Arc<Shop>, Projections) {
    let store = common::fresh_store().await;
    let shop = Arc::new(Shop::open(store).await.expect("opening the shop"));
    let projections = Projections::start(shop.store());
    (shop, projections)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(
    clippy::too_many_lines,
    reason = "one order's story, each step depending on the last"
)]
async fn an_order_through_the_api() {
    let (shop, projections) = open_shop().await;
    let app = orders::http::router(Arc::clone(&shop));

    let placed = call_with(
        &app,
        Method::POST,
        "/orders",
        Some(r#"{"customer_id": "ada", "order_id": "42"}"#),
        Some("checkout-42"),
    )
    .await;
    assert_eq!(placed.status, StatusCode::CREATED, "{}", placed.body);
    assert_eq!(placed.correlation_id.as_deref(), Some("checkout-42"));
    assert_eq!(placed.body["order_id"], "42");
    assert_eq!(placed.body["version"], 1);

    let again = call(
        &app,
        Method::POST,
        "/orders",
        Some(r#"{"customer_id": "bob", "order_id": "42"}"#),
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    assert_eq!(again.body["error"], "rejected");

    let tea = r#"{"sku": "TEA-01", "quantity": 2, "unit_price_cents": 450}"#;
    let added = call_with(
        &app,
        Method::POST,
        "/orders/42/items",
        Some(tea),
        Some("checkout-42"),
    )
    .await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.body);
    assert_eq!(added.body["version"], 2);

    // Bad input: 400 with a JSON error.
    for (uri, body) in [
        (
            "/orders/42/items",
            r#"{"sku": "TEA-01", "quantity": -1, "unit_price_cents": 450}"#,
        ),
        (
            "/orders/42/items",
            r#"{"sku": "TEA-01", "quantity": 0, "unit_price_cents": 450}"#,
        ),
        (
            "/orders/42/items",
            r#"{"sku": "TEA-01", "quantity": 1, "price": 450}"#,
        ),
        ("/orders/42/pay", "not json"),
        ("/orders/bad%20id/pay", r#"{"amount_cents": 1}"#),
    ] {
        let reply = call(&app, Method::POST, uri, Some(body)).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{uri} {body}: {}",
            reply.body
        );
        assert!(reply.body["message"].is_string(), "{}", reply.body);
    }
    // An unknown order: 404.
    let unknown = call(
        &app,
        Method::POST,
        "/orders/nope/pay",
        Some(r#"{"amount_cents": 1}"#),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.body);
    assert_eq!(unknown.body["error"], "unknown_order");
    // Rules: 409.
    let early = call(
        &app,
        Method::POST,
        "/orders/42/ship",
        Some(r#"{"tracking_number": "T-1"}"#),
    )
    .await;
    assert_eq!(early.status, StatusCode::CONFLICT, "{}", early.body);
    assert_eq!(
        early.body["message"],
        "the order must be paid before it ships"
    );
    let short = call(
        &app,
        Method::POST,
        "/orders/42/pay",
        Some(r#"{"amount_cents": 899}"#),
    )
    .await;
    assert_eq!(short.status, StatusCode::CONFLICT, "{}", short.body);

    let paid = call_with(
        &app,
        Method::POST,
        "/orders/42/pay",
        Some(r#"{"amount_cents": 900}"#),
        Some("checkout-42"),
    )
    .await;
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.body);
    let shipped = call(
        &app,
        Method::POST,
        "/orders/42/ship",
        Some(r#"{"tracking_number": "T-1"}"#),
    )
    .await;
    assert_eq!(shipped.status, StatusCode::OK, "{}", shipped.body);
    let generated = shipped.correlation_id.expect("a generated correlation id");
    assert_eq!(shipped.body["correlation_id"], generated.as_str());
    let late = call(&app, Method::DELETE, "/orders/42/items/TEA-01", None).await;
    assert_eq!(late.status, StatusCode::CONFLICT, "{}", late.body);
    assert_eq!(
        late.body["message"],
        "the order has shipped; it can no longer change"
    );

    // The stored events carry the request's correlation id.
    let events = call(&app, Method::GET, "/orders/42/events", None).await;
    assert_eq!(events.status, StatusCode::OK);
    let correlations: Vec<_> = events
        .body
        .as_array()
        .expect("a list")
        .iter()
        .map(|e| {
            (
                e["event_type"].as_str().unwrap_or_default().to_owned(),
                e["metadata"]["correlation_id"].clone(),
            )
        })
        .collect();
    assert_eq!(
        correlations,
        [
            ("OrderPlaced".to_owned(), json!("checkout-42")),
            ("ItemAdded".to_owned(), json!("checkout-42")),
            ("OrderPaid".to_owned(), json!("checkout-42")),
            ("OrderShipped".to_owned(), json!(generated)),
        ]
    );
    assert_eq!(
        call(&app, Method::GET, "/orders/nope/events", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // The read models, once both projections have caught up.
    eventually(&app, "/projections", |r| {
        r.body.as_array().is_some_and(|all| {
            all.len() == 2 && all.iter().all(|s| s["lag"] == 0 && s["state"] == "running")
        })
    })
    .await;
    let summary = call(&app, Method::GET, "/orders/42", None).await;
    assert_eq!(summary.body["status"], "shipped", "{}", summary.body);
    assert_eq!(summary.body["customer_id"], "ada");
    assert_eq!(summary.body["units"], 2);
    assert_eq!(summary.body["total_cents"], 900);
    assert_eq!(summary.body["paid_cents"], 900);
    assert_eq!(summary.body["tracking_number"], "T-1");
    assert_eq!(summary.body["version"], 4);
    let ada = call(&app, Method::GET, "/customers/ada", None).await;
    assert_eq!(
        ada.body,
        json!({ "customer_id": "ada", "orders_placed": 1, "orders_paid": 1, "orders_cancelled": 0, "spent_cents": 900 })
    );
    assert_eq!(
        call(&app, Method::GET, "/customers/nobody", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&app, Method::GET, "/orders/nope", None).await.status,
        StatusCode::NOT_FOUND
    );
    let listed = call(&app, Method::GET, "/orders?customer_id=ada", None).await;
    assert_eq!(listed.body.as_array().map(Vec::len), Some(1));

    let status = call(&app, Method::GET, "/projections", None).await;
    let names: Vec<_> = status
        .body
        .as_array()
        .expect("a list")
        .iter()
        .map(|s| s["name"].clone())
        .collect();
    assert_eq!(
        names,
        [json!("customer_totals"), json!("order_summaries@v2")]
    );

    // A rebuild gives the same read model back.
    let unknown = call(&app, Method::POST, "/projections/nope/rebuild", None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    sqlx::query("DELETE FROM order_summaries_v2")
        .execute(shop.pool())
        .await
        .expect("delete");
    let requested = call(
        &app,
        Method::POST,
        "/projections/order_summaries/rebuild",
        None,
    )
    .await;
    assert_eq!(requested.status, StatusCode::ACCEPTED);
    // The replayed row equals the one before, timestamps included (they
    // come from the events).
    eventually(&app, "/orders/42", |r| r.body == summary.body).await;

    let missing = call(&app, Method::GET, "/no/such/route", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.body["error"], "not_found");

    projections.stop().await.expect("the runners stop cleanly");
}

/// Events of schema version 1 come out of the API in the current shape, and
/// the projections read them too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_events_are_served_upcast() {
    let (shop, projections) = open_shop().await;
    let app = orders::http::router(Arc::clone(&shop));
    let stream = order_stream("7").expect("valid id");
    shop.store()
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![
                NewEvent::new("OrderPlaced", json!({ "customer_id": "grace" })),
                legacy_item_added("BOOK-7", 2, "12.5"),
            ],
        )
        .await
        .expect("append");

    let events = call(&app, Method::GET, "/orders/7/events", None).await;
    let item = &events.body[1];
    assert_eq!(item["stored_schema_version"], 1);
    assert_eq!(
        item["data"],
        json!({ "sku": "BOOK-7", "quantity": 2, "unit_price_cents": 1250 })
    );
    let summary = eventually(&app, "/orders/7", |r| {
        r.status == StatusCode::OK && r.body["units"] == 2
    })
    .await;
    assert_eq!(summary.body["total_cents"], 2500);
    let paid = call(
        &app,
        Method::POST,
        "/orders/7/pay",
        Some(r#"{"amount_cents": 2500}"#),
    )
    .await;
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.body);
    assert_eq!(paid.body["version"], 3);
    projections.stop().await.expect("the runners stop cleanly");
}

/// `serve` answers on a real socket and stops on its shutdown signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_on_a_socket() {
    let (shop, projections) = open_shop().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop_server, stop_signal) = tokio::sync::oneshot::channel::<()>();
    let app = orders::http::router(shop);
    let server = tokio::spawn(orders::http::serve(listener, app, async {
        let _ = stop_signal.await;
    }));

    let mut socket = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let body = r#"{"customer_id":"ada","order_id":"1"}"#;
    let request = format!(
        "POST /orders HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\n\
         x-correlation-id: socket-1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    socket.read_to_string(&mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert!(
        response.contains("x-correlation-id: socket-1"),
        "{response}"
    );

    let _ = stop_server.send(());
    server.await.expect("server task").expect("server");
    projections.stop().await.expect("the runners stop cleanly");
}

/// `Idempotency-Key`: a POST sent again with the same key and body takes
/// effect once and gets the original reply (also from 8 clients at once,
/// and after later commands, when it would now be refused); the same key
/// with another body is 422; without the header every POST is a new
/// command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_makes_a_post_take_effect_once() {
    let (shop, projections) = open_shop().await;
    let app = orders::http::router(Arc::clone(&shop));
    let keyed = |key| [("idempotency-key", key)];

    // Placing without an order id: the id comes from the key.
    let ada = r#"{"customer_id": "ada"}"#;
    let placed = send(&app, Method::POST, "/orders", Some(ada), &keyed("place-1")).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{}", placed.body);
    assert!(!placed.replayed);
    let again = send(&app, Method::POST, "/orders", Some(ada), &keyed("place-1")).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    assert!(again.replayed);
    assert_eq!(again.body, placed.body);
    let order = placed.body["order_id"]
        .as_str()
        .expect("an order id")
        .to_owned();
    let items = format!("/orders/{order}/items");

    let tea = r#"{"sku": "TEA-01", "quantity": 2, "unit_price_cents": 450}"#;
    let added = send(&app, Method::POST, &items, Some(tea), &keyed("add-1")).await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.body);
    let again = send(&app, Method::POST, &items, Some(tea), &keyed("add-1")).await;
    assert_eq!((again.status, again.replayed), (StatusCode::OK, true));
    assert_eq!(again.body, added.body);

    // The same key with another body.
    let mug = r#"{"sku": "MUG-02", "quantity": 1, "unit_price_cents": 1200}"#;
    let reused = send(&app, Method::POST, &items, Some(mug), &keyed("add-1")).await;
    assert_eq!(
        reused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reused.body
    );
    assert_eq!(reused.body["error"], "idempotency_key_reused");

    // 8 clients send one request at once.
    let add_2 = keyed("add-2");
    let sends = (0..8).map(|_| send(&app, Method::POST, &items, Some(mug), &add_2));
    let replies = futures::future::join_all(sends).await;
    assert!(
        replies.iter().all(|r| r.status == StatusCode::OK),
        "{:?}",
        replies.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    assert_eq!(replies.iter().filter(|r| !r.replayed).count(), 1);
    assert!(replies.iter().all(|r| r.body == replies[0].body));

    // Without the header, each POST is a new command.
    for _ in 0..2 {
        let plain = call(&app, Method::POST, &items, Some(tea)).await;
        assert_eq!(plain.status, StatusCode::OK, "{}", plain.body);
    }

    // Paid; sent again after the order shipped, paying would be refused:
    // the original reply stands.
    let amount = r#"{"amount_cents": 3900}"#;
    let pay = format!("/orders/{order}/pay");
    let paid = send(&app, Method::POST, &pay, Some(amount), &keyed("pay-1")).await;
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.body);
    let shipping = format!("/orders/{order}/ship");
    let shipped = call(
        &app,
        Method::POST,
        &shipping,
        Some(r#"{"tracking_number": "TRK-9"}"#),
    )
    .await;
    assert_eq!(shipped.status, StatusCode::OK, "{}", shipped.body);
    let again = send(&app, Method::POST, &pay, Some(amount), &keyed("pay-1")).await;
    assert_eq!(
        (again.status, again.replayed),
        (StatusCode::OK, true),
        "{}",
        again.body
    );
    assert_eq!(again.body, paid.body);

    let stream = order_stream(&order).expect("a valid order id");
    let events = shop
        .store()
        .read_stream(&stream, es_core::StreamRead::forward())
        .await
        .expect("reading the order");
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "OrderPlaced",
            "ItemAdded",
            "ItemAdded",
            "ItemAdded",
            "ItemAdded",
            "OrderPaid",
            "OrderShipped"
        ],
        "each keyed request took effect once, each plain one every time"
    );
    projections.stop().await.expect("stopping the projections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coupon_through_the_api() {
    let (shop, projections) = open_shop().await;
    let app = orders::http::router(Arc::clone(&shop));
    let discount = Some(r#"{"discount_cents": 300}"#);
    let issued = call(&app, Method::POST, "/coupons/WELCOME10", discount).await;
    assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.body);
    let again = call(&app, Method::POST, "/coupons/WELCOME10", discount).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    let key = [("idempotency-key", "issue-spring")];
    let spring = send(&app, Method::POST, "/coupons/SPRING", discount, &key).await;
    assert_eq!(spring.status, StatusCode::CREATED, "{}", spring.body);
    let resent = send(&app, Method::POST, "/coupons/SPRING", discount, &key).await;
    assert_eq!(
        (resent.status, resent.replayed),
        (StatusCode::CREATED, true)
    );
    let other = Some(r#"{"discount_cents": 900}"#);
    let reused = send(&app, Method::POST, "/coupons/SPRING", other, &key).await;
    assert_eq!(
        reused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reused.body
    );
    let zero = Some(r#"{"discount_cents": 0}"#);
    let no_discount = call(&app, Method::POST, "/coupons/FREE", zero).await;
    assert_eq!(
        no_discount.status,
        StatusCode::BAD_REQUEST,
        "{}",
        no_discount.body
    );
    let bad = call(&app, Method::POST, "/coupons/no%20spaces", discount).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);

    let tea = r#"{"sku": "TEA-01", "quantity": 2, "unit_price_cents": 450}"#;
    for order in ["51", "52"] {
        let body = format!(r#"{{"customer_id": "ada", "order_id": "{order}"}}"#);
        let placed = call(&app, Method::POST, "/orders", Some(&body)).await;
        assert_eq!(placed.status, StatusCode::CREATED, "{}", placed.body);
        let items = format!("/orders/{order}/items");
        let added = call(&app, Method::POST, &items, Some(tea)).await;
        assert_eq!(added.status, StatusCode::OK, "{}", added.body);
    }
    let code = Some(r#"{"code": "WELCOME10"}"#);
    let key = [("idempotency-key", "coupon-51")];
    let applied = send(&app, Method::POST, "/orders/51/coupon", code, &key).await;
    assert_eq!(applied.status, StatusCode::OK, "{}", applied.body);
    assert_eq!(applied.body["version"], 3);
    let again = send(&app, Method::POST, "/orders/51/coupon", code, &key).await;
    assert_eq!((again.status, again.replayed), (StatusCode::OK, true));
    assert_eq!(again.body, applied.body);
    let taken = call(&app, Method::POST, "/orders/52/coupon", code).await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "{}", taken.body);
    assert!(
        taken.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("51")),
        "{}",
        taken.body
    );
    let unknown = Some(r#"{"code": "NOPE"}"#);
    let missing = call(&app, Method::POST, "/orders/52/coupon", unknown).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.body);
    assert_eq!(missing.body["error"], "unknown_coupon");

    // Paying takes the discount into account.
    let short = call(
        &app,
        Method::POST,
        "/orders/51/pay",
        Some(r#"{"amount_cents": 900}"#),
    )
    .await;
    assert_eq!(short.status, StatusCode::CONFLICT, "{}", short.body);
    let paid = call(
        &app,
        Method::POST,
        "/orders/51/pay",
        Some(r#"{"amount_cents": 600}"#),
    )
    .await;
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.body);
    eventually(&app, "/orders/51", |r| r.body["status"] == "paid").await;
    let summary = call(&app, Method::GET, "/orders/51", None).await;
    assert_eq!(summary.body["discount_cents"], 300, "{}", summary.body);
    assert_eq!(summary.body["paid_cents"], 600);
    projections.stop().await.expect("stopping");
}
