//! End-to-end throughput of one consumer group with 1, 4 and 8 members on
//! Redis, partitioned (`partitions = 16`) beside unpartitioned, in one run.
//!
//! ```sh
//! cargo run --release -p eventsource-bus-redis --example bench_redis_partitions -- [events] [rounds] [redis-url]
//! ```
//!
//! Each member is a bus of its own (its own connections), with a counting
//! handler and concurrency 4; events of 256 aggregates are published in
//! batches of 100 through the first member's bus. The partitioned column
//! buys order per aggregate across the whole group; the ratio says what
//! it costs.

use std::sync::Arc;

use eventsource_bus_redis::{RedisBus, RedisBusConfig};
use eventsource_core::EventBus;
use eventsource_testkit::{bench, probe};

#[tokio::main]
async fn main() {
    let (n, rounds, url) = bench::args(20_000, "redis://127.0.0.1:6379");
    let events: Vec<_> = (0..n)
        .map(|i| probe(&format!("agg-{}", i % 256), (i / 256) as u64 + 1, i as u64))
        .collect();
    bench::header(
        "redis, partitioned vs unpartitioned groups",
        events[0].payload.to_string().len(),
    );
    let run = uuid::Uuid::now_v7().simple().to_string();
    let rows = bench::members(&events, rounds, &[1, 4, 8], 4, async |partitioned| {
        let mut config = RedisBusConfig::new(url.as_str()).namespace(format!(
            "bench-{run}-{}",
            if partitioned { "p16" } else { "plain" }
        ));
        config.partitions = partitioned.then_some(16);
        let bus = RedisBus::connect(config.validated().expect("valid config"))
            .await
            .unwrap_or_else(|e| panic!("Redis at {url}: {e} (start it with ./scripts/test.sh)"));
        Arc::new(bus) as Arc<dyn EventBus>
    })
    .await;
    bench::table_of(&rows, "unpartitioned", "partitioned (16)");
}
