//! The read models: `order_summaries` (one row per order) and
//! `customer_totals` (one row per customer), PostgreSQL tables kept by two
//! projections that the runner feeds exactly once, in the transaction that
//! also moves their checkpoints.
//!
//! The tables live in the database's default schema, apart from the event
//! store's own schema (`es`): they can be dropped and rebuilt from the events
//! at any time.
//!
//! `order_summaries` is at version 2 (version 1 had no discounts): version
//! 2 writes the table `order_summaries_v2` (version 1 wrote
//! `order_summaries`), and readers query the view `order_summaries_served`,
//! which points at the version served. On a database that served version
//! 1, the view starts over version 1's table (a discount of 0) and keeps
//! answering from it while version 2 builds from the events alongside, and
//! while version 1's runners, in processes not yet upgraded, keep it
//! current; once caught up, version 2 takes over (its switch points the
//! view at its table, in the transaction that records the switch) and
//! version 1's table is dropped once no runner of it is left.

use chrono::{DateTime, Utc};
use es_core::{BoxError, Handle, Projection, RecordedEvent, Reset};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use crate::domain::{
    CouponApplied, ItemAdded, ItemRemoved, Line, OrderCancelled, OrderEvent, OrderPaid,
    OrderPlaced, OrderShipped, OrderStatus,
};

/// The read models' tables. Idempotent, so every start runs it.
pub const READ_MODEL_DDL: &str = "
CREATE TABLE IF NOT EXISTS order_summaries_v2 (
    order_id        text        PRIMARY KEY,
    customer_id     text        NOT NULL,
    status          text        NOT NULL,
    units           bigint      NOT NULL DEFAULT 0,
    total_cents     bigint      NOT NULL DEFAULT 0,
    discount_cents  bigint      NOT NULL DEFAULT 0,
    paid_cents      bigint      NOT NULL DEFAULT 0,
    tracking_number text,
    version         bigint      NOT NULL,
    placed_at       timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS order_summaries_v2_by_customer ON order_summaries_v2 (customer_id);

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
    // One process at a time: concurrent `CREATE ... IF NOT EXISTS` can
    // collide, and the view is made only once.
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('orders:read models', 0))")
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(READ_MODEL_DDL).execute(&mut *tx).await?;
    // The readers' view: over version 1's table on a database that served
    // it (until version 2 takes over), else over this version's.
    let (view, version_1): (bool, bool) = sqlx::query_as(
        "SELECT to_regclass('order_summaries_served') IS NOT NULL, \
         coalesce((SELECT relkind = 'r' FROM pg_class \
                   WHERE oid = to_regclass('order_summaries')), false)",
    )
    .fetch_one(&mut *tx)
    .await?;
    if !view {
        let sql = if version_1 {
            VERSION_1_VIEW.to_owned()
        } else {
            summaries_view()
        };
        sqlx::raw_sql(&sql).execute(&mut *tx).await?;
    }
    tx.commit().await
}

/// The readers' view over version 1's table, which had no discounts.
const VERSION_1_VIEW: &str = "CREATE VIEW order_summaries_served AS \
    SELECT order_id, customer_id, status, units, total_cents, 0::bigint AS discount_cents, \
    paid_cents, tracking_number, version, placed_at, updated_at FROM order_summaries";

/// The table of the version of `order_summaries` this code writes.
const SUMMARIES: &str = "order_summaries_v2";
const _: () = assert!(
    <OrderSummaries as Projection>::VERSION == 2,
    "SUMMARIES names the table of version 2"
);

/// Points the readers' view, `order_summaries_served`, at [`SUMMARIES`].
fn summaries_view() -> String {
    format!(
        "CREATE OR REPLACE VIEW order_summaries_served AS SELECT {SUMMARY_COLUMNS} FROM {SUMMARIES}"
    )
}

/// An amount for a `bigint` column.
fn cents(amount: u64) -> Result<i64, BoxError> {
    i64::try_from(amount).map_err(|_| format!("{amount} cents do not fit a bigint").into())
}

/// One row per order: customer, status, units, total, amount paid.
#[derive(Debug, Clone, Copy, Default, Projection)]
#[es(
    name = "order_summaries",
    version = 2,
    handles(
        OrderEvent::Placed,
        OrderEvent::ItemAdded,
        OrderEvent::ItemRemoved,
        OrderEvent::CouponApplied,
        OrderEvent::Paid,
        OrderEvent::Shipped,
        OrderEvent::Cancelled
    )
)]
pub struct OrderSummaries;

