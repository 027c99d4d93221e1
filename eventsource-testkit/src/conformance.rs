//! The conformance cases: one async function per promise of the delivery
//! contract, each run by every backend against a fresh bus.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use eventsource_core::{
    handler_fn, DeadLetterQuery, Error, EventEnvelope, EventFilter, HandlerError, RetryPolicy,
    Subscription,
};

use crate::fixtures::*;
use crate::{BusFactory, GroupStart};

/// One event, one group: handled exactly once, payload intact.
pub async fn delivers_once_to_one_group(f: &dyn BusFactory) {
    let bus = f.bus().await;
    let (mut rec, h) = Recorder::new("group `solo`");
    let _s = subscribe(&bus, sub("solo", h)).await;
    let sent = probe("agg-1", 1, 7)
        .with_correlation_id("corr-1")
        .with_metadata("tenant", "t1");
    publish(&bus, std::slice::from_ref(&sent)).await;
    let got = rec.expect(1, f.patience()).await;
    assert_eq!(
        got[0], sent,
        "the delivered envelope must equal the published one"
    );
    assert_eq!(
        got[0].decode::<Probe>().expect("decodes"),
        Probe::Created { n: 7 }
    );
    rec.expect_nothing(f.quiet()).await;
    let stats = bus.stats().await.expect("stats");
    assert!(
        stats.published >= 1 && stats.handled >= 1,
        "stats must count: {stats:?}"
    );
    finish(bus).await;
}

/// Two groups each get every event (fan-out).
pub async fn fans_out_to_every_group(f: &dyn BusFactory) {
    let bus = f.bus().await;
    let (mut a, ha) = Recorder::new("group `a`");
    let (mut b, hb) = Recorder::new("group `b`");
    let _sa = subscribe(&bus, sub("a", ha)).await;
    let _sb = subscribe(&bus, sub("b", hb)).await;
    let events: Vec<_> = (1..=3).map(|v| probe("agg-1", v, v)).collect();
    publish(&bus, &events).await;
    for rec in [&mut a, &mut b] {
        let got = rec.expect(3, f.patience()).await;
        let versions: Vec<u64> = got.iter().map(|e| e.aggregate_version).collect();
        assert_eq!(
            versions,
            vec![1, 2, 3],
            "{}: one aggregate, in order",
            rec.label
        );
    }
    a.expect_nothing(f.quiet()).await;
    b.expect_nothing(Duration::ZERO).await;
    finish(bus).await;
}

/// After `unsubscribe` a group's handler sees nothing more, while another
/// group still does.
pub async fn unsubscribe_stops_delivery(f: &dyn BusFactory) {
    let bus = f.bus().await;
    let (mut gone, h) = Recorder::new("unsubscribed group");
    let (mut control, hc) = Recorder::new("control group");
    let s = subscribe(&bus, sub("leaving", h)).await;
    let _c = subscribe(&bus, sub("staying", hc)).await;
    publish(&bus, &[probe("agg-1", 1, 1)]).await;
    gone.expect(1, f.patience()).await;
    control.expect(1, f.patience()).await;
    s.unsubscribe().await;
    publish(&bus, &[probe("agg-1", 2, 2)]).await;
    control.expect(1, f.patience()).await;
    gone.expect_nothing(f.quiet()).await;
    finish(bus).await;
}

/// Type, type list, aggregate type, `*` and `#` patterns, and all.
pub async fn filters_select_events(f: &dyn BusFactory) {
    let bus = f.bus().await;
    let cases: Vec<(&str, EventFilter, Vec<&str>)> = vec![
        (
            "all",
            EventFilter::all(),
            vec!["Probe.Created", "Probe.Updated", "Other.Created"],
        ),
        (
            "one-type",
            EventFilter::event_type("Updated"),
            vec!["Probe.Updated"],
        ),
        (
            "type-list",
            EventFilter::event_types(["Created", "Updated"]),
            vec!["Probe.Created", "Probe.Updated", "Other.Created"],
        ),
        (
            "aggregate",
            EventFilter::aggregate_type("Other"),
            vec!["Other.Created"],
        ),
        (
            "star",
            EventFilter::pattern("Probe.*").expect("pattern"),
            vec!["Probe.Created", "Probe.Updated"],
        ),
        (
            "hash",
            EventFilter::pattern("#.Created").expect("pattern"),
            vec!["Probe.Created", "Other.Created"],
        ),
    ];
    let mut recorders = Vec::new();
    let mut handles = Vec::new();
    for (group, filter, expected) in &cases {
        let (rec, h) = Recorder::new(&format!("filter group `{group}`"));
        let s = Subscription::builder(*group)
            .filter(filter.clone())
            .handler(h)
            .build()
            .expect("valid subscription");
        handles.push(subscribe(&bus, s).await);
        recorders.push((rec, expected.clone()));
    }
    publish(
        &bus,
        &[
            probe("p-1", 1, 1),
            EventEnvelope::new("p-1", 2, &Probe::Updated { n: 2 }).expect("encodes"),
            EventEnvelope::new("o-1", 1, &OtherCreated { n: 3 }).expect("encodes"),
        ],
    )
    .await;
    for (rec, expected) in &mut recorders {
        let got = rec.expect(expected.len(), f.patience()).await;
        let mut keys: Vec<String> = got.iter().map(EventEnvelope::routing_key).collect();
        keys.sort();
        let mut want: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        want.sort();
        assert_eq!(keys, want, "{}", rec.label);
    }
    for (rec, _) in &mut recorders {
        rec.expect_nothing(f.quiet() / 4).await;
    }
    finish(bus).await;
}

