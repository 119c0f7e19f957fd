//! The scripted tour that `cargo run -p orders` prints: commands and the
//! events they write, the rules refusing commands, a concurrency conflict
//! retried, old events upcast, a snapshot, the read models, and a
//! projection rebuilt.

use std::io::Write;
use std::time::{Duration, Instant};

use es_core::{
    CommandContext, Decide, Event, EventStore, ExpectedVersion, NewEvent, Projection, Repository,
    RepositoryOptions, StreamId, StreamRead,
};
use es_postgres::{PgEventStore, ProjectionStatus};
use serde_json::json;

use crate::Error;
use crate::domain::{
    AddItem, Cancel, ItemAdded, Order, OrderError, OrderEvent, Pay, PlaceOrder, RemoveItem, Ship,
    legacy_item_added,
};
use crate::projections::{
    CustomerTotal, CustomerTotals, OrderSummaries, OrderSummary, customer_totals, order_summaries,
};
use crate::service::{Projections, Shop, order_stream, runner, wait_for_projections};

/// How long the demo waits for a projection before it gives up.
const PROJECTION_WAIT: Duration = Duration::from_secs(20);

/// What the demo ended with, for its tests.
#[derive(Debug)]
#[non_exhaustive]
pub struct DemoReport {
    /// `order_summaries` at the end.
    pub summaries: Vec<OrderSummary>,
    /// `customer_totals` before the rebuild.
    pub customers_before_rebuild: Vec<CustomerTotal>,
    /// `customer_totals` after the rebuild.
    pub customers: Vec<CustomerTotal>,
    /// How many times the conflicting command was decided.
    pub conflict_attempts: u32,
    /// The version 1 `ItemAdded`, as read back.
    pub upcast: OrderEvent,
    /// The snapshot a fresh load of the busy order started from.
    pub snapshot_version: Option<u64>,
    /// The events that load read after the snapshot.
    pub events_after_snapshot: usize,
    /// The projections' status at the end.
    pub status: Vec<ProjectionStatus>,
}

/// Writes the demo's narration.
struct Narrator<'a, W> {
    out: &'a mut W,
    store: PgEventStore,
}

impl<W: Write> Narrator<'_, W> {
    fn section(&mut self, title: &str) -> Result<(), Error> {
        writeln!(self.out, "\n== {title}")?;
        Ok(())
    }

    fn say(&mut self, text: &str) -> Result<(), Error> {
        writeln!(self.out, "   {text}")?;
        Ok(())
    }

    /// Prints the events of `stream` from version `from` on.
    async fn events(&mut self, stream: &StreamId, from: u64) -> Result<(), Error> {
        let events = self
            .store
            .read_stream(stream, StreamRead::forward().from_version(from))
            .await?;
        for event in events {
            let correlation = event.metadata.correlation_id.as_deref().unwrap_or("-");
            writeln!(
                self.out,
                "       v{:<2} {:<15} schema {}  {}  [correlation {correlation}]",
                event.version, event.event_type, event.schema_version, event.data
            )?;
        }
        Ok(())
    }

    /// Runs `command`, prints it and the events it wrote.
    async fn command<C>(
        &mut self,
        shop: &Shop,
        order_id: &str,
        label: &str,
        command: &C,
        context: &CommandContext,
    ) -> Result<u64, Error>
    where
        Order: Decide<C, Error = OrderError>,
        C: Sync,
    {
        let stream = order_stream(order_id)?;
        let outcome = shop.execute(&stream, command, context).await?;
        self.say(&format!("{order_id}: {label}"))?;
        let written = outcome.event_ids.len() as u64;
        self.events(&stream, outcome.stream_version + 1 - written)
            .await?;
        Ok(outcome.stream_version)
    }

    /// Runs `command`, which the order must refuse, and prints why.
    async fn refused<C>(
        &mut self,
        shop: &Shop,
        order_id: &str,
        label: &str,
        command: &C,
    ) -> Result<OrderError, Error>
    where
        Order: Decide<C, Error = OrderError>,
        C: Sync,
    {
        let stream = order_stream(order_id)?;
        match shop.execute(&stream, command, &CommandContext::new()).await {
            Err(es_core::CommandError::Rejected(rejection)) => {
                self.say(&format!("{order_id}: {label} -> refused: {rejection}"))?;
                Ok(rejection)
            }
            Ok(_) => Err(Error::Unexpected(format!("{label} was accepted"))),
            Err(other) => Err(other.into()),
        }
    }

    fn summaries(&mut self, rows: &[OrderSummary]) -> Result<(), Error> {
        self.say("order_summaries")?;
        self.say(&format!(
            "  {:<6} {:<8} {:<10} {:>5} {:>9} {:>9} {:>7}  {}",
            "order", "customer", "status", "units", "total", "paid", "version", "tracking"
        ))?;
        for row in rows {
            self.say(&format!(
                "  {:<6} {:<8} {:<10} {:>5} {:>9} {:>9} {:>7}  {}",
                row.order_id,
                row.customer_id,
                row.status,
                row.units,
                money(row.total_cents),
                money(row.paid_cents),
                row.version,
                row.tracking_number.as_deref().unwrap_or("-")
            ))?;
        }
        Ok(())
    }

    fn customers(&mut self, rows: &[CustomerTotal]) -> Result<(), Error> {
        self.say("customer_totals")?;
        self.say(&format!(
            "  {:<8} {:>6} {:>4} {:>9} {:>9}",
            "customer", "placed", "paid", "cancelled", "spent"
        ))?;
        for row in rows {
            self.say(&format!(
                "  {:<8} {:>6} {:>4} {:>9} {:>9}",
                row.customer_id,
                row.orders_placed,
                row.orders_paid,
                row.orders_cancelled,
                money(row.spent_cents)
            ))?;
        }
        Ok(())
    }

    fn status(&mut self, statuses: &[ProjectionStatus]) -> Result<(), Error> {
        self.say(&format!(
            "  {:<16} {:<10} {:>4} {:>8}  {:<8} {}",
            "projection", "position", "lag", "applied", "state", "lease"
        ))?;
        for s in statuses {
            self.say(&format!(
                "  {:<16} {:<10} {:>4} {:>8}  {:<8} {}",
                s.name,
                s.position.to_string(),
                s.lag,
                s.events_applied,
                s.state,
                if s.active { "held" } else { "free" }
            ))?;
        }
        Ok(())
    }
}