impl Handle<OrderPlaced, PgConnection> for OrderSummaries {
    async fn handle(
        &self,
        placed: OrderPlaced,
        envelope: &RecordedEvent,
        tx: &mut PgConnection,
    ) -> Result<(), BoxError> {
        sqlx::query(
            "INSERT INTO order_summaries_v2 \
             (order_id, customer_id, status, version, placed_at, updated_at) \
             VALUES ($1, $2, 'open', $3, $4, $4)",
        )
        .bind(envelope.stream_id.id())
        .bind(&placed.customer_id)
        .bind(i64::try_from(envelope.version)?)
        .bind(envelope.recorded_at)
        .execute(tx)
        .await?;
        Ok(())
    }
}

impl Handle<ItemAdded, PgConnection> for OrderSummaries {
    async fn handle(
        &self,
        added: ItemAdded,
        envelope: &RecordedEvent,
        tx: &mut PgConnection,
    ) -> Result<(), BoxError> {
        SummaryChange::line(added.quantity, added.unit_price_cents, 1)?
            .apply(envelope, tx)
            .await
    }
}

impl Handle<ItemRemoved, PgConnection> for OrderSummaries {
    async fn handle(
        &self,
        removed: ItemRemoved,
        envelope: &RecordedEvent,
        tx: &mut PgConnection,
    ) -> Result<(), BoxError> {
        SummaryChange::line(removed.quantity, removed.unit_price_cents, -1)?
            .apply(envelope, tx)
            .await
    }
}

impl Handle<CouponApplied, PgConnection> for OrderSummaries {
    async fn handle(
        &self,
        applied: CouponApplied,
        envelope: &RecordedEvent,
        tx: &mut PgConnection,
    ) -> Result<(), BoxError> {
        let change = SummaryChange {
            discount_cents: cents(applied.discount_cents)?,
            ..SummaryChange::default()
        };
        change.apply(envelope, tx).await
    }
}

impl Handle<OrderPaid, PgConnection> for OrderSummaries {
    async fn handle(
        &self,
        paid: OrderPaid,
        envelope: &RecordedEvent,
        tx: &mut PgConnection,
    ) -> Result<(), BoxError> {
        let change = SummaryChange {
            paid_cents: cents(paid.amount_cents)?,
            status: Some(OrderStatus::Paid),
            ..SummaryChange::default()
        };
        change.apply(envelope, tx).await
    }
}

impl Handle<OrderShipped, PgConnection> for OrderSummaries {
    async fn handle(
        &self,
        shipped: OrderShipped,
        envelope: &RecordedEvent,
        tx: &mut PgConnection,
    ) -> Result<(), BoxError> {
        let change = SummaryChange {
            status: Some(OrderStatus::Shipped),
            tracking_number: Some(shipped.tracking_number),
            ..SummaryChange::default()
        };
        change.apply(envelope, tx).await
    }
}

impl Handle<OrderCancelled, PgConnection> for OrderSummaries {
    async fn handle(
        &self,
        cancelled: OrderCancelled,
        envelope: &RecordedEvent,
        tx: &mut PgConnection,
    ) -> Result<(), BoxError> {
        let change = SummaryChange {
            paid_cents: -cents(cancelled.refund_cents)?,
            status: Some(OrderStatus::Cancelled),
            ..SummaryChange::default()
        };
        change.apply(envelope, tx).await
    }
}

impl Reset<PgConnection> for OrderSummaries {
    async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query(&format!("TRUNCATE {SUMMARIES}"))
            .execute(tx)
            .await?;
        Ok(())
    }

    /// Readers move to this version's table, at the commit of the switch.
    async fn switch(&self, _previous: Option<u32>, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query(&summaries_view()).execute(tx).await?;
        Ok(())
    }

    /// Drops the table of a replaced version: `order_summaries` for
    /// version 1, `order_summaries_v{N}` after it.
    async fn retire(&self, version: u32, tx: &mut PgConnection) -> Result<(), BoxError> {
        let table = if version == 1 {
            "order_summaries".to_owned()
        } else {
            format!("order_summaries_v{version}")
        };
        sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
            .execute(tx)
            .await?;
        Ok(())
    }
}

/// What an event after `OrderPlaced` changes in its order's summary: amounts
/// are added, a status or tracking number replaces the old one.
#[derive(Debug, Default)]
struct SummaryChange {
    units: i64,
    total_cents: i64,
    discount_cents: i64,
    paid_cents: i64,
    status: Option<OrderStatus>,
    tracking_number: Option<String>,
}