/// One group's handler always fails; another group handles everything and
/// the failing group's events end in its DLQ.
pub async fn failing_handler_does_not_affect_other_groups(f: &dyn BusFactory) {
    let bus = f.bus().await;
    let failing = Subscription::builder("broken")
        .retry(fast_retry(2))
        .handler(handler_fn(|_e| async {
            Err(HandlerError::transient("always fails"))
        }))
        .build()
        .expect("valid");
    let _b = subscribe(&bus, failing).await;
    let (mut good, h) = Recorder::new("healthy group");
    let _g = subscribe(&bus, sub("healthy", h)).await;
    let events: Vec<_> = (1..=5).map(|i| probe(&format!("agg-{i}"), 1, i)).collect();
    publish(&bus, &events).await;
    let got = good.expect(5, f.patience()).await;
    let ids: HashSet<_> = got.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), 5, "healthy group gets all five distinct events");
    let letters = dead_letters_of(&bus, "broken", 5, f.patience()).await;
    assert_eq!(
        letters.len(),
        5,
        "every event of the failing group is dead-lettered once"
    );
    assert!(
        letters.iter().all(|l| l.failure.attempts == 2),
        "each tried twice: {letters:?}"
    );
    let healthy = bus
        .dead_letters()
        .list(&DeadLetterQuery::group("healthy"))
        .await
        .expect("list");
    assert!(
        healthy.is_empty(),
        "healthy group has no dead letters: {healthy:?}"
    );
    finish(bus).await;
}

/// Fails twice, succeeds on the third attempt: handled, nothing in the DLQ.
pub async fn retries_then_succeeds(f: &dyn BusFactory) {
    let bus = f.bus().await;
    let calls = Arc::new(AtomicU32::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let c = Arc::clone(&calls);
    let s = Subscription::builder("flaky")
        .retry(fast_retry(3))
        .handler(handler_fn(move |e: EventEnvelope| {
            let c = Arc::clone(&c);
            let tx = tx.clone();
            async move {
                let attempt = c.fetch_add(1, Ordering::SeqCst) + 1;
                if attempt < 3 {
                    return Err(HandlerError::transient(format!(
                        "transient failure {attempt}"
                    )));
                }
                let _ = tx.send((attempt, e));
                Ok(())
            }
        }))
        .build()
        .expect("valid");
    let _s = subscribe(&bus, s).await;
    let sent = probe("agg-1", 1, 1);
    publish(&bus, std::slice::from_ref(&sent)).await;
    let (attempt, got) = tokio::time::timeout(f.patience(), rx.recv())
        .await
        .expect("handled within patience")
        .expect("channel open");
    assert_eq!(attempt, 3, "handled on the third attempt");
    assert_eq!(got.event_id, sent.event_id);
    assert!(
        tokio::time::timeout(f.quiet(), rx.recv()).await.is_err(),
        "no further delivery after success"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3, "exactly three attempts");
    let letters = bus
        .dead_letters()
        .list(&DeadLetterQuery::all())
        .await
        .expect("list");
    assert!(letters.is_empty(), "nothing dead-lettered: {letters:?}");
    let stats = bus.stats().await.expect("stats");
    assert!(
        stats.failed_attempts >= 2,
        "two failed attempts counted: {stats:?}"
    );
    finish(bus).await;
}

/// After `max_attempts` the message is in the DLQ with error, attempts,
/// times, group and source; `get` finds it.
pub async fn dead_letters_after_max_attempts_with_metadata(f: &dyn BusFactory) {
    let bus = f.bus().await;
    let calls = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&calls);
    let s = Subscription::builder("doomed")
        .retry(fast_retry(3))
        .handler(handler_fn(move |_e| {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            async move { Err(HandlerError::transient(format!("boom #{n}"))) }
        }))
        .build()
        .expect("valid");
    let _s = subscribe(&bus, s).await;
    let sent = probe("agg-1", 1, 1);
    let before = chrono::Utc::now();
    publish(&bus, std::slice::from_ref(&sent)).await;
    let letters = dead_letters_of(&bus, "doomed", 1, f.patience()).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let l = &letters[0];
    assert_eq!(l.group(), "doomed");
    assert_eq!(l.failure.attempts, 3, "attempts recorded");
    assert_eq!(l.failure.kind, eventsource_core::FailureKind::Exhausted);
    assert!(l.failure.handler.is_some(), "the handler is named");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "handler called max_attempts times"
    );
    assert!(
        l.failure.error.contains("boom #3"),
        "last error text kept: {}",
        l.failure.error
    );
    assert!(!l.failure.source.is_empty(), "source recorded");
    assert!(l.failure.first_failed_at >= before - chrono::Duration::seconds(5));
    assert!(
        l.failure.first_failed_at <= l.failure.last_failed_at,
        "first <= last failure"
    );
    let env = l.envelope().expect("envelope kept");
    assert_eq!(env.event_id, sent.event_id);
    assert_eq!(env.payload, sent.payload);
    let fetched = bus
        .dead_letters()
        .get(&l.id)
        .await
        .expect("get")
        .expect("found by id");
    assert_eq!(&fetched, l);
    assert!(bus
        .dead_letters()
        .get("no-such-id")
        .await
        .expect("get")
        .is_none());
    let stats = bus.stats().await.expect("stats");
    assert!(stats.dead_lettered >= 1, "{stats:?}");
    assert_eq!(
        stats.groups.get("doomed").map(|g| g.dead_letters),
        Some(1),
        "{stats:?}"
    );
    finish(bus).await;
}

