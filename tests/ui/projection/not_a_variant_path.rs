use es_core::Projection;

#[derive(Projection)]
#[es(handles(Placed, OrderEvent::Shipped = 1))]
struct OrderSummaries;

fn main() {}
