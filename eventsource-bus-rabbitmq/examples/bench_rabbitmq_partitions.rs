//! End-to-end throughput of one consumer group with 1, 4 and 8 members on
//! RabbitMQ, partitioned (`partitions = 16`) beside unpartitioned, in one
//! run.
//!
//! ```sh
//! cargo run --release -p eventsource-bus-rabbitmq --example bench_rabbitmq_partitions -- [events] [rounds] [amqp-url]
//! ```
//!
//! Each member is a bus of its own (its own connection), with a counting
//! handler and concurrency 4; events of 256 aggregates are published
//! (persistent, confirmed) in batches of 100 through the first member's
//! bus. The partitioned column buys order per aggregate across the whole
//! group; the ratio says what it costs. `BENCH_PARTITIONS=N` measures
//! another partition count than 16 (the cost grows with it: see
//! `docs/benchmarks.md`).

use std::sync::Arc;

use eventsource_bus_rabbitmq::{RabbitBus, RabbitBusConfig};
use eventsource_core::EventBus;
use eventsource_testkit::{bench, probe};

#[tokio::main]
async fn main() {
    let (n, rounds, url) = bench::args(5_000, "amqp://guest:guest@127.0.0.1:5672/%2f");
    let events: Vec<_> = (0..n)
        .map(|i| probe(&format!("agg-{}", i % 256), (i / 256) as u64 + 1, i as u64))
        .collect();
    bench::header(
        "rabbitmq, partitioned vs unpartitioned groups",
        events[0].payload.to_string().len(),
    );
    let run = uuid::Uuid::now_v7().simple().to_string();
    let rows = bench::members(&events, rounds, &[1, 4, 8], 4, async |partitioned| {
        let mut config = RabbitBusConfig::new(url.as_str())
            .namespace(format!(
                "bench-{run}-{}",
                if partitioned { "p16" } else { "plain" }
            ))
            .queue_expires(std::time::Duration::from_secs(60));
        let n: u32 = std::env::var("BENCH_PARTITIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(16);
        config.partitions = partitioned.then_some(n);
        let bus = RabbitBus::connect(config.validated().expect("valid config"))
            .await
            .unwrap_or_else(|e| panic!("RabbitMQ at {url}: {e} (start it with ./scripts/test.sh)"));
        Arc::new(bus) as Arc<dyn EventBus>
    })
    .await;
    bench::table_of(&rows, "unpartitioned", "partitioned");
}
