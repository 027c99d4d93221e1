//! The memory bus's event log: the last N published events, listable.

use eventsource_bus_memory::{MemoryBus, MemoryBusConfig};
use eventsource_core::EventBus;
use eventsource_testkit::probe;

#[tokio::test]
async fn keeps_the_last_events_published_oldest_first() {
    let bus = MemoryBus::with_config(MemoryBusConfig::new().event_log(3)).expect("valid");
    let events: Vec<_> = (1..=5).map(|v| probe("a", v, v)).collect();
    bus.publish(&events[..2]).await.expect("publish");
    bus.publish(&events[2..]).await.expect("publish");
    let ids: Vec<_> = bus.event_log().iter().map(|e| e.event_id).collect();
    let want: Vec<_> = events[2..].iter().map(|e| e.event_id).collect();
    assert_eq!(ids, want, "the last three, oldest first");
}

#[tokio::test]
async fn keeps_nothing_unless_asked() {
    let bus = MemoryBus::new();
    bus.publish(&[probe("a", 1, 1)]).await.expect("publish");
    assert!(bus.event_log().is_empty());
    let err = MemoryBusConfig::new()
        .event_log(0)
        .validated()
        .expect_err("0");
    assert!(err.to_string().contains("event_log"), "{err}");
}
