//! The scripted demo runs to the end against PostgreSQL and leaves the read
//! models it shows.

mod common;

use orders::domain::{ItemAdded, OrderEvent};
use orders::projections::{CustomerTotal, order_summaries};

fn customer(id: &str, placed: i64, paid: i64, cancelled: i64, spent: i64) -> CustomerTotal {
    CustomerTotal {
        customer_id: id.to_owned(),
        orders_placed: placed,
        orders_paid: paid,
        orders_cancelled: cancelled,
        spent_cents: spent,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_and_leaves_the_read_models_it_shows() {
    let store = common::fresh_store().await;
    let mut out = Vec::new();
    let report = orders::demo::run(store.clone(), &mut out)
        .await
        .expect("the demo runs to the end");
    let text = String::from_utf8(out).expect("the demo prints UTF-8");

    // Each order's summary: (id, customer, status, units, total, paid,
    // version, tracking).
    let summaries: Vec<_> = report
        .summaries
        .iter()
        .map(|s| {
            (
                s.order_id.as_str(),
                s.customer_id.as_str(),
                s.status.as_str(),
                s.units,
                s.total_cents,
                s.paid_cents,
                s.version,
                s.tracking_number.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        summaries,
        [
            ("1001", "ada", "shipped", 3, 2100, 2100, 7, Some("TRK-1001")),
            ("1002", "grace", "cancelled", 1, 2400, 0, 4, None),
            ("1003", "linus", "paid", 4, 3300, 3300, 5, None),
            ("1000", "grace", "paid", 4, 1800, 1800, 3, None),
            ("1004", "hopper", "paid", 3, 900, 900, 57, None),
            ("1005", "ada", "open", 1, 450, 0, 2, None),
        ]
    );
    assert_eq!(
        report.summaries,
        order_summaries(store.pool()).await.expect("query"),
        "the report shows the table"
    );

    let before = [
        customer("ada", 1, 1, 0, 2100),
        customer("grace", 2, 2, 1, 1800),
        customer("hopper", 1, 1, 0, 900),
        customer("linus", 1, 1, 0, 3300),
    ];
    assert_eq!(report.customers_before_rebuild, before);
    // The rebuild restored every row and added order 1005, placed while
    // the runner was stopped.
    let mut after = before.clone();
    after[0].orders_placed = 2;
    assert_eq!(report.customers, after);

    assert_eq!(report.conflict_attempts, 2, "the conflict was retried once");
    assert_eq!(
        report.upcast,
        OrderEvent::ItemAdded(ItemAdded {
            sku: "TEA-01".to_owned(),
            quantity: 4,
            unit_price_cents: 450,
        })
    );
    assert_eq!(report.snapshot_version, Some(50));
    assert_eq!(report.events_after_snapshot, 7);
    assert!(
        report
            .status
            .iter()
            .all(|s| s.lag == 0 && s.state == es_postgres::ProjectionState::Running),
        "{:?}",
        report.status
    );

    for expected in [
        "refused: the order must be paid before it ships",
        "refused: the order has shipped; it can no longer change",
        "after 2 attempts",
        r#"schema 1  {"quantity":4,"sku":"TEA-01","unit_price":"4.50"}"#,
        "snapshot at v50 plus 7 newer events",
        "[correlation checkout-1001]",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}
