//! A tour of the event-store contract on the in-memory store: appends with
//! optimistic concurrency, an idempotent retry, stream reads, the global feed
//! and a live subscription.

use std::error::Error;
use std::time::Duration;

use es_core::{
    EventStore, ExpectedVersion, FeedFilter, MemoryStore, Metadata, NewEvent, Position, StoreError,
    StreamId, StreamRead,
};
use futures::StreamExt;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let store = MemoryStore::new();
    let order = StreamId::new("Order-1001")?;
    let meta = Metadata::default().with_correlation_id("demo-request-1");

    println!("1. Place an order: a new stream, so expect NoStream");
    let placed = NewEvent::new(
        "OrderPlaced",
        json!({ "customer": "c-7", "total_cents": 4_200 }),
    )
    .with_metadata(meta.clone());
    let result = store
        .append(&order, ExpectedVersion::NoStream, vec![placed.clone()])
        .await?;
    println!(
        "   {order} is now at version {}, position {}",
        result.stream_version, result.positions[0]
    );

    println!("2. The network dropped the reply; the client retries the same event");
    let retry = store
        .append(&order, ExpectedVersion::NoStream, vec![placed])
        .await?;
    println!(
        "   idempotent replay: {}, same position: {}",
        retry.idempotent_replay,
        retry.positions == result.positions
    );

    println!("3. Two clients both decided from version 1; only one may write");
    let paid =
        NewEvent::new("OrderPaid", json!({ "amount_cents": 4_200 })).with_metadata(meta.clone());
    let cancelled = NewEvent::new("OrderCancelled", json!({})).with_metadata(meta);
    store
        .append(&order, ExpectedVersion::Exact(1), vec![paid])
        .await?;
    match store
        .append(&order, ExpectedVersion::Exact(1), vec![cancelled])
        .await
    {
        Err(StoreError::WrongExpectedVersion { actual, .. }) => {
            println!("   the second was refused: the stream is at version {actual}");
        }
        other => return Err(format!("expected a version conflict, got {other:?}").into()),
    }

    println!("4. Read the stream back");
    for event in store.read_stream(&order, StreamRead::forward()).await? {
        println!(
            "   v{} {} {} (correlation {})",
            event.version,
            event.event_type,
            event.data,
            event.metadata.correlation_id.as_deref().unwrap_or("-")
        );
    }

    println!("5. Follow the global feed: catch up, then live");
    let mut feed = store.subscribe(Position::START, FeedFilter::all().category("Order"));
    let other = StreamId::new("Order-1002")?;
    store
        .append(
            &other,
            ExpectedVersion::NoStream,
            vec![NewEvent::new(
                "OrderPlaced",
                json!({ "customer": "c-8", "total_cents": 990 }),
            )],
        )
        .await?;
    for _ in 0..3 {
        let event = tokio::time::timeout(Duration::from_secs(5), feed.next())
            .await?
            .ok_or("the feed ended")??;
        println!(
            "   {} {} v{} {}",
            event.position, event.stream_id, event.version, event.event_type
        );
    }
    println!("Done.");
    Ok(())
}
