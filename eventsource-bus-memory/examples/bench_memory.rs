//! End-to-end throughput of the memory bus beside raw tokio channels doing
//! the same hand-off, in the same run.
//!
//! Two ways to use the bus are measured, each against raw channels doing
//! the same copying:
//! - **shared**: events in `Arc`s published with
//!   [`EventBus::publish_shared`], handled by an [`EventHandler`] that
//!   reads the envelope by reference — no copy of an event anywhere; raw
//!   sends each `Arc` to every group's channel.
//! - **by reference + `handler_fn`**: [`EventBus::publish`] copies each
//!   event once into an `Arc`, and `handler_fn`'s closure receives its own
//!   copy; raw makes the same two copies.
//!
//! ```sh
//! cargo run --release -p eventsource-bus-memory --example bench_memory -- [events] [rounds]
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use eventsource_bus_memory::{MemoryBus, MemoryBusConfig};
use eventsource_core::{
    handler_fn, EventBus, EventEnvelope, EventHandler, HandlerResult, Subscription,
};
use eventsource_testkit::{bench, probe};
use tokio::sync::{mpsc, Notify};

const BATCH: usize = 100;

fn events(n: usize) -> Vec<EventEnvelope> {
    (0..n as u64)
        .map(|i| probe(&format!("agg-{}", i % 64), i / 64 + 1, i))
        .collect()
}

/// How events reach the bus and the handler.
#[derive(Clone, Copy)]
enum Mode {
    /// `publish_shared` and a handler reading by reference: no copies.
    Shared,
    /// `publish(&[EventEnvelope])` and `handler_fn`: a copy on each side.
    Copied,
}

/// Counts handled events; `done` fires at `total`.
#[derive(Clone)]
struct Count {
    handled: Arc<AtomicUsize>,
    done: Arc<Notify>,
    total: usize,
}

impl Count {
    fn new(total: usize) -> Self {
        Count {
            handled: Arc::default(),
            done: Arc::default(),
            total,
        }
    }

    fn one(&self, event: &EventEnvelope) {
        std::hint::black_box(&event.aggregate_id);
        if self.handled.fetch_add(1, Ordering::Relaxed) + 1 == self.total {
            self.done.notify_one();
        }
    }
}

#[async_trait]
impl EventHandler for Count {
    async fn handle(&self, event: &EventEnvelope) -> HandlerResult {
        self.one(event);
        Ok(())
    }
}

/// The bus: `groups` groups of one member each, all events published in
/// batches, timed until every group handled every event.
async fn bus_round(events: &[Arc<EventEnvelope>], groups: usize, mode: Mode) -> Duration {
    let bus = MemoryBus::with_config(MemoryBusConfig::new().group_capacity(10_000)).expect("valid");
    let count = Count::new(events.len() * groups);
    for g in 0..groups {
        let sub = Subscription::builder(format!("g{g}"));
        let sub = match mode {
            Mode::Shared => sub.handler(count.clone()),
            Mode::Copied => {
                let count = count.clone();
                sub.handler(handler_fn(move |e| {
                    count.one(&e);
                    async { Ok(()) }
                }))
            }
        };
        std::mem::forget(
            bus.subscribe(sub.build().expect("valid"))
                .await
                .expect("subscribe"),
        );
    }
    let copies: Vec<EventEnvelope> = match mode {
        Mode::Shared => Vec::new(),
        Mode::Copied => events.iter().map(|e| EventEnvelope::clone(e)).collect(),
    };
    let t = Instant::now();
    let finished = count.done.notified();
    match mode {
        Mode::Shared => {
            for chunk in events.chunks(BATCH) {
                bus.publish_shared(chunk).await.expect("publish");
            }
        }
        Mode::Copied => {
            for chunk in copies.chunks(BATCH) {
                bus.publish(chunk).await.expect("publish");
            }
        }
    }
    finished.await;
    let elapsed = t.elapsed();
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    elapsed
}

/// Raw: one bounded channel per group holding the bus's group capacity
/// of events, a task per group counting, with the copies `mode` makes.
/// Each publish batch is sent as one message, as the bus hands a batch to
/// a group under one lock: a channel of single events wakes a blocked
/// sender for every event received, and is slower than this.
async fn raw_round(events: &[Arc<EventEnvelope>], groups: usize, mode: Mode) -> Duration {
    let count = Count::new(events.len() * groups);
    let mut senders = Vec::new();
    for _ in 0..groups {
        let (tx, mut rx) = mpsc::channel::<Arc<Vec<Arc<EventEnvelope>>>>(10_000 / BATCH);
        let count = count.clone();
        tokio::spawn(async move {
            while let Some(batch) = rx.recv().await {
                for e in batch.iter() {
                    match mode {
                        Mode::Shared => count.one(e),
                        Mode::Copied => count.one(&std::hint::black_box(EventEnvelope::clone(e))),
                    }
                }
            }
        });
        senders.push(tx);
    }
    let t = Instant::now();
    let finished = count.done.notified();
    for chunk in events.chunks(BATCH) {
        let batch: Arc<Vec<Arc<EventEnvelope>>> = Arc::new(
            chunk
                .iter()
                .map(|e| match mode {
                    Mode::Shared => Arc::clone(e),
                    Mode::Copied => Arc::new(EventEnvelope::clone(e)),
                })
                .collect(),
        );
        for tx in &senders {
            tx.send(Arc::clone(&batch)).await.expect("send");
        }
    }
    finished.await;
    t.elapsed()
}

/// `profile bus|raw EVENTS GROUPS`: one round of one side only, shared
/// (no copies), for an instruction profile of the delivery contract
/// (`valgrind --tool=callgrind`; docs/benchmarks.md says how).
async fn profile() {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let usage = || -> ! {
        eprintln!("usage: profile bus|raw EVENTS GROUPS");
        std::process::exit(2)
    };
    let number = |i: usize| -> usize {
        args.get(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| usage())
    };
    let (n, groups) = (number(1), number(2));
    let evs: Vec<Arc<EventEnvelope>> = events(n).into_iter().map(Arc::new).collect();
    let took = match args.first().map(String::as_str) {
        Some("bus") => bus_round(&evs, groups, Mode::Shared).await,
        Some("raw") => raw_round(&evs, groups, Mode::Shared).await,
        _ => usage(),
    };
    println!("{n} events x {groups} group(s) in {took:?}");
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
    if std::env::args().nth(1).as_deref() == Some("profile") {
        profile().await;
        return;
    }
    // A size that does not parse is refused, not replaced by the default.
    let (n, rounds, _) = bench::args(100_000, "");
    let evs: Vec<Arc<EventEnvelope>> = events(n).into_iter().map(Arc::new).collect();
    let payload = evs[0].payload.to_string().len();
    bench::header("eventsource-bus-memory end to end", payload);
    let mut rows = Vec::new();
    for (groups, mode, label) in [
        (
            1,
            Mode::Shared,
            "1 group, shared (publish_shared, handler by reference)",
        ),
        (4, Mode::Shared, "4 groups, shared"),
        (
            1,
            Mode::Copied,
            "1 group, publish(&[..]) + handler_fn (2 copies per event)",
        ),
    ] {
        rows.push(
            bench::compare(
                label,
                n,
                rounds,
                async |_| bus_round(&evs, groups, mode).await,
                async |_| raw_round(&evs, groups, mode).await,
            )
            .await,
        );
    }
    bench::table(&rows);
}
