use es_core::Event;

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Placed {
    pub total: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Shipped {}

#[derive(Event)]
enum OrderEvent {
    #[es(name = "OrderPlaced")]
    Placed(Placed),
    #[es(name = "OrderPlaced")]
    Shipped(Shipped),
}

fn main() {}
