//! Parked events through the API: a runner parks what its handler refuses;
//! the events can be listed, applied again once the cause is fixed (by the
//! runner, in its transaction), or discarded for good.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{runtime, stream};
use es_core::{
    BoxError, Dispatch, EventStore, ExpectedVersion, NewEvent, Projection, RecordedEvent, Reset,
};
use es_postgres::{ErrorPolicy, PgEventStore, ProjectionHandle, ProjectionRunner, RunnerOptions};
use serde_json::json;
use sqlx::PgConnection;

/// Records each event's `n` in `seen`; refuses events whose `n` is odd
/// while `broken` is set.
struct Picky {
    broken: Arc<AtomicBool>,
}

impl Projection for Picky {
    const NAME: &'static str = "picky";
    const EVENT_TYPES: &'static [&'static str] = &["Counted"];
}

impl Dispatch<PgConnection> for Picky {
    async fn dispatch(&self, event: &RecordedEvent, tx: &mut PgConnection) -> Result<(), BoxError> {
        let n = event.data["n"].as_i64().ok_or("no n")?;
        if n % 2 == 1 && self.broken.load(Ordering::SeqCst) {
            return Err(format!("odd number {n}").into());
        }
        sqlx::query("INSERT INTO seen (n) VALUES ($1)")
            .bind(n)
            .execute(tx)
            .await?;
        Ok(())
    }
}

impl Reset<PgConnection> for Picky {
    async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query("TRUNCATE seen").execute(tx).await?;
        Ok(())
    }
}

async fn seen(store: &PgEventStore) -> Vec<i64> {
    sqlx::query_scalar("SELECT n FROM seen ORDER BY n")
        .fetch_all(store.pool())
        .await
        .expect("reading the read model")
}

/// Polls `check` every 20 ms for up to 10 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn start(store: &PgEventStore, broken: &Arc<AtomicBool>) -> ProjectionHandle<Picky> {
    let options = RunnerOptions::default()
        .standby_interval(Duration::from_millis(50))
        .error_policy(ErrorPolicy::park_after(1).backoff(Duration::from_millis(5)));
    let picky = Picky {
        broken: Arc::clone(broken),
    };
    ProjectionRunner::new(store.clone(), picky, options).spawn()
}

#[test]
fn parked_events_are_listed_retried_and_discarded() {
    runtime().block_on(async {
        let store = common::fresh_store().await;
        sqlx::raw_sql("CREATE TABLE seen (n bigint PRIMARY KEY)")
            .execute(store.pool())
            .await
            .unwrap();
        let broken = Arc::new(AtomicBool::new(true));
        let handle = start(&store, &broken);
        let events = (1..=4)
            .map(|n| NewEvent::new("Counted", json!({ "n": n })))
            .collect();
        store
            .append(&stream("Count-1"), ExpectedVersion::NoStream, events)
            .await
            .unwrap();
        eventually(
            "the even events apply and the odd ones are parked",
            || async {
                handle
                    .status()
                    .await
                    .is_ok_and(|s| s.lag == 0 && s.parked == 2)
            },
        )
        .await;
        assert_eq!(seen(&store).await, [2, 4]);
        let parked = handle.parked().await.unwrap();
        assert_eq!(parked.len(), 2);
        assert!(
            parked[0].error.contains("odd number 1"),
            "{}",
            parked[0].error
        );
        assert_eq!(parked[0].attempts, 2, "the first try and one retry");
        assert!(parked[0].position < parked[1].position);
        assert!(parked.iter().all(|p| p.raw.is_none() && !p.retry_requested));

        // A retry while the cause is still there fails again and stays.
        assert!(handle.retry_parked(parked[0].id).await.unwrap());
        eventually("the retry is carried out", || async {
            let now = handle.parked().await.unwrap();
            now.len() == 2 && !now[0].retry_requested && now[0].attempts == 4
        })
        .await;
        assert_eq!(seen(&store).await, [2, 4]);

        // Fixed: a retry applies it and takes it off the list; a discard
        // drops the other for good.
        broken.store(false, Ordering::SeqCst);
        assert!(handle.retry_parked(parked[0].id).await.unwrap());
        eventually("the retried event applies", || async {
            handle.parked().await.unwrap().len() == 1
        })
        .await;
        assert_eq!(seen(&store).await, [1, 2, 4]);
        assert!(handle.discard_parked(parked[1].id).await.unwrap());
        assert!(handle.parked().await.unwrap().is_empty());
        assert!(!handle.discard_parked(parked[1].id).await.unwrap());
        assert!(!handle.retry_parked(parked[1].id).await.unwrap());
        assert_eq!(handle.status().await.unwrap().parked, 0);
        // The store answers the same without the projection at hand.
        assert!(store.parked_events(Picky::NAME).await.unwrap().is_empty());
        handle.stop().await.unwrap();
        assert_eq!(seen(&store).await, [1, 2, 4], "3 was discarded");
    });
}
