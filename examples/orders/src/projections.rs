//! The read models: `order_summaries` (one row per order) and
//! `customer_totals` (one row per customer), PostgreSQL tables kept by two
//! projections that the runner feeds exactly once, in the transaction that
//! also moves their checkpoints.
//!
//! The tables live in the database's default schema, apart from the event
//! store's own schema (`es`): they can be dropped and rebuilt from the events
//! at any time.

use chrono::{DateTime, Utc};
use es_core::{BoxError, Handle, Projection, RecordedEvent, Reset};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use crate::domain::{Line, OrderEvent, OrderStatus};

/// The read models' tables. Idempotent, so every start runs it.
pub const READ_MODEL_DDL: &str = "
CREATE TABLE IF NOT EXISTS order_summaries (
    order_id        text        PRIMARY KEY,
    customer_id     text        NOT NULL,
    status          text        NOT NULL,
    units           bigint      NOT NULL DEFAULT 0,
    total_cents     bigint      NOT NULL DEFAULT 0,
    paid_cents      bigint      NOT NULL DEFAULT 0,
    tracking_number text,
    version         bigint      NOT NULL,
    placed_at       timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS order_summaries_by_customer ON order_summaries (customer_id);

CREATE TABLE IF NOT EXISTS customer_totals (
    customer_id      text   PRIMARY KEY,
    orders_placed    bigint NOT NULL DEFAULT 0,
    orders_paid      bigint NOT NULL DEFAULT 0,
    orders_cancelled bigint NOT NULL DEFAULT 0,
    spent_cents      bigint NOT NULL DEFAULT 0
);
-- Which customer placed each order: payments and cancellations name only
-- the order, so the projection remembers the owner itself (it must not read
-- another projection's tables, which may be rebuilding).
CREATE TABLE IF NOT EXISTS customer_totals_orders (
    order_id    text PRIMARY KEY,
    customer_id text NOT NULL
);
";

/// Creates the read models' tables if they are missing.
///
/// # Errors
///
/// When the server refuses the statements.
pub async fn create_read_models(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(READ_MODEL_DDL).execute(pool).await?;
    Ok(())
}

/// An amount for a `bigint` column.
fn cents(amount: u64) -> Result<i64, BoxError> {
    i64::try_from(amount).map_err(|_| format!("{amount} cents do not fit a bigint").into())
}

/// One row per order: customer, status, units, total, amount paid.
#[derive(Debug, Clone, Copy, Default, Projection)]
#[es(
    name = "order_summaries",
    handles(
        OrderEvent::Placed,
        OrderEvent::ItemAdded,
        OrderEvent::ItemRemoved,
        OrderEvent::Paid,
        OrderEvent::Shipped,
        OrderEvent::Cancelled
    )
)]
pub struct OrderSummaries;

#[async_trait::async_trait]
impl Handle<OrderEvent, PgConnection> for OrderSummaries {
    async fn handle(
        &self,
        event: OrderEvent,
        envelope: &RecordedEvent,
        tx: &mut PgConnection,
    ) -> Result<(), BoxError> {
        let order = envelope.stream_id.id();
        let version = i64::try_from(envelope.version)?;
        let at = envelope.recorded_at;
        if let OrderEvent::Placed(placed) = &event {
            sqlx::query(
                "INSERT INTO order_summaries \
                 (order_id, customer_id, status, version, placed_at, updated_at) \
                 VALUES ($1, $2, 'open', $3, $4, $4)",
            )
            .bind(order)
            .bind(&placed.customer_id)
            .bind(version)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            return Ok(());
        }
        // Every other event changes some of: units, total, paid, status,
        // tracking number. NULL leaves the column alone.
        let (units, total, paid, status, tracking): (i64, i64, Option<i64>, Option<&str>, _) =
            match &event {
                OrderEvent::Placed(_) => return Ok(()),
                OrderEvent::ItemAdded(added) => {
                    let line = Line {
                        quantity: added.quantity,
                        unit_price_cents: added.unit_price_cents,
                    };
                    (
                        i64::from(added.quantity),
                        cents(line.total_cents())?,
                        None,
                        None,
                        None,
                    )
                }
                OrderEvent::ItemRemoved(removed) => {
                    let line = Line {
                        quantity: removed.quantity,
                        unit_price_cents: removed.unit_price_cents,
                    };
                    (
                        -i64::from(removed.quantity),
                        -cents(line.total_cents())?,
                        None,
                        None,
                        None,
                    )
                }
                OrderEvent::Paid(paid) => (
                    0,
                    0,
                    Some(cents(paid.amount_cents)?),
                    Some(OrderStatus::Paid.as_str()),
                    None,
                ),
                OrderEvent::Shipped(shipped) => (
                    0,
                    0,
                    None,
                    Some(OrderStatus::Shipped.as_str()),
                    Some(shipped.tracking_number.as_str()),
                ),
                OrderEvent::Cancelled(cancelled) => (
                    0,
                    0,
                    Some(cents(cancelled.refund_cents).map(|refund| -refund)?),
                    Some(OrderStatus::Cancelled.as_str()),
                    None,
                ),
            };
        let updated = sqlx::query(
            "UPDATE order_summaries SET units = units + $2, total_cents = total_cents + $3, \
             paid_cents = paid_cents + coalesce($4, 0), status = coalesce($5, status), \
             tracking_number = coalesce($6, tracking_number), version = $7, updated_at = $8 \
             WHERE order_id = $1",
        )
        .bind(order)
        .bind(units)
        .bind(total)
        .bind(paid)
        .bind(status)
        .bind(tracking)
        .bind(version)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(format!("order {order} has no summary: its OrderPlaced is missing").into());
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Reset<PgConnection> for OrderSummaries {
    async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query("TRUNCATE order_summaries").execute(tx).await?;
        Ok(())
    }
}

/// One row per customer: orders placed, paid and cancelled, and the amount
/// spent (paid minus refunded).
#[derive(Debug, Clone, Copy, Default, Projection)]
#[es(
    name = "customer_totals",
    handles(OrderEvent::Placed, OrderEvent::Paid, OrderEvent::Cancelled)
)]
pub struct CustomerTotals;

