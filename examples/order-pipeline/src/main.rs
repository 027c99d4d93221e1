//! The order pipeline, in one process and with no broker.
//!
//! An `Order` aggregate is saved through the [`Repository`], which appends
//! its events to the store and publishes them to the bus. Three consumer
//! groups react, each on its own:
//!
//! - `inventory` reserves stock when an order is placed;
//! - `payment` charges it, failing once on a flaky gateway (retried) and
//!   declining orders above a limit (dead-lettered, then replayed after the
//!   limit is raised, as an operator would after fixing a bug);
//! - `email` tells the customer about everything that happens;
//! - `projection` keeps an order summary table in the store's database,
//!   each event applied exactly once (an idempotent inbox, in the same
//!   transaction as the row it writes).
//!
//! The events are kept in a SQLite event store (`ORDER_PIPELINE_STORE`,
//! default a file in the temp directory, recreated by each run).
//! `cargo run -p order-pipeline -- rebuild` replays that store into a fresh
//! projection and shows it equals the live one.
//!
//! Run it with `cargo run -p order-pipeline` (in-process bus), or on a broker
//! without changing a line of it: `cargo run -p order-pipeline -- redis://127.0.0.1:6379`,
//! `-- amqp://guest:guest@127.0.0.1:5672/%2f`, `-- kafka://127.0.0.1:9092` or
//! `-- nats://127.0.0.1:4222`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventsource::store::{sqlx, Inbox, InboxHandler, SqlEventStore, StoreConfig};
use eventsource::{
    handler_fn, handler_for, Aggregate, BusConfig, CommandError, DeadLetterQuery, DomainEvent,
    EventBus, EventEnvelope, EventFilter, EventStore, HandlerError, HandlerResult, Repository,
    RetryPolicy, Subscription,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// What happens to an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
#[event(aggregate = "Order")]
#[serde(tag = "type")]
enum OrderEvent {
    Placed {
        customer: String,
        sku: String,
        quantity: u32,
        total_cents: u64,
    },
    Shipped,
}

/// What can be asked of an order.
#[derive(Clone)]
enum OrderCommand {
    Place {
        customer: String,
        sku: String,
        quantity: u32,
        total_cents: u64,
    },
    Ship,
}

#[derive(Debug, thiserror::Error)]
enum OrderError {
    #[error("order already placed")]
    AlreadyPlaced,
    #[error("order not placed yet")]
    NotPlaced,
    #[error("order already shipped")]
    AlreadyShipped,
    #[error("an order needs at least one item")]
    EmptyOrder,
}

#[derive(Debug, Default)]
struct Order {
    placed: bool,
    shipped: bool,
}

impl Aggregate for Order {
    type Event = OrderEvent;
    type Command = OrderCommand;
    type Error = OrderError;

    fn apply(&mut self, event: &OrderEvent) {
        match event {
            OrderEvent::Placed { .. } => self.placed = true,
            OrderEvent::Shipped => self.shipped = true,
        }
    }

    fn handle(&self, command: OrderCommand) -> Result<Vec<OrderEvent>, OrderError> {
        match command {
            OrderCommand::Place {
                customer,
                sku,
                quantity,
                total_cents,
            } => {
                if self.placed {
                    return Err(OrderError::AlreadyPlaced);
                }
                if quantity == 0 {
                    return Err(OrderError::EmptyOrder);
                }
                Ok(vec![OrderEvent::Placed {
                    customer,
                    sku,
                    quantity,
                    total_cents,
                }])
            }
            OrderCommand::Ship if !self.placed => Err(OrderError::NotPlaced),
            OrderCommand::Ship if self.shipped => Err(OrderError::AlreadyShipped),
            OrderCommand::Ship => Ok(vec![OrderEvent::Shipped]),
        }
    }
}

/// An order as the summary shows it: status and total.
type Summary = BTreeMap<String, (String, u64)>;

/// How an event changes the summary (the live projection and the rebuild
/// share it).
fn summarize(summary: &mut Summary, order: &str, event: &OrderEvent) {
    match event {
        OrderEvent::Placed { total_cents, .. } => {
            summary.insert(order.to_owned(), ("placed".to_owned(), *total_cents));
        }
        OrderEvent::Shipped => {
            if let Some(row) = summary.get_mut(order) {
                row.0 = "shipped".to_owned();
            }
        }
    }
}

/// The live projection: the `order_summary` table, written in the inbox's
/// transaction, so a redelivered event is not applied twice.
struct SummaryTable(mpsc::UnboundedSender<String>);

#[eventsource::async_trait]
impl InboxHandler for SummaryTable {
    async fn handle(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        e: &EventEnvelope,
    ) -> HandlerResult {
        let event: OrderEvent = e.decode().map_err(HandlerError::permanent)?;
        let mut row = Summary::new();
        if let OrderEvent::Shipped = event {
            let current: Option<(String, i64)> =
                sqlx::query_as("SELECT status, total_cents FROM order_summary WHERE order_id = $1")
                    .bind(&e.aggregate_id)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(HandlerError::transient)?;
            if let Some((status, total)) = current {
                row.insert(e.aggregate_id.clone(), (status, total as u64));
            }
        }
        summarize(&mut row, &e.aggregate_id, &event);
        for (order, (status, total)) in row {
            sqlx::query(
                "INSERT INTO order_summary (order_id, status, total_cents) VALUES ($1, $2, $3) \
                 ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, total_cents = excluded.total_cents",
            )
            .bind(&order)
            .bind(&status)
            .bind(total as i64)
            .execute(&mut **tx)
            .await
            .map_err(HandlerError::transient)?;
        }
        let _ = self.0.send(format!(
            "[projection]   {} -> {}",
            e.aggregate_id, e.event_type
        ));
        Ok(())
    }
}

/// The store's URL: `ORDER_PIPELINE_STORE`, or a file in the temp directory.
fn store_url() -> String {
    std::env::var("ORDER_PIPELINE_STORE").unwrap_or_else(|_| {
        let path = std::env::temp_dir().join("order-pipeline.db");
        format!("sqlite://{}", path.display())
    })
}

/// Replays the whole store into a fresh summary and compares it with the
/// live `order_summary` table.
async fn rebuild(store: &SqlEventStore) -> Result<Summary, Box<dyn std::error::Error>> {
    let mut rebuilt = Summary::new();
    let mut position = 0;
    loop {
        let batch = store.read_all(position, 500).await?;
        let Some(last) = batch.last() else { break };
        position = last.position;
        for recorded in &batch {
            let event: OrderEvent = recorded.envelope.decode()?;
            summarize(&mut rebuilt, &recorded.envelope.aggregate_id, &event);
        }
    }
    let live: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT order_id, status, total_cents FROM order_summary ORDER BY order_id")
            .fetch_all(store.pool())
            .await?;
    let live: Summary = live
        .into_iter()
        .map(|(order, status, total)| (order, (status, total as u64)))
        .collect();
    println!("\nRebuilt from the store ({position} events):");
    for (order, (status, total)) in &rebuilt {
        println!("  {order}: {status}, {total} cents");
    }
    if rebuilt != live {
        return Err(format!("the rebuilt projection differs from the live one: {live:?}").into());
    }
    println!(
        "The rebuilt projection equals the live one ({} orders).",
        live.len()
    );
    Ok(rebuilt)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = std::env::args().nth(1);
    if arg.as_deref() == Some("rebuild") {
        let store = SqlEventStore::connect(StoreConfig::new(store_url())).await?;
        rebuild(&store).await?;
        return Ok(());
    }
    // The one line that picks the backend. A namespace of its own per run
    // keeps runs on a shared broker apart.
    let url = arg.unwrap_or_else(|| "memory://".to_owned());
    let namespace = format!("orders-example-{}", std::process::id());
    let bus: Arc<dyn EventBus> =
        eventsource::connect_bus(&BusConfig::from_url(&url)?.with_namespace(&namespace)).await?;
    // The URL with its password masked: output is a log too.
    println!(
        "Bus: {} ({})",
        bus.backend(),
        eventsource::helpers::redact_url(&url)
    );
    let store_url = store_url();
    if let Some(path) = store_url.strip_prefix("sqlite://") {
        let _ = std::fs::remove_file(path); // a fresh store per run
    }
    let sql = SqlEventStore::connect(StoreConfig::new(&store_url)).await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS order_summary \
         (order_id TEXT PRIMARY KEY, status TEXT NOT NULL, total_cents BIGINT NOT NULL)",
    )
    .execute(sql.pool())
    .await?;
    let store: Arc<dyn EventStore> = Arc::new(sql.clone());
    let orders = Repository::<Order>::new(Arc::clone(&store)).with_bus(Arc::clone(&bus));

    // Every handler reports what it did here, so main knows when all is done.
    let (log_tx, mut log) = mpsc::unbounded_channel::<String>();

    let tx = log_tx.clone();
    let _inventory = bus
        .subscribe(
            Subscription::builder("inventory")
                .filter(EventFilter::event_type("Placed"))
                .concurrency(4)
                .handler(handler_for(move |event: OrderEvent, e| {
                    let tx = tx.clone();
                    async move {
                        if let OrderEvent::Placed { sku, quantity, .. } = event {
                            let _ = tx.send(format!(
                                "[inventory]    reserved {quantity} x {sku} for {}",
                                e.aggregate_id
                            ));
                        }
                        Ok(())
                    }
                }))
                .build()?,
        )
        .await?;

    let limit_cents = Arc::new(AtomicU64::new(50_000));
    let gateway_flaked = Arc::new(AtomicBool::new(false));
    let (tx, limit, flaked) = (
        log_tx.clone(),
        Arc::clone(&limit_cents),
        Arc::clone(&gateway_flaked),
    );
    let _payment = bus
        .subscribe(
            Subscription::builder("payment")
                .filter(EventFilter::pattern("Order.Placed")?)
                .retry(RetryPolicy::exponential(
                    3,
                    Duration::from_millis(50),
                    Duration::from_millis(500),
                )?)
                .handler(handler_for(move |event: OrderEvent, e| {
                    let (tx, limit, flaked) = (tx.clone(), Arc::clone(&limit), Arc::clone(&flaked));
                    async move {
                        let OrderEvent::Placed {
                            total_cents,
                            customer,
                            ..
                        } = event
                        else {
                            return Ok(());
                        };
                        if !flaked.swap(true, Ordering::SeqCst) {
                            let _ = tx.send(format!(
                                "[payment]      gateway timeout for {}, will retry",
                                e.aggregate_id
                            ));
                            return Err(HandlerError::transient("payment gateway timed out"));
                        }
                        if total_cents > limit.load(Ordering::SeqCst) {
                            let _ = tx.send(format!(
                                "[payment]      declined {} ({} cents is over the limit)",
                                e.aggregate_id, total_cents
                            ));
                            return Err(HandlerError::permanent(format!(
                                "{total_cents} cents exceeds the card limit"
                            )));
                        }
                        let _ = tx.send(format!(
                            "[payment]      charged {customer} {}.{:02} for {}",
                            total_cents / 100,
                            total_cents % 100,
                            e.aggregate_id
                        ));
                        Ok(())
                    }
                }))
                .build()?,
        )
        .await?;

    let tx = log_tx.clone();
    let _notification = bus
        .subscribe(
            Subscription::builder("email")
                .filter(EventFilter::pattern("Order.#")?)
                .handler(handler_fn(move |e| {
                    let tx = tx.clone();
                    async move {
                        let _ = tx.send(format!(
                            "[email]        {} is now {} (v{})",
                            e.aggregate_id, e.event_type, e.aggregate_version
                        ));
                        Ok(())
                    }
                }))
                .build()?,
        )
        .await?;
    let inbox = Inbox::new(sql.clone());
    let _projection = bus
        .subscribe(
            Subscription::builder("projection")
                .handler(inbox.handler("projection", SummaryTable(log_tx.clone())))
                .build()?,
        )
        .await?;
    drop(log_tx);

    println!("Placing three orders through the repository (auto-published to the bus)...");
    for (id, customer, sku, quantity, total) in [
        ("order-1", "ada", "keyboard", 1, 12_900),
        ("order-2", "grace", "monitor", 2, 89_800),
        ("order-3", "linus", "cable", 3, 2_700),
    ] {
        // Load, decide, save and publish in one call.
        let place = OrderCommand::Place {
            customer: customer.into(),
            sku: sku.into(),
            quantity,
            total_cents: total,
        };
        orders.execute(id, place).await?;
    }
    orders.execute("order-1", OrderCommand::Ship).await?;
    // The aggregate's own error, matched without a downcast.
    match orders.execute("order-1", OrderCommand::Ship).await {
        Err(CommandError::Rejected {
            error: OrderError::AlreadyShipped,
            ..
        }) => println!("Shipping order-1 twice is refused: it is already shipped"),
        Err(e) => return Err(format!("unexpected error: {e}").into()),
        Ok(_) => return Err("order-1 shipped twice".into()),
    }

    // 3 reservations + 1 flaky try + 3 payments + 4 emails + 4 projection rows.
    wait_for(&mut log, 15).await?;

    // The decline was reported just before the handler returned its error;
    // the dead letter lands right after.
    let dlq = bus.dead_letters();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let letters = loop {
        let letters = dlq.list(&DeadLetterQuery::group("payment")).await?;
        if !letters.is_empty() || tokio::time::Instant::now() > deadline {
            break letters;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!("\nDead letters in `payment`: {}", letters.len());
    for l in &letters {
        println!(
            "  #{} {}: {} (after {} attempt(s))",
            l.id, l.failure.source, l.failure.error, l.failure.attempts
        );
    }
    println!("Raising the card limit and replaying the payment group's dead letters...");
    limit_cents.store(1_000_000, Ordering::SeqCst);
    let replayed = dlq.replay_all(&DeadLetterQuery::group("payment")).await?;
    println!("Replayed {replayed}; other groups do not see them again.");
    wait_for(&mut log, replayed).await?;

    let stats = bus.stats().await?;
    println!(
        "\nStats: published {}, handled {}, failed attempts {}, dead-lettered {}, replayed {}",
        stats.published, stats.handled, stats.failed_attempts, stats.dead_lettered, stats.replayed
    );
    let stored = store.read_all(0, 100).await?;
    println!("Event store holds {} events.", stored.len());
    rebuild(&sql).await?;
    let report = bus.shutdown(Duration::from_secs(5)).await?;
    println!("Shut down (drained: {}).", report.drained);
    Ok(())
}

/// Prints `n` lines of handler output, failing if they do not come in time.
async fn wait_for(log: &mut mpsc::UnboundedReceiver<String>, n: usize) -> Result<(), String> {
    for i in 0..n {
        match tokio::time::timeout(Duration::from_secs(10), log.recv()).await {
            Ok(Some(line)) => println!("{line}"),
            _ => return Err(format!("only {i} of {n} handler reports arrived")),
        }
    }
    Ok(())
}
