//! A dead letter the bus cannot read — written by another tool, an older
//! version or by hand, without the `x-eventsource-*` failure headers —
//! must not stop anything: not the listing of its group, not a purge, not
//! a group that parks aggregates (which loads its DLQ before handling).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventsource_core::{
    handler_fn, DeadLetterQuery, EventBus, EventEnvelope, FailureKind, RetryPolicy, Subscription,
};

use crate::probe;

/// Declares `group` on `bus` (a member joins and leaves, so its queues or
/// topics exist), then lets `write_letters` put exactly two letters in
/// the group's DLQ with the backend's raw client, each carrying `marker`
/// in a field or the body. Checks that both list as
/// [`FailureKind::Unreadable`] (id, raw fields with the marker, the
/// reason); that a member of `group` parking aggregates handles all 20
/// events published (an unreadable letter parks nothing); that the stats
/// count them; and that one is discarded and the other purged. `patience`
/// bounds each wait.
pub async fn an_unreadable_letter_stops_nothing<F, Fut>(
    bus: &Arc<dyn EventBus>,
    group: &str,
    write_letters: F,
    marker: &str,
    patience: Duration,
) where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let first = bus
        .subscribe(
            Subscription::builder(group)
                .handler(handler_fn(|_e: EventEnvelope| async { Ok(()) }))
                .build()
                .expect("valid"),
        )
        .await
        .expect("subscribe");
    first.unsubscribe().await;
    write_letters().await;
    let dlq = bus.dead_letters();
    let letters = dlq
        .list(&DeadLetterQuery::group(group))
        .await
        .expect("a group with unreadable letters still lists");
    assert_eq!(letters.len(), 2, "both foreign letters listed: {letters:?}");
    assert!(
        letters[0].id != letters[1].id && letters.iter().all(|l| !l.id.ends_with('/')),
        "each letter has an id of its own: {:?}",
        letters.iter().map(|l| &l.id).collect::<Vec<_>>()
    );
    for l in &letters {
        assert_eq!(l.failure.kind, FailureKind::Unreadable, "{l:?}");
        assert!(l.failure.error.contains("unreadable"), "{l:?}");
        assert_eq!(l.failure.group, group);
        assert!(l.envelope().is_none());
        assert!(
            l.raw_body().is_some_and(|r| r.contains(marker)),
            "the raw fields are shown: {l:?}"
        );
        let got = dlq.get(&l.id).await.expect("get").expect("found by its id");
        assert_eq!(got.failure.kind, FailureKind::Unreadable);
    }
    assert!(
        dlq.parked(&DeadLetterQuery::group(group))
            .await
            .expect("parked")
            .is_empty(),
        "an unreadable letter parks no aggregate"
    );

    let handled = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&handled);
    let _member = bus
        .subscribe(
            Subscription::builder(group)
                .park_aggregate_on_failure(true)
                .retry(RetryPolicy::no_retry())
                .handler(handler_fn(move |_e: EventEnvelope| {
                    let h = Arc::clone(&h);
                    async move {
                        h.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    }
                }))
                .build()
                .expect("valid"),
        )
        .await
        .expect("a parking member subscribes beside unreadable letters");
    let events: Vec<_> = (1..=20).map(|i| probe(&format!("u-{i}"), 1, i)).collect();
    bus.publish(&events).await.expect("publish");
    let deadline = tokio::time::Instant::now() + patience;
    while handled.load(Ordering::SeqCst) < 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a parking group handled {} of 20 events beside an unreadable letter",
            handled.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = bus
        .group_stats(group)
        .await
        .expect("group stats")
        .expect("the group is on the broker");
    assert_eq!(stats.dead_letters, 2, "unreadable letters count: {stats:?}");

    assert!(
        dlq.discard(&letters[0].id).await.expect("discard"),
        "an unreadable letter is discarded"
    );
    let purged = dlq
        .purge(&DeadLetterQuery::group(group))
        .await
        .expect("a purge goes through an unreadable letter");
    assert_eq!(purged, 1);
    assert!(dlq
        .list(&DeadLetterQuery::group(group))
        .await
        .expect("list")
        .is_empty());
}
