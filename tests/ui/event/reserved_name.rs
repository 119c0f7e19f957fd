use es_core::Event;

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Placed {
    pub total: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Gone {}

#[derive(Event)]
enum OrderEvent {
    #[es(name = "OrderPlaced")]
    Placed(Placed),
    #[es(name = "Gone", alias = "$deleted")]
    Gone(Gone),
}

fn main() {}
