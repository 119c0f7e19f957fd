use es_core::{Event, Projection};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Placed {}

#[derive(Event)]
enum OrderEvent {
    Placed(Placed),
}

#[derive(Projection)]
#[es(name = "summaries", version = 0, handles(OrderEvent::Placed))]
struct OrderSummaries;

#[derive(Projection)]
#[es(name = "summaries@v2", handles(OrderEvent::Placed))]
struct Clashing;

fn main() {}
