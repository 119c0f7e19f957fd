use es_core::Event;

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Placed {
    pub total: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Shipped {}

fn placed_v1(data: serde_json::Value) -> Result<serde_json::Value, String> {
    Ok(data)
}

#[derive(Event)]
enum OrderEvent {
    #[es(version = 2, upcast(from = 1, with = placed_v1), upcast(from = 2, with = placed_v1))]
    Placed(Placed),
}

fn main() {}
