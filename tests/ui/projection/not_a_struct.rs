use es_core::Projection;

#[derive(Projection)]
#[es(handles(OrderEvent::Placed))]
enum OrderSummaries {}

fn main() {}
