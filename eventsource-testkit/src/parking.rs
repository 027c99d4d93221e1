//! Order-preserving dead letters: a group that parks an aggregate behind
//! its dead letter (`park_aggregate_on_failure`) keeps that aggregate's
//! events in publish order through a failure, a fix and a replay.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use eventsource_core::{
    handler_fn, DeadLetter, DeadLetterQuery, Error, EventBus, EventEnvelope, FailureKind,
    HandlerError, ParkedAggregate, Subscription,
};

use crate::fixtures::*;
use crate::BusFactory;

/// What the parking group handled, per aggregate, in the order handled.
struct Handled {
    rx: mpsc::UnboundedReceiver<(String, u64)>,
    seen: BTreeMap<String, Vec<u64>>,
}

impl Handled {
    /// Waits until `aggregate`'s handled versions are `versions`, failing
    /// when they differ or after `patience`.
    async fn expect(&mut self, aggregate: &str, versions: &[u64], f: &dyn BusFactory) {
        let deadline = tokio::time::Instant::now() + f.patience();
        loop {
            let now = self.seen.get(aggregate).cloned().unwrap_or_default();
            assert!(
                versions.starts_with(&now),
                "`{aggregate}` handled {now:?}, expected {versions:?} in this order"
            );
            if now == versions {
                return;
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((a, v))) => self.seen.entry(a).or_default().push(v),
                Ok(None) => panic!("the handler was dropped"),
                Err(_) => panic!(
                    "`{aggregate}` handled {now:?} within {:?}, expected {versions:?}",
                    f.patience()
                ),
            }
        }
    }
}

