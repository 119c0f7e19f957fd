//! Coupons: a code the shop issues with a discount, which at most one order
//! can redeem. The coupon is an aggregate of its own (`Coupon-{code}`), and
//! applying it is a command decided on the order and the coupon together
//! ([`DecideWith`]): the order's `CouponApplied` and the coupon's
//! `CouponRedeemed` are written in one atomic append across both streams,
//! each checked against the version decided on. Of two orders racing for
//! one code, one append wins; the other is retried on the coupon's new
//! version and refused with [`OrderError::CouponRedeemed`].

use es_core::{Aggregate, Decide, DecideWith, Event, On, StreamId};
use serde::{Deserialize, Serialize};

use crate::domain::{CouponApplied, MAX_TOTAL_CENTS, Order, OrderError, OrderEvent};

/// The shop issued a coupon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CouponIssued {
    /// What it takes off an order, in cents.
    pub discount_cents: u64,
}

/// An order redeemed the coupon; no other order can.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CouponRedeemed {
    /// The order that redeemed it.
    pub order_id: String,
}

/// The events of a coupon's stream (`Coupon-{code}`).
#[derive(Debug, Clone, PartialEq, Eq, Event)]
pub enum CouponEvent {
    /// [`CouponIssued`].
    #[es(name = "CouponIssued")]
    Issued(CouponIssued),
    /// [`CouponRedeemed`].
    #[es(name = "CouponRedeemed")]
    Redeemed(CouponRedeemed),
}

/// A coupon: whether it was issued, its discount, and who redeemed it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Aggregate)]
#[es(category = "Coupon", event = CouponEvent)]
pub struct Coupon {
    discount_cents: Option<u64>,
    redeemed_by: Option<String>,
}

impl Coupon {
    /// The discount, once issued.
    #[must_use]
    pub fn discount_cents(&self) -> Option<u64> {
        self.discount_cents
    }

    /// The order that redeemed the coupon, if one did.
    #[must_use]
    pub fn redeemed_by(&self) -> Option<&str> {
        self.redeemed_by.as_deref()
    }
}

impl On<CouponIssued> for Coupon {
    fn on(&mut self, event: CouponIssued) {
        self.discount_cents = Some(event.discount_cents);
    }
}

impl On<CouponRedeemed> for Coupon {
    fn on(&mut self, event: CouponRedeemed) {
        self.redeemed_by = Some(event.order_id);
    }
}

/// A coupon code that cannot name a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid coupon code {0:?}: use 1 to 32 ASCII letters, digits, `-` and `_`")]
pub struct InvalidCouponCode(pub String);

/// The stream of coupon `code`: `Coupon-{code}`.
///
/// # Errors
///
/// [`InvalidCouponCode`] unless the code is 1 to 32 ASCII letters, digits,
/// `-` and `_`.
pub fn coupon_stream(code: &str) -> Result<StreamId, InvalidCouponCode> {
    let valid = (1..=32).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(InvalidCouponCode(code.to_owned()));
    }
    Coupon::stream_id(code).map_err(|_| InvalidCouponCode(code.to_owned()))
}

/// Issue a coupon (its code is the stream's id).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueCoupon {
    /// What it takes off an order, in cents (1 to [`MAX_TOTAL_CENTS`]).
    pub discount_cents: u64,
}

/// Why a coupon cannot be issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CouponError {
    /// The coupon exists already.
    #[error("the coupon was already issued")]
    AlreadyIssued,
    /// The discount is zero or larger than any order.
    #[error("the discount must be 1 to {MAX_TOTAL_CENTS} cents")]
    InvalidDiscount,
}

impl Decide<IssueCoupon> for Coupon {
    type Error = CouponError;

    fn decide(&self, command: &IssueCoupon) -> Result<Vec<CouponEvent>, CouponError> {
        if self.discount_cents.is_some() {
            return Err(CouponError::AlreadyIssued);
        }
        if !(1..=MAX_TOTAL_CENTS).contains(&command.discount_cents) {
            return Err(CouponError::InvalidDiscount);
        }
        Ok(vec![CouponEvent::Issued(CouponIssued {
            discount_cents: command.discount_cents,
        })])
    }
}

/// Apply coupon `code` to order `order_id`, redeeming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyCoupon {
    /// The order (the id in its stream's name), recorded on the coupon.
    pub order_id: String,
    /// The coupon's code.
    pub code: String,
}

impl DecideWith<Coupon, ApplyCoupon> for Order {
    type Error = OrderError;

