use es_core::Event;

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Placed {
    pub total: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Shipped {}

#[derive(serde::Deserialize)]
pub struct PlacedV1 {}

impl From<PlacedV1> for Placed {
    fn from(_: PlacedV1) -> Self {
        Self { total: 0 }
    }
}

fn placed_v2(data: serde_json::Value) -> Result<serde_json::Value, String> {
    Ok(data)
}

#[derive(Event)]
enum OrderEvent {
    #[es(version = 3, upcast(from = 1, type = PlacedV1), upcast(from = 2, with = placed_v2))]
    Placed(Placed),
}

fn main() {}
