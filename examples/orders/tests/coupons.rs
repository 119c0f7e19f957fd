//! A coupon is redeemed by at most one order: applying it writes the
//! order's `CouponApplied` and the coupon's `CouponRedeemed` in one atomic
//! append across both streams.

mod common;

use std::sync::Arc;
use std::time::Duration;

use es_core::{CommandContext, CommandError, Event as _, EventStore, StreamRead};
use orders::coupons::{CouponEvent, CouponRedeemed, IssueCoupon, coupon_stream};
use orders::domain::{AddItem, OrderError, OrderEvent, PlaceOrder};
use orders::projections::order_summary;
use orders::service::{Projections, Shop, order_stream, wait_for_projections};
use uuid::Uuid;

const RACERS: usize = 20;

async fn placed_order(shop: &Shop, id: &str) {
    let stream = order_stream(id).expect("an order id");
    let context = CommandContext::new();
    let place = PlaceOrder {
        customer_id: format!("customer-{id}"),
    };
    shop.execute(&stream, &place, &context)
        .await
        .expect("placing");
    let item = AddItem {
        sku: "tea".to_owned(),
        quantity: 2,
        unit_price_cents: 450,
    };
    shop.execute(&stream, &item, &context)
        .await
        .expect("adding an item");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_twenty_orders_racing_for_one_coupon_exactly_one_wins() {
    let shop = Arc::new(Shop::open(common::fresh_store().await).await.expect("shop"));
    let code = coupon_stream("WELCOME10").expect("a code");
    shop.issue_coupon(
        &code,
        &IssueCoupon {
            discount_cents: 300,
        },
        &CommandContext::new(),
    )
    .await
    .expect("issuing");
    for i in 0..RACERS {
        placed_order(&shop, &format!("{}", 2000 + i)).await;
    }

    let racers = (0..RACERS).map(|i| {
        let shop = Arc::clone(&shop);
        let code = code.clone();
        tokio::spawn(async move {
            let order = order_stream(&format!("{}", 2000 + i)).expect("an order id");
            shop.apply_coupon(&order, &code, &CommandContext::new())
                .await
        })
    });
    let mut winners = Vec::new();
    let mut refused = 0;
    for (i, racer) in racers.enumerate() {
        match racer.await.expect("the task ends") {
            Ok((order, coupon)) => {
                assert_eq!((order.stream_version, coupon.stream_version), (3, 2));
                winners.push(format!("{}", 2000 + i));
            }
            Err(CommandError::Rejected(OrderError::CouponRedeemed { code, .. })) => {
                assert_eq!(code, "WELCOME10");
                refused += 1;
            }
            Err(other) => panic!("racer {i}: neither won nor was refused: {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one order wins: {winners:?}");
    assert_eq!(refused, RACERS - 1);

    let events = shop
        .store()
        .read_stream(&code, StreamRead::forward())
        .await
        .expect("reading the coupon");
    let decoded: Vec<_> = events
        .iter()
        .map(|e| CouponEvent::decode(e).expect("a coupon event"))
        .collect();
    assert_eq!(decoded.len(), 2, "issued, then redeemed once");
    assert_eq!(
        decoded[1],
        CouponEvent::Redeemed(CouponRedeemed {
            order_id: winners[0].clone()
        })
    );
    for i in 0..RACERS {
        let id = format!("{}", 2000 + i);
        let order = shop
            .store()
            .read_stream(&order_stream(&id).expect("id"), StreamRead::forward())
            .await
            .expect("reading an order");
        let applied = order
            .iter()
            .filter(|e| matches!(OrderEvent::decode(e), Ok(OrderEvent::CouponApplied(_))))
            .count();
        assert_eq!(applied, usize::from(winners[0] == id), "order {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redeemed_coupon_shows_in_the_summary_and_a_resent_command_is_recalled() {
    let shop = Shop::open(common::fresh_store().await).await.expect("shop");
    let code = coupon_stream("SPRING").expect("a code");
    let issue = IssueCoupon {
        discount_cents: 250,
    };
    shop.issue_coupon(&code, &issue, &CommandContext::new())
        .await
        .expect("issuing");
    placed_order(&shop, "3000").await;
    let order = order_stream("3000").expect("id");
    let context = CommandContext::for_command(Uuid::new_v4());
    let (first, coupon) = shop
        .apply_coupon(&order, &code, &context)
        .await
        .expect("applying");
    let (again, coupon_again) = shop
        .apply_coupon(&order, &code, &context)
        .await
        .expect("the same command again");
    assert!(again.already_applied && coupon_again.already_applied);
    assert_eq!(
        (again.stream_version, coupon_again.stream_version),
        (first.stream_version, coupon.stream_version)
    );
    let unknown = coupon_stream("NOPE").expect("a code");
    assert!(matches!(
        shop.apply_coupon(&order, &unknown, &CommandContext::new())
            .await,
        Err(CommandError::Rejected(
            OrderError::CouponAlreadyApplied { .. }
        ))
    ));
    placed_order(&shop, "3001").await;
    assert!(matches!(
        shop.apply_coupon(
            &order_stream("3001").expect("id"),
            &unknown,
            &CommandContext::new()
        )
        .await,
        Err(CommandError::Rejected(OrderError::NoSuchCoupon { code })) if code == "NOPE"
    ));

    let projections = Projections::start(shop.store());
    wait_for_projections(
        shop.store(),
        &["order_summaries"],
        Duration::from_secs(30),
        || async { Ok(true) },
    )
    .await
    .expect("caught up");
    let summary = order_summary(shop.pool(), "3000")
        .await
        .expect("query")
        .expect("a summary");
    assert_eq!((summary.total_cents, summary.discount_cents), (900, 250));
    projections.stop().await.expect("stopping");
}
