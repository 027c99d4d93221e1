//! End-to-end throughput of the memory bus beside a raw tokio channel doing
//! the same hand-off (each event cloned into an `Arc`, one consumer task
//! per group counting), in the same run.
//!
//! ```sh
//! cargo run --release -p eventsource-bus-memory --example bench_memory -- [events] [rounds]
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventsource_bus_memory::{MemoryBus, MemoryBusConfig};
use eventsource_core::{handler_fn, EventBus, EventEnvelope, Subscription};
use eventsource_testkit::{bench, probe};
use tokio::sync::{mpsc, Notify};

const BATCH: usize = 100;

fn events(n: usize) -> Vec<EventEnvelope> {
    (0..n as u64)
        .map(|i| probe(&format!("agg-{}", i % 64), i / 64 + 1, i))
        .collect()
}

/// The bus: `groups` groups of one member each, all events published in
/// batches, timed until every group handled every event.
async fn bus_round(events: &[EventEnvelope], groups: usize) -> Duration {
    let bus = MemoryBus::with_config(MemoryBusConfig::new().group_capacity(10_000)).expect("valid");
    let handled = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Notify::new());
    let total = events.len() * groups;
    for g in 0..groups {
        let (handled, done) = (Arc::clone(&handled), Arc::clone(&done));
        let sub = Subscription::builder(format!("g{g}"))
            .handler(handler_fn(move |_e| {
                let (handled, done) = (Arc::clone(&handled), Arc::clone(&done));
                async move {
                    if handled.fetch_add(1, Ordering::Relaxed) + 1 == total {
                        done.notify_one();
                    }
                    Ok(())
                }
            }))
            .build()
            .expect("valid");
        std::mem::forget(bus.subscribe(sub).await.expect("subscribe"));
    }
    let t = Instant::now();
    let finished = done.notified();
    for chunk in events.chunks(BATCH) {
        bus.publish(chunk).await.expect("publish");
    }
    finished.await;
    let elapsed = t.elapsed();
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    elapsed
}

/// Raw: one bounded channel per group (the bus's group capacity), each
/// event cloned into an `Arc` and sent to every group, a task per group
/// counting.
async fn raw_round(events: &[EventEnvelope], groups: usize) -> Duration {
    let handled = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Notify::new());
    let total = events.len() * groups;
    let mut senders = Vec::new();
    for _ in 0..groups {
        let (tx, mut rx) = mpsc::channel::<Arc<EventEnvelope>>(10_000);
        let (handled, done) = (Arc::clone(&handled), Arc::clone(&done));
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                std::hint::black_box(&e.aggregate_id);
                if handled.fetch_add(1, Ordering::Relaxed) + 1 == total {
                    done.notify_one();
                }
            }
        });
        senders.push(tx);
    }
    let t = Instant::now();
    let finished = done.notified();
    for chunk in events.chunks(BATCH) {
        for e in chunk {
            let e = Arc::new(e.clone());
            for tx in &senders {
                tx.send(Arc::clone(&e)).await.expect("send");
            }
        }
    }
    finished.await;
    t.elapsed()
}

#[tokio::main]
async fn main() {
    if std::env::args().nth(1).as_deref() == Some("growth") {
        bench::growth(
            "eventsource-bus-memory, end to end",
            &[1_000, 10_000, 100_000],
            &[1, 4, 16],
            BATCH,
            events,
            || async { Arc::new(MemoryBus::new()) as Arc<dyn EventBus> },
        )
        .await;
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let rounds: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let evs = Arc::new(events(n));
    let payload = evs[0].payload.to_string().len();
    bench::header("eventsource-bus-memory end to end", payload);
    let mut rows = Vec::new();
    for groups in [1, 4] {
        let (b, r) = (Arc::clone(&evs), Arc::clone(&evs));
        rows.push(
            bench::compare(
                &format!("{groups} group(s), handled once per group"),
                n,
                rounds,
                move |_| {
                    let evs = Arc::clone(&b);
                    async move { bus_round(&evs, groups).await }
                },
                move |_| {
                    let evs = Arc::clone(&r);
                    async move { raw_round(&evs, groups).await }
                },
            )
            .await,
        );
    }
    bench::table(&rows);
}
