//! Feed reads whose cost does not grow with the store: on a store large
//! enough for the planner to choose differently (over 200,000 events,
//! analyzed), every shape of feed read, from the start, the middle and near
//! the end, reads a bounded number of rows: no sequential scan, no scan or
//! sort of a whole category.

mod common;

use common::runtime;
use es_core::{EventStore, FeedFilter, Position};
use es_postgres::PgEventStore;
use serde_json::Value;

/// Appends in the filled store: about 10.5 events each.
const APPENDS: u32 = 20_000;

/// How a read with `filter` and `limit` may read rows, at most, in any
/// step of its plan (rows out and rows filtered out, times loops).
///
/// - everything, or one category: the page, one append's events (up to 20
///   here) more, and a step or two of bookkeeping; a category read planned
///   as a merge join also reads the rows of other categories between its
///   appends (here the large category holds half the rows);
/// - event types, or several categories: a window of the feed, 4 times the
///   page and at least 2,000 rows;
/// - one category and event types: a quarter of that window in appends,
///   with their events.
///
/// A category of the filled store holds about 100,000 events in 10,000
/// appends, so a read that walks all of one breaks these by far.
fn bound(filter: &FeedFilter, limit: usize) -> f64 {
    let window = (limit * 4).clamp(2_000, 50_000);
    let rows = match (filter.categories.len(), filter.event_types.is_empty()) {
        (0 | 1, true) => 3 * limit + 50,
        (1, false) => window / 4 * 21 + limit,
        _ => window + limit + 50,
    };
    f64::from(u32::try_from(rows).expect("a small bound"))
}

/// Fills the store with [`APPENDS`] appends, each in a transaction of its
/// own through the store's append function: categories `Big` (about half),
/// `Mid` and `Tiny` (one append in 500); 1 to 20 events per append; event
/// types `Common0` to `Common2` and `Rare` (one event in 100).
async fn fill(store: &PgEventStore) {
    let sql = format!(
        "DO $fill$ DECLARE n integer; s text; BEGIN \
         FOR i IN 1 .. {APPENDS} LOOP \
           s := CASE WHEN i % 500 = 0 THEN 'Tiny' WHEN i % 2 = 0 THEN 'Big' ELSE 'Mid' END \
                || '-' || (i * 7919 % 3000)::text; \
           n := 1 + (i * 31 % 20); \
           PERFORM es.append_events(s, 0::smallint, 0::bigint, \
             (SELECT array_agg(gen_random_uuid()) FROM generate_series(1, n)), \
             (SELECT array_agg(CASE WHEN (i * 20 + g) % 100 = 0 THEN 'Rare' ELSE 'Common' || (g % 3) END) \
                FROM generate_series(1, n) g), \
             (SELECT array_agg(1) FROM generate_series(1, n)), \
             (SELECT jsonb_agg(jsonb_build_object('n', g, 'note', 'a typical small event')) \
                FROM generate_series(1, n) g), \
             (SELECT array_agg(NULL::jsonb) FROM generate_series(1, n)), false); \
           COMMIT; \
         END LOOP; END $fill$"
    );
    sqlx::raw_sql(&sql)
        .execute(store.pool())
        .await
        .expect("filling the store");
    sqlx::raw_sql("ANALYZE es.events")
        .execute(store.pool())
        .await
        .expect("analyzing");
}

/// The position of the `n`th event in feed order.
async fn nth(store: &PgEventStore, n: i64) -> Position {
    let (tx, seq): (i64, i64) = sqlx::query_as(
        "SELECT tx_id::text::bigint, seq FROM es.events ORDER BY tx_id, seq OFFSET $1 LIMIT 1",
    )
    .bind(n)
    .fetch_one(store.pool())
    .await
    .expect("a position");
    Position::from_parts(u64::try_from(tx).unwrap(), u64::try_from(seq).unwrap())
}

/// Every step of `plan` (a node of `EXPLAIN (ANALYZE, FORMAT JSON)`), with
/// its parent's type.
fn steps<'a>(plan: &'a Value, parent: &'a str, out: &mut Vec<(&'a str, &'a Value)>) {
    out.push((parent, plan));
    let kind = plan["Node Type"].as_str().unwrap_or("?");
    for child in plan["Plans"].as_array().into_iter().flatten() {
        steps(child, kind, out);
    }
}

