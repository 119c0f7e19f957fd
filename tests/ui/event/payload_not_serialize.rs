use es_core::Event;

pub struct Placed {
    pub total: u64,
}

#[derive(Event)]
enum OrderEvent {
    Placed(Placed),
}

fn main() {}
