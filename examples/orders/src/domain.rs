//! The order: its events, its state, its commands and the rules it
//! enforces. Nothing here touches a database; `cargo test -p orders --lib`
//! checks the rules with the given/when/then harness.

use std::collections::BTreeMap;

use es_core::{Aggregate, Decide, Event, NewEvent, On};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The largest order total the shop accepts, in cents (1,000,000.00). It
/// keeps every amount well inside PostgreSQL's `bigint`.
pub const MAX_TOTAL_CENTS: u64 = 100_000_000;

/// The most units of one article in an order.
pub const MAX_QUANTITY: u32 = 10_000;

// ---------------------------------------------------------------- events --

/// A customer opened an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    /// Who ordered.
    pub customer_id: String,
}

/// Units of an article were added to the order.
///
/// Schema version 2. Version 1, written by an older release, stored the
/// price as a decimal string of euros (`"unit_price": "4.50"`);
/// [`item_added_v1`] upcasts it to integer cents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemAdded {
    /// The article.
    pub sku: String,
    /// How many units.
    pub quantity: u32,
    /// The price of one unit, in cents.
    pub unit_price_cents: u64,
}

/// An article's line was removed from the order. Carries the line's
/// quantity and price so that readers need no other event to adjust totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemRemoved {
    /// The article.
    pub sku: String,
    /// The units removed (the whole line).
    pub quantity: u32,
    /// The price of one unit, in cents.
    pub unit_price_cents: u64,
}

/// The customer paid the order's total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPaid {
    /// The amount paid, in cents.
    pub amount_cents: u64,
}

/// The order left the warehouse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderShipped {
    /// The carrier's tracking number.
    pub tracking_number: String,
}

/// A coupon was applied to the order: its discount comes off the amount
/// due. The same event's transaction records the coupon's redemption
/// ([`crate::coupons::CouponRedeemed`]), so a coupon is applied at most once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CouponApplied {
    /// The coupon's code.
    pub code: String,
    /// What comes off the amount due, in cents.
    pub discount_cents: u64,
}

/// The order was cancelled before it shipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    /// Why.
    pub reason: String,
    /// What is paid back to the customer, in cents (0 if it was unpaid).
    pub refund_cents: u64,
}

/// The events of an order's stream (`Order-{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Event)]
pub enum OrderEvent {
    /// [`OrderPlaced`].
    #[es(name = "OrderPlaced")]
    Placed(OrderPlaced),
    /// [`ItemAdded`], schema version 2.
    #[es(name = "ItemAdded", version = 2, upcast(from = 1, with = item_added_v1))]
    ItemAdded(ItemAdded),
    /// [`ItemRemoved`].
    #[es(name = "ItemRemoved")]
    ItemRemoved(ItemRemoved),
    /// [`OrderPaid`].
    #[es(name = "OrderPaid")]
    Paid(OrderPaid),
    /// [`OrderShipped`].
    #[es(name = "OrderShipped")]
    Shipped(OrderShipped),
    /// [`OrderCancelled`].
    #[es(name = "OrderCancelled")]
    Cancelled(OrderCancelled),
    /// [`CouponApplied`].
    #[es(name = "CouponApplied")]
    CouponApplied(CouponApplied),
}

/// A version 1 `ItemAdded` whose price cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("ItemAdded v1: {0}")]
pub struct LegacyPriceError(String);

/// Upcasts an `ItemAdded` payload from schema version 1 to 2:
/// `{"sku", "quantity", "unit_price": "4.50"}` becomes
/// `{"sku", "quantity", "unit_price_cents": 450}`. The decimal string is read
/// exactly, never through a float.
///
/// # Errors
///
/// [`LegacyPriceError`] when the payload has no `unit_price` string or it is
/// not a non-negative amount with at most two decimals.
pub fn item_added_v1(data: Value) -> Result<Value, LegacyPriceError> {
    let Value::Object(mut fields) = data else {
        return Err(LegacyPriceError("the payload is not an object".to_owned()));
    };
    let price = fields
        .remove("unit_price")
        .ok_or_else(|| LegacyPriceError("no `unit_price`".to_owned()))?;
    let text = price
        .as_str()
        .ok_or_else(|| LegacyPriceError(format!("`unit_price` {price} is not a string")))?;
    let cents = parse_decimal_cents(text)
        .ok_or_else(|| LegacyPriceError(format!("`unit_price` {text:?} is not an amount")))?;
    fields.insert("unit_price_cents".to_owned(), json!(cents));
    Ok(Value::Object(fields))
}

