//! Events are immutable: `UPDATE`, `DELETE` and `TRUNCATE` on the events
//! table are refused by its triggers, whoever runs them (the tests connect
//! as a superuser), and archiving or deleting a stream leaves its events
//! where they were in the feed, with the marker event after them; deleting
//! drops the stream's snapshot, which is a cache.

mod common;

use common::{count, fresh_store, read_feed, runtime, stream};

use es_core::{
    ARCHIVED_EVENT_TYPE, DELETED_EVENT_TYPE, EventStore as _, ExpectedVersion, FeedFilter,
    NewEvent, Snapshot, SnapshotStore as _, StoreError, StreamRead,
};
use serde_json::json;

/// The error `sql` fails with, as PostgreSQL's code and message.
async fn refused(store: &es_postgres::PgEventStore, sql: &str) -> (String, String) {
    let error = sqlx::query(sql)
        .execute(store.pool())
        .await
        .expect_err(&format!("{sql} should be refused"));
    let database = error
        .as_database_error()
        .unwrap_or_else(|| panic!("{sql}: not a database error: {error}"));
    (
        database
            .code()
            .map(std::borrow::Cow::into_owned)
            .unwrap_or_default(),
        database.message().to_owned(),
    )
}

#[test]
fn update_delete_and_truncate_on_events_are_refused() {
    runtime().block_on(async {
        let store = fresh_store().await;
        let events = (0..3)
            .map(|n| NewEvent::new("Added", json!({ "n": n })))
            .collect::<Vec<_>>();
        store
            .append(&stream("Counter-1"), ExpectedVersion::NoStream, events)
            .await
            .expect("append");
        let before = read_feed(&store, &FeedFilter::all(), 3).await;
        assert_eq!(before.len(), 3);

        for (sql, op) in [
            ("UPDATE es.events SET data = '{\"n\": 99}'", "UPDATE"),
            ("UPDATE es.events SET version = version + 1", "UPDATE"),
            ("DELETE FROM es.events", "DELETE"),
            ("DELETE FROM es.events WHERE version = 3", "DELETE"),
            ("TRUNCATE es.events", "TRUNCATE"),
            ("TRUNCATE es.events CASCADE", "TRUNCATE"),
        ] {
            let (code, message) = refused(&store, sql).await;
            assert_eq!(code, "23001", "{sql}: {message}");
            assert_eq!(
                message,
                format!("events are immutable: {op} on events is not allowed"),
                "{sql}"
            );
        }
        let after = read_feed(&store, &FeedFilter::all(), 3).await;
        assert_eq!(after, before, "every event is as it was");
    });
}

#[test]
fn archiving_and_deleting_keep_the_events_in_the_feed() {
    runtime().block_on(async {
        let store = fresh_store().await;
        let (archived, deleted) = (stream("Order-1"), stream("Order-2"));
        for id in [&archived, &deleted] {
            let events = vec![
                NewEvent::new("Placed", json!({})),
                NewEvent::new("Paid", json!({})),
            ];
            store
                .append(id, ExpectedVersion::NoStream, events)
                .await
                .expect("append");
            store
                .save_snapshot(Snapshot::new(id.clone(), 2, 1, json!({ "paid": true })))
                .await
                .expect("snapshot");
        }
        let before = read_feed(&store, &FeedFilter::all(), 4).await;

        let archive = store
            .archive_stream(&archived, ExpectedVersion::Exact(2))
            .await
            .expect("archive");
        assert_eq!(archive.stream_version, 3);
        let delete = store
            .delete_stream(&deleted, ExpectedVersion::Exact(2))
            .await
            .expect("delete");
        assert_eq!(delete.stream_version, 3);

        let after = read_feed(&store, &FeedFilter::all(), 6).await;
        assert_eq!(after[..4], before[..], "the streams' events stay, in place");
        let markers: Vec<_> = after[4..]
            .iter()
            .map(|e| (e.stream_id.as_str(), e.version, e.event_type.as_str()))
            .collect();
        assert_eq!(
            markers,
            [
                ("Order-1", 3, ARCHIVED_EVENT_TYPE),
                ("Order-2", 3, DELETED_EVENT_TYPE)
            ]
        );

        // Archiving keeps the snapshot (an append restores the stream);
        // deleting drops it in the same transaction.
        assert!(
            store
                .load_snapshot(&archived)
                .await
                .expect("load")
                .is_some()
        );
        assert!(store.load_snapshot(&deleted).await.expect("load").is_none());
        let snapshots = count(&store, "SELECT count(*) FROM es.snapshots").await;
        assert_eq!(snapshots, 1);

        match store.read_stream(&deleted, StreamRead::forward()).await {
            Err(StoreError::StreamDeleted { stream, version }) => {
                assert_eq!((stream, version), (deleted.clone(), 3));
            }
            other => panic!("expected StreamDeleted, got {other:?}"),
        }
    });
}
