//! Targeted replay on SQLite and PostgreSQL: the selection counts what
//! it sends, the copies reach one group once each, a replay cut off
//! resumes without repeating what it delivered, the rate holds, and an
//! inbox skips a copy unless the replay reprocesses.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use eventsource_bus_memory::MemoryBus;
use eventsource_core::{
    BusStats, DeadLetterQueue, Error, EventBus, EventEnvelope, EventHandler, EventStore,
    ExpectedVersion, HandlerError, HandlerResult, Result, ShutdownReport, Subscription,
    SubscriptionHandle, REPLAY_ID, REPROCESS,
};
use eventsource_store::{
    sqlx, Inbox, InboxHandler, ReplayOptions, ReplaySelection, SqlEventStore, TargetedReplay,
};
use eventsource_testkit::{OtherCreated, Probe, Recorder};

use common::TestDb;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

/// 300 `Probe` events (10 aggregates `p-0`..`p-9` of 30, odd versions
/// `Created`, even `Updated`) then 50 `Other` events (`o-0`), the i-th
/// (from 0) occurring at t0 + i s, at positions 1..=350.
async fn stored(db: &TestDb) -> SqlEventStore {
    let store = db.store(false).await;
    let mut i = 0;
    for v in 1..=30_u64 {
        for a in 0..10 {
            let event = if v % 2 == 1 {
                Probe::Created { n: v }
            } else {
                Probe::Updated { n: v }
            };
            let mut e = EventEnvelope::new(format!("p-{a}"), v, &event).expect("encode");
            e.occurred_at = t0() + chrono::Duration::seconds(i);
            i += 1;
            store
                .append(&e.stream_name(), ExpectedVersion::Any, &[e])
                .await
                .expect("append");
        }
    }
    let others: Vec<EventEnvelope> = (1..=50_u64)
        .map(|v| {
            let mut e = EventEnvelope::new("o-0", v, &OtherCreated { n: v }).expect("encode");
            e.occurred_at = t0() + chrono::Duration::seconds(300 + v as i64 - 1);
            e
        })
        .collect();
    store
        .append("Other-o-0", ExpectedVersion::Any, &others)
        .await
        .expect("append");
    store
}

async fn each_db(case: impl AsyncFn(&TestDb)) {
    let db = TestDb::sqlite();
    case(&db).await;
    db.drop_db().await;
    let db = TestDb::postgres().await;
    case(&db).await;
    db.drop_db().await;
}

/// Every condition counts what it selects; a selection that cannot
/// select anything is refused naming its fields.
#[tokio::test]
async fn a_selection_counts_what_it_selects() {
    each_db(async |db| {
        let replays = TargetedReplay::new(stored(db).await);
        let at = |s: i64| t0() + chrono::Duration::seconds(s);
        let cases = [
            (ReplaySelection::new(), 350),
            (ReplaySelection::new().from_position(11).to_position(20), 10),
            (ReplaySelection::new().since(at(100)).until(at(200)), 100),
            (ReplaySelection::new().aggregate_type("Other"), 50),
            (
                ReplaySelection::new()
                    .aggregate_id("p-1")
                    .aggregate_id("p-2"),
                60,
            ),
            (ReplaySelection::new().event_type("Updated"), 150),
            (
                ReplaySelection::new()
                    .aggregate_type("Probe")
                    .event_type("Updated")
                    .aggregate_id("p-1"),
                15,
            ),
            (ReplaySelection::new().aggregate_type("Nope"), 0),
        ];
        for (selection, expected) in cases {
            assert_eq!(
                replays.count(&selection).await.expect("count"),
                expected,
                "{selection:?} on {}",
                db.url
            );
        }
        let err = replays
            .count(&ReplaySelection::new().from_position(5).to_position(4))
            .await
            .expect_err("from after to");
        assert!(
            matches!(err, Error::Config(_)) && err.to_string().contains("from_position"),
            "{err}"
        );
    })
    .await;
}

/// A bus that fails its `fail_at`-th redeliver (counting from 1), and
/// otherwise is `inner`.
struct FailingOnce {
    inner: Arc<dyn EventBus>,
    calls: AtomicUsize,
    fail_at: usize,
}

