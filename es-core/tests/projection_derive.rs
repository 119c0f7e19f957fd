//! `#[derive(Projection)]`: the event types it reads (aliases included) and
//! a dispatcher that decodes each event as its variant's payload and calls
//! the projection's handler for that payload.

use std::sync::Mutex;

use es_core::{
    BoxError, Dispatch, Event, EventStore, ExpectedVersion, FeedFilter, Handle, MemoryStore,
    NewEvent, Position, Projection, RecordedEvent, StreamId,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Placed {
    total_cents: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Shipped {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Noted {
    text: String,
}

#[derive(Debug, Clone, PartialEq, Event)]
enum OrderEvent {
    #[es(name = "OrderPlaced", alias = "OrderCreated")]
    Placed(Placed),
    Shipped(Shipped),
    Noted(Noted),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Registered {
    name: String,
}

#[derive(Debug, Clone, PartialEq, Event)]
enum CustomerEvent {
    Registered(Registered),
}

#[derive(Default, Projection)]
#[es(handles(OrderEvent::Placed, OrderEvent::Shipped))]
#[es(handles(CustomerEvent::Registered))]
struct OrderBoard {
    seen: Mutex<Vec<String>>,
}

impl OrderBoard {
    fn push(&self, line: String) -> Result<(), BoxError> {
        self.seen.lock().map_err(|_| "lock")?.push(line);
        Ok(())
    }
}

impl Handle<Placed, ()> for OrderBoard {
    async fn handle(
        &self,
        placed: Placed,
        envelope: &RecordedEvent,
        (): &mut (),
    ) -> Result<(), BoxError> {
        self.push(format!(
            "placed {} ({})",
            placed.total_cents, envelope.event_type
        ))
    }
}

impl Handle<Shipped, ()> for OrderBoard {
    async fn handle(&self, _: Shipped, _: &RecordedEvent, (): &mut ()) -> Result<(), BoxError> {
        self.push("shipped".to_owned())
    }
}

impl Handle<Registered, ()> for OrderBoard {
    async fn handle(
        &self,
        registered: Registered,
        _: &RecordedEvent,
        (): &mut (),
    ) -> Result<(), BoxError> {
        self.push(format!("customer {}", registered.name))
    }
}

#[test]
fn name_and_event_types_include_aliases_and_only_handled_variants() {
    assert_eq!(OrderBoard::NAME, "order_board");
    assert_eq!(
        OrderBoard::EVENT_TYPES,
        ["OrderPlaced", "OrderCreated", "Shipped", "Registered"]
    );
    assert!(!OrderBoard::EVENT_TYPES.contains(&"Noted"));
    assert_eq!(
        OrderBoard::filter(),
        FeedFilter::all().event_types(["OrderPlaced", "OrderCreated", "Shipped", "Registered"])
    );
}

#[tokio::test]
async fn dispatch_decodes_with_the_right_enum_and_skips_the_rest() {
    let store = MemoryStore::new();
    let order = StreamId::new("Order-1").unwrap();
    let customer = StreamId::new("Customer-1").unwrap();
    let mut batch = Vec::new();
    for event in [
        OrderEvent::Placed(Placed { total_cents: 500 }),
        OrderEvent::Noted(Noted {
            text: "fragile".into(),
        }),
        OrderEvent::Shipped(Shipped {}),
    ] {
        batch.push(event.encode().unwrap());
    }
    // An event stored under the old name of `Placed`.
    batch.push(NewEvent::new("OrderCreated", json!({ "total_cents": 7 })));
    store
        .append(&order, ExpectedVersion::NoStream, batch)
        .await
        .unwrap();
    let registered = CustomerEvent::Registered(Registered { name: "Ada".into() });
    store
        .append(
            &customer,
            ExpectedVersion::NoStream,
            vec![registered.encode().unwrap()],
        )
        .await
        .unwrap();

    let board = OrderBoard::default();
    // What a runner does: read only the projection's types, dispatch each.
    let events = store
        .read_all(Position::START, &OrderBoard::filter(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(events.len(), 4, "the note is not read");
    for event in &events {
        board.dispatch(event, &mut ()).await.unwrap();
    }
    // An event of a type the projection does not handle is ignored.
    let all = store
        .read_all(Position::START, &FeedFilter::all(), usize::MAX)
        .await
        .unwrap();
    let note = all.iter().find(|e| e.event_type == "Noted").unwrap();
    board.dispatch(note, &mut ()).await.unwrap();
    assert_eq!(
        *board.seen.lock().unwrap(),
        [
            "placed 500 (OrderPlaced)",
            "shipped",
            "placed 7 (OrderCreated)",
            "customer Ada"
        ]
    );
}

#[tokio::test]
async fn a_payload_that_does_not_decode_is_an_error_naming_the_event() {
    let store = MemoryStore::new();
    let order = StreamId::new("Order-9").unwrap();
    store
        .append(
            &order,
            ExpectedVersion::NoStream,
            vec![NewEvent::new(
                "OrderPlaced",
                json!({ "total_cents": "lots" }),
            )],
        )
        .await
        .unwrap();
    let event = &store
        .read_stream(&order, es_core::StreamRead::forward())
        .await
        .unwrap()[0];
    let error = OrderBoard::default()
        .dispatch(event, &mut ())
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("Order-9") && text.contains("OrderPlaced"),
        "{text}"
    );
}
