//! An order service in three processes over one event bus (Redis Streams
//! by default; any bus URL the facade knows).
//!
//! - `order-service http --listen ADDR`: `POST /orders` with
//!   `{"order_id", "customer", "sku", "quantity"}` stores `order.created`
//!   in its SQLite event store, publishes it, and answers `202 Accepted`
//!   at once;
//! - `order-service notify`: consumer group `notification`, tells the
//!   customer;
//! - `order-service inventory`: consumer group `inventory`, keeps stock
//!   levels in its own SQLite database, each order applied exactly once
//!   (an idempotent inbox in the same transaction), so a crash and a
//!   redelivery never take stock twice.
//!
//! Every process takes `--bus URL` (default `redis://127.0.0.1:6379`;
//! `amqp://…` and `nats://…` work the same; `--redis URL` is kept as its
//! old name), `--namespace NS` (default `order-service`) and, for `http`
//! and `inventory`, `--store URL` (a SQLite URL); `inventory --slow-ms N`
//! waits N ms between committing an order and acking it. Kill the
//! inventory process mid-stream and start it again: the orders it had not
//! acked go to the next member and none is missed (on Redis after
//! `claim_min_idle`, on NATS after `ack_wait`, both 2 s here; RabbitMQ
//! requeues them as soon as the dead process's connection drops).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use eventsource::{
    BusConfig, EventBus, EventEnvelope, EventFilter, EventHandler, EventStore, ExpectedVersion,
    HandlerError, HandlerResult, Subscription,
};
use eventsource_store::{sqlx, Inbox, InboxHandler, InboxedHandler, SqlEventStore, StoreConfig};
use serde::Deserialize;
use serde_json::json;

/// Stock every SKU starts with.
const INITIAL_STOCK: i64 = 1_000;

struct Args {
    command: String,
    listen: String,
    bus: String,
    namespace: String,
    store: String,
    /// Inventory only: how long to wait after each committed order before
    /// acking it (to let a test kill the process between the two).
    slow: Duration,
}

fn args() -> Result<Args, String> {
    let mut all = std::env::args().skip(1);
    let command = all.next().ok_or("usage: order-service http|notify|inventory [--listen ADDR] [--bus URL] [--namespace NS] [--store URL]")?;
    let mut args = Args {
        command,
        listen: "127.0.0.1:8080".to_owned(),
        bus: "redis://127.0.0.1:6379".to_owned(),
        namespace: "order-service".to_owned(),
        store: String::new(),
        slow: Duration::ZERO,
    };
    while let Some(flag) = all.next() {
        let value = all.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => args.listen = value,
            "--bus" | "--redis" => args.bus = value,
            "--namespace" => args.namespace = value,
            "--store" => args.store = value,
            "--slow-ms" => {
                let ms = value
                    .parse()
                    .map_err(|_| format!("--slow-ms {value}: not a number"))?;
                args.slow = Duration::from_millis(ms);
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(args)
}

async fn connect(args: &Args) -> eventsource::Result<Arc<dyn EventBus>> {
    let source = format!("order-service/{}", args.command);
    // A killed member's messages move to the next one after 2 s.
    let takeover = Duration::from_secs(2);
    let config = match BusConfig::from_url(&args.bus)?.with_namespace(&args.namespace) {
        BusConfig::Redis(mut c) => {
            c.source = source;
            c.claim_min_idle = takeover;
            c.claim_interval = Duration::from_millis(500);
            BusConfig::Redis(c)
        }
        BusConfig::Nats(mut c) => {
            c.source = source;
            c.ack_wait = takeover;
            c.progress_interval = Duration::from_millis(500);
            BusConfig::Nats(c)
        }
        BusConfig::Rabbitmq(mut c) => {
            c.source = source;
            BusConfig::Rabbitmq(c)
        }
        other => other,
    };
    eventsource::connect_bus(&config).await
}

async fn store(url: &str) -> eventsource::Result<SqlEventStore> {
    if url.is_empty() {
        return Err(eventsource::Error::config(
            "--store sqlite://FILE is needed",
        ));
    }
    SqlEventStore::connect(StoreConfig::new(url)).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    let bus = connect(&args).await?;
    match args.command.as_str() {
        "http" => http(&args, bus).await,
        "notify" => notify(bus).await,
        "inventory" => inventory(&args, bus).await,
        other => Err(format!("unknown command {other}").into()),
    }
}

// ---------------------------------------------------------------- http

#[derive(Deserialize)]
struct NewOrder {
    order_id: String,
    customer: String,
    sku: String,
    quantity: u32,
}

struct App {
    store: SqlEventStore,
    bus: Arc<dyn EventBus>,
}

async fn create_order(
    State(app): State<Arc<App>>,
    Json(order): Json<NewOrder>,
) -> (StatusCode, Json<serde_json::Value>) {
    if order.quantity == 0 {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": "quantity must be at least 1" })),
        );
    }
    let event = EventEnvelope::from_json(
        "order",
        &order.order_id,
        1,
        "created",
        json!({ "customer": order.customer, "sku": order.sku, "quantity": order.quantity }),
    );
    let stored = app
        .store
        .append(
            &event.stream_name(),
            ExpectedVersion::NoStream,
            std::slice::from_ref(&event),
        )
        .await;
    if let Err(e) = stored {
        let status = match e {
            eventsource::Error::Concurrency { .. } => StatusCode::CONFLICT,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        return (status, Json(json!({ "error": e.to_string() })));
    }
    if let Err(e) = app.bus.publish(std::slice::from_ref(&event)).await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": format!("stored, not yet published: {e}") })),
        );
    }
    (
        StatusCode::ACCEPTED,
        Json(json!({ "order_id": order.order_id, "event_id": event.event_id })),
    )
}