/// `"4.5"` and `"4.50"` are 450 cents, `"12"` is 1200.
fn parse_decimal_cents(text: &str) -> Option<u64> {
    let (units, fraction) = text.split_once('.').unwrap_or((text, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if units.is_empty() || fraction.len() > 2 || !all_digits(units) || !all_digits(fraction) {
        return None;
    }
    let units: u64 = units.parse().ok()?;
    let fraction: u64 = match fraction.len() {
        0 => 0,
        1 => fraction.parse::<u64>().ok()? * 10,
        _ => fraction.parse().ok()?,
    };
    units.checked_mul(100)?.checked_add(fraction)
}

/// An `ItemAdded` event as a release from before integer cents stored it:
/// schema version 1, the price a decimal string of euros. Used to show
/// upcasting; new code never writes it.
#[must_use]
pub fn legacy_item_added(sku: &str, quantity: u32, unit_price: &str) -> NewEvent {
    NewEvent::new(
        "ItemAdded",
        json!({ "sku": sku, "quantity": quantity, "unit_price": unit_price }),
    )
    .with_schema_version(1)
}

// ----------------------------------------------------------------- state --

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// No such order: the stream is empty.
    #[default]
    New,
    /// Placed; items may change.
    Open,
    /// Paid; waiting to ship.
    Paid,
    /// Shipped; final.
    Shipped,
    /// Cancelled; final.
    Cancelled,
}

impl OrderStatus {
    /// The status as stored in the read model: `open`, `paid`, ...
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Open => "open",
            Self::Paid => "paid",
            Self::Shipped => "shipped",
            Self::Cancelled => "cancelled",
        }
    }
}

/// One article's line in an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// Units ordered.
    pub quantity: u32,
    /// Price of one unit, in cents.
    pub unit_price_cents: u64,
}

impl Line {
    /// Quantity times unit price. Cannot overflow for a line the aggregate
    /// accepted (see [`MAX_TOTAL_CENTS`]).
    #[must_use]
    pub fn total_cents(&self) -> u64 {
        u64::from(self.quantity).saturating_mul(self.unit_price_cents)
    }
}

/// An order: the fold of its stream's events. Snapshotted every 50 events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Aggregate)]
#[es(category = "Order", event = OrderEvent, snapshot(every = 50, version = 1))]
pub struct Order {
    status: OrderStatus,
    customer_id: String,
    lines: BTreeMap<String, Line>,
    paid_cents: u64,
    /// The coupon applied, if any (absent from older snapshots).
    #[serde(default)]
    coupon: Option<CouponApplied>,
}

impl Order {
    /// Where the order is in its life.
    #[must_use]
    pub fn status(&self) -> OrderStatus {
        self.status
    }

    /// Who ordered (empty before the order is placed).
    #[must_use]
    pub fn customer_id(&self) -> &str {
        &self.customer_id
    }

    /// The lines by article.
    #[must_use]
    pub fn lines(&self) -> &BTreeMap<String, Line> {
        &self.lines
    }

    /// What the order costs, in cents.
    #[must_use]
    pub fn total_cents(&self) -> u64 {
        self.lines.values().map(Line::total_cents).sum()
    }

    /// What the customer pays: the total less the coupon's discount, in
    /// cents.
    #[must_use]
    pub fn amount_due_cents(&self) -> u64 {
        let discount = self.coupon.as_ref().map_or(0, |c| c.discount_cents);
        self.total_cents().saturating_sub(discount)
    }