    fn decide_with(
        &self,
        coupon: &Coupon,
        command: &ApplyCoupon,
    ) -> Result<(Vec<OrderEvent>, Vec<CouponEvent>), OrderError> {
        self.open_for_changes()?;
        if let Some(applied) = self.coupon() {
            return Err(OrderError::CouponAlreadyApplied {
                code: applied.code.clone(),
            });
        }
        let code = command.code.clone();
        let Some(discount_cents) = coupon.discount_cents else {
            return Err(OrderError::NoSuchCoupon { code });
        };
        if let Some(order_id) = coupon.redeemed_by.clone() {
            return Err(OrderError::CouponRedeemed { code, order_id });
        }
        Ok((
            vec![OrderEvent::CouponApplied(CouponApplied {
                code,
                discount_cents,
            })],
            vec![CouponEvent::Redeemed(CouponRedeemed {
                order_id: command.order_id.clone(),
            })],
        ))
    }
}

#[cfg(test)]
mod tests {
    use es_core::testing::given::given;

    use super::*;
    use crate::domain::{ItemAdded, OrderPlaced, Pay};

    fn open_order() -> Order {
        let mut order = Order::default();
        order.apply(OrderEvent::Placed(OrderPlaced {
            customer_id: "ada".to_owned(),
        }));
        order.apply(OrderEvent::ItemAdded(ItemAdded {
            sku: "tea".to_owned(),
            quantity: 2,
            unit_price_cents: 450,
        }));
        order
    }

    fn issued(discount_cents: u64) -> Coupon {
        let mut coupon = Coupon::default();
        coupon.apply(CouponEvent::Issued(CouponIssued { discount_cents }));
        coupon
    }

    fn apply(order_id: &str) -> ApplyCoupon {
        ApplyCoupon {
            order_id: order_id.to_owned(),
            code: "WELCOME".to_owned(),
        }
    }

    #[test]
    fn an_issued_coupon_is_applied_and_redeemed_together() {
        let (order_events, coupon_events) = open_order()
            .decide_with(&issued(100), &apply("o-1"))
            .expect("applies");
        assert_eq!(
            order_events,
            [OrderEvent::CouponApplied(CouponApplied {
                code: "WELCOME".to_owned(),
                discount_cents: 100,
            })]
        );
        assert_eq!(
            coupon_events,
            [CouponEvent::Redeemed(CouponRedeemed {
                order_id: "o-1".to_owned()
            })]
        );
        let mut order = open_order();
        for event in order_events {
            order.apply(event);
        }
        assert_eq!(order.amount_due_cents(), 800);
        let wrong = order.decide(&Pay { amount_cents: 900 });
        assert!(matches!(
            wrong,
            Err(OrderError::WrongAmount {
                total_cents: 800,
                ..
            })
        ));
    }

    #[test]
    fn a_redeemed_or_unknown_coupon_is_refused() {
        let mut redeemed = issued(100);
        redeemed.apply(CouponEvent::Redeemed(CouponRedeemed {
            order_id: "o-1".to_owned(),
        }));
        assert_eq!(
            open_order().decide_with(&redeemed, &apply("o-2")),
            Err(OrderError::CouponRedeemed {
                code: "WELCOME".to_owned(),
                order_id: "o-1".to_owned()
            })
        );
        assert_eq!(
            open_order().decide_with(&Coupon::default(), &apply("o-2")),
            Err(OrderError::NoSuchCoupon {
                code: "WELCOME".to_owned()
            })
        );
        assert_eq!(
            Order::default().decide_with(&issued(100), &apply("o-2")),
            Err(OrderError::NotPlaced)
        );
    }

    #[test]
    fn an_order_takes_one_coupon() {
        let mut order = open_order();
        order.apply(OrderEvent::CouponApplied(CouponApplied {
            code: "FIRST".to_owned(),
            discount_cents: 50,
        }));
        assert_eq!(
            order.decide_with(&issued(100), &apply("o-1")),
            Err(OrderError::CouponAlreadyApplied {
                code: "FIRST".to_owned()
            })
        );
    }

    #[test]
    fn coupons_are_issued_once_with_a_sane_discount() {
        given::<Coupon>([])
            .when(&IssueCoupon { discount_cents: 0 })
            .then_error(&CouponError::InvalidDiscount);
        given::<Coupon>([CouponEvent::Issued(CouponIssued { discount_cents: 5 })])
            .when(&IssueCoupon { discount_cents: 5 })
            .then_error(&CouponError::AlreadyIssued);
        given::<Coupon>([])
            .when(&IssueCoupon { discount_cents: 5 })
            .then([CouponEvent::Issued(CouponIssued { discount_cents: 5 })]);
    }
}