/// After the bug is fixed, replay delivers the dead letter to the failing
/// group only; the other group does not see it twice.
pub async fn replay_redelivers_only_to_the_failing_group(f: &dyn BusFactory) {
    let bus = f.bus().await;
    let broken = Arc::new(AtomicBool::new(true));
    let (tx, mut fixed_rx) = mpsc::unbounded_channel();
    let b = Arc::clone(&broken);
    let s = Subscription::builder("buggy")
        .retry(fast_retry(2))
        .handler(handler_fn(move |e: EventEnvelope| {
            let b = Arc::clone(&b);
            let tx = tx.clone();
            async move {
                if b.load(Ordering::SeqCst) {
                    return Err(HandlerError::transient("bug"));
                }
                let _ = tx.send(e);
                Ok(())
            }
        }))
        .build()
        .expect("valid");
    let _s = subscribe(&bus, s).await;
    let (mut other, h) = Recorder::new("group that succeeded");
    let _o = subscribe(&bus, sub("fine", h)).await;
    let sent = probe("agg-1", 1, 1);
    publish(&bus, std::slice::from_ref(&sent)).await;
    other.expect(1, f.patience()).await;
    let letters = dead_letters_of(&bus, "buggy", 1, f.patience()).await;
    broken.store(false, Ordering::SeqCst);
    bus.dead_letters()
        .replay(&letters[0].id)
        .await
        .expect("replay");
    let got = tokio::time::timeout(f.patience(), fixed_rx.recv())
        .await
        .expect("replayed event handled within patience")
        .expect("channel open");
    assert_eq!(got.event_id, sent.event_id, "the same event comes back");
    other.expect_nothing(f.quiet()).await;
    let left = bus
        .dead_letters()
        .list(&DeadLetterQuery::group("buggy"))
        .await
        .expect("list");
    assert!(
        left.is_empty(),
        "replayed dead letter leaves the DLQ: {left:?}"
    );
    let err = bus
        .dead_letters()
        .replay(&letters[0].id)
        .await
        .expect_err("already replayed");
    assert!(
        matches!(err, Error::NotFound { .. }),
        "unknown id is NotFound: {err}"
    );
    finish(bus).await;
}