    /// The coupon applied, if any.
    #[must_use]
    pub fn coupon(&self) -> Option<&CouponApplied> {
        self.coupon.as_ref()
    }

    /// What the customer paid, in cents.
    #[must_use]
    pub fn paid_cents(&self) -> u64 {
        self.paid_cents
    }

    /// Fails unless the order is placed and neither paid, shipped nor
    /// cancelled: the states in which items may change.
    pub(crate) fn open_for_changes(&self) -> Result<(), OrderError> {
        match self.status {
            OrderStatus::New => Err(OrderError::NotPlaced),
            OrderStatus::Open => Ok(()),
            OrderStatus::Paid => Err(OrderError::AlreadyPaid),
            OrderStatus::Shipped => Err(OrderError::AlreadyShipped),
            OrderStatus::Cancelled => Err(OrderError::Cancelled),
        }
    }
}

impl On<OrderPlaced> for Order {
    fn on(&mut self, event: OrderPlaced) {
        self.status = OrderStatus::Open;
        self.customer_id = event.customer_id;
    }
}

impl On<ItemAdded> for Order {
    fn on(&mut self, event: ItemAdded) {
        let line = self.lines.entry(event.sku).or_insert(Line {
            quantity: 0,
            unit_price_cents: event.unit_price_cents,
        });
        line.quantity = line.quantity.saturating_add(event.quantity);
    }
}

impl On<ItemRemoved> for Order {
    fn on(&mut self, event: ItemRemoved) {
        self.lines.remove(&event.sku);
    }
}

impl On<OrderPaid> for Order {
    fn on(&mut self, event: OrderPaid) {
        self.status = OrderStatus::Paid;
        self.paid_cents = event.amount_cents;
    }
}

impl On<OrderShipped> for Order {
    fn on(&mut self, _: OrderShipped) {
        self.status = OrderStatus::Shipped;
    }
}

impl On<CouponApplied> for Order {
    fn on(&mut self, event: CouponApplied) {
        self.coupon = Some(event);
    }
}

impl On<OrderCancelled> for Order {
    fn on(&mut self, event: OrderCancelled) {
        self.status = OrderStatus::Cancelled;
        self.paid_cents = self.paid_cents.saturating_sub(event.refund_cents);
    }
}

// -------------------------------------------------------------- commands --

/// Open a new order for a customer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    /// Who orders.
    pub customer_id: String,
}

/// Add units of an article. Adding an article already in the order adds to
/// its line, at the same price.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddItem {
    /// The article.
    pub sku: String,
    /// How many units (1 to [`MAX_QUANTITY`]).
    pub quantity: u32,
    /// The price of one unit, in cents.
    pub unit_price_cents: u64,
}

/// Remove an article's whole line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveItem {
    /// The article.
    pub sku: String,
}

/// Pay the order. The amount must be the order's total.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pay {
    /// The amount, in cents.
    pub amount_cents: u64,
}

/// Ship a paid order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ship {
    /// The carrier's tracking number.
    pub tracking_number: String,
}

/// Cancel an order that has not shipped; a paid order is refunded.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cancel {
    /// Why.
    pub reason: String,
}