/// A parking subscription of `group` whose handler fails permanently on
/// `broken` events (aggregate, version) while `broken_now` holds.
fn parking_sub(
    group: &str,
    broken: (&'static str, u64),
    broken_now: &Arc<AtomicBool>,
) -> (Subscription, Handled) {
    let (tx, rx) = mpsc::unbounded_channel();
    let broken_now = Arc::clone(broken_now);
    let s = Subscription::builder(group)
        .park_aggregate_on_failure(true)
        .retry(fast_retry(1))
        .concurrency(4)
        .handler(handler_fn(move |e: EventEnvelope| {
            let (tx, broken_now) = (tx.clone(), Arc::clone(&broken_now));
            async move {
                if (e.aggregate_id.as_str(), e.aggregate_version) == broken
                    && broken_now.load(Ordering::SeqCst)
                {
                    return Err(HandlerError::permanent("the bug"));
                }
                let _ = tx.send((e.aggregate_id.clone(), e.aggregate_version));
                Ok(())
            }
        }))
        .build()
        .expect("valid");
    let handled = Handled {
        rx,
        seen: BTreeMap::new(),
    };
    (s, handled)
}

/// `aggregate`'s events `versions`, with a prefix of the case's own.
fn events(
    prefix: &str,
    aggregate: &str,
    versions: std::ops::RangeInclusive<u64>,
) -> Vec<EventEnvelope> {
    versions
        .map(|v| probe(&format!("{prefix}-{aggregate}"), v, v))
        .collect()
}

/// Subscribes `s`, or, where the factory says the mode cannot park,
/// checks that `subscribe` refuses it with a typed error that says why;
/// `None` then.
async fn subscribe_parking(
    f: &dyn BusFactory,
    bus: &Arc<dyn EventBus>,
    s: Subscription,
) -> Option<eventsource_core::SubscriptionHandle> {
    if f.features().parks_aggregates {
        return Some(subscribe(bus, s).await);
    }
    let err = bus
        .subscribe(s)
        .await
        .expect_err("parking is refused in this mode");
    assert!(
        matches!(err, Error::Config(_)) && err.to_string().contains("park_aggregate_on_failure"),
        "refused with a config error naming the option: {err}"
    );
    None
}

async fn letters(bus: &Arc<dyn EventBus>, group: &str) -> Vec<DeadLetter> {
    bus.dead_letters()
        .list(&DeadLetterQuery::group(group))
        .await
        .expect("list")
}

/// X's second event fails until fixed: X's later events (published before
/// and after the failure) are parked in the DLQ, not handled; another
/// aggregate of the group and another group go on. `parked` lists X with
/// its head and count. After the fix, replaying the head handles it and
/// then the parked events, in order, before X's next new event; the DLQ
/// is empty after.
pub async fn parks_an_aggregate_behind_its_dead_letter(f: &dyn BusFactory) {
    let bus = f.bus().await;
    let prefix = uuid::Uuid::now_v7().simple().to_string();
    let x: &'static str = Box::leak(format!("{prefix}-x").into_boxed_str());
    let broken = Arc::new(AtomicBool::new(true));
    let (s, mut handled) = parking_sub("parking", (x, 2), &broken);
    let Some(_s) = subscribe_parking(f, &bus, s).await else {
        return finish(bus).await;
    };
    let (mut audit, h) = Recorder::new("group that does not park");
    let _a = subscribe(&bus, sub("audit", h)).await;
    let (xs, ys) = (events(&prefix, "x", 1..=5), events(&prefix, "y", 1..=3));
    let mixed = [
        &xs[0], &ys[0], &xs[1], &ys[1], &xs[2], &ys[2], &xs[3], &xs[4],
    ];
    publish(&bus, &mixed.map(Clone::clone)).await;
    handled.expect(&format!("{prefix}-y"), &[1, 2, 3], f).await;
    handled.expect(x, &[1], f).await;
    audit.expect(8, f.patience()).await;
    let parked = dead_letters_of(&bus, "parking", 4, f.patience()).await;
    let kinds: Vec<(u64, FailureKind)> = parked
        .iter()
        .map(|l| {
            (
                l.envelope().expect("decoded").aggregate_version,
                l.failure.kind,
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (2, FailureKind::Permanent),
            (3, FailureKind::Parked),
            (4, FailureKind::Parked),
            (5, FailureKind::Parked)
        ],
        "the failed event, then the ones parked behind it, in order"
    );
    // Published after the failure: parked too.
    publish(&bus, &events(&prefix, "x", 6..=6)).await;
    dead_letters_of(&bus, "parking", 5, f.patience()).await;
    let view = bus
        .dead_letters()
        .parked(&DeadLetterQuery::group("parking"))
        .await
        .expect("parked");
    assert_eq!(
        view,
        [ParkedAggregate {
            group: "parking".into(),
            aggregate_id: x.to_owned(),
            head: parked[0].id.clone(),
            parked: 4,
        }]
    );
    handled.expect(x, &[1], f).await;
    // The failed event counts as dead-lettered, the four behind it as parked.
    let stats = bus.stats().await.expect("stats");
    assert_eq!(
        (stats.dead_lettered, stats.parked),
        (1, 4),
        "dead-lettered and parked counts: {stats:?}"
    );
    broken.store(false, Ordering::SeqCst);
    bus.dead_letters()
        .replay(&parked[0].id)
        .await
        .expect("replay the head");
    handled.expect(x, &[1, 2, 3, 4, 5, 6], f).await;
    eventually("the group's DLQ to empty", f.patience(), || async {
        letters(&bus, "parking").await.is_empty().then_some(())
    })
    .await;
    // Released: the next event is handled at once.
    publish(&bus, &events(&prefix, "x", 7..=7)).await;
    handled.expect(x, &[1, 2, 3, 4, 5, 6, 7], f).await;
    audit.expect(2, f.patience()).await;
    assert!(
        bus.dead_letters()
            .parked(&DeadLetterQuery::all())
            .await
            .expect("parked")
            .is_empty(),
        "nothing parked after the release"
    );
    finish(bus).await;
}

/// X's second event is dropped for good: discarding its letter releases
/// X's parked events, in order, and X's next event follows them.
pub async fn discard_releases_what_is_parked_behind_it(f: &dyn BusFactory) {
    let bus = f.bus().await;
    let prefix = uuid::Uuid::now_v7().simple().to_string();
    let x: &'static str = Box::leak(format!("{prefix}-x").into_boxed_str());
    let broken = Arc::new(AtomicBool::new(true));
    let (s, mut handled) = parking_sub("discarding", (x, 2), &broken);
    let Some(_s) = subscribe_parking(f, &bus, s).await else {
        return finish(bus).await;
    };
    publish(&bus, &events(&prefix, "x", 1..=4)).await;
    let parked = dead_letters_of(&bus, "discarding", 3, f.patience()).await;
    handled.expect(x, &[1], f).await;
    assert!(
        bus.dead_letters()
            .discard(&parked[0].id)
            .await
            .expect("discard"),
        "the head existed"
    );
    handled.expect(x, &[1, 3, 4], f).await;
    publish(&bus, &events(&prefix, "x", 5..=5)).await;
    handled.expect(x, &[1, 3, 4, 5], f).await;
    eventually("the group's DLQ to empty", f.patience(), || async {
        letters(&bus, "discarding").await.is_empty().then_some(())
    })
    .await;
    finish(bus).await;
}
