//! The idempotent inbox on SQLite and PostgreSQL: a redelivery after a
//! crash between handling and the ack is not applied twice, and a handler
//! that fails leaves nothing behind.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventsource_bus_memory::MemoryBus;
use eventsource_core::{
    DeadLetterQuery, EventBus, EventEnvelope, EventHandler, HandlerError, HandlerResult,
    RetryPolicy, Subscription,
};
use eventsource_store::{sqlx, Inbox, InboxHandler, InboxedHandler};
use eventsource_testkit::{eventually, probe};

use common::TestDb;

/// Writes one ledger row per event it handles; fails after writing on its
/// first `fail_first` runs.
struct Ledger {
    runs: AtomicUsize,
    fail_first: usize,
}

#[async_trait]
impl InboxHandler for Ledger {
    async fn handle(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        event: &EventEnvelope,
    ) -> HandlerResult {
        let run = self.runs.fetch_add(1, Ordering::SeqCst);
        sqlx::query("INSERT INTO ledger (event_id) VALUES ($1)")
            .bind(event.event_id.to_string())
            .execute(&mut **tx)
            .await
            .map_err(HandlerError::transient)?;
        if run < self.fail_first {
            return Err(HandlerError::transient("ledger failed after writing"));
        }
        Ok(())
    }
}

/// The process "crashes" after the first delivery was handled and before
/// it was acked: the bus delivers it again.
struct CrashBeforeFirstAck {
    inner: InboxedHandler,
    crashed: AtomicBool,
    deliveries: AtomicUsize,
}

#[async_trait]
impl EventHandler for CrashBeforeFirstAck {
    async fn handle(&self, event: &EventEnvelope) -> HandlerResult {
        self.deliveries.fetch_add(1, Ordering::SeqCst);
        self.inner.handle(event).await?;
        if !self.crashed.swap(true, Ordering::SeqCst) {
            return Err(HandlerError::transient("crashed before the ack"));
        }
        Ok(())
    }
}

async fn ledger_rows(db: &TestDb) -> i64 {
    let pool = pool(db).await;
    sqlx::query_scalar("SELECT COUNT(*) FROM ledger")
        .fetch_one(&pool)
        .await
        .expect("count ledger rows")
}

async fn pool(db: &TestDb) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(&db.url).await.expect("connect")
}

/// An inbox on the test database, beside the handler's `ledger` table.
async fn ledger_inbox(db: &TestDb) -> Inbox {
    let store = db.store(false).await;
    sqlx::query("CREATE TABLE ledger (event_id TEXT NOT NULL)")
        .execute(&pool(db).await)
        .await
        .expect("create ledger");
    Inbox::new(store)
}

async fn subscribe(bus: &Arc<dyn EventBus>, handler: impl EventHandler) {
    let subscription = Subscription::builder("ledger")
        .handler(handler)
        .retry(RetryPolicy::fixed(3, Duration::from_millis(10)).expect("valid"))
        .build()
        .expect("valid");
    // Kept for the bus's life: the bus shuts its members down.
    std::mem::forget(bus.subscribe(subscription).await.expect("subscribe"));
}

async fn a_redelivery_after_a_crash_before_the_ack_is_not_applied_twice(db: &TestDb) {
    let inbox = ledger_inbox(db).await;
    let ledger = Arc::new(Ledger {
        runs: AtomicUsize::new(0),
        fail_first: 0,
    });
    let handler = Arc::new(CrashBeforeFirstAck {
        inner: inbox.handler("ledger", SharedLedger(Arc::clone(&ledger))),
        crashed: AtomicBool::new(false),
        deliveries: AtomicUsize::new(0),
    });
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
    subscribe(&bus, SharedHandler(Arc::clone(&handler))).await;
    let event = probe("invoice-1", 1, 1);
    bus.publish(std::slice::from_ref(&event))
        .await
        .expect("publish");
    eventually("the redelivery", Duration::from_secs(10), || {
        let n = handler.deliveries.load(Ordering::SeqCst);
        async move { (n >= 2).then_some(()) }
    })
    .await;
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    assert_eq!(
        ledger.runs.load(Ordering::SeqCst),
        1,
        "the handler ran once"
    );
    assert_eq!(ledger_rows(db).await, 1, "its write was applied once");
    assert!(inbox
        .contains("ledger", event.event_id)
        .await
        .expect("read"));
    let dead = bus
        .dead_letters()
        .list(&DeadLetterQuery::all())
        .await
        .expect("list");
    assert!(dead.is_empty(), "the redelivery was acked: {dead:?}");
}

async fn a_failing_handler_leaves_no_record_and_its_retry_applies_once(db: &TestDb) {
    let inbox = ledger_inbox(db).await;
    let ledger = Arc::new(Ledger {
        runs: AtomicUsize::new(0),
        fail_first: 1,
    });
    let handler = inbox.handler("ledger", SharedLedger(Arc::clone(&ledger)));
    let event = probe("invoice-2", 1, 1);
    assert!(handler.handle(&event).await.is_err(), "the first run fails");
    assert_eq!(ledger_rows(db).await, 0, "its write was rolled back");
    assert!(!inbox
        .contains("ledger", event.event_id)
        .await
        .expect("read"));
    handler.handle(&event).await.expect("the retry succeeds");
    handler.handle(&event).await.expect("a redelivery is acked");
    assert_eq!(
        ledger.runs.load(Ordering::SeqCst),
        2,
        "failed once, then once more"
    );
    assert_eq!(ledger_rows(db).await, 1);
    assert_eq!(
        inbox
            .prune(chrono::Utc::now() + chrono::Duration::seconds(1))
            .await
            .expect("prune"),
        1
    );
}

struct SharedLedger(Arc<Ledger>);

#[async_trait]
impl InboxHandler for SharedLedger {
    async fn handle(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        event: &EventEnvelope,
    ) -> HandlerResult {
        self.0.handle(tx, event).await
    }
}

struct SharedHandler(Arc<CrashBeforeFirstAck>);

#[async_trait]
impl EventHandler for SharedHandler {
    async fn handle(&self, event: &EventEnvelope) -> HandlerResult {
        self.0.handle(event).await
    }
}

on_both_databases!(
    a_redelivery_after_a_crash_before_the_ack_is_not_applied_twice,
    a_failing_handler_leaves_no_record_and_its_retry_applies_once,
);