#[async_trait]
impl EventBus for FailingOnce {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn publish(&self, events: &[EventEnvelope]) -> Result<()> {
        self.inner.publish(events).await
    }
    async fn subscribe(&self, s: Subscription) -> Result<SubscriptionHandle> {
        self.inner.subscribe(s).await
    }
    async fn redeliver(&self, group: &str, events: &[EventEnvelope]) -> Result<()> {
        if self.calls.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_at {
            return Err(Error::config("the process died here"));
        }
        self.inner.redeliver(group, events).await
    }
    fn dead_letters(&self) -> Arc<dyn DeadLetterQueue> {
        self.inner.dead_letters()
    }
    async fn stats(&self) -> Result<BusStats> {
        self.inner.stats().await
    }
    async fn shutdown(&self, timeout: Duration) -> Result<ShutdownReport> {
        self.inner.shutdown(timeout).await
    }
}

/// A time slice of 100 events to group `g` (batches of 25), cut off at
/// its third batch: 50 delivered and checkpointed. Resumed: the other
/// 50, so `g` gets each selected event exactly once, marked with the
/// replay id, and the dry-run count equals the delivered count; `h`
/// gets nothing; running it again sends nothing.
#[tokio::test]
async fn a_replay_reaches_one_group_once_and_resumes_where_it_stopped() {
    each_db(async |db| {
        let replays = TargetedReplay::new(stored(db).await);
        let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
        let (mut g, h) = Recorder::new("replayed group");
        let _g = bus
            .subscribe(
                Subscription::builder("g")
                    .handler(h)
                    .build()
                    .expect("valid"),
            )
            .await
            .expect("subscribe");
        let (mut other, h) = Recorder::new("other group");
        let _h = bus
            .subscribe(
                Subscription::builder("h")
                    .handler(h)
                    .build()
                    .expect("valid"),
            )
            .await
            .expect("subscribe");
        let slice = ReplaySelection::new()
            .since(t0() + chrono::Duration::seconds(100))
            .until(t0() + chrono::Duration::seconds(200));
        let dry_run = replays.count(&slice).await.expect("count");
        let replay = replays
            .start("g", slice, ReplayOptions::new().batch(25))
            .await
            .expect("start");
        assert_eq!((replay.total, replay.delivered), (dry_run, 0));
        let failing = FailingOnce {
            inner: Arc::clone(&bus),
            calls: AtomicUsize::new(0),
            fail_at: 3,
        };
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&seen);
        replays
            .run(&replay.id, &failing, &move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
            })
            .await
            .expect_err("cut off at the third batch");
        let cut = replays
            .status(&replay.id)
            .await
            .expect("status")
            .expect("recorded");
        assert_eq!((cut.delivered, cut.finished_at), (50, None), "{cut}");
        assert_eq!(seen.load(Ordering::SeqCst), 2, "progress after each batch");
        let done = replays
            .run(&replay.id, &*bus, &|_| {})
            .await
            .expect("resumed");
        assert_eq!(done.delivered, dry_run);
        assert!(done.finished_at.is_some());
        let got = g.expect(100, Duration::from_secs(10)).await;
        let mut per_event: BTreeMap<_, usize> = BTreeMap::new();
        for e in &got {
            *per_event.entry(e.event_id).or_default() += 1;
            assert_eq!(e.metadata.get(REPLAY_ID), Some(&replay.id));
            assert!(!e.metadata.contains_key(REPROCESS));
            assert!(e.aggregate_type == "Probe", "only the slice");
        }
        assert_eq!(per_event.len(), 100, "every selected event");
        assert!(per_event.values().all(|&n| n == 1), "none twice");
        g.expect_nothing(Duration::from_millis(300)).await;
        other.expect_nothing(Duration::from_millis(100)).await;
        let again = replays
            .run(&replay.id, &*bus, &|_| {})
            .await
            .expect("finished");
        assert_eq!(again.delivered, dry_run);
        g.expect_nothing(Duration::from_millis(100)).await;
        let listed = replays.list().await.expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, replay.id);
        bus.shutdown(Duration::from_secs(5))
            .await
            .expect("shutdown");
    })
    .await;
}

