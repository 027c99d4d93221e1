//! `publish_shared`: events in `Arc`s reach every group's handler without
//! being copied, in order.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventsource_bus_memory::MemoryBus;
use eventsource_core::{EventBus, EventEnvelope, EventHandler, HandlerResult, Subscription};
use eventsource_testkit::probe;
use tokio::sync::mpsc;

/// Sends the address of each envelope it is given.
struct Addresses(mpsc::UnboundedSender<(usize, u64)>);

#[async_trait]
impl EventHandler for Addresses {
    async fn handle(&self, event: &EventEnvelope) -> HandlerResult {
        let at = std::ptr::from_ref(event) as usize;
        self.0
            .send((at, event.aggregate_version))
            .expect("test alive");
        Ok(())
    }
}

#[tokio::test]
async fn shared_events_reach_every_group_uncopied_and_in_order() {
    let bus = MemoryBus::new();
    let mut seen = Vec::new();
    for group in ["one", "two"] {
        let (tx, rx) = mpsc::unbounded_channel();
        let sub = Subscription::builder(group)
            .handler(Addresses(tx))
            .build()
            .expect("valid");
        std::mem::forget(bus.subscribe(sub).await.expect("subscribe"));
        seen.push(rx);
    }
    let events: Vec<Arc<EventEnvelope>> = (1..=20).map(|v| Arc::new(probe("a", v, v))).collect();
    bus.publish_shared(&events[..7]).await.expect("publish");
    bus.publish_shared(&events[7..]).await.expect("publish");
    let want: Vec<(usize, u64)> = events
        .iter()
        .map(|e| (Arc::as_ptr(e) as usize, e.aggregate_version))
        .collect();
    for rx in &mut seen {
        let mut got = Vec::new();
        while got.len() < want.len() {
            let next = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("delivered within 5 s")
                .expect("handler alive");
            got.push(next);
        }
        assert_eq!(got, want, "the caller's envelopes, in publish order");
    }
    assert_eq!(bus.stats().await.expect("stats").published, 20);
}

#[tokio::test]
async fn a_watch_ends_at_shutdown_while_the_bus_is_still_held() {
    let bus = MemoryBus::new();
    let mut watch = bus
        .watch(eventsource_core::EventFilter::all())
        .await
        .expect("watch");
    bus.publish(&[probe("a", 1, 1)]).await.expect("publish");
    assert!(watch.next().await.expect("open").is_ok());
    bus.shutdown(Duration::from_secs(1))
        .await
        .expect("shutdown");
    let end = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("the watch ends within 5 s");
    assert!(end.is_none(), "no more events after shutdown");
    drop(bus);
}
