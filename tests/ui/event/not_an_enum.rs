use es_core::Event;

#[derive(Event)]
struct OrderPlaced {
    total: u64,
}

fn main() {}
