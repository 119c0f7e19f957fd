//! The given/when/then harness.

use es_core::testing::given::given;
use es_core::{Aggregate, Decide, Event, On};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Added {
    item: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CheckedOut {}

#[derive(Debug, Clone, PartialEq, Event)]
enum CartEvent {
    Added(Added),
    CheckedOut(CheckedOut),
}

#[derive(Debug, Default, Aggregate)]
#[es(event = CartEvent)]
struct Cart {
    items: Vec<String>,
    checked_out: bool,
}

impl On<Added> for Cart {
    fn on(&mut self, event: Added) {
        self.items.push(event.item);
    }
}

impl On<CheckedOut> for Cart {
    fn on(&mut self, _: CheckedOut) {
        self.checked_out = true;
    }
}

struct CheckOut;

#[derive(Debug, PartialEq, thiserror::Error)]
enum CartError {
    #[error("the cart is empty")]
    Empty,
    #[error("the cart is already checked out")]
    AlreadyCheckedOut,
}

impl Decide<CheckOut> for Cart {
    type Error = CartError;

    fn decide(&self, _: &CheckOut) -> Result<Vec<CartEvent>, CartError> {
        if self.checked_out {
            Err(CartError::AlreadyCheckedOut)
        } else if self.items.is_empty() {
            Err(CartError::Empty)
        } else {
            Ok(vec![CartEvent::CheckedOut(CheckedOut {})])
        }
    }
}

fn added(item: &str) -> CartEvent {
    CartEvent::Added(Added {
        item: item.to_owned(),
    })
}

#[test]
fn then_checks_the_decided_events_and_returns_the_state() {
    let cart = given::<Cart>([added("tea")])
        .when(&CheckOut)
        .then([CartEvent::CheckedOut(CheckedOut {})]);
    assert!(cart.checked_out);
    assert_eq!(Cart::CATEGORY, "Cart");
}

#[test]
fn then_error_checks_the_refusal() {
    given::<Cart>([])
        .when(&CheckOut)
        .then_error(&CartError::Empty);
    given::<Cart>([added("tea"), CartEvent::CheckedOut(CheckedOut {})])
        .when(&CheckOut)
        .then_error_matches(|e| *e == CartError::AlreadyCheckedOut);
}

#[test]
#[should_panic(expected = "the command decided other events")]
fn then_fails_on_other_events() {
    given::<Cart>([added("tea")])
        .when(&CheckOut)
        .then([added("tea")]);
}

#[test]
#[should_panic(expected = "but the command was refused")]
fn then_fails_on_a_refusal() {
    given::<Cart>([]).when(&CheckOut).then([]);
}

#[test]
#[should_panic(expected = "but the command decided")]
fn then_error_fails_on_acceptance() {
    given::<Cart>([added("tea")])
        .when(&CheckOut)
        .then_error(&CartError::Empty);
}

#[test]
fn the_given_state_is_visible() {
    let given = given::<Cart>([added("a"), added("b")]);
    assert_eq!(given.state().items, ["a", "b"]);
    assert_eq!(CartEvent::EVENT_TYPES, ["Added", "CheckedOut"]);
}
