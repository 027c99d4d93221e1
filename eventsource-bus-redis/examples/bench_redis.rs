//! Throughput of the Redis bus beside raw redis-rs on the same server, in
//! one run, printed as ratios.
//!
//! ```sh
//! cargo run --release -p eventsource-bus-redis --example bench_redis -- [events] [redis-url]
//! ```
//!
//! - publish: batches of 100, `RedisBus::publish` vs a raw pipelined XADD
//!   of the same fields;
//! - end to end: publish N while one consumer handles them (ack after
//!   each batch), `RedisBus` with a counting handler vs raw
//!   XREADGROUP/XACK.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventsource_bus_redis::{RedisBus, RedisBusConfig};
use eventsource_core::{handler_fn, EventBus, EventEnvelope, Subscription};
use eventsource_testkit::probe;
use redis::streams::StreamReadReply;

const BATCH: usize = 100;

fn fields(e: &EventEnvelope) -> Vec<(&'static str, String)> {
    vec![
        ("specversion", "1.0".into()),
        ("id", e.event_id.to_string()),
        ("type", e.event_type.clone()),
        ("source", "bench".into()),
        ("subject", e.aggregate_id.clone()),
        ("time", e.occurred_at.to_rfc3339()),
        ("datacontenttype", "application/json".into()),
        ("aggregatetype", e.aggregate_type.clone()),
        ("aggregateversion", e.aggregate_version.to_string()),
        ("schemaversion", e.schema_version.to_string()),
        ("data", e.payload.to_string()),
    ]
}

async fn raw_publish(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    events: &[EventEnvelope],
) {
    for chunk in events.chunks(BATCH) {
        let mut pipe = redis::pipe();
        for e in chunk {
            let cmd = pipe.cmd("XADD").arg(stream).arg("*");
            for (k, v) in fields(e) {
                cmd.arg(k).arg(v);
            }
        }
        pipe.query_async::<Vec<String>>(conn)
            .await
            .expect("raw XADD");
    }
}

fn events(n: usize) -> Vec<EventEnvelope> {
    (0..n as u64)
        .map(|i| probe(&format!("agg-{}", i % 64), i / 64 + 1, i))
        .collect()
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20_000);
    let url = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let ns = |what: &str| format!("es-bench-{what}-{}", uuid::Uuid::now_v7().simple());
    let client = redis::Client::open(url.as_str())?;
    let mut raw = client.get_multiplexed_async_connection().await?;
    println!("eventsource-bus-redis bench: {n} events, batches of {BATCH}, {url}");

    // Warm-up: connections, allocator, server.
    raw_publish(
        &mut raw,
        &format!("{}:events", ns("warmup")),
        &events(2_000),
    )
    .await;

    // Publish.
    let evs = events(n);
    let stream = format!("{}:events", ns("raw-pub"));
    let t = Instant::now();
    raw_publish(&mut raw, &stream, &evs).await;
    let raw_pub = t.elapsed();
    let bus = RedisBus::connect(
        RedisBusConfig::new(&url)
            .namespace(ns("bus-pub"))
            .validated()?,
    )
    .await?;
    let t = Instant::now();
    for chunk in evs.chunks(BATCH) {
        bus.publish(chunk).await?;
    }
    let bus_pub = t.elapsed();
    bus.shutdown(Duration::from_secs(5)).await?;

    // End to end: raw.
    let stream = format!("{}:events", ns("raw-e2e"));
    let _: String = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("g")
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut raw)
        .await?;
    let consumer = {
        let mut conn = client.get_multiplexed_async_connection().await?;
        let stream = stream.clone();
        tokio::spawn(async move {
            let mut got = 0;
            while got < n {
                let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg("g")
                    .arg("c")
                    .arg("COUNT")
                    .arg(BATCH)
                    .arg("BLOCK")
                    .arg(1000)
                    .arg("STREAMS")
                    .arg(&stream)
                    .arg(">")
                    .query_async(&mut conn)
                    .await
                    .expect("XREADGROUP");
                let ids: Vec<String> = reply
                    .map(|r| r.keys)
                    .unwrap_or_default()
                    .into_iter()
                    .flat_map(|k| k.ids)
                    .map(|i| i.id)
                    .collect();
                if ids.is_empty() {
                    continue;
                }
                got += ids.len();
                let _: i64 = redis::cmd("XACK")
                    .arg(&stream)
                    .arg("g")
                    .arg(&ids)
                    .query_async(&mut conn)
                    .await
                    .expect("XACK");
            }
        })
    };
    let evs = events(n);
    let t = Instant::now();
    raw_publish(&mut raw, &stream, &evs).await;
    consumer.await?;
    let raw_e2e = t.elapsed();

    // End to end: the bus.
    let bus = RedisBus::connect(
        RedisBusConfig::new(&url)
            .namespace(ns("bus-e2e"))
            .prefetch(256)
            .validated()?,
    )
    .await?;
    let handled = Arc::new(AtomicU64::new(0));
    let (done_tx, mut done) = tokio::sync::mpsc::channel::<()>(1);
    let h = Arc::clone(&handled);
    bus.subscribe(
        Subscription::builder("g")
            .concurrency(16)
            .handler(handler_fn(move |_e| {
                let (h, done_tx) = (Arc::clone(&h), done_tx.clone());
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
    let evs = events(n);
    let t = Instant::now();
    for chunk in evs.chunks(BATCH) {
        bus.publish(chunk).await?;
    }
    tokio::time::timeout(Duration::from_secs(300), done.recv()).await?;
    let bus_e2e = t.elapsed();
    bus.shutdown(Duration::from_secs(5)).await?;

    println!(
        "{:<12} {:>14} {:>14} {:>8}",
        "", "raw redis-rs", "RedisBus", "ratio"
    );
    println!(
        "{:<12} {:>10.0} ev/s {:>10.0} ev/s {:>8.2}",
        "publish",
        rate(n, raw_pub),
        rate(n, bus_pub),
        rate(n, bus_pub) / rate(n, raw_pub)
    );
    println!(
        "{:<12} {:>10.0} ev/s {:>10.0} ev/s {:>8.2}",
        "end to end",
        rate(n, raw_e2e),
        rate(n, bus_e2e),
        rate(n, bus_e2e) / rate(n, raw_e2e)
    );
    println!(
        "(ratio = RedisBus / raw; the bus also retries, orders per aggregate and dead-letters)"
    );
    Ok(())
}
