//! What the store tells its operators: counts, the streams of a category
//! page by page, the feed's head (never past an open transaction), the
//! recent rate of appends, pending migrations, and who holds a
//! projection's lease.

mod common;

use std::time::Duration;

use common::{fresh_pool, fresh_store, runtime, stream};
use es_core::{
    BoxError, Dispatch, EventStore as _, ExpectedVersion, NewEvent, Projection, RecordedEvent,
    Reset,
};
use es_postgres::{PgEventStore, PgStoreOptions, ProjectionRunner, RunnerOptions};
use serde_json::json;
use sqlx::{Connection as _, PgConnection};

async fn append(store: &PgEventStore, id: &str, events: usize) -> RecordedEvent {
    let batch = (0..events)
        .map(|n| NewEvent::new("Noted", json!({ "n": n })))
        .collect();
    store
        .append(&stream(id), ExpectedVersion::Any, batch)
        .await
        .expect("appending");
    let last = store
        .read_stream(&stream(id), es_core::StreamRead::backward().limit(1))
        .await
        .expect("reading back");
    last.into_iter().next().expect("an event")
}

/// A store in a fresh database, opened with `connect` (as applications do),
/// migrated when asked; and the database's URL.
async fn connected(migrated: bool) -> (String, PgEventStore) {
    let (url, _) = fresh_pool(2).await;
    let store = PgEventStore::connect(&url, PgStoreOptions::default())
        .await
        .expect("connecting");
    if migrated {
        store.migrate().await.expect("migrating");
    }
    (url, store)
}

fn ids(streams: &[es_postgres::StreamSummary]) -> Vec<&str> {
    streams.iter().map(|s| s.stream_id.as_str()).collect()
}

#[test]
fn the_summary_and_the_stream_list_match_what_was_appended() {
    runtime().block_on(async {
        let store = fresh_store().await;
        let empty = store.summary().await.expect("summary");
        assert_eq!((empty.events, empty.streams, empty.head), (0, 0, None));
        assert!(empty.categories.is_empty());
        assert!(
            store
                .streams(None, None, 10)
                .await
                .expect("streams")
                .is_empty()
        );

        append(&store, "Shop-2", 3).await;
        append(&store, "Shop-1", 1).await;
        append(&store, "Shop-1", 2).await;
        append(&store, "Shop", 1).await; // the category without a dash
        append(&store, "Other-a-b", 1).await;
        let last = append(&store, "Odd-ü 1", 2).await;

        // A transaction open anywhere in the cluster (the next test holds
        // one) holds the head back until it ends.
        common::wait_until(
            Duration::from_secs(30),
            "the head reaches the last append",
            || async { store.head().await.expect("head") == Some(last.position) },
        )
        .await;
        let summary = store.summary().await.expect("summary");
        assert_eq!(summary.events, 10);
        assert_eq!(summary.streams, 5);
        let categories: Vec<(&str, u64)> = summary
            .categories
            .iter()
            .map(|c| (c.name.as_str(), c.streams))
            .collect();
        assert_eq!(categories, [("Odd", 1), ("Other", 1), ("Shop", 3)]);
        assert!(summary.head.is_some_and(|head| head <= last.position));

        let shops = store
            .streams(Some("Shop"), None, 10)
            .await
            .expect("streams");
        assert_eq!(ids(&shops), ["Shop", "Shop-1", "Shop-2"]);
        let versions: Vec<u64> = shops.iter().map(|s| s.version).collect();
        assert_eq!(versions, [1, 3, 3]);
        assert!(shops.iter().all(|s| s.created_at <= s.updated_at));

        // Page by page, across categories, by category then id.
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .streams(None, after.as_ref(), 2)
                .await
                .expect("a page");
            if page.is_empty() {
                break;
            }
            after = page.last().map(|s| s.stream_id.clone());
            all.extend(page);
        }
        assert_eq!(
            ids(&all),
            ["Odd-ü 1", "Other-a-b", "Shop", "Shop-1", "Shop-2"]
        );
        let rest = store
            .streams(Some("Shop"), Some(&stream("Shop-1")), 10)
            .await
            .expect("streams");
        assert_eq!(ids(&rest), ["Shop-2"]);
        assert!(
            store
                .streams(Some("None"), None, 10)
                .await
                .expect("streams")
                .is_empty()
        );

        let activity = store.recent_activity(5).await.expect("activity");
        assert!(!activity.capped);
        assert_eq!(activity.minutes.iter().map(|m| m.events).sum::<u64>(), 10);
    });
}

#[test]
fn the_head_stays_behind_an_open_transaction() {
    runtime().block_on(async {
        let (url, store) = connected(true).await;
        let before = append(&store, "Shop-1", 1).await;
        let mut open = sqlx::PgConnection::connect(&url).await.expect("connecting");
        sqlx::raw_sql("BEGIN; SELECT pg_current_xact_id();")
            .execute(&mut open)
            .await
            .expect("opening a transaction");
        let after = append(&store, "Shop-2", 1).await;
        assert_eq!(store.head().await.expect("head"), Some(before.position));
        let summary = store.summary().await.expect("summary");
        assert_eq!(summary.events, 2, "the count includes what is held back");
        assert_eq!(summary.head, Some(before.position));
        sqlx::raw_sql("ROLLBACK")
            .execute(&mut open)
            .await
            .expect("ending it");
        assert_eq!(store.head().await.expect("head"), Some(after.position));
    });
}

#[test]
fn pending_migrations_are_listed_until_applied() {
    runtime().block_on(async {
        let (_, store) = connected(false).await;
        let pending = store.pending_migrations().await.expect("pending");
        assert!(pending.len() >= 7, "{pending:?}");
        assert_eq!(pending[0], "1 events");
        store.migrate().await.expect("migrating");
        assert!(
            store
                .pending_migrations()
                .await
                .expect("pending")
                .is_empty()
        );
    });
}

struct Quiet;

impl Projection for Quiet {
    const NAME: &'static str = "quiet";
    const EVENT_TYPES: &'static [&'static str] = &["Noted"];
}

impl Dispatch<PgConnection> for Quiet {
    async fn dispatch(&self, _: &RecordedEvent, _: &mut PgConnection) -> Result<(), BoxError> {
        Ok(())
    }
}

impl Reset<PgConnection> for Quiet {
    async fn reset(&self, _: &mut PgConnection) -> Result<(), BoxError> {
        Ok(())
    }
}

#[test]
fn a_projection_status_names_the_session_that_holds_its_lease() {
    runtime().block_on(async {
        let (_, store) = connected(true).await;
        let options = RunnerOptions::default().standby_interval(Duration::from_millis(50));
        let handle = ProjectionRunner::new(store.clone(), Quiet, options).spawn();
        common::wait_until(
            Duration::from_secs(10),
            "the runner takes its lease",
            || async { handle.status().await.is_ok_and(|s| s.active) },
        )
        .await;
        let status = handle.status().await.expect("status");
        let holder = status.lease_holder.expect("a holder");
        assert!(holder.pid > 0);
        let program = holder.application_name.expect("the program's name");
        assert!(program.starts_with("catalog"), "{program}");
        assert!(holder.connected_at.is_some());
        handle.stop().await.expect("stopping");
        let status = store
            .projection_status("quiet")
            .await
            .expect("status")
            .expect("known");
        assert!(!status.active && status.lease_holder.is_none());
    });
}
