use es_core::{Event, Projection};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Placed {
    total_cents: u64,
}

#[derive(Serialize, Deserialize)]
struct Shipped {}

#[derive(Event)]
enum OrderEvent {
    Placed(Placed),
    Shipped(Shipped),
}

#[derive(Projection)]
#[es(handles(OrderEvent::Placed, OrderEvent::Cancelled))]
struct OrderSummaries;

fn main() {}
