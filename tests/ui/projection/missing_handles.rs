use es_core::Projection;

#[derive(Projection)]
#[es(name = "order_summaries")]
struct OrderSummaries;

fn main() {}