/// 6 events for each of 3 aggregates, concurrency 4: never two events of
/// one aggregate at once, every aggregate's events in order, and more than
/// one handler running at once.
pub async fn keeps_per_aggregate_order_under_concurrency(f: &dyn BusFactory) {
    const AGGREGATES: u64 = 3;
    const PER: u64 = 6;
    let bus = f.bus().await;
    let seen: Arc<Mutex<BTreeMap<String, Vec<u64>>>> = Arc::default();
    let running = Arc::new(AtomicUsize::new(0));
    let max_running = Arc::new(AtomicUsize::new(0));
    let in_handler: Arc<Mutex<HashSet<String>>> = Arc::default();
    let overlaps: Arc<Mutex<Vec<String>>> = Arc::default();
    let (tx, mut done) = mpsc::unbounded_channel::<()>();
    let (s2, r2, m2) = (
        Arc::clone(&seen),
        Arc::clone(&running),
        Arc::clone(&max_running),
    );
    let (i2, o2) = (Arc::clone(&in_handler), Arc::clone(&overlaps));
    let s = Subscription::builder("ordered")
        .concurrency(4)
        .handler(handler_fn(move |e: EventEnvelope| {
            let (seen, running, max_running, tx) = (
                Arc::clone(&s2),
                Arc::clone(&r2),
                Arc::clone(&m2),
                tx.clone(),
            );
            let (in_handler, overlaps) = (Arc::clone(&i2), Arc::clone(&o2));
            async move {
                if !in_handler
                    .lock()
                    .expect("lock")
                    .insert(e.aggregate_id.clone())
                {
                    overlaps
                        .lock()
                        .expect("lock")
                        .push(format!("{} v{}", e.aggregate_id, e.aggregate_version));
                }
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                max_running.fetch_max(now, Ordering::SeqCst);
                // Simulated work of varying length, so that interleavings differ.
                tokio::time::sleep(Duration::from_millis(fastrand::u64(2..12))).await;
                seen.lock()
                    .expect("lock")
                    .entry(e.aggregate_id.clone())
                    .or_default()
                    .push(e.aggregate_version);
                running.fetch_sub(1, Ordering::SeqCst);
                in_handler.lock().expect("lock").remove(&e.aggregate_id);
                let _ = tx.send(());
                Ok(())
            }
        }))
        .build()
        .expect("valid");
    let _s = subscribe(&bus, s).await;
    let mut events = Vec::new();
    for v in 1..=PER {
        for a in 0..AGGREGATES {
            events.push(probe(&format!("agg-{a}"), v, v));
        }
    }
    publish(&bus, &events).await;
    let total = usize::try_from(AGGREGATES * PER).expect("small");
    for i in 0..total {
        tokio::time::timeout(f.patience(), done.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {i} of {total} events handled; seen {:?}",
                    seen.lock().expect("lock")
                )
            })
            .expect("channel open");
    }
    let seen = seen.lock().expect("lock").clone();
    let overlaps = overlaps.lock().expect("lock").clone();
    assert!(
        overlaps.is_empty(),
        "events of one aggregate handled at the same time: {overlaps:?}"
    );
    assert_eq!(seen.len() as u64, AGGREGATES, "{seen:?}");
    for (agg, versions) in &seen {
        assert_eq!(
            versions,
            &(1..=PER).collect::<Vec<_>>(),
            "aggregate {agg} out of order or duplicated"
        );
    }
    assert!(
        max_running.load(Ordering::SeqCst) >= 2,
        "different aggregates must run concurrently"
    );
    finish(bus).await;
}

/// Two members of one group: together they handle every event once, and
/// both do some of the work.
pub async fn competing_consumers_split_work_without_loss_or_duplicates(f: &dyn BusFactory) {
    const EVENTS: u64 = 40;
    let bus = f.bus().await;
    let by_member: Arc<Mutex<HashMap<&'static str, Vec<uuid::Uuid>>>> = Arc::default();
    let (tx, mut done) = mpsc::unbounded_channel::<()>();
    let mut handles = Vec::new();
    for member in ["member-1", "member-2"] {
        let (by_member, tx) = (Arc::clone(&by_member), tx.clone());
        let s = Subscription::builder("workers")
            .handler(handler_fn(move |e: EventEnvelope| {
                let (by_member, tx) = (Arc::clone(&by_member), tx.clone());
                async move {
                    // Simulated work, so that one member cannot take everything.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    by_member
                        .lock()
                        .expect("lock")
                        .entry(member)
                        .or_default()
                        .push(e.event_id);
                    let _ = tx.send(());
                    Ok(())
                }
            }))
            .build()
            .expect("valid");
        handles.push(subscribe(&bus, s).await);
    }
    let events: Vec<_> = (0..EVENTS)
        .map(|i| probe(&format!("agg-{i}"), 1, i))
        .collect();
    publish(&bus, &events).await;
    for i in 0..EVENTS {
        tokio::time::timeout(f.patience(), done.recv())
            .await
            .unwrap_or_else(|_| panic!("only {i} of {EVENTS} events handled"))
            .expect("channel open");
    }
    assert!(
        tokio::time::timeout(f.quiet(), done.recv()).await.is_err(),
        "a duplicate delivery arrived"
    );
    let by_member = by_member.lock().expect("lock").clone();
    let all: Vec<uuid::Uuid> = by_member.values().flatten().copied().collect();
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(all.len() as u64, EVENTS, "no duplicates: {by_member:?}");
    let sent: HashSet<_> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(distinct, sent.iter().collect(), "no loss");
    assert!(
        by_member.len() == 2 && by_member.values().all(|v| !v.is_empty()),
        "both members must get work: {:?}",
        by_member
            .iter()
            .map(|(k, v)| (k, v.len()))
            .collect::<Vec<_>>()
    );
    finish(bus).await;
}

