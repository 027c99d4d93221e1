//! What a process manager costs (#28): checkout flows through
//! `ProcessRunner` beside the same flows written by hand, in the same run.
//!
//! ```sh
//! cargo run --release -p eventsource-store --example bench_process -- [sqlite|postgres|both] [flows] [rounds]
//! ```
//!
//! A flow is two inputs, an order placed and its payment charged, handed
//! straight to the handler (no bus: what is measured is the store work).
//!
//! - runner: the testkit's `CheckoutSaga`. Per input it reads the
//!   instance's steps, appends a step, and writes the timeout or the
//!   outbox row in that transaction. Then it runs the command once
//!   (`execute_once`: the Payment charge, then the Order shipment).
//! - by hand: what a careful saga without the framework writes. Per input,
//!   one transaction records the input id in an inbox table (a duplicate
//!   is skipped), upserts the state as a JSON document, and writes the
//!   timeout or the outbox row. Then it runs the same command with
//!   `Repository::execute`, with no once-only check.
//!
//! Events per second counts inputs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventsource_core::process::Commands;
use eventsource_core::{EventEnvelope, EventHandler, EventStore, Repository};
use eventsource_store::{sqlx, ProcessRunner, SqlEventStore, StoreConfig};
use eventsource_testkit::bench;
use eventsource_testkit::checkout::{
    Charge, CheckoutSaga, Order, OrderCommand, OrderEvent, Payment, PaymentEvent,
};

/// The inputs of `flows` flows with fresh ids: (placed, charged) each.
fn inputs(flows: usize) -> Vec<(EventEnvelope, EventEnvelope)> {
    (0..flows)
        .map(|_| {
            let id = uuid::Uuid::now_v7().simple().to_string();
            let placed = EventEnvelope::new(&id, 1, &OrderEvent::Placed { amount: 500 })
                .expect("envelope")
                .with_correlation_id(&id);
            let charged = EventEnvelope::new(&id, 1, &PaymentEvent::Charged { amount: 500 })
                .expect("envelope")
                .with_correlation_id(&id);
            (placed, charged)
        })
        .collect()
}

/// The flows through the runner; the orders are placed first (untimed).
async fn runner(
    orders: &Repository<Order>,
    run: &ProcessRunner<CheckoutSaga>,
    flows: usize,
) -> Duration {
    let flows = inputs(flows);
    place(orders, &flows).await;
    let t = Instant::now();
    for (placed, charged) in &flows {
        run.handle(placed).await.expect("placed");
        run.handle(charged).await.expect("charged");
    }
    t.elapsed()
}

async fn place(orders: &Repository<Order>, flows: &[(EventEnvelope, EventEnvelope)]) {
    for (placed, _) in flows {
        orders
            .execute(&placed.aggregate_id, OrderCommand::Place { amount: 500 })
            .await
            .expect("place");
    }
}

/// The same flows by hand.
async fn by_hand(
    store: &SqlEventStore,
    orders: &Repository<Order>,
    payments: &Repository<Payment>,
    flows: usize,
) -> Duration {
    let flows = inputs(flows);
    place(orders, &flows).await;
    let t = Instant::now();
    for (placed, charged) in &flows {
        let id = &placed.aggregate_id;
        record(store, placed, "charging", Some("timeout")).await;
        payments
            .execute(id, Charge { amount: 500 })
            .await
            .expect("charge");
        record(store, charged, "shipped", Some("outbox")).await;
        orders.execute(id, OrderCommand::Ship).await.expect("ship");
    }
    t.elapsed()
}

/// One input by hand: inbox row, state document, and a timeout or an
/// outbox row, in one transaction.
async fn record(store: &SqlEventStore, input: &EventEnvelope, stage: &str, write: Option<&str>) {
    let mut tx = store.pool().begin().await.expect("begin");
    let fresh =
        sqlx::query("INSERT INTO bench_inbox (event_id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(input.event_id.to_string())
            .execute(&mut *tx)
            .await
            .expect("inbox")
            .rows_affected();
    if fresh == 0 {
        return;
    }
    let state = serde_json::json!({ "order": input.aggregate_id, "stage": stage }).to_string();
    sqlx::query(
        "INSERT INTO bench_saga (instance, state) VALUES ($1, $2) \
         ON CONFLICT (instance) DO UPDATE SET state = excluded.state",
    )
    .bind(&input.aggregate_id)
    .bind(state)
    .execute(&mut *tx)
    .await
    .expect("state");
    let now = chrono::Utc::now().to_rfc3339();
    match write {
        Some("timeout") => {
            sqlx::query("INSERT INTO bench_timeouts (id, instance, due_at) VALUES ($1, $2, $3)")
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(&input.aggregate_id)
                .bind(now)
                .execute(&mut *tx)
                .await
                .expect("timeout");
        }
        Some(_) => {
            sqlx::query(
                "INSERT INTO es_outbox (event_id, envelope, created_at) VALUES ($1, $2, $3)",
            )
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(serde_json::to_string(input).expect("json"))
            .bind(now)
            .execute(&mut *tx)
            .await
            .expect("outbox");
        }
        None => {}
    }
    tx.commit().await.expect("commit");
}

async fn run(
    url: &str,
    label: &str,
    flows: usize,
    rounds: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let store = SqlEventStore::connect(StoreConfig::new(url).validated()?).await?;
    for sql in [
        "CREATE TABLE IF NOT EXISTS bench_inbox (event_id TEXT PRIMARY KEY)",
        "CREATE TABLE IF NOT EXISTS bench_saga (instance TEXT PRIMARY KEY, state TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS bench_timeouts (id TEXT PRIMARY KEY, instance TEXT NOT NULL, due_at TEXT NOT NULL)",
    ] {
        sqlx::query(sql).execute(store.pool()).await?;
    }
    let shared: Arc<dyn EventStore> = Arc::new(store.clone());
    let orders = Repository::<Order>::new(Arc::clone(&shared));
    let payments = Repository::<Payment>::new(shared);
    let process = ProcessRunner::new(
        store.clone(),
        CheckoutSaga,
        Commands::new().with(orders.clone()).with(payments.clone()),
        "checkout",
    );
    let row = bench::compare(
        &format!("{label}: checkout flows, 2 inputs each"),
        flows,
        rounds,
        async |n| {
            let took = runner(&orders, &process, n).await;
            // Rates count inputs: two per flow.
            took / 2
        },
        async |n| by_hand(&store, &orders, &payments, n).await / 2,
    )
    .await;
    bench::table_of(&[row], "by hand", "runner");
    for table in ["bench_inbox", "bench_saga", "bench_timeouts"] {
        sqlx::query(&format!("DROP TABLE {table}"))
            .execute(store.pool())
            .await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map(String::as_str).unwrap_or("both");
    let flows: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(500);
    let rounds: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(5);
    bench::header(
        "process managers: runner = ProcessRunner (event-sourced steps, commands once), by hand = inbox row + state document",
        60,
    );
    if which == "sqlite" || which == "both" {
        let path =
            std::env::temp_dir().join(format!("es-bench-{}.db", uuid::Uuid::now_v7().simple()));
        run(
            &format!("sqlite://{}", path.display()),
            "SQLite",
            flows,
            rounds,
        )
        .await?;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
    if which == "postgres" || which == "both" {
        let url = std::env::var("POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        run(&url, "PostgreSQL", flows, rounds).await?;
    }
    Ok(())
}
