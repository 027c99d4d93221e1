//! Throughput of the NATS bus beside raw async-nats on the same server, in
//! one run, printed as ratios.
//!
//! ```sh
//! cargo run --release -p eventsource-bus-nats --example bench_nats -- [events] [rounds] [nats-url]
//! ```
//!
//! On the shared runner (`eventsource_testkit::bench`: warm-up, then bus
//! and raw interleaved over several rounds, medians compared):
//!
//! - publish: batches of 100, `NatsBus::publish` vs raw JetStream
//!   publishes of the same body with the same message id, each batch sent
//!   back to back and then every PubAck awaited (at most 100 in flight);
//! - end to end: publish N while one consumer handles them, `NatsBus`
//!   with a counting handler (at the defaults users get: prefetch 128,
//!   concurrency 1; then prefetch 32; then 256; then 256 and
//!   concurrency 16) vs a raw durable
//!   pull consumer with explicit acks pulling up to 100 per request; once
//!   more at the defaults with raw publishing CloudEvents binary mode
//!   (attributes as `ce-` headers), the other NATS binding, to show what
//!   the bus's structured mode is worth (#32).

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use eventsource_bus_nats::{NatsBus, NatsBusConfig};
use eventsource_core::{EventBus, EventEnvelope};
use eventsource_testkit::{bench, probe};
use futures::StreamExt;

const BATCH: usize = 100;

/// The body the bus writes for `e` (CloudEvents, structured mode).
fn body(e: &EventEnvelope) -> bytes::Bytes {
    serde_json::to_vec(&serde_json::json!({
        "specversion": "1.0",
        "id": e.event_id.to_string(),
        "type": e.event_type,
        "source": "bench",
        "subject": e.aggregate_id,
        "time": e.occurred_at.to_rfc3339(),
        "aggregatetype": e.aggregate_type,
        "aggregateversion": e.aggregate_version.to_string(),
        "schemaversion": e.schema_version.to_string(),
        "datacontenttype": "application/json",
        "data": e.payload,
    }))
    .expect("JSON")
    .into()
}

fn events(n: usize) -> Vec<EventEnvelope> {
    (0..n as u64)
        .map(|i| probe(&format!("agg-{}", i % 64), i / 64 + 1, i))
        .collect()
}

fn ns(what: &str) -> String {
    format!("es-bench-{what}-{}", uuid::Uuid::now_v7().simple())
}

/// A raw stream like the bus's events stream (file storage).
async fn raw_stream(js: &jetstream::Context, name: &str) -> stream::Stream {
    js.create_stream(stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{name}.events")],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("raw stream")
}

/// CloudEvents binary mode, the other NATS binding: the attributes as
/// `ce-` headers, the payload alone as the body.
fn binary(e: &EventEnvelope) -> (async_nats::HeaderMap, bytes::Bytes) {
    let mut headers = async_nats::HeaderMap::new();
    for (name, value) in [
        ("ce-specversion", "1.0".to_owned()),
        ("ce-id", e.event_id.to_string()),
        ("ce-type", e.event_type.clone()),
        ("ce-source", "bench".to_owned()),
        ("ce-subject", e.aggregate_id.clone()),
        ("ce-time", e.occurred_at.to_rfc3339()),
        ("ce-aggregatetype", e.aggregate_type.clone()),
        ("ce-aggregateversion", e.aggregate_version.to_string()),
        ("ce-schemaversion", e.schema_version.to_string()),
        ("content-type", "application/json".to_owned()),
    ] {
        headers.insert(name, value.as_str());
    }
    let payload = serde_json::to_vec(&e.payload).expect("JSON").into();
    (headers, payload)
}

/// How the raw side writes an event: structured (what the bus writes) or
/// binary mode.
#[derive(Clone, Copy)]
enum Form {
    Structured,
    Binary,
}

async fn raw_publish(js: &jetstream::Context, subject: &str, events: &[EventEnvelope]) {
    raw_publish_as(js, subject, events, Form::Structured).await;
}

async fn raw_publish_as(
    js: &jetstream::Context,
    subject: &str,
    events: &[EventEnvelope],
    form: Form,
) {
    for chunk in events.chunks(BATCH) {
        let mut acks = Vec::with_capacity(chunk.len());
        for e in chunk {
            let message = match form {
                Form::Structured => jetstream::message::PublishMessage::build().payload(body(e)),
                Form::Binary => {
                    let (headers, payload) = binary(e);
                    jetstream::message::PublishMessage::build()
                        .headers(headers)
                        .payload(payload)
                }
            }
            .message_id(e.event_id.to_string());
            acks.push(
                js.send_publish(subject.to_owned(), message)
                    .await
                    .expect("raw publish"),
            );
        }
        for ack in acks {
            ack.await.expect("raw PubAck");
        }
    }
}

/// Deletes the streams a bus on `config` made (group `g`), as the raw
/// rounds delete theirs: a server filling up with earlier rounds' streams
/// would slow the later rounds of one side only.
async fn drop_bus_streams(js: &jetstream::Context, config: &NatsBusConfig) {
    for name in [
        config.events_stream(),
        config.replay_stream("g"),
        config.dlq_stream("g"),
        config.members_stream(),
    ] {
        let _ = js.delete_stream(&name).await;
    }
}

async fn bus_publish(js: &jetstream::Context, url: &str, evs: &[EventEnvelope]) -> Duration {
    let config = NatsBusConfig::new(url).namespace(ns("bus-pub"));
    let bus = NatsBus::connect(config.clone()).await.expect("connect");
    let t = Instant::now();
    for chunk in evs.chunks(BATCH) {
        bus.publish(chunk).await.expect("publish");
    }
    let took = t.elapsed();
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    drop_bus_streams(js, &config).await;
    took
}

async fn raw_publish_round(js: &jetstream::Context, evs: &[EventEnvelope]) -> Duration {
    let name = ns("raw-pub");
    raw_stream(js, &name).await;
    let t = Instant::now();
    raw_publish(js, &format!("{name}.events"), evs).await;
    let took = t.elapsed();
    let _ = js.delete_stream(&name).await;
    took
}

/// Publishes `evs` while a bus subscription counts them; until all are
/// handled (and until the last publish returned).
async fn bus_e2e(
    js: &jetstream::Context,
    url: &str,
    evs: &[EventEnvelope],
    prefetch: usize,
    concurrency: usize,
) -> (Duration, Duration) {
    let config = NatsBusConfig::new(url)
        .namespace(ns("bus-e2e"))
        .prefetch(prefetch);
    let bus = NatsBus::connect(config.clone()).await.expect("connect");
    let (subscription, done) = bench::counting("g", evs.len(), concurrency);
    let _s = bus.subscribe(subscription).await.expect("subscribe");
    let t = Instant::now();
    for chunk in evs.chunks(BATCH) {
        bus.publish(chunk).await.expect("publish");
    }
    let published = t.elapsed();
    tokio::time::timeout(Duration::from_secs(300), done)
        .await
        .expect("all handled")
        .expect("open");
    let took = t.elapsed();
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    drop_bus_streams(js, &config).await;
    (took, published)
}

/// Publishes `evs` (in `form`) while a raw pull consumer reads and acks
/// them; until all are acked (and until the last publish returned).
async fn raw_e2e(
    js: &jetstream::Context,
    evs: &[EventEnvelope],
    form: Form,
) -> (Duration, Duration) {
    let n = evs.len();
    let name = ns("raw-e2e");
    let stream = raw_stream(js, &name).await;
    let pull: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("g".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            deliver_policy: consumer::DeliverPolicy::New,
            ..Default::default()
        })
        .await
        .expect("raw consumer");
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while got < n {
            let mut batch = pull
                .batch()
                .max_messages(BATCH)
                .expires(Duration::from_millis(500))
                .messages()
                .await
                .expect("pull");
            while let Some(m) = batch.next().await {
                m.expect("message").ack().await.expect("ack");
                got += 1;
            }
        }
    });
    let t = Instant::now();
    raw_publish_as(js, &format!("{name}.events"), evs, form).await;
    let published = t.elapsed();
    reader.await.expect("raw consumer");
    let took = t.elapsed();
    let _ = js.delete_stream(&name).await;
    (took, published)
}

