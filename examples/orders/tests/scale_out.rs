//! The shop on PostgreSQL past one server: reads from a hot standby,
//! appends through PgBouncer in transaction pooling mode, and the leases,
//! checkpoints and read models on the primary (all started by the test
//! support).

mod common;

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use es_core::RepositoryOptions;
use es_postgres::{PgEventStore, PgServers, PgStoreOptions};
use es_postgres_local as local;
use orders::service::{Projections, Shop};

use common::api::{call, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_through_a_pooler_and_a_replica() {
    let pair = local::replicated().await.expect("a primary and a standby");
    let pooler = local::pooler(pair.primary()).await.expect("PgBouncer");
    let url = pair.primary().create_database().await.expect("a database");
    // The database reaches the standby before anything connects to it.
    pair.wait_for_replay().await.expect("the standby replays");
    let servers = PgServers::new(&url)
        .replica(pair.standby_url(&url))
        .pooler(pooler.url(&url));
    let store = PgEventStore::connect_servers(&servers, PgStoreOptions::default())
        .await
        .expect("connecting to the three");
    assert!(store.through_pooler() && store.reads_from_replica());
    // No cache: every command reads the stream from the replica first.
    let uncached = RepositoryOptions::default().cache_capacity(0);
    let shop = Shop::open_with(store, uncached)
        .await
        .expect("opening the shop");
    // The schema and the read models reach the standby.
    pair.wait_for_replay().await.expect("the standby replays");
    let shop = Arc::new(shop);
    let projections = Projections::start(shop.store());
    let app = orders::http::router(Arc::clone(&shop));

    let placed = call(
        &app,
        Method::POST,
        "/orders",
        Some(r#"{"customer_id": "ada", "order_id": "7"}"#),
    )
    .await;
    assert_eq!(placed.status, StatusCode::CREATED, "{}", placed.body);
    // Each command right after the last: the replica may not have the
    // previous event yet, and the repository decides on the newest version.
    let steps = [
        (
            "/orders/7/items",
            r#"{"sku": "TEA-01", "quantity": 2, "unit_price_cents": 450}"#,
        ),
        ("/orders/7/pay", r#"{"amount_cents": 900}"#),
        ("/orders/7/ship", r#"{"tracking_number": "T-7"}"#),
    ];
    for (version, (uri, body)) in (2..).zip(steps) {
        let reply = call(&app, Method::POST, uri, Some(body)).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.body);
        assert_eq!(reply.body["version"], version, "{uri}");
    }
    let summary = eventually(&app, "/orders/7", |reply| {
        reply.status == StatusCode::OK && reply.body["status"] == "shipped"
    })
    .await;
    assert_eq!(summary.body["total_cents"], 900, "{}", summary.body);
    projections.stop().await.expect("the runners");
    drop((app, shop));
    tokio::task::spawn_blocking(move || drop((pooler, pair)))
        .await
        .expect("stopping the servers");
}
