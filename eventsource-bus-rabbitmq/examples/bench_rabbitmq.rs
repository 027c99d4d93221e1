//! Throughput of the RabbitMQ bus beside raw lapin on the same broker, in
//! one run, printed as ratios.
//!
//! ```sh
//! cargo run --release -p eventsource-bus-rabbitmq --example bench_rabbitmq -- [events] [rounds] [amqp-url]
//! ```
//!
//! On the shared runner (`eventsource_testkit::bench`):
//!
//! - confirmed publish: batches of 100 persistent messages through a
//!   durable topic exchange into a queue bound with `#`, each batch waiting
//!   for its confirms; `RabbitBus::publish` vs raw lapin doing the same;
//! - consume: N messages already in a durable queue, prefetch 256, handled
//!   and acked; `RabbitBus` with one worker vs a raw consumer awaiting each
//!   ack, and `RabbitBus` with 16 workers vs a raw consumer whose acks do
//!   not wait for each other (equally concurrent);
//! - end to end: publishing in batches while 16 workers (raw: concurrent
//!   acks) consume the same queue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventsource_bus_rabbitmq::{RabbitBus, RabbitBusConfig};
use eventsource_core::wire::cloudevents;
use eventsource_core::{handler_fn, EventBus, EventEnvelope, Subscription};
use eventsource_testkit::{bench, probe};
use futures::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};

const BATCH: usize = 100;

fn events(n: usize) -> Vec<EventEnvelope> {
    (0..n as u64)
        .map(|i| probe(&format!("agg-{}", i % 64), i / 64 + 1, i))
        .collect()
}

