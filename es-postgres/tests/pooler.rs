//! The store behind PgBouncer in transaction pooling mode, started by the
//! test support in front of the shared server: the whole store contract
//! through the pooler, and what needs a session (LISTEN, projection
//! leases) on direct connections.

mod common;

use common::runtime;

use std::collections::HashSet;
use std::time::Duration;

use es_core::{
    BoxError, Event, EventStore, ExpectedVersion, FeedFilter, Handle, NewEvent, Position,
    Projection, RecordedEvent, Reset,
};
use es_postgres::{PgEventStore, PgServers, PgStoreOptions, ProjectionRunner, RunnerOptions};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

/// A migrated store whose appends and reads go through the pooler, in a
/// fresh database.
async fn pooled_store_with(options: PgStoreOptions) -> PgEventStore {
    let server = es_postgres_local::shared().await.expect("local PostgreSQL");
    let pooler = es_postgres_local::shared_pooler()
        .await
        .expect("PgBouncer in front of it");
    let url = server.create_database().await.expect("a test database");
    let servers = PgServers::new(&url).pooler(pooler.url(&url));
    let store = PgEventStore::connect_servers(&servers, options)
        .await
        .expect("connecting through the pooler");
    assert!(store.through_pooler());
    store.migrate().await.expect("migrating");
    store
}

async fn pooled_store() -> PgEventStore {
    pooled_store_with(PgStoreOptions::default()).await
}

es_core::conformance_suite!(pooled_store);

#[derive(Debug, Serialize, Deserialize)]
struct Noted {
    n: usize,
}

#[derive(Debug, Event)]
enum NoteEvent {
    Noted(Noted),
}

/// Logs every application, without a unique key.
#[derive(Projection)]
#[es(name = "notes", handles(NoteEvent::Noted))]
struct Notes;

impl Handle<Noted, PgConnection> for Notes {
    async fn handle(
        &self,
        _: Noted,
        envelope: &RecordedEvent,
        tx: &mut PgConnection,
    ) -> Result<(), BoxError> {
        sqlx::query("INSERT INTO notes (event_id) VALUES ($1)")
            .bind(envelope.event_id)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

impl Reset<PgConnection> for Notes {
    async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query("TRUNCATE notes").execute(tx).await?;
        Ok(())
    }
}

/// 8 writers append through the pooler (more clients than it has server
/// connections for this database in flight at times); a subscriber woken
/// by NOTIFY on its direct session sees every event once, and a projection
/// whose lease and checkpoint live on a direct session applies each once.
#[test]
fn writers_subscribers_and_a_projection_through_the_pooler() {
    runtime().block_on(async {
        let store =
            pooled_store_with(PgStoreOptions::default().poll_interval(Duration::from_secs(60)))
                .await;
        sqlx::query("CREATE TABLE notes (id bigserial PRIMARY KEY, event_id uuid NOT NULL)")
            .execute(store.pool())
            .await
            .expect("creating the read model");
        let runner = ProjectionRunner::new(store.clone(), Notes, RunnerOptions::default());
        let (stop, task) = common::start(runner);
        let mut subscription = store.subscribe(Position::START, FeedFilter::all());
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut ids = Vec::new();
                    for n in 0..100 {
                        let event = NewEvent::new("Noted", json!({ "n": n }));
                        ids.push(event.event_id);
                        let to = common::stream(&format!("Note-{w}"));
                        store
                            .append(&to, ExpectedVersion::Exact(n), vec![event])
                            .await
                            .unwrap_or_else(|e| panic!("writer {w}: {e}"));
                    }
                    ids
                })
            })
            .collect();
        let mut written = HashSet::new();
        for writer in writers {
            written.extend(writer.await.expect("writer task"));
        }
        // Concurrent appends send one NOTIFY among them (the poll is the
        // backstop for the rest): one more append, alone, wakes the
        // subscriber for everything before it.
        let last = NewEvent::new("Noted", json!({ "n": 0 }));
        written.insert(last.event_id);
        store
            .append(
                &common::stream("Note-last"),
                ExpectedVersion::NoStream,
                vec![last],
            )
            .await
            .expect("the last append");
        let mut seen = HashSet::new();
        while seen.len() < written.len() {
            let event = tokio::time::timeout(Duration::from_secs(30), subscription.next())
                .await
                .unwrap_or_else(|_| panic!("the subscriber stalled after {}", seen.len()))
                .expect("the subscription ended")
                .expect("the subscription failed");
            assert!(seen.insert(event.event_id), "delivered twice");
        }
        assert_eq!(seen, written);
        let expected = i64::try_from(written.len()).expect("small");
        common::wait_until(Duration::from_secs(30), "every event applied", || async {
            common::count(&store, "SELECT count(*) FROM notes").await >= expected
        })
        .await;
        drop(stop);
        task.await.expect("runner task").expect("the runner");
        let applied: Vec<Uuid> = sqlx::query_scalar("SELECT event_id FROM notes")
            .fetch_all(store.pool())
            .await
            .expect("reading the read model");
        assert_eq!(applied.len(), written.len(), "applied once each");
    });
}
