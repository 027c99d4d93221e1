//! The transactional outbox: saves survive a bus outage and are published,
//! in order, once the bus is back; several relays never publish twice.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::TestDb;
use eventsource_bus_memory::MemoryBus;
use eventsource_core::{
    handler_fn, Aggregate, BusStats, DeadLetterQueue, Error, EventBus, EventEnvelope, EventStore,
    Repository, Result, ShutdownReport, Subscription, SubscriptionHandle,
};
use eventsource_store::{OutboxRelay, OutboxRelayConfig};
use eventsource_testkit::{probe, Probe};
use tokio_util::sync::CancellationToken;

/// The memory bus behind a switch that makes `publish` fail like a broker
/// that is down. Everything else is the real memory bus.
struct Switchable {
    bus: MemoryBus,
    down: AtomicBool,
    /// How long a publish hangs before failing while down (a broker that
    /// does not answer, rather than one that refuses).
    stall: Duration,
}

#[async_trait]
impl EventBus for Switchable {
    fn backend(&self) -> &'static str {
        "switchable-memory"
    }
    async fn publish(&self, events: &[EventEnvelope]) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            tokio::time::sleep(self.stall).await;
            return Err(Error::backend(
                "switchable-memory",
                "publish",
                "broker is down",
            ));
        }
        self.bus.publish(events).await
    }
    async fn subscribe(&self, s: Subscription) -> Result<SubscriptionHandle> {
        self.bus.subscribe(s).await
    }
    fn dead_letters(&self) -> Arc<dyn DeadLetterQueue> {
        self.bus.dead_letters()
    }
    async fn stats(&self) -> Result<BusStats> {
        self.bus.stats().await
    }
    async fn shutdown(&self, timeout: Duration) -> Result<ShutdownReport> {
        self.bus.shutdown(timeout).await
    }
}

#[derive(Default)]
struct Counter;
impl Aggregate for Counter {
    type Event = Probe;
    type Command = u64;
    type Error = std::io::Error;
    fn apply(&mut self, _e: &Probe) {}
    fn handle(&self, n: u64) -> std::result::Result<Vec<Probe>, std::io::Error> {
        Ok(vec![Probe::Created { n }])
    }
}

fn fast() -> OutboxRelayConfig {
    OutboxRelayConfig::default()
        .batch_size(16)
        .poll_interval(Duration::from_millis(20))
        .max_backoff(Duration::from_millis(200))
}

/// Records (aggregate, version) per delivery.
async fn recorder(bus: &dyn EventBus) -> Arc<Mutex<Vec<(String, u64)>>> {
    let got: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let g = Arc::clone(&got);
    bus.subscribe(
        Subscription::builder("audit")
            .concurrency(4)
            .handler(handler_fn(move |e: EventEnvelope| {
                let g = Arc::clone(&g);
                async move {
                    g.lock()
                        .expect("lock")
                        .push((e.aggregate_id, e.aggregate_version));
                    Ok(())
                }
            }))
            .build()
            .expect("valid"),
    )
    .await
    .expect("subscribe");
    got
}

