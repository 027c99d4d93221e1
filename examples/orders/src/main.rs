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
//! - `notification` tells the customer about everything that happens.
//!
//! Run it with `cargo run -p orders` (in-process bus), or on a broker
//! without changing a line of it: `cargo run -p orders -- redis://127.0.0.1:6379`,
//! `-- amqp://guest:guest@127.0.0.1:5672/%2f` or `-- kafka://127.0.0.1:9092`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventsource::{
    handler_fn, handler_for, Aggregate, BusConfig, CommandError, DeadLetterQuery, DomainEvent,
    EventBus, EventFilter, EventStore, HandlerError, InMemoryEventStore, Repository, RetryPolicy,
    Subscription,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// What happens to an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
#[event(crate = "eventsource", aggregate = "Order")]
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
    const TYPE: &'static str = "Order";
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The one line that picks the backend. A namespace of its own per run
    // keeps runs on a shared broker apart.
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "memory://".to_owned());
    let namespace = format!("orders-example-{}", std::process::id());
    let bus: Arc<dyn EventBus> =
        eventsource::connect_bus(&BusConfig::from_url(&url)?.with_namespace(&namespace)).await?;
    println!("Bus: {} ({url})", bus.backend());
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
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
            Subscription::builder("notification")
                .filter(EventFilter::pattern("Order.#")?)
                .handler(handler_fn(move |e| {
                    let tx = tx.clone();
                    async move {
                        let _ = tx.send(format!(
                            "[notification] {} is now {} (v{})",
                            e.aggregate_id, e.event_type, e.aggregate_version
                        ));
                        Ok(())
                    }
                }))
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

    // 3 reservations + 1 flaky try + 3 payments + 4 notifications.
    wait_for(&mut log, 11).await?;

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
