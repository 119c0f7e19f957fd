//! An upgrade of `order_summaries` from version 1 to version 2 (discounts)
//! on a database that served version 1: readers are answered from the old
//! table while version 2 builds alongside, then from version 2's, and the
//! old table is dropped.

mod common;

use std::time::Duration;

use es_core::CommandContext;
use orders::domain::{AddItem, PlaceOrder};
use orders::projections::{OrderSummary, order_summaries};
use orders::service::{Projections, Shop, order_stream, wait_for_projections};

/// `order_summaries` as version 1 kept it: a table, without discounts.
const VERSION_1: &str = "
CREATE TABLE order_summaries (
    order_id text PRIMARY KEY, customer_id text NOT NULL, status text NOT NULL,
    units bigint NOT NULL DEFAULT 0, total_cents bigint NOT NULL DEFAULT 0,
    paid_cents bigint NOT NULL DEFAULT 0, tracking_number text,
    version bigint NOT NULL, placed_at timestamptz NOT NULL, updated_at timestamptz NOT NULL
);
INSERT INTO order_summaries VALUES
    ('7001', 'ada', 'open', 2, 900, 0, NULL, 2, now(), now());
-- Its checkpoint, at the head of the feed.
INSERT INTO es.projections (name, tx_id, seq, state)
SELECT 'order_summaries', tx_id::text::bigint, seq, 'stopped'
FROM es.events ORDER BY tx_id DESC, seq DESC LIMIT 1;
";

async fn scalar(shop: &Shop, sql: &str) -> Option<String> {
    sqlx::query_scalar(sql)
        .fetch_optional(shop.pool())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_2_takes_over_from_a_version_1_table() {
    let store = common::fresh_store().await;
    store.migrate().await.expect("migrating");
    let order = order_stream("7001").expect("an id");
    {
        // The events, written by the version before.
        let shop = Shop::open(store.clone()).await.expect("shop");
        let context = CommandContext::new();
        let place = PlaceOrder {
            customer_id: "ada".to_owned(),
        };
        shop.execute(&order, &place, &context)
            .await
            .expect("placing");
        let tea = AddItem {
            sku: "TEA-01".to_owned(),
            quantity: 2,
            unit_price_cents: 450,
        };
        shop.execute(&order, &tea, &context).await.expect("adding");
    }
    sqlx::raw_sql("DROP VIEW order_summaries_served; DROP TABLE order_summaries_v2")
        .execute(store.pool())
        .await
        .expect("dropping what a new database got");
    sqlx::raw_sql(VERSION_1)
        .execute(store.pool())
        .await
        .expect("the state version 1 left");

    let shop = Shop::open(store.clone()).await.expect("shop");
    let view = "SELECT pg_get_viewdef('order_summaries_served')";
    let over = |def: Option<String>, table: &str| {
        def.is_some_and(|d| d.contains(&format!("FROM {table};")))
    };
    assert!(over(scalar(&shop, view).await, "order_summaries"));
    // Until version 2 serves, readers get version 1's rows.
    let before = order_summaries(shop.pool()).await.expect("the summaries");
    assert_eq!(summary(&before), ("7001", 900, 0));

    let projections = Projections::start(shop.store());
    wait_for_projections(
        shop.store(),
        &["order_summaries"],
        Duration::from_secs(60),
        || async {
            let served = "SELECT serving::text FROM es.projection_versions \
                          WHERE name = 'order_summaries' AND NOT EXISTS \
                          (SELECT FROM es.projections WHERE name = 'order_summaries')";
            Ok(scalar(&shop, served).await.as_deref() == Some("2"))
        },
    )
    .await
    .expect("version 2 serves, version 1 retired");

    assert!(over(scalar(&shop, view).await, "order_summaries_v2"));
    let old = "SELECT 'left' FROM pg_tables WHERE tablename = 'order_summaries'";
    assert_eq!(
        scalar(&shop, old).await,
        None,
        "version 1's table is dropped"
    );
    let after = order_summaries(shop.pool()).await.expect("the summaries");
    assert_eq!(summary(&after), ("7001", 900, 0));
    projections.stop().await.expect("stopping");
}

/// The only summary: order, total, discount.
fn summary(rows: &[OrderSummary]) -> (&str, i64, i64) {
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    (row.order_id.as_str(), row.total_cents, row.discount_cents)
}