/// Cents as a decimal amount: 2100 is `21.00`.
#[must_use]
pub fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let cents = cents.unsigned_abs();
    format!("{sign}{}.{:02}", cents / 100, cents % 100)
}

fn item(sku: &str, quantity: u32, unit_price_cents: u64) -> AddItem {
    AddItem {
        sku: sku.to_owned(),
        quantity,
        unit_price_cents,
    }
}

/// The context of a checkout's commands: one correlation id, and no command
/// id, as each is a command of its own.
fn checkout(order_id: &str) -> CommandContext {
    CommandContext::new().with_correlation_id(format!("checkout-{order_id}"))
}

/// Runs the demo against `store` (an empty database: the order ids are
/// fixed), narrating into `out`.
///
/// # Errors
///
/// [`Error`] when the database fails, or [`Error::Unexpected`] when an
/// outcome differs from the one the demo shows.
#[expect(
    clippy::too_many_lines,
    reason = "a script reads best from top to bottom"
)]
pub async fn run<W: Write + Send>(store: PgEventStore, out: &mut W) -> Result<DemoReport, Error> {
    let started = Instant::now();
    let mut n = Narrator {
        out,
        store: store.clone(),
    };

    n.section("1. Setup")?;
    let shop = Shop::open(store.clone()).await?;
    n.say("event store migrated (schema `es`); read-model tables created")?;
    let projections = Projections::start(&store);
    n.say("projection runners started: order_summaries, customer_totals")?;
    n.say(
        "order_summaries is at version 2 (with discounts): on a database that served \
         version 1, version 2 builds alongside and takes over once caught up",
    )?;

    n.section("2. An order's life: place, add and remove items, pay, ship")?;
    let ctx = checkout("1001");
    let ada = PlaceOrder {
        customer_id: "ada".to_owned(),
    };
    n.command(&shop, "1001", "place for ada", &ada, &ctx)
        .await?;
    n.command(
        &shop,
        "1001",
        "add 2 x TEA-01 at 4.50",
        &item("TEA-01", 2, 450),
        &ctx,
    )
    .await?;
    n.command(
        &shop,
        "1001",
        "add 1 x MUG-02 at 12.00",
        &item("MUG-02", 1, 1200),
        &ctx,
    )
    .await?;
    n.command(
        &shop,
        "1001",
        "add 1 x GIFT-WRAP at 3.00",
        &item("GIFT-WRAP", 1, 300),
        &ctx,
    )
    .await?;
    let wrap = RemoveItem {
        sku: "GIFT-WRAP".to_owned(),
    };
    n.command(&shop, "1001", "remove GIFT-WRAP", &wrap, &ctx)
        .await?;
    n.command(
        &shop,
        "1001",
        "pay 21.00",
        &Pay { amount_cents: 2100 },
        &ctx,
    )
    .await?;
    let shipping = Ship {
        tracking_number: "TRK-1001".to_owned(),
    };
    n.command(&shop, "1001", "ship", &shipping, &ctx).await?;

    n.section("3. The order's rules refuse what a shop must not do")?;
    n.refused(
        &shop,
        "1001",
        "add an item after shipping",
        &item("TEA-01", 1, 450),
    )
    .await?;
    n.refused(
        &shop,
        "9999",
        "pay an order that does not exist",
        &Pay { amount_cents: 100 },
    )
    .await?;
    let ctx = checkout("1002");
    let grace = PlaceOrder {
        customer_id: "grace".to_owned(),
    };
    n.command(&shop, "1002", "place for grace", &grace, &ctx)
        .await?;
    n.command(
        &shop,
        "1002",
        "add 1 x BOOK-7 at 24.00",
        &item("BOOK-7", 1, 2400),
        &ctx,
    )
    .await?;
    let early = Ship {
        tracking_number: "TRK-1002".to_owned(),
    };
    n.refused(&shop, "1002", "ship before payment", &early)
        .await?;
    n.refused(&shop, "1002", "pay 20.00", &Pay { amount_cents: 2000 })
        .await?;
    n.command(
        &shop,
        "1002",
        "pay 24.00",
        &Pay { amount_cents: 2400 },
        &ctx,
    )
    .await?;
    let cancel = Cancel {
        reason: "customer changed their mind".to_owned(),
    };
    n.command(&shop, "1002", "cancel (paid: refunded)", &cancel, &ctx)
        .await?;

    n.section("4. A concurrency conflict, retried")?;
    n.say("Two repositories stand for two server processes, each with its own cache;")?;
    n.say("they trust their caches, so a command is a single append when nothing changed.")?;
    let options = RepositoryOptions::default().trust_cache(true);
    let a = Repository::<Order, _>::with_options(store.clone(), options);
    let b = Repository::<Order, _>::with_options(store.clone(), options);
    let order = order_stream("1003")?;
    let ctx_a = CommandContext::new().with_correlation_id("process-a");
    let ctx_b = CommandContext::new().with_correlation_id("process-b");
    let linus = PlaceOrder {
        customer_id: "linus".to_owned(),
    };
    a.execute(&order, &linus, &ctx_a).await?;
    a.execute(&order, &item("TEA-01", 1, 450), &ctx_a).await?;
    n.say("A: 1003 placed for linus, 1 x TEA-01 added; A caches the order at v2")?;
    let by_b = b.execute(&order, &item("MUG-02", 2, 1200), &ctx_b).await?;
    n.say(&format!(
        "B: 2 x MUG-02 added -> v{} (A's cache does not know)",
        by_b.stream_version
    ))?;
    let by_a = a.execute(&order, &item("TEA-01", 1, 450), &ctx_a).await?;
    n.say("A: 1 more TEA-01, decided on its cached v2: the append expected v2, found v3;")?;
    n.say(&format!(
        "   A read the new event, decided again and appended -> v{} after {} attempts",
        by_a.stream_version, by_a.attempts
    ))?;
    if by_a.attempts != 2 {
        return Err(Error::Unexpected(format!(
            "the conflicting command took {} attempts",
            by_a.attempts
        )));
    }
    let conflict_attempts = by_a.attempts;
    n.command(
        &shop,
        "1003",
        "pay 33.00",
        &Pay { amount_cents: 3300 },
        &checkout("1003"),
    )
    .await?;

    n.section("5. Events of an older release, read as schema version 2 (upcast)")?;
    n.say("Release 1 stored ItemAdded with a decimal string price; append two such events raw:")?;
    let legacy = order_stream("1000")?;
    let old_release = vec![
        NewEvent::new("OrderPlaced", json!({ "customer_id": "grace" })),
        legacy_item_added("TEA-01", 4, "4.50"),
    ];
    store
        .append(&legacy, ExpectedVersion::NoStream, old_release)
        .await?;
    n.events(&legacy, 1).await?;
    let stored = store
        .read_stream(&legacy, StreamRead::forward().from_version(2).limit(1))
        .await?;
    let stored = stored
        .first()
        .ok_or_else(|| Error::Unexpected("the legacy event is missing".to_owned()))?;
    let upcast = OrderEvent::decode(stored)?;
    n.say(&format!(
        "read back: {upcast:?} (schema {})",
        upcast.schema_version()
    ))?;
    if upcast
        != OrderEvent::ItemAdded(ItemAdded {
            sku: "TEA-01".to_owned(),
            quantity: 4,
            unit_price_cents: 450,
        })
    {
        return Err(Error::Unexpected(format!("upcast to {upcast:?}")));
    }
    n.command(
        &shop,
        "1000",
        "pay 18.00 (the total of the upcast item)",
        &Pay { amount_cents: 1800 },
        &checkout("1000"),
    )
    .await?;

    n.section("6. A long order and its snapshot (every 50 events)")?;
    let busy = order_stream("1004")?;
    let ctx = checkout("1004");
    let hopper = PlaceOrder {
        customer_id: "hopper".to_owned(),
    };
    shop.execute(&busy, &hopper, &ctx).await?;
    for round in 0..27 {
        let sku = format!("SOCK-{round:02}");
        shop.execute(&busy, &item(&sku, 1, 300), &ctx).await?;
        shop.execute(&busy, &RemoveItem { sku }, &ctx).await?;
    }
    shop.execute(&busy, &item("SOCKS", 3, 300), &ctx).await?;
    let paid = shop
        .execute(&busy, &Pay { amount_cents: 900 }, &ctx)
        .await?;
    n.say(&format!(
        "1004: hopper tried on 27 pairs of socks, kept 3 and paid: {} events",
        paid.stream_version
    ))?;
    let fresh = Repository::<Order, _>::new(store.clone());
    let loaded = fresh.load(&busy).await?;
    n.say(&format!(
        "a fresh process loads it from the snapshot at v{} plus {} newer events (not {})",
        loaded.snapshot_version.unwrap_or(0),
        loaded.events_read,
        loaded.version
    ))?;

    n.section("7. The read models")?;
    wait_for_projections(
        &store,
        &[OrderSummaries::NAME, CustomerTotals::NAME],
        PROJECTION_WAIT,
        || async { Ok(true) },
    )
    .await?;
    let rows = order_summaries(store.pool()).await?;
    n.summaries(&rows)?;
    let customers_before_rebuild = customer_totals(store.pool()).await?;
    n.customers(&customers_before_rebuild)?;

    n.section("8. Projection status, lag and a rebuild")?;
    let Projections {
        summaries,
        customers,
    } = projections;
    customers.stop().await?;
    n.say("customer_totals' runner stopped; meanwhile ada places order 1005:")?;
    let ctx = checkout("1005");
    n.command(&shop, "1005", "place for ada", &ada, &ctx)
        .await?;
    n.command(
        &shop,
        "1005",
        "add 1 x TEA-01 at 4.50",
        &item("TEA-01", 1, 450),
        &ctx,
    )
    .await?;
    let statuses =
        wait_for_projections(&store, &[OrderSummaries::NAME], PROJECTION_WAIT, || async {
            Ok(true)
        })
        .await?;
    n.status(&statuses)?;
    n.say("customer_totals lags by the one event of its types it has not seen.")?;
    sqlx::query("DELETE FROM customer_totals")
        .execute(store.pool())
        .await?;
    n.say("Someone deletes every row of customer_totals. The events still hold the truth:")?;
    store.request_rebuild(CustomerTotals::NAME).await?;
    n.say("rebuild requested; a runner starts, truncates the read model and replays the feed")?;
    let customers = runner(&store, CustomerTotals).spawn();
    let expected_customers = customers_before_rebuild.len();
    let pool = store.pool().clone();
    let status = wait_for_projections(
        &store,
        &[OrderSummaries::NAME, CustomerTotals::NAME],
        PROJECTION_WAIT,
        || {
            let pool = pool.clone();
            async move { Ok(customer_totals(&pool).await?.len() == expected_customers) }
        },
    )
    .await?;
    n.status(&status)?;
    let rebuilt = customer_totals(store.pool()).await?;
    n.customers(&rebuilt)?;
    let summaries_now = order_summaries(store.pool()).await?;

    summaries.stop().await?;
    customers.stop().await?;
    n.section(&format!("Done in {:.1} s", started.elapsed().as_secs_f64()))?;
    Ok(DemoReport {
        summaries: summaries_now,
        customers_before_rebuild,
        customers: rebuilt,
        conflict_attempts,
        upcast,
        snapshot_version: loaded.snapshot_version,
        events_after_snapshot: loaded.events_read,
        status,
    })
}