/// Why the order refuses a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// A field of the command is not acceptable whatever the order's state.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The command's field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The order does not exist.
    #[error("the order does not exist")]
    NotPlaced,
    /// The order exists already.
    #[error("the order already exists")]
    AlreadyPlaced,
    /// The order is paid: its items are fixed.
    #[error("the order is paid; its items can no longer change")]
    AlreadyPaid,
    /// The order has shipped: nothing changes any more.
    #[error("the order has shipped; it can no longer change")]
    AlreadyShipped,
    /// The order is cancelled.
    #[error("the order is cancelled")]
    Cancelled,
    /// The order has no line for the article.
    #[error("{sku} is not in the order")]
    ItemNotInOrder {
        /// The article.
        sku: String,
    },
    /// The article is in the order at another price.
    #[error("{sku} is already in the order at {unit_price_cents} cents a unit")]
    PriceMismatch {
        /// The article.
        sku: String,
        /// The price of its line.
        unit_price_cents: u64,
    },
    /// The order would cost more than [`MAX_TOTAL_CENTS`].
    #[error("the order total would exceed {MAX_TOTAL_CENTS} cents")]
    TotalTooLarge,
    /// An order without items cannot be paid.
    #[error("the order has no items")]
    Empty,
    /// The payment does not match the total.
    #[error("the order totals {total_cents} cents, not {offered_cents}")]
    WrongAmount {
        /// The order's total.
        total_cents: u64,
        /// The amount offered.
        offered_cents: u64,
    },
    /// The order must be paid before it ships.
    #[error("the order must be paid before it ships")]
    NotPaid,
    /// The coupon was never issued.
    #[error("there is no coupon {code}")]
    NoSuchCoupon {
        /// The code.
        code: String,
    },
    /// The coupon was redeemed already, by this order or another.
    #[error("coupon {code} was already redeemed by order {order_id}")]
    CouponRedeemed {
        /// The code.
        code: String,
        /// The order that redeemed it.
        order_id: String,
    },
    /// The order has a coupon already.
    #[error("the order already has coupon {code}")]
    CouponAlreadyApplied {
        /// The code of the order's coupon.
        code: String,
    },
}

/// Checks a free-text field: not blank, at most `max` bytes.
fn text(field: &'static str, value: &str, max: usize) -> Result<(), OrderError> {
    if value.trim().is_empty() {
        return Err(OrderError::Invalid {
            field,
            reason: "must not be empty",
        });
    }
    if value.len() > max || value.chars().any(char::is_control) {
        return Err(OrderError::Invalid {
            field,
            reason: "too long or contains control characters",
        });
    }
    Ok(())
}

impl Decide<PlaceOrder> for Order {
    type Error = OrderError;

    fn decide(&self, command: &PlaceOrder) -> Result<Vec<OrderEvent>, OrderError> {
        text("customer_id", &command.customer_id, 100)?;
        if self.status != OrderStatus::New {
            return Err(OrderError::AlreadyPlaced);
        }
        Ok(vec![OrderEvent::Placed(OrderPlaced {
            customer_id: command.customer_id.clone(),
        })])
    }
}

impl Decide<AddItem> for Order {
    type Error = OrderError;

    fn decide(&self, command: &AddItem) -> Result<Vec<OrderEvent>, OrderError> {
        text("sku", &command.sku, 64)?;
        if command.quantity == 0 || command.quantity > MAX_QUANTITY {
            return Err(OrderError::Invalid {
                field: "quantity",
                reason: "must be between 1 and 10000",
            });
        }
        self.open_for_changes()?;
        if let Some(line) = self.lines.get(&command.sku)
            && line.unit_price_cents != command.unit_price_cents
        {
            return Err(OrderError::PriceMismatch {
                sku: command.sku.clone(),
                unit_price_cents: line.unit_price_cents,
            });
        }
        u64::from(command.quantity)
            .checked_mul(command.unit_price_cents)
            .and_then(|added| added.checked_add(self.total_cents()))
            .filter(|total| *total <= MAX_TOTAL_CENTS)
            .ok_or(OrderError::TotalTooLarge)?;
        Ok(vec![OrderEvent::ItemAdded(ItemAdded {
            sku: command.sku.clone(),
            quantity: command.quantity,
            unit_price_cents: command.unit_price_cents,
        })])
    }
}

impl Decide<RemoveItem> for Order {
    type Error = OrderError;

    fn decide(&self, command: &RemoveItem) -> Result<Vec<OrderEvent>, OrderError> {
        self.open_for_changes()?;
        let line = self
            .lines
            .get(&command.sku)
            .ok_or_else(|| OrderError::ItemNotInOrder {
                sku: command.sku.clone(),
            })?;
        Ok(vec![OrderEvent::ItemRemoved(ItemRemoved {
            sku: command.sku.clone(),
            quantity: line.quantity,
            unit_price_cents: line.unit_price_cents,
        })])
    }
}

