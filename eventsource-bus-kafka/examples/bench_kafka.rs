//! Throughput of the Kafka bus beside raw rdkafka on the same broker, in
//! one run, printed as ratios.
//!
//! ```sh
//! cargo run --release -p eventsource-bus-kafka --example bench_kafka -- [events] [kafka-url]
//! ```
//!
//! - produce: N records in batches of 100, each batch awaiting its
//!   acknowledgements (idempotent, acks=all) — `KafkaBus::publish` vs a raw
//!   `FutureProducer` with the same settings;
//! - consume: N records already in the topic, read by a new group —
//!   `KafkaBus` with a counting handler (commits included) vs a raw
//!   `StreamConsumer` that only counts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventsource_bus_kafka::{KafkaBus, KafkaBusConfig};
use eventsource_core::{handler_fn, EventBus, EventEnvelope, Subscription};
use eventsource_testkit::probe;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

const BATCH: usize = 100;

fn events(n: usize) -> Vec<EventEnvelope> {
    (0..n as u64)
        .map(|i| probe(&format!("agg-{}", i % 64), i / 64 + 1, i))
        .collect()
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

async fn produce_raw(
    producer: &FutureProducer,
    topic: &str,
    evs: &[EventEnvelope],
) -> Result<(), Box<dyn std::error::Error>> {
    for chunk in evs.chunks(BATCH) {
        let mut pending = Vec::new();
        for e in chunk {
            let payload = e.payload.to_string();
            let record = FutureRecord::to(topic)
                .key(&e.aggregate_id)
                .payload(&payload);
            pending.push(producer.send_result(record).map_err(|(e, _)| e)?);
        }
        for p in pending {
            p.await?.map_err(|(e, _)| e)?;
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
        .unwrap_or_else(|| "kafka://127.0.0.1:9092".into());
    let prefix = format!("es-bench-{}", uuid::Uuid::now_v7().simple());
    let config = KafkaBusConfig::from_url(&url)?
        .topic_prefix(&prefix)
        .validated()?;
    println!(
        "eventsource-bus-kafka bench: {n} records, batches of {BATCH}, {}",
        config.bootstrap_servers
    );

    // The bus creates the topics; the raw producer writes to a topic of its own.
    let bus = KafkaBus::connect(config.clone()).await?;
    let raw_config = KafkaBusConfig::from_url(&url)?
        .topic_prefix(format!("{prefix}-raw"))
        .validated()?;
    let raw_bus = KafkaBus::connect(raw_config.clone()).await?; // only to create the raw topic
    let raw_topic = raw_config.events_topic();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .create()?;

    // Warm-up of both paths (connections, leaders, idempotence ids).
    const WARMUP: usize = 1_000;
    let warm = events(WARMUP);
    produce_raw(&producer, &raw_topic, &warm).await?;
    for chunk in warm.chunks(BATCH) {
        bus.publish(chunk).await?;
    }

    let evs = events(n);
    let t = Instant::now();
    produce_raw(&producer, &raw_topic, &evs).await?;
    let raw_produce = t.elapsed();
    let t = Instant::now();
    for chunk in evs.chunks(BATCH) {
        bus.publish(chunk).await?;
    }
    let bus_produce = t.elapsed();
    let n_total = n + WARMUP;

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("group.id", format!("{prefix}-raw-reader"))
        .set("auto.offset.reset", "earliest")
        // The bus's fetch wait, for a like-for-like consume.
        .set(
            "fetch.wait.max.ms",
            config.fetch_wait_max.as_millis().to_string(),
        )
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[&raw_topic])?;
    let t = Instant::now();
    for _ in 0..n_total {
        let m = consumer.recv().await?;
        let _ = rdkafka::Message::payload(&m);
    }
    let raw_consume = t.elapsed();

    let handled = Arc::new(AtomicU64::new(0));
    let (done_tx, mut done) = tokio::sync::mpsc::channel::<()>(1);
    let t = Instant::now();
    let h = Arc::clone(&handled);
    bus.subscribe(
        Subscription::builder("reader")
            .concurrency(16)
            .handler(handler_fn(move |_e| {
                let (h, done_tx) = (Arc::clone(&h), done_tx.clone());
                async move {
                    if h.fetch_add(1, Ordering::Relaxed) + 1 == n_total as u64 {
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
    raw_bus.shutdown(Duration::from_secs(5)).await?;

    println!(
        "{:<10} {:>14} {:>14} {:>8}",
        "", "raw rdkafka", "KafkaBus", "ratio"
    );
    println!(
        "{:<10} {:>10.0} ev/s {:>10.0} ev/s {:>8.2}",
        "produce",
        rate(n, raw_produce),
        rate(n, bus_produce),
        rate(n, bus_produce) / rate(n, raw_produce)
    );
    println!(
        "{:<10} {:>10.0} ev/s {:>10.0} ev/s {:>8.2}",
        "consume",
        rate(n_total, raw_consume),
        rate(n_total, bus_consume),
        rate(n_total, bus_consume) / rate(n_total, raw_consume)
    );
    println!("(ratio = KafkaBus / raw; consume times include joining the group)");

    // Publish-to-handler latency at a steady 1 k events/s, with the
    // default fetch wait and with librdkafka's own (500 ms).
    println!("\nlatency, publish to handler, 1 event per ms for 3 s:");
    for (label, wait) in [
        (
            "fetch_wait_max 10 ms (default)",
            KafkaBusConfig::default().fetch_wait_max,
        ),
        (
            "fetch_wait_max 500 ms (librdkafka's)",
            Duration::from_millis(500),
        ),
    ] {
        let config = KafkaBusConfig::from_url(&url)?
            .topic_prefix(format!("{prefix}-latency-{}", wait.as_millis()))
            .fetch_wait_max(wait)
            .validated()?;
        let (p50, p99) = latency(config, 3_000).await?;
        println!("  {label:<38} p50 {p50:>6.1} ms   p99 {p99:>6.1} ms");
    }
    Ok(())
}

/// Publishes `n` events one per millisecond (each publish its own task, so
/// a slow acknowledgement does not slow the pace) to a fresh bus with one
/// subscriber; returns the p50 and p99 of `handled - occurred_at`, in ms.
async fn latency(
    config: KafkaBusConfig,
    n: usize,
) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let bus = Arc::new(KafkaBus::connect(config).await?);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<f64>();
    let _s = bus
        .subscribe(
            Subscription::builder("latency")
                .concurrency(4)
                .handler(handler_fn(move |e| {
                    let tx = tx.clone();
                    async move {
                        let ms = (chrono::Utc::now() - e.occurred_at)
                            .num_microseconds()
                            .unwrap_or(0);
                        let _ = tx.send(ms as f64 / 1_000.0);
                        Ok(())
                    }
                }))
                .build()?,
        )
        .await?;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut publishes = Vec::with_capacity(n);
    for i in 0..n as u64 {
        tick.tick().await;
        // Made now: the envelope's time is the publish time.
        let (bus, event) = (
            Arc::clone(&bus),
            probe(&format!("lat-{}", i % 64), i / 64 + 1, i),
        );
        publishes.push(tokio::spawn(async move { bus.publish(&[event]).await }));
    }
    for p in publishes {
        p.await??;
    }
    let mut samples = Vec::with_capacity(n);
    while samples.len() < n {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(ms)) => samples.push(ms),
            _ => return Err(format!("only {} of {n} events handled", samples.len()).into()),
        }
    }
    bus.shutdown(Duration::from_secs(5)).await?;
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    Ok((at(0.5), at(0.99)))
}