#[async_trait::async_trait]
impl Handle<OrderEvent, PgConnection> for CustomerTotals {
    async fn handle(
        &self,
        event: OrderEvent,
        envelope: &RecordedEvent,
        tx: &mut PgConnection,
    ) -> Result<(), BoxError> {
        let order = envelope.stream_id.id();
        if let OrderEvent::Placed(placed) = &event {
            sqlx::query(
                "INSERT INTO customer_totals_orders (order_id, customer_id) VALUES ($1, $2)",
            )
            .bind(order)
            .bind(&placed.customer_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO customer_totals (customer_id, orders_placed) VALUES ($1, 1) \
                 ON CONFLICT (customer_id) DO UPDATE \
                 SET orders_placed = customer_totals.orders_placed + 1",
            )
            .bind(&placed.customer_id)
            .execute(&mut *tx)
            .await?;
            return Ok(());
        }
        let (paid, cancelled, spent) = match &event {
            OrderEvent::Paid(paid) => (1_i64, 0_i64, cents(paid.amount_cents)?),
            OrderEvent::Cancelled(cancelled) => (0, 1, -cents(cancelled.refund_cents)?),
            _ => return Ok(()),
        };
        let updated = sqlx::query(
            "UPDATE customer_totals t SET orders_paid = t.orders_paid + $2, \
             orders_cancelled = t.orders_cancelled + $3, spent_cents = t.spent_cents + $4 \
             FROM customer_totals_orders o \
             WHERE o.order_id = $1 AND t.customer_id = o.customer_id",
        )
        .bind(order)
        .bind(paid)
        .bind(cancelled)
        .bind(spent)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(format!("order {order} has no known customer").into());
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Reset<PgConnection> for CustomerTotals {
    async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query("TRUNCATE customer_totals, customer_totals_orders")
            .execute(tx)
            .await?;
        Ok(())
    }
}

/// A row of `order_summaries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct OrderSummary {
    /// The order.
    pub order_id: String,
    /// Who ordered.
    pub customer_id: String,
    /// `open`, `paid`, `shipped` or `cancelled`.
    pub status: String,
    /// Units ordered.
    pub units: i64,
    /// What the order costs, in cents.
    pub total_cents: i64,
    /// What is paid and not refunded, in cents.
    pub paid_cents: i64,
    /// The carrier's tracking number, once shipped.
    pub tracking_number: Option<String>,
    /// The order stream's version this row includes.
    pub version: i64,
    /// When the order was placed.
    pub placed_at: DateTime<Utc>,
    /// When the row last changed.
    pub updated_at: DateTime<Utc>,
}

/// A row of `customer_totals`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct CustomerTotal {
    /// The customer.
    pub customer_id: String,
    /// Orders placed.
    pub orders_placed: i64,
    /// Orders paid (including ones cancelled later).
    pub orders_paid: i64,
    /// Orders cancelled.
    pub orders_cancelled: i64,
    /// Paid minus refunded, in cents.
    pub spent_cents: i64,
}

const SUMMARY_COLUMNS: &str = "order_id, customer_id, status, units, total_cents, paid_cents, \
                               tracking_number, version, placed_at, updated_at";

/// Every order summary, oldest first.
///
/// # Errors
///
/// When the query fails.
pub async fn order_summaries(pool: &PgPool) -> Result<Vec<OrderSummary>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {SUMMARY_COLUMNS} FROM order_summaries ORDER BY placed_at, order_id"
    ))
    .fetch_all(pool)
    .await
}

/// The summaries of one customer's orders, oldest first.
///
/// # Errors
///
/// When the query fails.
pub async fn customer_orders(
    pool: &PgPool,
    customer_id: &str,
) -> Result<Vec<OrderSummary>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {SUMMARY_COLUMNS} FROM order_summaries WHERE customer_id = $1 \
         ORDER BY placed_at, order_id"
    ))
    .bind(customer_id)
    .fetch_all(pool)
    .await
}

/// The summary of one order, if the projection has seen it.
///
/// # Errors
///
/// When the query fails.
pub async fn order_summary(
    pool: &PgPool,
    order_id: &str,
) -> Result<Option<OrderSummary>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {SUMMARY_COLUMNS} FROM order_summaries WHERE order_id = $1"
    ))
    .bind(order_id)
    .fetch_optional(pool)
    .await
}

/// Every customer's totals, by customer id.
///
/// # Errors
///
/// When the query fails.
pub async fn customer_totals(pool: &PgPool) -> Result<Vec<CustomerTotal>, sqlx::Error> {
    sqlx::query_as(
        "SELECT customer_id, orders_placed, orders_paid, orders_cancelled, spent_cents \
         FROM customer_totals ORDER BY customer_id",
    )
    .fetch_all(pool)
    .await
}

/// One customer's totals, if the projection has seen the customer.
///
/// # Errors
///
/// When the query fails.
pub async fn customer_total(
    pool: &PgPool,
    customer_id: &str,
) -> Result<Option<CustomerTotal>, sqlx::Error> {
    sqlx::query_as(
        "SELECT customer_id, orders_placed, orders_paid, orders_cancelled, spent_cents \
         FROM customer_totals WHERE customer_id = $1",
    )
    .bind(customer_id)
    .fetch_optional(pool)
    .await
}