/// A payload the handler cannot decode goes straight to the DLQ (one
/// attempt, though five are allowed) and the next event is handled.
pub async fn undecodable_payload_goes_to_dlq_without_stopping_the_consumer(f: &dyn BusFactory) {
    let bus = f.bus().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let s = Subscription::builder("typed")
        .retry(RetryPolicy::fixed(5, Duration::from_secs(2)).expect("valid"))
        .handler(handler_fn(move |e: EventEnvelope| {
            let tx = tx.clone();
            async move {
                let event: Probe = e.decode()?;
                let _ = tx.send(event);
                Ok(())
            }
        }))
        .build()
        .expect("valid");
    let _s = subscribe(&bus, s).await;
    let mut bad = probe("agg-bad", 1, 1);
    bad.payload = serde_json::json!({"type": "Created", "n": "not a number"});
    publish(&bus, &[bad.clone(), probe("agg-good", 1, 42)]).await;
    let got = tokio::time::timeout(f.patience(), rx.recv())
        .await
        .expect("the good event is handled")
        .expect("open");
    assert_eq!(got, Probe::Created { n: 42 });
    let letters = dead_letters_of(&bus, "typed", 1, Duration::from_secs(3)).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(
        letters[0].failure.attempts, 1,
        "decode failures are not retried"
    );
    assert_eq!(
        letters[0].failure.kind,
        eventsource_core::FailureKind::Permanent
    );
    assert!(
        letters[0].failure.error.contains("cannot decode"),
        "{}",
        letters[0].failure.error
    );
    assert_eq!(
        letters[0].envelope().map(|e| e.event_id),
        Some(bad.event_id)
    );
    finish(bus).await;
}

