//! The table of listening sessions, which decides whether an append sends
//! NOTIFY: a store that stops removes its row, and the rows of sessions
//! that ended without doing so (a process that died) are found and removed
//! by the next store that appends.

mod common;

use std::time::Duration;

use common::{runtime, stream};
use es_core::{EventStore, ExpectedVersion, FeedFilter, NewEvent, Position};
use es_postgres::{PgEventStore, PgStoreOptions};
use futures::StreamExt;
use serde_json::json;
use sqlx::PgPool;

async fn listeners(pool: &PgPool) -> Vec<i32> {
    sqlx::query_scalar("SELECT pid FROM es.listeners ORDER BY pid")
        .fetch_all(pool)
        .await
        .expect("reading the listeners")
}

/// Waits up to 10 s for the listeners table to satisfy `done`.
async fn wait_for(pool: &PgPool, what: &str, done: impl Fn(&[i32]) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = listeners(pool).await;
        if done(&now) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: listeners are {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn ping(store: &PgEventStore) {
    store
        .append(
            &stream("Ping-1"),
            ExpectedVersion::Any,
            vec![NewEvent::new("Ping", json!({}))],
        )
        .await
        .expect("appending");
}

#[test]
fn a_stopped_store_removes_its_listener_row() {
    runtime().block_on(async {
        let (url, pool) = common::fresh_pool(2).await;
        let store = PgEventStore::connect(&url, PgStoreOptions::default())
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let mut subscription = store.subscribe(Position::START, FeedFilter::all());
        ping(&store).await;
        subscription.next().await.unwrap().unwrap();
        wait_for(&pool, "the store registers", |rows| rows.len() == 1).await;
        drop(subscription);
        drop(store);
        wait_for(&pool, "after the store stopped", <[i32]>::is_empty).await;
    });
}

#[test]
fn rows_of_ended_sessions_are_removed_by_the_next_append() {
    runtime().block_on(async {
        let store = common::fresh_store().await;
        // A session that ended without removing its row: a pid that no
        // backend has (pids are positive and below 2^22 on Linux).
        sqlx::query("INSERT INTO es.listeners (pid) VALUES (2147483000)")
            .execute(store.pool())
            .await
            .unwrap();
        assert_eq!(listeners(store.pool()).await, [2_147_483_000]);
        ping(&store).await;
        wait_for(store.pool(), "after an append", <[i32]>::is_empty).await;
    });
}