/// `profile bus|raw EVENTS [PREFETCH]`: one end-to-end round of one side
/// only, at the defaults (or the bus at `PREFETCH`), for an instruction profile (`valgrind --tool=callgrind`
/// at two sizes; docs/benchmarks.md says how).
async fn profile(js: &jetstream::Context, url: &str) {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let usage = || -> ! {
        eprintln!("usage: profile bus|raw EVENTS [PREFETCH]");
        std::process::exit(2)
    };
    let n: usize = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| usage());
    let prefetch = match args.get(2) {
        Some(p) => p.parse().unwrap_or_else(|_| usage()),
        None => NatsBusConfig::new(url).prefetch,
    };
    let evs = events(n);
    let (took, published) = match args.first().map(String::as_str) {
        Some("bus") => bus_e2e(js, url, &evs, prefetch, 1).await,
        Some("raw") => raw_e2e(js, &evs, Form::Structured).await,
        _ => usage(),
    };
    println!("{n} events end to end in {took:?} (the last publish returned at {published:?})");
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().nth(1).as_deref() == Some("profile") {
        let url = "nats://127.0.0.1:4222";
        let js = jetstream::new(async_nats::connect(url).await?);
        profile(&js, url).await;
        return Ok(());
    }
    let (n, rounds, url) = bench::args(20_000, "nats://127.0.0.1:4222");
    let js = jetstream::new(async_nats::connect(url.as_str()).await?);
    let evs = events(n);
    bench::header(
        &format!("eventsource-bus-nats, batches of {BATCH}, {url}"),
        evs[0].payload.to_string().len(),
    );
    let mut rows = Vec::new();
    rows.push(
        bench::compare(
            "publish (PubAcks awaited per batch)",
            n,
            rounds,
            async |_| bus_publish(&js, &url, &evs).await,
            async |_| raw_publish_round(&js, &evs).await,
        )
        .await,
    );
    let default = NatsBusConfig::new(url.as_str()).prefetch;
    for (label, prefetch, concurrency, form) in [
        (
            format!("end to end, defaults (prefetch {default}, concurrency 1)"),
            default,
            1,
            Form::Structured,
        ),
        (
            "end to end, defaults; raw in binary mode (ce- headers)".to_owned(),
            default,
            1,
            Form::Binary,
        ),
        (
            "end to end, prefetch 32, concurrency 1".to_owned(),
            32,
            1,
            Form::Structured,
        ),
        (
            "end to end, prefetch 256, concurrency 1".to_owned(),
            256,
            1,
            Form::Structured,
        ),
        (
            "end to end, prefetch 256, concurrency 16".to_owned(),
            256,
            16,
            Form::Structured,
        ),
    ] {
        rows.push(
            bench::compare(
                &label,
                n,
                rounds,
                async |_| bus_e2e(&js, &url, &evs, prefetch, concurrency).await.0,
                async |_| raw_e2e(&js, &evs, form).await.0,
            )
            .await,
        );
    }
    bench::table(&rows);
    Ok(())
}