/// A panic counts as a failed attempt: retried, then dead-lettered with the
/// panic message; the consumer keeps going.
pub async fn panicking_handler_is_retried_like_a_failure(f: &dyn BusFactory) {
    let bus = f.bus().await;
    let calls = Arc::new(AtomicU32::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let c = Arc::clone(&calls);
    let s = Subscription::builder("panicky")
        .retry(fast_retry(2))
        .handler(handler_fn(move |e: EventEnvelope| {
            let c = Arc::clone(&c);
            let tx = tx.clone();
            async move {
                let attempt = c.fetch_add(1, Ordering::SeqCst) + 1;
                let n = e.decode::<Probe>()?;
                if n == (Probe::Created { n: 1 }) && attempt == 1 {
                    panic!("first attempt panics");
                }
                if n == (Probe::Created { n: 2 }) {
                    panic!("always panics on n=2");
                }
                let _ = tx.send(n);
                Ok::<(), HandlerError>(())
            }
        }))
        .build()
        .expect("valid");
    let _s = subscribe(&bus, s).await;
    publish(&bus, &[probe("agg-1", 1, 1)]).await;
    let got = tokio::time::timeout(f.patience(), rx.recv())
        .await
        .expect("retried after panic")
        .expect("open");
    assert_eq!(got, Probe::Created { n: 1 });
    publish(&bus, &[probe("agg-2", 1, 2), probe("agg-3", 1, 3)]).await;
    let got = tokio::time::timeout(f.patience(), rx.recv())
        .await
        .expect("consumer survives panics")
        .expect("open");
    assert_eq!(got, Probe::Created { n: 3 });
    let letters = dead_letters_of(&bus, "panicky", 1, f.patience()).await;
    assert_eq!(letters[0].failure.attempts, 2);
    assert_eq!(
        letters[0].failure.kind,
        eventsource_core::FailureKind::Exhausted
    );
    assert!(
        letters[0].failure.error.contains("always panics on n=2"),
        "{}",
        letters[0].failure.error
    );
    finish(bus).await;
}

/// `delete` removes one dead letter, `delete_many` several, `purge` a
/// group's; others stay.
pub async fn dead_letters_can_be_deleted_and_purged(f: &dyn BusFactory) {
    let bus = f.bus().await;
    for group in ["purge-a", "purge-b"] {
        let s = Subscription::builder(group)
            .retry(RetryPolicy::no_retry())
            .handler(handler_fn(|_e| async {
                Err(HandlerError::transient("nope"))
            }))
            .build()
            .expect("valid");
        subscribe(&bus, s).await;
    }
    let events: Vec<_> = (1..=3).map(|i| probe(&format!("agg-{i}"), 1, i)).collect();
    publish(&bus, &events).await;
    let a = dead_letters_of(&bus, "purge-a", 3, f.patience()).await;
    dead_letters_of(&bus, "purge-b", 3, f.patience()).await;
    let dlq = bus.dead_letters();
    assert!(
        dlq.delete(&a[0].id).await.expect("delete"),
        "existing letter deleted"
    );
    assert!(
        !dlq.delete(&a[0].id).await.expect("delete"),
        "second delete finds nothing"
    );
    let limited = dlq
        .list(&DeadLetterQuery::all().limit(2))
        .await
        .expect("list");
    assert_eq!(limited.len(), 2, "limit respected");
    assert_eq!(
        dlq.purge(&DeadLetterQuery::group("purge-a"))
            .await
            .expect("purge"),
        2
    );
    assert!(dlq
        .list(&DeadLetterQuery::group("purge-a"))
        .await
        .expect("list")
        .is_empty());
    assert_eq!(
        dlq.list(&DeadLetterQuery::group("purge-b"))
            .await
            .expect("list")
            .len(),
        3,
        "other group untouched"
    );
    let b = dlq
        .list(&DeadLetterQuery::group("purge-b"))
        .await
        .expect("list");
    let ids = [
        b[0].id.clone(),
        b[2].id.clone(),
        b[0].id.clone(),
        "purge-b/no-such-letter".to_owned(),
    ];
    assert_eq!(
        dlq.delete_many(&ids).await.expect("delete_many"),
        2,
        "two of the ids name letters (one twice, one none)"
    );
    let left: Vec<String> = dlq
        .list(&DeadLetterQuery::group("purge-b"))
        .await
        .expect("list")
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(left, [b[1].id.clone()], "only the letter not named is left");
    assert_eq!(
        dlq.purge(&DeadLetterQuery::group("purge-b").limit(1))
            .await
            .expect("purge with a limit"),
        1
    );
    assert!(dlq
        .list(&DeadLetterQuery::group("purge-b"))
        .await
        .expect("list")
        .is_empty());
    finish(bus).await;
}

/// `shutdown` waits for a handler that is running, refuses new publishes,
/// and reports a clean drain.
pub async fn shutdown_lets_in_flight_handlers_finish(f: &dyn BusFactory) {
    let bus = f.bus().await;
    let finished = Arc::new(AtomicBool::new(false));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let fin = Arc::clone(&finished);
    let s = Subscription::builder("slow")
        .handler(handler_fn(move |_e| {
            let (fin, started_tx) = (Arc::clone(&fin), started_tx.clone());
            async move {
                let _ = started_tx.send(());
                // Simulated slow work in flight while shutdown begins.
                tokio::time::sleep(Duration::from_millis(300)).await;
                fin.store(true, Ordering::SeqCst);
                Ok(())
            }
        }))
        .build()
        .expect("valid");
    let _s = subscribe(&bus, s).await;
    publish(&bus, &[probe("agg-1", 1, 1)]).await;
    tokio::time::timeout(f.patience(), started.recv())
        .await
        .expect("handler started")
        .expect("open");
    let report = bus
        .shutdown(Duration::from_secs(10))
        .await
        .expect("shutdown");
    assert!(
        finished.load(Ordering::SeqCst),
        "in-flight handler finished before shutdown returned"
    );
    assert!(report.drained && report.abandoned == 0, "{report:?}");
    let err = bus
        .publish(&[probe("agg-1", 2, 2)])
        .await
        .expect_err("publish after shutdown");
    assert!(matches!(err, Error::ShutDown(_)), "{err}");
    let err = bus
        .subscribe(sub("late", handler_fn(|_e| async { Ok(()) })))
        .await
        .expect_err("subscribe after shutdown");
    assert!(matches!(err, Error::ShutDown(_)), "{err}");
}

/// A group that never existed starts where [`Features::new_group_starts_at`](crate::Features::new_group_starts_at)
/// says: an event published before its first member subscribed is
/// delivered (earliest) or not (new events), and the one published after
/// always is.
pub async fn a_new_group_starts_where_the_backend_says(f: &dyn BusFactory) {
    let bus = f.bus().await;
    // Another group exists, so the event has somewhere to go on every broker.
    let (mut first, h) = Recorder::new("group `first`");
    let _first = subscribe(&bus, sub("first", h)).await;
    let before = probe("early", 1, 1);
    publish(&bus, std::slice::from_ref(&before)).await;
    first.expect(1, f.patience()).await;
    let (mut late, h) = Recorder::new("group `late`");
    let _late = subscribe(&bus, sub("late", h)).await;
    let after = probe("later", 1, 2);
    publish(&bus, std::slice::from_ref(&after)).await;
    let want = match f.features().new_group_starts_at {
        GroupStart::Earliest => vec![before.event_id, after.event_id],
        GroupStart::NewEvents => vec![after.event_id],
    };
    // Two aggregates: no order between them is promised (on Kafka they
    // are in two partitions, read side by side).
    let mut got: Vec<_> = late
        .expect(want.len(), f.patience())
        .await
        .iter()
        .map(|e| e.event_id)
        .collect();
    got.sort();
    let mut want = want;
    want.sort();
    assert_eq!(
        got,
        want,
        "a new group starts at {:?}",
        f.features().new_group_starts_at
    );
    late.expect_nothing(f.quiet()).await;
    finish(bus).await;
}

/// What a bus reports of a group comes from the broker: another process,
/// which never subscribed, sees the group's dead letter and the backlog
/// that piles up while no member runs
/// ([`EventBus::group_stats`](eventsource_core::EventBus::group_stats)),
/// and no group under a name never used.
pub async fn group_stats_come_from_the_broker(f: &dyn BusFactory) {
    let peers = f.peers(2).await;
    let (app, operator) = (&peers[0], &peers[1]);
    let (tx, mut handled) = mpsc::unbounded_channel();
    let s = Subscription::builder("audited")
        .retry(RetryPolicy::no_retry())
        .handler(handler_fn(move |e| {
            let tx = tx.clone();
            async move {
                if e.aggregate_id == "bad" {
                    return Err(HandlerError::permanent("bad aggregate"));
                }
                let _ = tx.send(e.event_id);
                Ok(())
            }
        }))
        .build()
        .expect("valid");
    let member = subscribe(app, s).await;
    let good = probe("good", 1, 2);
    publish(app, &[probe("bad", 1, 1), good.clone()]).await;
    let got = tokio::time::timeout(f.patience(), handled.recv())
        .await
        .expect("the good event handled")
        .expect("open");
    assert_eq!(got, good.event_id);
    dead_letters_of(app, "audited", 1, f.patience()).await;
    member.unsubscribe().await;
    let backlog: Vec<_> = (1..=5).map(|i| probe("later", i, 10 + i)).collect();
    publish(app, &backlog).await;
    let seen = eventually(
        "the operator's bus to see 1 dead letter and 5 pending events of `audited`",
        f.patience(),
        || async {
            let stats = operator
                .group_stats("audited")
                .await
                .expect("group stats")?;
            (stats.dead_letters == 1 && stats.pending == 5).then_some(stats)
        },
    )
    .await;
    assert_eq!(seen.in_flight, 0, "{seen:?}");
    assert_eq!(
        operator
            .group_stats("never-used")
            .await
            .expect("group stats"),
        None,
        "a group nobody ever joined is not reported"
    );
    for bus in peers {
        finish(bus).await;
    }
}

/// [`EventBus::watch`](eventsource_core::EventBus::watch) follows the
/// events published after it began that its filter selects, in order, and
/// takes none from the consumer groups; it ends when the bus shuts down.
pub async fn a_watch_follows_new_events_without_taking_any(f: &dyn BusFactory) {
    let bus = f.bus().await;
    let (mut work, h) = Recorder::new("group `work`");
    let _work = subscribe(&bus, sub("work", h)).await;
    publish(&bus, &[probe("before", 1, 1)]).await;
    work.expect(1, f.patience()).await;
    let mut watch = bus
        .watch(EventFilter::aggregate_type("Probe"))
        .await
        .expect("watch");
    let other = EventEnvelope::new("o-1", 1, &OtherCreated { n: 9 }).expect("encode");
    let probes: Vec<_> = (1..=3).map(|v| probe("watched", v, 10 + v)).collect();
    publish(&bus, &[probes[0].clone(), other, probes[1].clone()]).await;
    publish(&bus, &probes[2..]).await;
    let mut seen = Vec::new();
    while seen.len() < probes.len() {
        let event = tokio::time::timeout(f.patience(), watch.next())
            .await
            .expect("watched events arrive")
            .expect("the watch is open")
            .expect("a decodable event");
        seen.push(event.event_id);
    }
    let want: Vec<_> = probes.iter().map(|e| e.event_id).collect();
    assert_eq!(
        seen, want,
        "the Probe events published after the watch, in order"
    );
    assert!(
        tokio::time::timeout(f.quiet(), watch.next()).await.is_err(),
        "nothing else: not the event before the watch, not the Other one"
    );
    // The group still gets all four: the watch took nothing from it.
    work.expect(4, f.patience()).await;
    // Shutting the bus down ends the watch.
    finish(bus).await;
    let end = tokio::time::timeout(f.patience(), async {
        // Events still buffered may come first; then the end.
        while let Some(item) = watch.next().await {
            drop(item);
        }
    })
    .await;
    assert!(end.is_ok(), "the watch ends when the bus shuts down");
}

/// A retry's backoff holds its aggregate, not the worker: with one
/// worker (`concurrency(1)`, the default), aggregate A's first event fails
/// and waits a 5 s backoff while all 100 events of aggregate B are
/// handled; then A's retry succeeds, and A's second event follows it, in
/// order. (Before, the worker slept through the backoff and B waited.)
pub async fn a_retry_backoff_does_not_hold_the_worker(f: &dyn BusFactory) {
    const BACKOFF: Duration = Duration::from_secs(5);
    const B_EVENTS: u64 = 100;
    let bus = f.bus().await;
    let b_handled = Arc::new(AtomicUsize::new(0));
    let a_failed = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (b, failed) = (Arc::clone(&b_handled), Arc::clone(&a_failed));
    let s = Subscription::builder("patient")
        .concurrency(1)
        .retry(RetryPolicy::fixed(3, BACKOFF).expect("valid policy"))
        .handler(handler_fn(move |e: EventEnvelope| {
            let (b, failed, tx) = (Arc::clone(&b), Arc::clone(&failed), tx.clone());
            async move {
                if e.aggregate_id == "B" {
                    b.fetch_add(1, Ordering::SeqCst);
                    return Ok(());
                }
                if e.aggregate_version == 1 && !failed.swap(true, Ordering::SeqCst) {
                    let _ = tx.send((e.aggregate_version, None, std::time::Instant::now()));
                    return Err(HandlerError::transient("A is not ready yet"));
                }
                // A's attempt after the backoff: how much of B was done by then.
                let _ = tx.send((
                    e.aggregate_version,
                    Some(b.load(Ordering::SeqCst)),
                    std::time::Instant::now(),
                ));
                Ok(())
            }
        }))
        .build()
        .expect("valid");
    let _s = subscribe(&bus, s).await;
    let mut events = vec![probe("A", 1, 1), probe("A", 2, 2)];
    events.extend((1..=B_EVENTS).map(|v| probe("B", v, 100 + v)));
    publish(&bus, &events).await;

    type Seen = (u64, Option<usize>, std::time::Instant);
    async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>, wait: Duration) -> Seen {
        tokio::time::timeout(wait, rx.recv())
            .await
            .expect("A's events are handled within patience + the backoff")
            .expect("open")
    }
    let wait = f.patience() + BACKOFF;
    let (v, _, failed_at) = next(&mut rx, wait).await;
    assert_eq!(v, 1, "A's first event is attempted first, and fails");
    let (v, b_done, retried_at) = next(&mut rx, wait).await;
    assert_eq!(v, 1, "A's first event is retried before its second");
    assert!(
        retried_at.duration_since(failed_at) >= BACKOFF - Duration::from_millis(50),
        "the retry waited its backoff ({:?})",
        retried_at.duration_since(failed_at)
    );
    assert_eq!(
        b_done,
        Some(B_EVENTS as usize),
        "all of B was handled while A waited its backoff, with one worker"
    );
    let (v, _, _) = next(&mut rx, wait).await;
    assert_eq!(v, 2, "A's second event follows its first, in order");
    assert!(
        tokio::time::timeout(f.quiet(), rx.recv()).await.is_err(),
        "nothing of A handled twice"
    );
    assert_eq!(b_handled.load(Ordering::SeqCst), B_EVENTS as usize);
    finish(bus).await;
}