impl Decide<Pay> for Order {
    type Error = OrderError;

    fn decide(&self, command: &Pay) -> Result<Vec<OrderEvent>, OrderError> {
        self.open_for_changes()?;
        if self.lines.is_empty() {
            return Err(OrderError::Empty);
        }
        let total_cents = self.amount_due_cents();
        if command.amount_cents != total_cents {
            return Err(OrderError::WrongAmount {
                total_cents,
                offered_cents: command.amount_cents,
            });
        }
        Ok(vec![OrderEvent::Paid(OrderPaid {
            amount_cents: total_cents,
        })])
    }
}

impl Decide<Ship> for Order {
    type Error = OrderError;

    fn decide(&self, command: &Ship) -> Result<Vec<OrderEvent>, OrderError> {
        text("tracking_number", &command.tracking_number, 64)?;
        match self.status {
            OrderStatus::New => Err(OrderError::NotPlaced),
            OrderStatus::Open => Err(OrderError::NotPaid),
            OrderStatus::Paid => Ok(vec![OrderEvent::Shipped(OrderShipped {
                tracking_number: command.tracking_number.clone(),
            })]),
            OrderStatus::Shipped => Err(OrderError::AlreadyShipped),
            OrderStatus::Cancelled => Err(OrderError::Cancelled),
        }
    }
}

impl Decide<Cancel> for Order {
    type Error = OrderError;

    fn decide(&self, command: &Cancel) -> Result<Vec<OrderEvent>, OrderError> {
        text("reason", &command.reason, 200)?;
        match self.status {
            OrderStatus::New => Err(OrderError::NotPlaced),
            OrderStatus::Open | OrderStatus::Paid => {
                Ok(vec![OrderEvent::Cancelled(OrderCancelled {
                    reason: command.reason.clone(),
                    refund_cents: self.paid_cents,
                })])
            }
            OrderStatus::Shipped => Err(OrderError::AlreadyShipped),
            OrderStatus::Cancelled => Err(OrderError::Cancelled),
        }
    }
}

#[cfg(test)]
mod tests {
    use es_core::testing::given::given;
    use es_core::{Position, RecordedEvent, StreamId};

    use super::*;

    fn placed() -> OrderEvent {
        OrderEvent::Placed(OrderPlaced {
            customer_id: "ada".to_owned(),
        })
    }

    fn tea(quantity: u32) -> OrderEvent {
        OrderEvent::ItemAdded(ItemAdded {
            sku: "TEA-01".to_owned(),
            quantity,
            unit_price_cents: 450,
        })
    }

    fn paid(amount_cents: u64) -> OrderEvent {
        OrderEvent::Paid(OrderPaid { amount_cents })
    }

    fn add_tea(quantity: u32) -> AddItem {
        AddItem {
            sku: "TEA-01".to_owned(),
            quantity,
            unit_price_cents: 450,
        }
    }

    #[test]
    fn adding_an_article_twice_adds_to_its_line() {
        let order = given::<Order>([placed(), tea(2)])
            .when(&add_tea(1))
            .then([tea(1)]);
        assert_eq!(order.lines()["TEA-01"].quantity, 3);
        assert_eq!(order.total_cents(), 1350);
    }

    #[test]
    fn an_article_keeps_its_price() {
        given::<Order>([placed(), tea(2)])
            .when(&AddItem {
                unit_price_cents: 500,
                ..add_tea(1)
            })
            .then_error(&OrderError::PriceMismatch {
                sku: "TEA-01".to_owned(),
                unit_price_cents: 450,
            });
    }

    #[test]
    fn commands_on_a_missing_order_are_refused() {
        given::<Order>([])
            .when(&add_tea(1))
            .then_error(&OrderError::NotPlaced);
        given::<Order>([])
            .when(&Cancel {
                reason: "x".to_owned(),
            })
            .then_error(&OrderError::NotPlaced);
    }

