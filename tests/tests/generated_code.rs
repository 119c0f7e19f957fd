//! Every shape of the derives' output compiles without a warning, clippy
//! pedantic included (CI runs clippy on all targets with `-D warnings`), and
//! behaves the same through a custom crate path.

#![deny(warnings, clippy::pedantic)]

use es_core::testing::given::given;
use es_core::{Aggregate, Decide, Event, NewEvent, On, Position, RecordedEvent, StreamId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The facade re-exported under another path, as an application or a
/// framework built on es-core might.
mod framework {
    pub(crate) use es_core as es;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Placed {
    total_cents: u64,
}

#[derive(Debug, Deserialize)]
struct PlacedV2 {
    total_cents: u32,
}

impl From<PlacedV2> for Placed {
    fn from(old: PlacedV2) -> Self {
        Self {
            total_cents: u64::from(old.total_cents),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Cancelled {
    reason: String,
}

fn placed_v1(data: Value) -> Result<Value, String> {
    let Value::Object(fields) = data else {
        return Err("not an object".to_owned());
    };
    let euros = fields
        .get("euros")
        .and_then(Value::as_u64)
        .ok_or("no `euros`")?;
    Ok(json!({ "total_cents": euros * 100 }))
}

#[derive(Debug, Clone, PartialEq, Event)]
enum OrderEvent {
    #[es(name = "OrderPlaced", alias = "OrderCreated")]
    #[es(version = 3, upcast(from = 1, with = placed_v1), upcast(from = 2, type = PlacedV2))]
    Placed(Placed),
    Cancelled(Cancelled),
}

#[derive(Debug, Event)]
enum NoEvents {}

#[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
#[es(category = "Order", event = OrderEvent, snapshot(every = 100, version = 2))]
struct Order {
    total_cents: u64,
    cancelled: bool,
}

impl On<Placed> for Order {
    fn on(&mut self, event: Placed) {
        self.total_cents = event.total_cents;
    }
}

impl On<Cancelled> for Order {
    fn on(&mut self, _: Cancelled) {
        self.cancelled = true;
    }
}

struct Cancel;

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("the order is already cancelled")]
struct AlreadyCancelled;

impl Decide<Cancel> for Order {
    type Error = AlreadyCancelled;

    fn decide(&self, _: &Cancel) -> Result<Vec<OrderEvent>, AlreadyCancelled> {
        if self.cancelled {
            return Err(AlreadyCancelled);
        }
        Ok(vec![OrderEvent::Cancelled(Cancelled {
            reason: "asked".to_owned(),
        })])
    }
}

#[derive(Debug, Default, Aggregate)]
#[es(event = NoEvents)]
struct Nothing;

#[derive(Debug, Clone, PartialEq, framework::es::Event)]
#[es(crate = "crate::framework::es")]
enum TicketEvent {
    #[es(version = 2, upcast(from = 1, type = PlacedV2))]
    Sold(Placed),
}

#[derive(Debug, Default, Serialize, Deserialize, framework::es::Aggregate)]
#[es(crate = "crate::framework::es", event = TicketEvent, snapshot(every = 5))]
struct Ticket {
    sold_cents: u64,
}

impl On<Placed> for Ticket {
    fn on(&mut self, event: Placed) {
        self.sold_cents += event.total_cents;
    }
}

fn recorded(event_type: &str, schema_version: u32, data: Value) -> RecordedEvent {
    RecordedEvent::new(
        NewEvent::new(event_type, data).with_schema_version(schema_version),
        StreamId::new("Order-1").expect("valid id"),
        1,
        Position::from_parts(1, 1),
        chrono::DateTime::UNIX_EPOCH,
    )
}

#[test]
fn every_version_decodes_to_the_current_payload() {
    let expected = OrderEvent::Placed(Placed { total_cents: 300 });
    for (event_type, version, data) in [
        ("OrderPlaced", 1, json!({ "euros": 3 })),
        ("OrderPlaced", 2, json!({ "total_cents": 300 })),
        ("OrderCreated", 3, json!({ "total_cents": 300 })),
    ] {
        let decoded = OrderEvent::decode(&recorded(event_type, version, data));
        assert_eq!(decoded.expect("decodes"), expected);
    }
}

#[test]
fn an_aggregate_applies_and_decides() {
    let order = given::<Order>([OrderEvent::Placed(Placed { total_cents: 5 })])
        .when(&Cancel)
        .then([OrderEvent::Cancelled(Cancelled {
            reason: "asked".to_owned(),
        })]);
    assert_eq!(order.total_cents, 5);
    assert_eq!(
        Order::SNAPSHOT.map(|p| (p.every, p.version)),
        Some((100, 2))
    );
    let snapshot = order.to_snapshot().expect("serializes");
    assert!(
        Order::from_snapshot(&snapshot)
            .expect("deserializes")
            .cancelled
    );
    assert_eq!(Nothing::CATEGORY, "Nothing");
    assert!(NoEvents::decode(&recorded("Anything", 1, json!({}))).is_err());
}

#[test]
fn a_custom_crate_path_works_the_same() {
    let sold = TicketEvent::decode(&recorded("Sold", 1, json!({ "total_cents": 7 })));
    let mut ticket = Ticket::default();
    ticket.apply(sold.expect("decodes"));
    assert_eq!(ticket.sold_cents, 7);
    assert_eq!(Ticket::SNAPSHOT.map(|p| p.every), Some(5));
    assert_eq!(
        TicketEvent::Sold(Placed { total_cents: 1 })
            .encode()
            .expect("encodes")
            .schema_version,
        2
    );
}

/// A projection over two enums, one through the custom crate path.
#[derive(Default, es_core::Projection)]
#[es(name = "sales", handles(OrderEvent::Placed, TicketEvent::Sold))]
struct Sales {
    cents: std::sync::atomic::AtomicU64,
}

/// `OrderEvent::Placed` and `TicketEvent::Sold` share their payload type,
/// so one handler serves both (upcasts included: an `OrderPlaced` stored at
/// version 3 reaches it as the current `Placed`).
impl es_core::Handle<Placed, ()> for Sales {
    async fn handle(
        &self,
        placed: Placed,
        _: &RecordedEvent,
        (): &mut (),
    ) -> Result<(), es_core::BoxError> {
        self.cents
            .fetch_add(placed.total_cents, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

#[derive(Default, framework::es::Projection)]
#[es(
    crate = "crate::framework::es",
    version = 3,
    handles(TicketEvent::Sold)
)]
struct TicketCount;

#[test]
fn projections_dispatch_through_both_paths() {
    use es_core::{Dispatch, Projection};
    assert_eq!(<TicketCount as Projection>::NAME, "ticket_count");
    assert_eq!(<TicketCount as Projection>::VERSION, 3);
    assert_eq!(<Sales as Projection>::VERSION, 1);
    let sales = Sales::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        for event in [
            recorded("OrderPlaced", 3, json!({ "total_cents": 5 })),
            recorded("Sold", 2, json!({ "total_cents": 7 })),
            recorded("Cancelled", 1, json!({ "reason": "not read" })),
        ] {
            sales.dispatch(&event, &mut ()).await.expect("dispatches");
        }
    });
    assert_eq!(sales.cents.load(std::sync::atomic::Ordering::Relaxed), 12);
    assert_eq!(
        <Sales as Projection>::EVENT_TYPES,
        ["OrderPlaced", "OrderCreated", "Sold"]
    );
}
