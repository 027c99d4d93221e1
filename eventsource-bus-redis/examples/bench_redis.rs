//! Throughput of the Redis bus beside raw redis-rs on the same server, in
//! one run, printed as ratios.
//!
//! ```sh
//! cargo run --release -p eventsource-bus-redis --example bench_redis -- [events] [rounds] [redis-url]
//! ```
//!
//! On the shared runner (`eventsource_testkit::bench`: warm-up, then bus
//! and raw interleaved over several rounds, medians compared):
//!
//! - publish: batches of 100, `RedisBus::publish` vs a raw pipelined XADD
//!   of the same fields;
//! - end to end: publish N while one consumer handles them, `RedisBus`
//!   with a counting handler (at the defaults users get: prefetch 32,
//!   concurrency 1; then prefetch 256, concurrency 16) vs raw
//!   XREADGROUP/XACK of up to 100 entries per round trip.

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventsource_bus_redis::{RedisBus, RedisBusConfig};
use eventsource_core::{EventBus, EventEnvelope};
use eventsource_testkit::{bench, probe};
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

fn ns(what: &str) -> String {
    format!("es-bench-{what}-{}", uuid::Uuid::now_v7().simple())
}

async fn bus_publish(url: &str, evs: &[EventEnvelope]) -> Duration {
    let bus = RedisBus::connect(RedisBusConfig::new(url).namespace(ns("bus-pub")))
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

async fn raw_publish_round(client: &redis::Client, evs: &[EventEnvelope]) -> Duration {
    let mut raw = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let stream = format!("{}:events", ns("raw-pub"));
    let t = Instant::now();
    raw_publish(&mut raw, &stream, evs).await;
    t.elapsed()
}

/// Publishes `evs` while a bus subscription counts them; until all are handled.
async fn bus_e2e(
    url: &str,
    evs: &[EventEnvelope],
    prefetch: usize,
    concurrency: usize,
) -> Duration {
    let bus = RedisBus::connect(
        RedisBusConfig::new(url)
            .namespace(ns("bus-e2e"))
            .prefetch(prefetch),
    )
    .await
    .expect("connect");
    let (subscription, done) = bench::counting("g", evs.len(), concurrency);
    let _s = bus.subscribe(subscription).await.expect("subscribe");
    let t = Instant::now();
    for chunk in evs.chunks(BATCH) {
        bus.publish(chunk).await.expect("publish");
    }
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

/// Publishes `evs` while a raw XREADGROUP/XACK loop reads them.
async fn raw_e2e(client: &redis::Client, evs: &[EventEnvelope]) -> Duration {
    let n = evs.len();
    let mut raw = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let stream = format!("{}:events", ns("raw-e2e"));
    let _: String = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("g")
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut raw)
        .await
        .expect("XGROUP");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let reader_stream = stream.clone();
    let consumer = tokio::spawn(async move {
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
                .arg(&reader_stream)
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
                .arg(&reader_stream)
                .arg("g")
                .arg(&ids)
                .query_async(&mut conn)
                .await
                .expect("XACK");
        }
    });
    let t = Instant::now();
    raw_publish(&mut raw, &stream, evs).await;
    consumer.await.expect("raw consumer");
    t.elapsed()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().nth(1).as_deref() == Some("growth") {
        let url = std::env::args()
            .nth(2)
            .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
        bench::growth(
            "eventsource-bus-redis, end to end",
            &[1_000, 10_000, 100_000],
            &[1, 4, 16],
            BATCH,
            events,
            || {
                let config = RedisBusConfig::new(url.as_str()).namespace(ns("growth"));
                async move {
                    Arc::new(RedisBus::connect(config).await.expect("connect")) as Arc<dyn EventBus>
                }
            },
        )
        .await;
        return Ok(());
    }
    let (n, rounds, url) = bench::args(20_000, "redis://127.0.0.1:6379");
    let client = redis::Client::open(url.as_str())?;
    let evs = events(n);
    bench::header(
        &format!("eventsource-bus-redis, batches of {BATCH}, {url}"),
        evs[0].payload.to_string().len(),
    );
    let mut rows = Vec::new();
    rows.push(
        bench::compare(
            "publish (pipelined XADD)",
            n,
            rounds,
            async |_| bus_publish(&url, &evs).await,
            async |_| raw_publish_round(&client, &evs).await,
        )
        .await,
    );
    for (label, prefetch, concurrency) in [
        ("end to end, defaults (prefetch 32, concurrency 1)", 32, 1),
        ("end to end, prefetch 256, concurrency 1", 256, 1),
        ("end to end, prefetch 256, concurrency 16", 256, 16),
    ] {
        rows.push(
            bench::compare(
                label,
                n,
                rounds,
                async |_| bus_e2e(&url, &evs, prefetch, concurrency).await,
                async |_| raw_e2e(&client, &evs).await,
            )
            .await,
        );
    }
    bench::table(&rows);
    Ok(())
}