impl SummaryChange {
    /// A line of `quantity` units at `unit_price_cents` added (`sign` 1) or
    /// removed (`sign` -1).
    fn line(quantity: u32, unit_price_cents: u64, sign: i64) -> Result<Self, BoxError> {
        let line = Line {
            quantity,
            unit_price_cents,
        };
        Ok(Self {
            units: sign * i64::from(quantity),
            total_cents: sign * cents(line.total_cents())?,
            ..Self::default()
        })
    }

    /// Applies the change to the summary of `envelope`'s order, which must
    /// exist.
    async fn apply(self, envelope: &RecordedEvent, tx: &mut PgConnection) -> Result<(), BoxError> {
        let order = envelope.stream_id.id();
        let updated = sqlx::query(
            "UPDATE order_summaries_v2 SET units = units + $2, total_cents = total_cents + $3, \
             paid_cents = paid_cents + $4, status = coalesce($5, status), \
             tracking_number = coalesce($6, tracking_number), version = $7, updated_at = $8, \
             discount_cents = discount_cents + $9 \
             WHERE order_id = $1",
        )
        .bind(order)
        .bind(self.units)
        .bind(self.total_cents)
        .bind(self.paid_cents)
        .bind(self.status.map(OrderStatus::as_str))
        .bind(self.tracking_number)
        .bind(i64::try_from(envelope.version)?)
        .bind(envelope.recorded_at)
        .bind(self.discount_cents)
        .execute(tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(format!("order {order} has no summary: its OrderPlaced is missing").into());
        }
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

impl Handle<OrderPlaced, PgConnection> for CustomerTotals {
    async fn handle(
        &self,
        placed: OrderPlaced,
        envelope: &RecordedEvent,
        tx: &mut PgConnection,
    ) -> Result<(), BoxError> {
        sqlx::query("INSERT INTO customer_totals_orders (order_id, customer_id) VALUES ($1, $2)")
            .bind(envelope.stream_id.id())
            .bind(&placed.customer_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO customer_totals (customer_id, orders_placed) VALUES ($1, 1) \
             ON CONFLICT (customer_id) DO UPDATE \
             SET orders_placed = customer_totals.orders_placed + 1",
        )
        .bind(&placed.customer_id)
        .execute(tx)
        .await?;
        Ok(())
    }
}

impl Handle<OrderPaid, PgConnection> for CustomerTotals {
    async fn handle(
        &self,
        paid: OrderPaid,
        envelope: &RecordedEvent,
        tx: &mut PgConnection,
    ) -> Result<(), BoxError> {
        add_to_customer(envelope, tx, 1, 0, cents(paid.amount_cents)?).await
    }
}

impl Handle<OrderCancelled, PgConnection> for CustomerTotals {
    async fn handle(
        &self,
        cancelled: OrderCancelled,
        envelope: &RecordedEvent,
        tx: &mut PgConnection,
    ) -> Result<(), BoxError> {
        add_to_customer(envelope, tx, 0, 1, -cents(cancelled.refund_cents)?).await
    }
}

/// Adds to the totals of the customer who placed `envelope`'s order.
async fn add_to_customer(
    envelope: &RecordedEvent,
    tx: &mut PgConnection,
    paid: i64,
    cancelled: i64,
    spent_cents: i64,
) -> Result<(), BoxError> {
    let order = envelope.stream_id.id();
    let updated = sqlx::query(
        "UPDATE customer_totals t SET orders_paid = t.orders_paid + $2, \
         orders_cancelled = t.orders_cancelled + $3, spent_cents = t.spent_cents + $4 \
         FROM customer_totals_orders o \
         WHERE o.order_id = $1 AND t.customer_id = o.customer_id",
    )
    .bind(order)
    .bind(paid)
    .bind(cancelled)
    .bind(spent_cents)
    .execute(tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(format!("order {order} has no known customer").into());
    }
    Ok(())
}

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
    /// What a coupon takes off the total, in cents.
    pub discount_cents: i64,
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

const SUMMARY_COLUMNS: &str = "order_id, customer_id, status, units, total_cents, \
                               discount_cents, paid_cents, tracking_number, version, placed_at, updated_at";

/// Every order summary, oldest first.
///
/// # Errors
///
/// When the query fails.
pub async fn order_summaries(pool: &PgPool) -> Result<Vec<OrderSummary>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {SUMMARY_COLUMNS} FROM order_summaries_served ORDER BY placed_at, order_id"
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
        "SELECT {SUMMARY_COLUMNS} FROM order_summaries_served WHERE customer_id = $1 \
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
        "SELECT {SUMMARY_COLUMNS} FROM order_summaries_served WHERE order_id = $1"
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