async fn wait_for(got: &Mutex<Vec<(String, u64)>>, n: usize, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while got.lock().expect("lock").len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {} of {n} delivered",
            got.lock().expect("lock").len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn bus_outage_during_saves_loses_nothing(db: &TestDb) {
    let store = db.store(true).await;
    let bus = Arc::new(Switchable {
        bus: MemoryBus::new(),
        down: AtomicBool::new(true),
        stall: Duration::ZERO,
    });
    let got = recorder(bus.as_ref()).await;
    // Saved through the outbox: the repository itself does not publish.
    let repo = Repository::<Counter>::new(Arc::new(store.clone()));
    let relay = Arc::new(
        OutboxRelay::new(store.clone(), bus.clone())
            .with_config(fast())
            .expect("valid"),
    );
    let stop = CancellationToken::new();
    let running = {
        let (relay, stop) = (Arc::clone(&relay), stop.clone());
        tokio::spawn(async move { relay.run(stop).await })
    };
    for i in 0..20u64 {
        let mut c = repo.load(&format!("agg-{}", i % 4)).await.expect("load");
        c.execute(i).expect("cmd");
        repo.save(&mut c)
            .await
            .expect("save succeeds while the bus is down");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while relay.stats().failures < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "relay never tried the down bus"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        relay.pending().await.expect("pending"),
        20,
        "everything waits in the outbox"
    );
    assert!(
        got.lock().expect("lock").is_empty(),
        "nothing delivered while down"
    );

    bus.down.store(false, Ordering::SeqCst);
    wait_for(&got, 20, "after the bus came back").await;
    stop.cancel();
    running.await.expect("relay task");
    assert_eq!(relay.pending().await.expect("pending"), 0);
    let got = got.lock().expect("lock").clone();
    for agg in 0..4 {
        let versions: Vec<u64> = got
            .iter()
            .filter(|(a, _)| *a == format!("agg-{agg}"))
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(
            versions,
            vec![1, 2, 3, 4, 5],
            "agg-{agg} delivered once each, in order"
        );
    }
    assert_eq!(relay.stats().published, 20);
    assert_eq!(
        relay
            .prune_sent(Duration::from_secs(3600))
            .await
            .expect("prune"),
        0,
        "nothing that old"
    );
    assert_eq!(
        relay.prune_sent(Duration::ZERO).await.expect("prune"),
        20,
        "every sent row"
    );
    assert_eq!(relay.pending().await.expect("pending"), 0);
}

/// While the bus hangs (each publish takes 3 s, then fails), 100 saves
/// each finish in well under a second: the relay publishes outside any
/// write transaction. When the bus is back, each event is published once.
async fn saves_do_not_wait_for_a_hanging_bus(db: &TestDb) {
    const SAVES: u64 = 100;
    let store = db.store(true).await;
    let bus = Arc::new(Switchable {
        bus: MemoryBus::new(),
        down: AtomicBool::new(true),
        stall: Duration::from_secs(3),
    });
    let got = recorder(bus.as_ref()).await;
    let repo = Repository::<Counter>::new(Arc::new(store.clone()));
    let relay = Arc::new(
        OutboxRelay::new(store.clone(), bus.clone())
            .with_config(fast())
            .expect("valid"),
    );
    let stop = CancellationToken::new();
    let running = {
        let (relay, stop) = (Arc::clone(&relay), stop.clone());
        tokio::spawn(async move { relay.run(stop).await })
    };
    let mut slowest = Duration::ZERO;
    for i in 0..SAVES {
        let started = tokio::time::Instant::now();
        let mut c = repo.load(&format!("agg-{}", i % 10)).await.expect("load");
        c.execute(i).expect("cmd");
        repo.save(&mut c)
            .await
            .expect("save succeeds while the bus hangs");
        slowest = slowest.max(started.elapsed());
    }
    println!("slowest of {SAVES} saves while the bus hung: {slowest:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "a save waited {slowest:?}: the relay holds the write lock while it publishes"
    );
    bus.down.store(false, Ordering::SeqCst);
    wait_for(&got, SAVES as usize, "after the bus came back").await;
    stop.cancel();
    running.await.expect("relay task");
    let got = got.lock().expect("lock").clone();
    let distinct: std::collections::HashSet<_> = got.iter().collect();
    assert_eq!(got.len(), distinct.len(), "each event published once");
    assert_eq!(relay.pending().await.expect("pending"), 0);
}

mod sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bus_outage_during_saves_loses_nothing() {
        let db = super::TestDb::sqlite();
        super::bus_outage_during_saves_loses_nothing(&db).await;
        db.drop_db().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn saves_do_not_wait_for_a_hanging_bus() {
        let db = super::TestDb::sqlite();
        super::saves_do_not_wait_for_a_hanging_bus(&db).await;
        db.drop_db().await;
    }
}

mod postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bus_outage_during_saves_loses_nothing() {
        let db = TestDb::postgres().await;
        super::bus_outage_during_saves_loses_nothing(&db).await;
        db.drop_db().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_relays_publish_each_event_once_in_order() {
        let db = TestDb::postgres().await;
        let store = db.store(true).await;
        let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
        let got = recorder(bus.as_ref()).await;
        let stop = CancellationToken::new();
        let relays: Vec<_> = (0..3)
            .map(|_| {
                let relay = OutboxRelay::new(store.clone(), Arc::clone(&bus))
                    .with_config(fast())
                    .expect("valid");
                let stop = stop.clone();
                tokio::spawn(async move {
                    relay.run(stop).await;
                    relay.stats().published
                })
            })
            .collect();
        for v in 1..=30u64 {
            let batch: Vec<_> = (0..5).map(|a| probe(&format!("agg-{a}"), v, v)).collect();
            for e in batch {
                store
                    .append(
                        &e.stream_name(),
                        eventsource_core::ExpectedVersion::Exact(v - 1),
                        &[e],
                    )
                    .await
                    .expect("append");
            }
        }
        wait_for(&got, 150, "three relays").await;
        tokio::time::sleep(Duration::from_millis(200)).await; // room for a duplicate to show up
        stop.cancel();
        let mut published = 0;
        for r in relays {
            published += r.await.expect("relay");
        }
        assert_eq!(published, 150, "each row published by exactly one relay");
        let got = got.lock().expect("lock").clone();
        assert_eq!(got.len(), 150, "no duplicate deliveries");
        for a in 0..5 {
            let versions: Vec<u64> = got
                .iter()
                .filter(|(x, _)| *x == format!("agg-{a}"))
                .map(|(_, v)| *v)
                .collect();
            assert_eq!(versions, (1..=30).collect::<Vec<_>>(), "agg-{a} in order");
        }
        db.drop_db().await;
    }
}
