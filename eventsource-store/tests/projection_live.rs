//! A projection that catches up from the store, then follows the bus live:
//! every stored event exactly once across the switch, in per-aggregate order.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventsource_bus_memory::MemoryBus;
use eventsource_core::{
    BoxError, EventBus, EventEnvelope, EventStore, ExpectedVersion, RecordedEvent,
};
use eventsource_store::{CatchUpRunner, Checkpoints, ProjectionHandler};
use eventsource_testkit::probe;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use common::TestDb;

const AGGREGATES: u64 = 10;
const PER_AGGREGATE: u64 = 100;
/// Versions per aggregate stored once the projection has caught up.
const LIVE: u64 = 10;

/// Records what it sees; slow while catching up (the first `slow` events),
/// so that the writer stores and publishes the rest meanwhile.
struct Seen {
    tx: mpsc::UnboundedSender<RecordedEvent>,
    slow: u64,
}

#[async_trait]
impl ProjectionHandler for Seen {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        if event.position <= self.slow {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let _ = self.tx.send(event.clone());
        Ok(())
    }
}

/// `n` versions (a multiple of 10) of each aggregate, from version `from`.
async fn store_round(store: &dyn EventStore, bus: Option<&dyn EventBus>, from: u64, n: u64) {
    for v in (from..from + n).step_by(10) {
        for a in 0..AGGREGATES {
            let events: Vec<EventEnvelope> = (v..v + 10)
                .map(|version| probe(&format!("a{a}"), version, version))
                .collect();
            store
                .append(&events[0].stream_name(), ExpectedVersion::Any, &events)
                .await
                .expect("append");
            // As the repository does: stored first, then published.
            if let Some(bus) = bus {
                bus.publish(&events).await.expect("publish");
            }
        }
    }
}

/// Receives until `all` holds `n` events, failing after 30 s without one.
async fn collect(
    seen: &mut mpsc::UnboundedReceiver<RecordedEvent>,
    all: &mut Vec<RecordedEvent>,
    n: u64,
) {
    while (all.len() as u64) < n {
        match tokio::time::timeout(Duration::from_secs(30), seen.recv()).await {
            Ok(Some(e)) => all.push(e),
            _ => panic!("only {} of {n} events projected", all.len()),
        }
    }
}

async fn catches_up_then_follows_the_bus_exactly_once(db: &TestDb) {
    let store = db.store(false).await;
    let events: Arc<dyn EventStore> = Arc::new(store.clone());
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
    store_round(&*events, None, 1, PER_AGGREGATE).await;
    let before = AGGREGATES * PER_AGGREGATE;

    let (tx, mut seen) = mpsc::unbounded_channel();
    let runner = CatchUpRunner::new(
        "orders-view",
        Arc::clone(&events),
        Checkpoints::new(store.clone()),
        Arc::new(Seen { tx, slow: before }),
    )
    .batch_size(100)
    // Live events must come through the bus: no polling to fall back on.
    .poll_interval(Duration::from_secs(3600));
    let stop = CancellationToken::new();
    let follow = {
        let (bus, stop) = (Arc::clone(&bus), stop.clone());
        tokio::spawn(async move { runner.follow(&*bus, "orders-view", stop).await })
    };
    // The first events are seen: the projection is catching up.
    let first = tokio::time::timeout(Duration::from_secs(30), seen.recv())
        .await
        .expect("the projection starts")
        .expect("open");
    // 1,000 more stored and published while it catches up.
    store_round(&*events, Some(&*bus), PER_AGGREGATE + 1, PER_AGGREGATE).await;
    let mut all = vec![first];
    collect(&mut seen, &mut all, 2 * before).await;
    // Caught up: 100 more now reach it only through the bus.
    store_round(&*events, Some(&*bus), 2 * PER_AGGREGATE + 1, LIVE).await;
    let total = 2 * before + AGGREGATES * LIVE;
    collect(&mut seen, &mut all, total).await;
    let extra = tokio::time::timeout(Duration::from_millis(300), seen.recv()).await;
    assert!(extra.is_err(), "an event was projected twice: {extra:?}");
    let ids: HashSet<_> = all.iter().map(|e| e.envelope.event_id).collect();
    assert_eq!(ids.len() as u64, total, "each event once");
    let mut versions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in &all {
        versions
            .entry(e.envelope.aggregate_id.clone())
            .or_default()
            .push(e.envelope.aggregate_version);
    }
    for (aggregate, v) in &versions {
        let want: Vec<u64> = (1..=2 * PER_AGGREGATE + LIVE).collect();
        assert_eq!(v, &want, "{aggregate} in order");
    }
    stop.cancel();
    follow.await.expect("the runner ends").expect("no error");
    assert_eq!(
        Checkpoints::new(store)
            .load("orders-view")
            .await
            .expect("checkpoint"),
        total,
        "the checkpoint follows the live events too"
    );
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

on_both_databases!(catches_up_then_follows_the_bus_exactly_once);