/// 1,000 events at 1,000/s in batches of 50: the group sees them over at
/// least 0.95 s, an observed rate within 1.1 × the cap.
#[tokio::test]
async fn a_replay_keeps_to_its_rate() {
    let db = TestDb::sqlite();
    let store = db.store(false).await;
    let events: Vec<EventEnvelope> = (1..=1000_u64)
        .map(|v| EventEnvelope::new("r-1", v, &Probe::Created { n: v }).expect("encode"))
        .collect();
    store
        .append("Probe-r-1", ExpectedVersion::Any, &events)
        .await
        .expect("append");
    let replays = TargetedReplay::new(store);
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
    let (mut g, h) = Recorder::new("paced group");
    let _g = bus
        .subscribe(
            Subscription::builder("g")
                .handler(h)
                .build()
                .expect("valid"),
        )
        .await
        .expect("subscribe");
    let replay = replays
        .start("g", ReplaySelection::new(), ReplayOptions::new().rate(1000))
        .await
        .expect("start");
    let started = std::time::Instant::now();
    let run = replays.run(&replay.id, &*bus, &|_| {});
    let (done, _) = tokio::join!(run, g.expect(1000, Duration::from_secs(20)));
    let elapsed = started.elapsed();
    assert_eq!(done.expect("ran").delivered, 1000);
    let observed = 1000.0 / elapsed.as_secs_f64();
    assert!(
        observed <= 1100.0,
        "observed {observed:.0} events/s over {elapsed:?}, cap 1000"
    );
    db.drop_db().await;
}

/// Counts what it handles, in the inbox's transaction.
struct Count(Arc<AtomicUsize>);

#[async_trait]
impl InboxHandler for Count {
    async fn handle(
        &self,
        _tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        _event: &EventEnvelope,
    ) -> HandlerResult {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok::<(), HandlerError>(())
    }
}

/// An inbox that handled an event skips a replay's copy of it, handles
/// a reprocessing replay's copy once more, and that copy only once.
#[tokio::test]
async fn an_inbox_skips_a_copy_unless_the_replay_reprocesses() {
    each_db(async |db| {
        let inbox = Inbox::new(db.store(false).await);
        let handled = Arc::new(AtomicUsize::new(0));
        let handler = inbox.handler("g", Count(Arc::clone(&handled)));
        let event = EventEnvelope::new("p-1", 1, &Probe::Created { n: 1 }).expect("encode");
        handler.handle(&event).await.expect("first delivery");
        let mut copy = event.clone();
        copy.metadata.insert(REPLAY_ID.to_owned(), "r-1".into());
        handler.handle(&copy).await.expect("skipped");
        assert_eq!(
            handled.load(Ordering::SeqCst),
            1,
            "a plain replay is skipped"
        );
        copy.metadata.insert(REPROCESS.to_owned(), "true".into());
        handler.handle(&copy).await.expect("reprocessed");
        handler.handle(&copy).await.expect("the same copy again");
        assert_eq!(handled.load(Ordering::SeqCst), 2, "once more per replay");
        copy.metadata.insert(REPLAY_ID.to_owned(), "r-2".into());
        handler.handle(&copy).await.expect("another replay");
        assert_eq!(handled.load(Ordering::SeqCst), 3);
    })
    .await;
}

/// A group the bus has never seen is refused before anything is sent.
#[tokio::test]
async fn a_replay_to_an_unknown_group_sends_nothing() {
    let db = TestDb::sqlite();
    let replays = TargetedReplay::new(stored(&db).await);
    let bus = MemoryBus::new();
    let replay = replays
        .start("nobody", ReplaySelection::new(), ReplayOptions::new())
        .await
        .expect("start");
    let err = replays
        .run(&replay.id, &bus, &|_| {})
        .await
        .expect_err("no such group");
    assert!(
        matches!(err, Error::NotFound { .. }) && err.to_string().contains("`nobody`"),
        "{err}"
    );
    let status = replays
        .status(&replay.id)
        .await
        .expect("status")
        .expect("recorded");
    assert_eq!(status.delivered, 0);
    db.drop_db().await;
}
