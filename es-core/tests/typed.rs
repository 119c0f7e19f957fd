//! `#[derive(Event)]`: stored names, aliases, encoding, and decoding through
//! the upcast chain.

use chrono::Utc;
use es_core::{DecodeError, DecodeErrorKind, Event, NewEvent, Position, RecordedEvent, StreamId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The current (version 4) payload of an order placement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OrderPlaced {
    customer: String,
    total_cents: u64,
    currency: String,
}

/// Version 3: before orders had a currency.
#[derive(Debug, Deserialize)]
struct OrderPlacedV3 {
    customer: String,
    total_cents: u64,
}

impl From<OrderPlacedV3> for OrderPlaced {
    fn from(old: OrderPlacedV3) -> Self {
        Self {
            customer: old.customer,
            total_cents: old.total_cents,
            currency: "EUR".to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OrderShipped {
    carrier: String,
}

mod upcasts {
    use serde_json::{Value, json};

    /// Version 1 called the customer `buyer`.
    pub(crate) fn rename_buyer(mut data: Value) -> Result<Value, String> {
        let object = data.as_object_mut().ok_or("payload is not an object")?;
        let buyer = object.remove("buyer").ok_or("no `buyer` field")?;
        object.insert("customer".to_owned(), buyer);
        Ok(data)
    }

    /// Version 2 held the total in euros as a decimal number.
    pub(crate) fn euros_to_cents(data: Value) -> Result<Value, String> {
        let Value::Object(mut fields) = data else {
            return Err("payload is not an object".to_owned());
        };
        let euros = fields
            .remove("total")
            .and_then(|total| total.as_f64())
            .ok_or("no numeric `total` field")?;
        let customer = fields.remove("customer").unwrap_or_default();
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "test totals are small positive amounts"
        )]
        let cents = (euros * 100.0).round() as u64;
        Ok(json!({ "customer": customer, "total_cents": cents }))
    }
}

#[derive(Debug, Clone, PartialEq, Event)]
enum OrderEvent {
    #[es(name = "OrderPlaced", alias = "OrderCreated", alias = "PurchaseMade")]
    #[es(version = 4, upcast(from = 1, with = upcasts::rename_buyer))]
    #[es(upcast(from = 2, with = upcasts::euros_to_cents), upcast(from = 3, type = OrderPlacedV3))]
    Placed(OrderPlaced),
    Shipped(OrderShipped),
}

fn recorded(event_type: &str, schema_version: u32, data: Value) -> RecordedEvent {
    RecordedEvent::new(
        NewEvent::new(event_type, data).with_schema_version(schema_version),
        StreamId::new("Order-17").unwrap(),
        3,
        Position::from_parts(41, 7),
        Utc::now(),
    )
}

fn placed() -> OrderEvent {
    OrderEvent::Placed(OrderPlaced {
        customer: "c-1".to_owned(),
        total_cents: 1250,
        currency: "EUR".to_owned(),
    })
}

#[test]
fn encodes_with_stored_name_and_current_version() {
    let new = placed().encode().unwrap();
    assert_eq!(new.event_type, "OrderPlaced");
    assert_eq!(new.schema_version, 4);
    assert_eq!(
        new.data,
        json!({ "customer": "c-1", "total_cents": 1250, "currency": "EUR" })
    );
    let shipped = OrderEvent::Shipped(OrderShipped {
        carrier: "post".to_owned(),
    });
    assert_eq!(shipped.event_type(), "Shipped");
    assert_eq!(shipped.schema_version(), 1);
}

#[test]
fn event_types_list_names_then_aliases() {
    assert_eq!(
        OrderEvent::EVENT_TYPES,
        ["OrderPlaced", "Shipped", "OrderCreated", "PurchaseMade"]
    );
}

#[test]
fn round_trips_the_current_version() {
    let new = placed().encode().unwrap();
    let stored = recorded(&new.event_type, new.schema_version, new.data);
    assert_eq!(OrderEvent::decode(&stored).unwrap(), placed());
}

#[test]
fn version_1_json_runs_the_whole_chain() {
    // 1 -> 2 (JSON: rename), 2 -> 3 (JSON: euros to cents), 3 -> 4 (typed).
    let stored = recorded("OrderPlaced", 1, json!({ "buyer": "c-1", "total": 12.5 }));
    assert_eq!(OrderEvent::decode(&stored).unwrap(), placed());
}

#[test]
fn each_older_version_starts_the_chain_at_its_step() {
    let v2 = recorded(
        "OrderPlaced",
        2,
        json!({ "customer": "c-1", "total": 12.5 }),
    );
    let v3 = recorded(
        "OrderPlaced",
        3,
        json!({ "customer": "c-1", "total_cents": 1250 }),
    );
    assert_eq!(OrderEvent::decode(&v2).unwrap(), placed());
    assert_eq!(OrderEvent::decode(&v3).unwrap(), placed());
}

#[test]
fn aliases_decode_as_the_renamed_type() {
    for alias in ["OrderCreated", "PurchaseMade"] {
        let stored = recorded(alias, 3, json!({ "customer": "c-1", "total_cents": 1250 }));
        assert_eq!(OrderEvent::decode(&stored).unwrap(), placed(), "{alias}");
    }
}

fn assert_names_event(error: &DecodeError, event_type: &str, schema_version: u32) {
    assert_eq!(error.stream.as_str(), "Order-17");
    assert_eq!(error.version, 3);
    assert_eq!(error.position, Position::from_parts(41, 7));
    assert_eq!(error.event_type, event_type);
    assert_eq!(error.schema_version, schema_version);
    let text = error.to_string();
    for part in ["Order-17", "41/7", event_type, "version 3"] {
        assert!(text.contains(part), "{part:?} missing from {text:?}");
    }
}

#[test]
fn unknown_event_type_is_a_typed_error_that_can_be_skipped() {
    let stored = [
        recorded("OrderRefunded", 1, json!({})),
        recorded("Shipped", 1, json!({ "carrier": "post" })),
    ];
    let error = OrderEvent::decode(&stored[0]).unwrap_err();
    assert!(error.is_unknown_event_type());
    assert_names_event(&error, "OrderRefunded", 1);
    let known: Vec<OrderEvent> = stored
        .iter()
        .map(OrderEvent::decode)
        .filter(|r| !r.as_ref().is_err_and(DecodeError::is_unknown_event_type))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        known,
        [OrderEvent::Shipped(OrderShipped {
            carrier: "post".to_owned()
        })]
    );
}

#[test]
fn payload_mismatch_names_the_event() {
    let stored = recorded("OrderPlaced", 4, json!({ "customer": 5 }));
    let error = OrderEvent::decode(&stored).unwrap_err();
    assert!(!error.is_unknown_event_type());
    assert_names_event(&error, "OrderPlaced", 4);
    assert!(
        matches!(error.kind, DecodeErrorKind::Payload { type_name, .. } if type_name.ends_with("OrderPlaced")),
        "{:?}",
        error.kind
    );
}

#[test]
fn failed_upcast_step_names_its_version() {
    let stored = recorded("OrderPlaced", 1, json!({ "customer": "c-1" }));
    let error = OrderEvent::decode(&stored).unwrap_err();
    assert_names_event(&error, "OrderPlaced", 1);
    match &error.kind {
        DecodeErrorKind::Upcast { from, source } => {
            assert_eq!(*from, 1);
            assert_eq!(source.to_string(), "no `buyer` field");
        }
        other => panic!("expected an upcast error, got {other:?}"),
    }
}

#[test]
fn newer_or_zero_schema_version_is_unsupported() {
    for version in [0, 5] {
        let stored = recorded("OrderPlaced", version, json!({}));
        let error = OrderEvent::decode(&stored).unwrap_err();
        assert_names_event(&error, "OrderPlaced", version);
        assert!(
            matches!(
                error.kind,
                DecodeErrorKind::UnsupportedSchemaVersion { current: 4 }
            ),
            "{:?}",
            error.kind
        );
    }
}
