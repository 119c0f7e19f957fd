use es_core::{Event, Projection};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Placed {}

#[derive(Event)]
enum OrderEvent {
    Placed(Placed),
}

#[derive(Projection)]
#[es(handles(OrderEvent::Placed), handles(OrderEvent::Placed), nmae = "x")]
struct OrderSummaries;

fn main() {}