/// Checks one plan: no sequential scan, and no step reading more rows than
/// `bound` (a scan of a whole category, or of its appends to sort them,
/// reads far more).
fn check(plan: &Value, bound: f64, what: &str) {
    let root = &plan[0]["Plan"];
    let mut all = Vec::new();
    steps(root, "", &mut all);
    for (parent, step) in all {
        let kind = step["Node Type"].as_str().unwrap_or("?");
        let relation = step["Relation Name"].as_str().unwrap_or("");
        let read = [
            "Actual Rows",
            "Rows Removed by Filter",
            "Rows Removed by Index Recheck",
        ]
        .iter()
        .map(|key| step[*key].as_f64().unwrap_or(0.0))
        .sum::<f64>();
        let rows = read * step["Actual Loops"].as_f64().unwrap_or(1.0);
        assert_ne!(
            kind, "Seq Scan",
            "{what}: a sequential scan of {relation}\n{plan:#}"
        );
        assert!(
            rows <= bound,
            "{what}: {kind} (under {parent}) on {relation:?} read {rows} rows\n{plan:#}"
        );
    }
}

/// On a store of over 200,000 events, every feed read's plan reads a
/// bounded number of rows, wherever it starts, whatever its filter; and a
/// follower of one category reads each of its events once, in feed order.
#[test]
fn feed_reads_cost_no_more_on_a_large_store() {
    runtime().block_on(async {
        let store = common::fresh_store().await;
        fill(&store).await;
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM es.events")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert!(total >= 200_000, "the store holds {total} events");
        check_category_estimate(&store).await;
        check_plans(&store, total).await;
        follow_a_category(&store).await;
    });
}

/// The planner knows a category's share of the appends (statistics on the
/// category expression): without them it takes every category for 0.5% of
/// the rows, and plans a read of a large one as a scan and sort of all its
/// later appends.
async fn check_category_estimate(store: &PgEventStore) {
    let where_big = "FROM es.events WHERE split_part(stream_id, '-', 1) = 'Big' AND starts_append";
    let plan: Value =
        sqlx::query_scalar(&format!("EXPLAIN (FORMAT JSON) SELECT tx_id {where_big}"))
            .fetch_one(store.pool())
            .await
            .expect("a plan");
    let estimated = plan[0]["Plan"]["Plan Rows"].as_f64().expect("an estimate");
    let actual: i64 = sqlx::query_scalar(&format!("SELECT count(*) {where_big}"))
        .fetch_one(store.pool())
        .await
        .expect("a count");
    let actual = f64::from(u32::try_from(actual).expect("a small count"));
    assert!(
        estimated > actual / 2.0 && estimated < actual * 2.0,
        "the planner estimates {estimated} appends of a category that has {actual}"
    );
}

async fn check_plans(store: &PgEventStore, total: i64) {
    let positions = [
        ("the start", Position::START),
        ("the middle", nth(store, total / 2).await),
        ("near the end", nth(store, total - 1_000).await),
    ];
    let filters = [
        ("everything", FeedFilter::all()),
        ("a large category", FeedFilter::all().category("Big")),
        ("a tiny category", FeedFilter::all().category("Tiny")),
        ("a common type", FeedFilter::all().event_types(["Common0"])),
        ("a rare type", FeedFilter::all().event_types(["Rare"])),
        (
            "a category and a rare type",
            FeedFilter::all().category("Big").event_types(["Rare"]),
        ),
        (
            "two categories",
            FeedFilter::all().category("Big").category("Tiny"),
        ),
    ];
    // Pages of 500 (subscriptions) and 4,000 (catching up).
    for limit in [500, 4_000] {
        for (at, after) in positions {
            for (name, filter) in &filters {
                let what = format!("{name} from {at}, pages of {limit}");
                let plan = store
                    .explain_feed(after, filter, limit)
                    .await
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                check(&plan, bound(filter, limit), &what);
            }
        }
    }
}

async fn follow_a_category(store: &PgEventStore) {
    let expected: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM es.events WHERE split_part(stream_id, '-', 1) = 'Big'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    let filter = FeedFilter::all().category("Big");
    let mut after = Position::START;
    let mut read = 0_i64;
    loop {
        let page = store.read_feed(after, &filter, 500).await.unwrap();
        for event in &page.events {
            assert!(event.position > after, "feed order");
            assert_eq!(event.stream_id.category(), "Big");
            after = event.position;
            read += 1;
        }
        after = after.max(page.next);
        if !page.more {
            break;
        }
    }
    assert_eq!(read, expected, "every event of the category, once");
}
