use es_core::Event;

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Placed {
    pub total: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Shipped {}

#[derive(serde::Deserialize)]
pub struct PlacedV1 {}

#[derive(Event)]
enum OrderEvent {
    #[es(version = 2, upcast(from = 1, type = PlacedV1))]
    Placed(Placed),
}

fn main() {}
