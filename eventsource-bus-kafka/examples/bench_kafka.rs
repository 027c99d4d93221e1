//! Throughput of the Kafka bus beside raw rdkafka on the same broker, and
//! its publish-to-handler latency.
//!
//! ```sh
//! cargo run --release -p eventsource-bus-kafka --example bench_kafka -- [events] [rounds] [kafka-url]
//! ```
//!
//! On the shared runner (`eventsource_testkit::bench`):
//!
//! - produce: N records in batches of 100, each batch awaiting its
//!   acknowledgements (idempotent, acks=all) — `KafkaBus::publish` vs a raw
//!   `FutureProducer` with the same settings sending the same record (key,
//!   `ce_` headers, payload);
//! - consume: N records already in the topic, read by a new group with the
//!   same fetch wait — `KafkaBus` with a counting handler (commits
//!   included) vs a raw `StreamConsumer` that only counts.
//!
//! Then the latency at a steady 1 k events/s, with the default fetch wait
//! and with librdkafka's own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventsource_bus_kafka::{KafkaBus, KafkaBusConfig};
use eventsource_core::wire::cloudevents;
use eventsource_core::{handler_fn, EventBus, EventEnvelope, Subscription};
use eventsource_testkit::{bench, probe};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

const BATCH: usize = 100;

fn events(n: usize) -> Vec<EventEnvelope> {
    (0..n as u64)
        .map(|i| probe(&format!("agg-{}", i % 64), i / 64 + 1, i))
        .collect()
}

fn prefix() -> String {
    format!("es-bench-{}", uuid::Uuid::now_v7().simple())
}

fn config(url: &str, prefix: &str) -> KafkaBusConfig {
    KafkaBusConfig::from_url(url)
        .expect("a kafka:// url")
        .topic_prefix(prefix)
}

/// The record the bus sends, written by hand: key, `ce_` headers, payload.
async fn produce_raw(producer: &FutureProducer, topic: &str, evs: &[EventEnvelope]) {
    for chunk in evs.chunks(BATCH) {
        let mut pending = Vec::new();
        for e in chunk {
            let payload = e.payload.to_string();
            let mut headers = OwnedHeaders::new();
            for (name, value) in cloudevents::to_attributes(e, "bench") {
                headers = headers.insert(Header {
                    key: &format!("ce_{name}"),
                    value: Some(value.as_bytes()),
                });
            }
            let record = FutureRecord::to(topic)
                .key(&e.aggregate_id)
                .payload(&payload)
                .headers(headers);
            pending.push(
                producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .expect("enqueue"),
            );
        }
        for p in pending {
            p.await.expect("delivery").map_err(|(e, _)| e).expect("ack");
        }
    }
}

fn raw_producer(servers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .create()
        .expect("producer")
}

/// A raw topic, made by a bus on its own prefix (topic creation included).
async fn raw_topic(url: &str) -> String {
    let config = config(url, &format!("{}-raw", prefix()));
    let bus = KafkaBus::connect(config.clone()).await.expect("connect");
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    config.events_topic()
}

async fn bus_produce(url: &str, evs: &[EventEnvelope]) -> Duration {
    let bus = KafkaBus::connect(config(url, &prefix()))
        .await
        .expect("connect");
    let t = Instant::now();
    for chunk in evs.chunks(BATCH) {
        bus.publish(chunk).await.expect("publish");
    }
    let took = t.elapsed();
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    took
}

async fn raw_produce(url: &str, evs: &[EventEnvelope]) -> Duration {
    let topic = raw_topic(url).await;
    let producer = raw_producer(&config(url, "x").bootstrap_servers);
    // As the bus's connect does: connection, metadata and producer id
    // settled before the clock starts.
    produce_raw(&producer, &topic, &events(1)).await;
    let t = Instant::now();
    produce_raw(&producer, &topic, evs).await;
    t.elapsed()
}

/// Records already in the topic, read by a new bus group (join included).
async fn bus_consume(url: &str, evs: &[EventEnvelope]) -> Duration {
    let bus = KafkaBus::connect(config(url, &prefix()))
        .await
        .expect("connect");
    for chunk in evs.chunks(BATCH) {
        bus.publish(chunk).await.expect("publish");
    }
    let (subscription, done) = bench::counting("reader", evs.len(), 16);
    let t = Instant::now();
    let _s = bus.subscribe(subscription).await.expect("subscribe");
    tokio::time::timeout(Duration::from_secs(300), done)
        .await
        .expect("all handled")
        .expect("open");
    let took = t.elapsed();
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    took
}

/// Records already in a raw topic, read by a new raw group with the bus's
/// fetch wait (join included).
async fn raw_consume(url: &str, evs: &[EventEnvelope]) -> Duration {
    let topic = raw_topic(url).await;
    let servers = config(url, "x").bootstrap_servers;
    produce_raw(&raw_producer(&servers), &topic, evs).await;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &servers)
        .set("group.id", format!("{topic}-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set(
            "fetch.wait.max.ms",
            KafkaBusConfig::default()
                .fetch_wait_max
                .as_millis()
                .to_string(),
        )
        .create()
        .expect("consumer");
    let t = Instant::now();
    consumer.subscribe(&[&topic]).expect("subscribe");
    for _ in 0..evs.len() {
        let m = consumer.recv().await.expect("record");
        let _ = rdkafka::Message::payload(&m);
    }
    t.elapsed()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().nth(1).as_deref() == Some("growth") {
        let url = std::env::args()
            .nth(2)
            .unwrap_or_else(|| "kafka://127.0.0.1:9092".into());
        bench::growth(
            "eventsource-bus-kafka, end to end",
            &[1_000, 10_000],
            &[1, 4, 16],
            BATCH,
            events,
            || {
                let config = config(&url, &prefix());
                async move {
                    Arc::new(KafkaBus::connect(config).await.expect("connect")) as Arc<dyn EventBus>
                }
            },
        )
        .await;
        return Ok(());
    }
    let (n, rounds, url) = bench::args(10_000, "kafka://127.0.0.1:9092");
    let evs = events(n);
    bench::header(
        &format!("eventsource-bus-kafka, batches of {BATCH}, {url}"),
        evs[0].payload.to_string().len(),
    );
    let mut rows = Vec::new();
    rows.push(
        bench::compare(
            "produce, idempotent, acks=all",
            n,
            rounds,
            async |_| bus_produce(&url, &evs).await,
            async |_| raw_produce(&url, &evs).await,
        )
        .await,
    );
    rows.push(
        bench::compare(
            "consume by a new group (join included)",
            n,
            rounds,
            async |_| bus_consume(&url, &evs).await,
            async |_| raw_consume(&url, &evs).await,
        )
        .await,
    );
    bench::table(&rows);

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
        let config = config(&url, &prefix()).fetch_wait_max(wait);
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