async fn http(args: &Args, bus: Arc<dyn EventBus>) -> Result<(), Box<dyn std::error::Error>> {
    let app = Arc::new(App {
        store: store(&args.store).await?,
        bus: Arc::clone(&bus),
    });
    let router = Router::new()
        .route("/orders", post(create_order))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    println!("[http] listening on {}", listener.local_addr()?);
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    bus.shutdown(Duration::from_secs(5)).await?;
    Ok(())
}

// ---------------------------------------------------------------- notify

async fn notify(bus: Arc<dyn EventBus>) -> Result<(), Box<dyn std::error::Error>> {
    let _handle = bus
        .subscribe(
            Subscription::builder("notification")
                .filter(EventFilter::pattern("order.created")?)
                .handler(eventsource::handler_fn(|e| async move {
                    println!(
                        "[notification] {} confirmed to {}",
                        e.aggregate_id,
                        e.payload["customer"].as_str().unwrap_or("?")
                    );
                    Ok(())
                }))
                .build()?,
        )
        .await?;
    println!("[notification] ready");
    let _ = tokio::signal::ctrl_c().await;
    bus.shutdown(Duration::from_secs(5)).await?;
    Ok(())
}

// ---------------------------------------------------------------- inventory

/// Takes an order's quantity off its SKU's stock, in the inbox's transaction.
struct TakeStock;

#[async_trait::async_trait]
impl InboxHandler for TakeStock {
    async fn handle(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        e: &EventEnvelope,
    ) -> HandlerResult {
        let sku = e.payload["sku"]
            .as_str()
            .ok_or_else(|| HandlerError::permanent("order without a sku"))?;
        let quantity = e.payload["quantity"]
            .as_i64()
            .ok_or_else(|| HandlerError::permanent("order without a quantity"))?;
        sqlx::query("INSERT INTO stock (sku, level) VALUES ($1, $2) ON CONFLICT (sku) DO NOTHING")
            .bind(sku)
            .bind(INITIAL_STOCK)
            .execute(&mut **tx)
            .await
            .map_err(HandlerError::transient)?;
        sqlx::query("UPDATE stock SET level = level - $1 WHERE sku = $2")
            .bind(quantity)
            .bind(sku)
            .execute(&mut **tx)
            .await
            .map_err(HandlerError::transient)?;
        Ok(())
    }
}

/// Runs the inbox, then reports the committed stock level.
struct Inventory {
    inboxed: InboxedHandler,
    store: SqlEventStore,
    slow: Duration,
}

#[async_trait::async_trait]
impl EventHandler for Inventory {
    async fn handle(&self, e: &EventEnvelope) -> HandlerResult {
        self.inboxed.handle(e).await?;
        let sku = e.payload["sku"].as_str().unwrap_or_default();
        let level: i64 = sqlx::query_scalar("SELECT level FROM stock WHERE sku = $1")
            .bind(sku)
            .fetch_one(self.store.pool())
            .await
            .map_err(HandlerError::transient)?;
        println!("[inventory] {} {sku} stock {level}", e.aggregate_id);
        // Committed, not yet acked: a crash now means a redelivery.
        tokio::time::sleep(self.slow).await;
        Ok(())
    }
}

async fn inventory(args: &Args, bus: Arc<dyn EventBus>) -> Result<(), Box<dyn std::error::Error>> {
    let store = store(&args.store).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, level BIGINT NOT NULL)")
        .execute(store.pool())
        .await?;
    let handler = Inventory {
        inboxed: Inbox::new(store.clone()).handler("inventory", TakeStock),
        store,
        slow: args.slow,
    };
    let _handle = bus
        .subscribe(
            Subscription::builder("inventory")
                .filter(EventFilter::pattern("order.created")?)
                .handler(handler)
                .build()?,
        )
        .await?;
    println!("[inventory] ready");
    let _ = tokio::signal::ctrl_c().await;
    bus.shutdown(Duration::from_secs(5)).await?;
    Ok(())
}
