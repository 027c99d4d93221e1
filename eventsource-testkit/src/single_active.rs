//! One active member (`single_active_consumer` on Redis and RabbitMQ):
//! one member of a group reads while the others stand by, and a standby
//! takes over when the active one leaves.

use std::sync::Arc;
use std::time::Duration;

use eventsource_core::{EventBus, Subscription};

use crate::fixtures::{probe, Recorder};

/// Subscribes two members of group `sam` on `bus` (configured with one
/// active member; four workers each): the first gets all six events of
/// an aggregate, in order, and the second nothing over `quiet`; once the
/// first leaves, the second gets the next three, in order. Shuts `bus`
/// down.
pub async fn one_member_reads_and_a_standby_takes_over(bus: Arc<dyn EventBus>, quiet: Duration) {
    let (mut first, h1) = Recorder::new("active member");
    let (mut second, h2) = Recorder::new("standby member");
    let member = |h| {
        Subscription::builder("sam")
            .concurrency(4)
            .handler(h)
            .build()
            .expect("valid")
    };
    let s1 = bus.subscribe(member(h1)).await.expect("subscribe first");
    let _s2 = bus.subscribe(member(h2)).await.expect("subscribe second");
    let versions = |got: Vec<eventsource_core::EventEnvelope>| {
        got.iter().map(|e| e.aggregate_version).collect::<Vec<_>>()
    };
    let events: Vec<_> = (1..=6).map(|v| probe("agg-1", v, v)).collect();
    bus.publish(&events).await.expect("publish");
    assert_eq!(
        versions(first.expect(6, Duration::from_secs(10)).await),
        vec![1, 2, 3, 4, 5, 6]
    );
    second.expect_nothing(quiet).await;

    s1.unsubscribe().await; // gives the lease up
    let more: Vec<_> = (7..=9).map(|v| probe("agg-1", v, v)).collect();
    bus.publish(&more).await.expect("publish");
    assert_eq!(
        versions(second.expect(3, Duration::from_secs(10)).await),
        vec![7, 8, 9],
        "the standby took over"
    );
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}