    #[test]
    fn payment_must_match_the_total() {
        given::<Order>([placed(), tea(2)])
            .when(&Pay { amount_cents: 899 })
            .then_error(&OrderError::WrongAmount {
                total_cents: 900,
                offered_cents: 899,
            });
        given::<Order>([placed()])
            .when(&Pay { amount_cents: 0 })
            .then_error(&OrderError::Empty);
        given::<Order>([placed(), tea(2)])
            .when(&Pay { amount_cents: 900 })
            .then([paid(900)]);
    }

    #[test]
    fn no_shipping_before_payment() {
        let ship = Ship {
            tracking_number: "TRK-1".to_owned(),
        };
        given::<Order>([placed(), tea(1)])
            .when(&ship)
            .then_error(&OrderError::NotPaid);
        given::<Order>([placed(), tea(1), paid(450)])
            .when(&ship)
            .then([OrderEvent::Shipped(OrderShipped {
                tracking_number: "TRK-1".to_owned(),
            })]);
    }

    #[test]
    fn no_changes_after_payment_or_shipping() {
        let shipped = OrderEvent::Shipped(OrderShipped {
            tracking_number: "TRK-1".to_owned(),
        });
        given::<Order>([placed(), tea(1), paid(450)])
            .when(&add_tea(1))
            .then_error(&OrderError::AlreadyPaid);
        given::<Order>([placed(), tea(1), paid(450), shipped.clone()])
            .when(&RemoveItem {
                sku: "TEA-01".to_owned(),
            })
            .then_error(&OrderError::AlreadyShipped);
        given::<Order>([placed(), tea(1), paid(450), shipped])
            .when(&Cancel {
                reason: "too late".to_owned(),
            })
            .then_error(&OrderError::AlreadyShipped);
    }

    #[test]
    fn cancelling_a_paid_order_refunds_it() {
        let order = given::<Order>([placed(), tea(1), paid(450)])
            .when(&Cancel {
                reason: "changed my mind".to_owned(),
            })
            .then([OrderEvent::Cancelled(OrderCancelled {
                reason: "changed my mind".to_owned(),
                refund_cents: 450,
            })]);
        assert_eq!(order.status(), OrderStatus::Cancelled);
        assert_eq!(order.paid_cents(), 0);
    }

    #[test]
    fn bad_input_and_overflow_are_refused() {
        given::<Order>([placed()])
            .when(&add_tea(0))
            .then_error_matches(|e| {
                matches!(
                    e,
                    OrderError::Invalid {
                        field: "quantity",
                        ..
                    }
                )
            });
        given::<Order>([placed()])
            .when(&AddItem {
                unit_price_cents: u64::MAX,
                ..add_tea(2)
            })
            .then_error(&OrderError::TotalTooLarge);
        given::<Order>([])
            .when(&PlaceOrder {
                customer_id: "  ".to_owned(),
            })
            .then_error_matches(|e| matches!(e, OrderError::Invalid { .. }));
    }

    #[test]
    fn version_1_item_added_is_read_as_version_2() {
        let stored = RecordedEvent::new(
            legacy_item_added("TEA-01", 2, "4.5"),
            StreamId::new("Order-1").expect("valid id"),
            2,
            Position::from_parts(1, 2),
            chrono::DateTime::UNIX_EPOCH,
        );
        assert_eq!(OrderEvent::decode(&stored).expect("decodes"), tea(2));
    }

    #[test]
    fn legacy_prices_are_read_exactly() {
        for (text, cents) in [("4.50", Some(450)), ("4.5", Some(450)), ("12", Some(1200))] {
            assert_eq!(parse_decimal_cents(text), cents, "{text}");
        }
        for text in ["", ".5", "4.505", "-1", "1e3", "4,50"] {
            assert_eq!(parse_decimal_cents(text), None, "{text}");
        }
    }
}