/// Only a replay marks an event for one group: an event published with
/// the replay markers in its metadata — as a handler that copies the
/// metadata of the replayed event it handles into a follow-up does — is
/// delivered to every group, without the markers. (Before, every group
/// but the named one skipped it on Redis, RabbitMQ and Kafka, silently.)
pub async fn a_forged_replay_marker_reaches_every_group(f: &dyn BusFactory) {
    let bus = f.bus().await;
    let (mut billing, h1) = Recorder::new("group `billing`");
    let (mut shipping, h2) = Recorder::new("group `shipping`");
    let _b = subscribe(
        &bus,
        Subscription::builder("billing")
            .handler(h1)
            .build()
            .expect("valid"),
    )
    .await;
    let _s = subscribe(
        &bus,
        Subscription::builder("shipping")
            .handler(h2)
            .build()
            .expect("valid"),
    )
    .await;
    let mut follow_up = probe("agg-forged", 1, 1);
    follow_up.metadata.insert(
        eventsource_core::REPLAYED_FOR.to_owned(),
        "other".to_owned(),
    );
    follow_up.metadata.insert(
        eventsource_core::REPLAYED_FROM.to_owned(),
        "other/1-0".to_owned(),
    );
    follow_up
        .metadata
        .insert("tenant".to_owned(), "kept".to_owned());
    publish(&bus, std::slice::from_ref(&follow_up)).await;
    for rec in [&mut billing, &mut shipping] {
        let got = rec.expect(1, f.patience()).await;
        assert_eq!(got[0].event_id, follow_up.event_id, "{}", rec.label);
        assert!(
            !got[0].metadata.contains_key(eventsource_core::REPLAYED_FOR)
                && !got[0]
                    .metadata
                    .contains_key(eventsource_core::REPLAYED_FROM),
            "{}: the markers are stripped: {:?}",
            rec.label,
            got[0].metadata
        );
        assert_eq!(
            got[0].metadata.get("tenant").map(String::as_str),
            Some("kept")
        );
    }
    finish(bus).await;
}