async fn raw_publish(
    channel: &lapin::Channel,
    queue: &str,
    evs: &[EventEnvelope],
) -> Result<(), lapin::Error> {
    for chunk in evs.chunks(BATCH) {
        let mut confirms = Vec::new();
        for e in chunk {
            // The same message the bus sends: CloudEvents attributes in
            // `cloudEvents:` headers, the payload as the body.
            let body = e.payload.to_string().into_bytes();
            let mut headers = FieldTable::default();
            for (name, value) in cloudevents::to_attributes(e, "bench") {
                headers.insert(
                    format!("cloudEvents:{name}").into(),
                    AMQPValue::LongString(value.into()),
                );
            }
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(e.event_id.to_string().into())
                .with_headers(headers);
            confirms.push(
                channel
                    .basic_publish(
                        queue.into(),
                        e.routing_key().as_str().into(),
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

fn ns(what: &str) -> String {
    format!("es-bench-{what}-{}", uuid::Uuid::now_v7().simple())
}

/// A confirming channel and a fresh durable queue (expiring when unused).
async fn raw_queue(conn: &Connection) -> (lapin::Channel, String) {
    let channel = conn.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let mut args = FieldTable::default();
    args.insert(
        "x-expires".into(),
        lapin::types::AMQPValue::LongLongInt(120_000),
    );
    let name = ns("raw");
    channel
        .queue_declare(name.as_str().into(), QueueDeclareOptions::durable(), args)
        .await
        .expect("declare");
    // Routed as the bus routes: a durable topic exchange, the queue bound
    // with `#` as a group without a filter is. (Through the default
    // exchange raw measured 1.26-1.32x the bus's publishing, work the bus
    // does not get to skip.)
    channel
        .exchange_declare(
            name.as_str().into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare exchange");
    channel
        .queue_bind(
            name.as_str().into(),
            name.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    (channel, name)
}

/// A bus on a fresh namespace whose group `g` has its queue declared and
/// bound (so what is published is stored), with no member running.
async fn bus_with_queue(url: &str) -> RabbitBus {
    let config = RabbitBusConfig::new(url)
        .namespace(ns("bus"))
        .prefetch(256)
        .queue_expires(Duration::from_secs(120));
    let bus = RabbitBus::connect(config).await.expect("connect");
    bus.subscribe(
        Subscription::builder("g")
            .handler(handler_fn(|_e| async { Ok(()) }))
            .build()
            .expect("valid"),
    )
    .await
    .expect("subscribe")
    .unsubscribe()
    .await;
    bus
}

async fn bus_publish(url: &str, evs: &[EventEnvelope]) -> Duration {
    let bus = bus_with_queue(url).await;
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

async fn raw_publish_round(conn: &Connection, evs: &[EventEnvelope]) -> Duration {
    let (channel, queue) = raw_queue(conn).await;
    let t = Instant::now();
    raw_publish(&channel, &queue, evs)
        .await
        .expect("raw publish");
    t.elapsed()
}

/// Times a member with `workers` handling and acking all of `evs`: with
/// `backlog`, published before the member starts (the clock starts at the
/// subscribe); otherwise published in batches once it runs (the clock
/// starts at the first publish).
async fn bus_handle(url: &str, evs: &[EventEnvelope], workers: usize, backlog: bool) -> Duration {
    let bus = bus_with_queue(url).await;
    let publish = || async {
        for chunk in evs.chunks(BATCH) {
            bus.publish(chunk).await.expect("publish");
        }
    };
    if backlog {
        publish().await;
    }
    let (subscription, done) = bench::counting("g", evs.len(), workers);
    let subscribing = Instant::now();
    let _s = bus.subscribe(subscription).await.expect("subscribe");
    let t = if backlog { subscribing } else { Instant::now() };
    if !backlog {
        publish().await;
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

/// A channel consuming `queue` with prefetch 256.
async fn raw_consumer(conn: &Connection, queue: &str) -> (lapin::Channel, lapin::Consumer) {
    let channel = conn.create_channel().await.expect("channel");
    channel
        .basic_qos(256, BasicQosOptions::default())
        .await
        .expect("qos");
    let consumer = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    (channel, consumer)
}

/// Decodes and acks `n` deliveries: each ack awaited before the next
/// delivery, or (`concurrent`) acks left to complete on their own.
async fn drain(mut consumer: lapin::Consumer, n: usize, concurrent: bool) {
    let mut acks = Vec::new();
    for _ in 0..n {
        let d = consumer.next().await.expect("open").expect("delivery");
        let _: serde_json::Value = serde_json::from_slice(&d.data).expect("json");
        if concurrent {
            acks.push(tokio::spawn(async move {
                d.ack(BasicAckOptions::default()).await.expect("ack")
            }));
        } else {
            d.ack(BasicAckOptions::default()).await.expect("ack");
        }
    }
    for ack in acks {
        ack.await.expect("ack task");
    }
}

/// Raw lapin doing what [`bus_handle`] does: a consumer draining a queue
/// filled beforehand (`backlog`), or one running while the messages are
/// published with confirms per batch.
async fn raw_handle(
    conn: &Connection,
    evs: &[EventEnvelope],
    concurrent: bool,
    backlog: bool,
) -> Duration {
    let (channel, queue) = raw_queue(conn).await;
    if backlog {
        raw_publish(&channel, &queue, evs).await.expect("fill");
    }
    let consuming = Instant::now();
    let (consume, consumer) = raw_consumer(conn, &queue).await;
    let t = if backlog { consuming } else { Instant::now() };
    let reader = tokio::spawn(drain(consumer, evs.len(), concurrent));
    if !backlog {
        raw_publish(&channel, &queue, evs)
            .await
            .expect("raw publish");
    }
    reader.await.expect("reader");
    let took = t.elapsed();
    let _ = consume.close(200, "bye".into()).await;
    took
}

/// One row of the table.
#[derive(Clone, Copy)]
enum Case {
    /// Confirmed publishing alone.
    Publish,
    /// Handling a backlog (`workers` bus workers; raw acks `concurrent`).
    Consume { workers: usize, concurrent: bool },
    /// Publishing while 16 workers (raw: concurrent acks) consume.
    EndToEnd,
}

async fn bus_round(url: &str, evs: &[EventEnvelope], case: Case) -> Duration {
    match case {
        Case::Publish => bus_publish(url, evs).await,
        Case::Consume { workers, .. } => bus_handle(url, evs, workers, true).await,
        Case::EndToEnd => bus_handle(url, evs, 16, false).await,
    }
}

/// A raw round on a connection of its own, opened before its clock
/// starts, as each bus round connects a bus of its own: one connection
/// shared by every round was found closed by lapin (InvalidConnectionState)
/// at the next round's first channel in about 1 run in 3, right after a
/// round had closed its consuming channel.
async fn raw_round(url: &str, evs: &[EventEnvelope], case: Case) -> Duration {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("raw connection");
    let took = match case {
        Case::Publish => raw_publish_round(&conn, evs).await,
        Case::Consume { concurrent, .. } => raw_handle(&conn, evs, concurrent, true).await,
        Case::EndToEnd => raw_handle(&conn, evs, true, false).await,
    };
    let _ = conn.close(200, "bye".into()).await;
    took
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().nth(1).as_deref() == Some("growth") {
        let url = std::env::args()
            .nth(2)
            .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
        bench::growth(
            "eventsource-bus-rabbitmq, end to end, persistent",
            &[1_000, 10_000],
            &[1, 4, 16],
            BATCH,
            events,
            || {
                let config = RabbitBusConfig::new(url.as_str())
                    .namespace(ns("growth"))
                    .queue_expires(Duration::from_secs(120));
                async move {
                    Arc::new(RabbitBus::connect(config).await.expect("connect"))
                        as Arc<dyn EventBus>
                }
            },
        )
        .await;
        return Ok(());
    }
    let (n, rounds, url) = bench::args(10_000, "amqp://guest:guest@127.0.0.1:5672/%2f");
    let evs = events(n);
    bench::header(
        &format!("eventsource-bus-rabbitmq, persistent messages, batches of {BATCH}"),
        evs[0].payload.to_string().len(),
    );
    let mut rows = Vec::new();
    for (label, case) in [
        ("confirmed publish, batches of 100", Case::Publish),
        (
            "consume + ack, 1 worker vs acks awaited in turn",
            Case::Consume {
                workers: 1,
                concurrent: false,
            },
        ),
        (
            "consume + ack, 16 workers vs acks not awaited in turn",
            Case::Consume {
                workers: 16,
                concurrent: true,
            },
        ),
        (
            "end to end: publish while 16 workers consume",
            Case::EndToEnd,
        ),
    ] {
        rows.push(
            bench::compare(
                label,
                n,
                rounds,
                async |_| bus_round(&url, &evs, case).await,
                async |_| raw_round(&url, &evs, case).await,
            )
            .await,
        );
    }
    bench::table(&rows);
    Ok(())
}
