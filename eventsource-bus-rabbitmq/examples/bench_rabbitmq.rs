//! Throughput of the RabbitMQ bus beside raw lapin on the same broker, in
//! one run, printed as ratios.
//!
//! ```sh
//! cargo run --release -p eventsource-bus-rabbitmq --example bench_rabbitmq -- [events] [amqp-url]
//! ```
//!
//! - confirmed publish: batches of 100 persistent messages, each batch
//!   waiting for its confirms; `RabbitBus::publish` vs raw lapin;
//! - consume: N messages already in a durable queue, handled and acked
//!   with prefetch 256; `RabbitBus` with a counting handler vs a raw lapin
//!   consumer acking each delivery.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventsource_bus_rabbitmq::{RabbitBus, RabbitBusConfig};
use eventsource_core::{handler_fn, EventBus, EventEnvelope, Subscription};
use eventsource_testkit::probe;
use futures::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

const BATCH: usize = 100;

fn events(n: usize) -> Vec<EventEnvelope> {
    (0..n as u64)
        .map(|i| probe(&format!("agg-{}", i % 64), i / 64 + 1, i))
        .collect()
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

async fn raw_publish(
    channel: &lapin::Channel,
    queue: &str,
    evs: &[EventEnvelope],
) -> Result<(), lapin::Error> {
    for chunk in evs.chunks(BATCH) {
        let mut confirms = Vec::new();
        for e in chunk {
            let body = serde_json::to_vec(&e.payload).expect("json");
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into());
            confirms.push(
                channel
                    .basic_publish(
                        "".into(),
                        queue.into(),
                        BasicPublishOptions::default(),
                        &body,
                        props,
                    )
                    .await?,
            );
        }
        for c in confirms {
            c.await?;
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000);
    let url = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let ns = |what: &str| format!("es-bench-{what}-{}", uuid::Uuid::now_v7().simple());
    println!("eventsource-bus-rabbitmq bench: {n} events, batches of {BATCH}");

    let conn = Connection::connect(&url, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut args_table = FieldTable::default();
    args_table.insert(
        "x-expires".into(),
        lapin::types::AMQPValue::LongLongInt(120_000),
    );
    let raw_queue = ns("raw");
    channel
        .queue_declare(
            raw_queue.as_str().into(),
            QueueDeclareOptions::durable(),
            args_table.clone(),
        )
        .await?;
    raw_publish(&channel, &raw_queue, &events(1_000)).await?; // warm-up
    channel
        .queue_purge(raw_queue.as_str().into(), QueuePurgeOptions::default())
        .await?;

    // Confirmed publish, raw then bus.
    let evs = events(n);
    let t = Instant::now();
    raw_publish(&channel, &raw_queue, &evs).await?;
    let raw_pub = t.elapsed();

    let config = RabbitBusConfig::new(&url)
        .namespace(ns("bus"))
        .prefetch(256)
        .queue_expires(Duration::from_secs(120))
        .validated()?;
    let bus = RabbitBus::connect(config).await?;
    let sub = bus
        .subscribe(
            Subscription::builder("g")
                .handler(handler_fn(|_e| async { Ok(()) }))
                .build()?,
        )
        .await?;
    sub.unsubscribe().await; // the queue exists and is bound; fill it first
    let t = Instant::now();
    for chunk in evs.chunks(BATCH) {
        bus.publish(chunk).await?;
    }
    let bus_pub = t.elapsed();

    // Consume what is queued, raw then bus.
    let consume_channel = conn.create_channel().await?;
    consume_channel
        .basic_qos(256, BasicQosOptions::default())
        .await?;
    let mut consumer = consume_channel
        .basic_consume(
            raw_queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let t = Instant::now();
    let mut got = 0;
    while got < n {
        let d = consumer.next().await.ok_or("consumer ended")??;
        let _: serde_json::Value = serde_json::from_slice(&d.data)?;
        d.ack(BasicAckOptions::default()).await?;
        got += 1;
    }
    let raw_consume = t.elapsed();

    let handled = Arc::new(AtomicU64::new(0));
    let (done_tx, mut done) = tokio::sync::mpsc::channel::<()>(1);
    let t = Instant::now();
    bus.subscribe(
        Subscription::builder("g")
            .concurrency(16)
            .handler(handler_fn(move |_e| {
                let (h, done_tx) = (Arc::clone(&handled), done_tx.clone());
                async move {
                    if h.fetch_add(1, Ordering::Relaxed) + 1 == n as u64 {
                        let _ = done_tx.send(()).await;
                    }
                    Ok(())
                }
            }))
            .build()?,
    )
    .await?;
    tokio::time::timeout(Duration::from_secs(300), done.recv()).await?;
    let bus_consume = t.elapsed();
    bus.shutdown(Duration::from_secs(5)).await?;
    let _ = conn.close(200, "bye".into()).await;

    println!(
        "{:<18} {:>14} {:>14} {:>8}",
        "", "raw lapin", "RabbitBus", "ratio"
    );
    println!(
        "{:<18} {:>10.0} ev/s {:>10.0} ev/s {:>8.2}",
        "confirmed publish",
        rate(n, raw_pub),
        rate(n, bus_pub),
        rate(n, bus_pub) / rate(n, raw_pub)
    );
    println!(
        "{:<18} {:>10.0} ev/s {:>10.0} ev/s {:>8.2}",
        "consume + ack",
        rate(n, raw_consume),
        rate(n, bus_consume),
        rate(n, bus_consume) / rate(n, raw_consume)
    );
    println!("(ratio = RabbitBus / raw lapin)");
    Ok(())
}
