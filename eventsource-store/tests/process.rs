//! Process managers on the SQL store (#28), on SQLite and PostgreSQL: the
//! checkout saga of the testkit, its inputs delivered again and again, a
//! step recorded before its commands ran, timeouts fired by two
//! schedulers after a restart, a cancelled timeout; and the fixture.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::TestDb;
use eventsource_bus_memory::MemoryBus;
use eventsource_core::process::{
    timeout_envelope, timeout_name, Commands, Effect, Effects, ProcessFixture, ProcessManager,
};
use eventsource_core::{
    EventBus, EventEnvelope, EventHandler, EventStore, HandlerError, HandlerResult, Repository,
    SaveContext, Subscription, SubscriptionHandle,
};
use eventsource_store::{ProcessRunner, SqlEventStore, TimeoutScheduler, STEP_EVENT_TYPE};
use eventsource_testkit::checkout::{
    Charge, CheckoutCompleted, CheckoutSaga, Order, OrderCommand, OrderEvent, Payment,
    PaymentEvent, PAYMENT_WAIT,
};
use tokio_util::sync::CancellationToken;

struct Env {
    store: SqlEventStore,
    orders: Repository<Order>,
    payments: Repository<Payment>,
}

impl Env {
    async fn new(db: &TestDb, bus: Option<Arc<dyn EventBus>>) -> Env {
        let store = db.store(false).await;
        let shared: Arc<dyn EventStore> = Arc::new(store.clone());
        let mut orders = Repository::<Order>::new(Arc::clone(&shared));
        let mut payments = Repository::<Payment>::new(shared);
        if let Some(bus) = bus {
            orders = orders.with_bus(Arc::clone(&bus));
            payments = payments.with_bus(bus);
        }
        Env {
            store,
            orders,
            payments,
        }
    }

    fn runner(&self, commands: bool) -> ProcessRunner<CheckoutSaga> {
        let commands = if commands {
            Commands::new()
                .with(self.orders.clone())
                .with(self.payments.clone())
        } else {
            Commands::new()
        };
        ProcessRunner::new(self.store.clone(), CheckoutSaga, commands, "checkout")
    }

    /// Places order `id` for `amount` cents, correlated by its id.
    async fn place(&self, id: &str, amount: u64) -> EventEnvelope {
        let ctx = SaveContext {
            correlation_id: Some(id.to_owned()),
            causation_id: Some(format!("place-{id}")),
            metadata: Default::default(),
        };
        self.orders
            .execute_once(id, OrderCommand::Place { amount }, &ctx)
            .await
            .expect("place")
            .remove(0)
    }

    async fn order_events(&self, id: &str) -> Vec<OrderEvent> {
        self.store
            .read_stream(&Repository::<Order>::stream_of(id), 1)
            .await
            .expect("read")
            .iter()
            .map(|e| e.decode().expect("decode"))
            .collect()
    }

    async fn payment_envelopes(&self, id: &str) -> Vec<EventEnvelope> {
        self.store
            .read_stream(&Repository::<Payment>::stream_of(id), 1)
            .await
            .expect("read")
    }

    async fn outbox_completions(&self) -> i64 {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM es_outbox WHERE envelope LIKE '%CheckoutCompleted%'",
        )
        .fetch_one(self.store.pool())
        .await
        .expect("count")
    }
}

async fn redeliveries_apply_each_effect_once(db: TestDb) {
    let env = Env::new(&db, None).await;
    let runner = env.runner(true);

    let placed = env.place("o-1", 500).await;
    for _ in 0..3 {
        runner.handle(&placed).await.expect("placed");
    }
    let payments = env.payment_envelopes("o-1").await;
    assert_eq!(payments.len(), 1, "one charge for three deliveries");
    let charged = payments[0].clone();
    assert_eq!(charged.correlation_id.as_deref(), Some("o-1"));
    for _ in 0..3 {
        runner.handle(&charged).await.expect("charged");
    }
    assert_eq!(
        env.order_events("o-1").await,
        vec![OrderEvent::Placed { amount: 500 }, OrderEvent::Shipped],
        "shipped once"
    );
    assert_eq!(
        env.outbox_completions().await,
        1,
        "one CheckoutCompleted in the outbox"
    );
    let (state, completed) = runner.instance("o-1").await.expect("load").expect("exists");
    assert!(completed);
    assert_eq!(state.stage, "shipped");
    let all = TimeoutScheduler::list(&env.store, Some("checkout"), true)
        .await
        .expect("list");
    assert_eq!(all.len(), 1);
    assert!(
        all[0].cancelled_at.is_some(),
        "the payment timeout is cancelled: {all:?}"
    );
    assert!(
        TimeoutScheduler::list(&env.store, None, false)
            .await
            .expect("list")
            .is_empty(),
        "nothing pending"
    );

    // A step recorded whose commands did not run (no repository given:
    // as a crash after the commit): the input comes again, to a runner
    // that can send them; they run once.
    let placed = env.place("o-2", 700).await;
    let broken = env.runner(false);
    let failed = broken.handle(&placed).await.expect_err("no target");
    assert!(failed.to_string().contains("no repository"), "{failed}");
    assert!(env.payment_envelopes("o-2").await.is_empty());
    assert!(
        runner.instance("o-2").await.expect("load").is_some(),
        "the step is recorded"
    );
    runner.handle(&placed).await.expect("again");
    runner.handle(&placed).await.expect("and again");
    assert_eq!(env.payment_envelopes("o-2").await.len(), 1, "charged once");

    // The steps are the store's own record: the schema check's census
    // and targeted replays leave them out.
    let census = env.store.event_census().await.expect("census");
    assert!(
        census.iter().any(|c| c.event_type == "Placed"),
        "{census:?}"
    );
    assert!(
        census.iter().all(|c| c.event_type != STEP_EVENT_TYPE),
        "{census:?}"
    );
    let replays = eventsource_store::TargetedReplay::new(env.store.clone());
    let everything = replays
        .count(&eventsource_store::ReplaySelection::new())
        .await
        .expect("count");
    let pool = env.store.pool();
    let count = |sql: &'static str| async move {
        sqlx::query_scalar::<_, i64>(sql)
            .bind(STEP_EVENT_TYPE)
            .fetch_one(pool)
            .await
            .expect("count") as u64
    };
    let steps = count("SELECT COUNT(*) FROM es_events WHERE event_type = $1").await;
    assert!(
        steps >= 3,
        "o-1's two steps and o-2's one are stored: {steps}"
    );
    let others = count("SELECT COUNT(*) FROM es_events WHERE event_type <> $1").await;
    assert_eq!(everything, others, "a replay of everything selects no step");

    // Inputs of no instance, and of a completed one, are ignored.
    let stray = EventEnvelope::from_json(
        "Payment",
        "o-9",
        1,
        "Charged",
        serde_json::json!({"type": "Charged", "amount": 1}),
    )
    .with_correlation_id("o-9");
    runner.handle(&stray).await.expect("ignored");
    assert!(runner.instance("o-9").await.expect("load").is_none());
    db.drop_db().await;
}

/// Pings once an hour after `Started`; `Snoozed` schedules the ping anew.
struct Reminder;

impl ProcessManager for Reminder {
    type State = u32;
    const NAME: &'static str = "reminder";

    fn starts(&self, input: &EventEnvelope) -> bool {
        input.event_type == "Started"
    }

    fn handle(
        &self,
        pings: &mut u32,
        input: &EventEnvelope,
        effects: &mut Effects,
    ) -> Result<(), HandlerError> {
        match (input.event_type.as_str(), timeout_name(input)) {
            ("Started" | "Snoozed", _) => effects.schedule("ping", Duration::from_secs(3600)),
            (_, Some("ping")) => *pings += 1,
            _ => {}
        }
        Ok(())
    }
}

async fn a_replaced_timeout_that_fired_is_ignored(db: TestDb) {
    let store = db.store(false).await;
    let runner = ProcessRunner::new(store.clone(), Reminder, Commands::new(), "reminder");
    let input = |t: &str| {
        EventEnvelope::from_json("Task", "t-1", 1, t, serde_json::json!({}))
            .with_correlation_id("t-1")
    };
    runner.handle(&input("Started")).await.expect("started");
    let first = TimeoutScheduler::list(&store, None, false)
        .await
        .expect("list");
    runner.handle(&input("Snoozed")).await.expect("snoozed");
    let all = TimeoutScheduler::list(&store, None, true)
        .await
        .expect("list");
    assert_eq!(all.len(), 2);
    let (replaced, live) = (
        &first[0],
        all.iter().find(|t| t.id != first[0].id).expect("new"),
    );
    assert!(
        all.iter()
            .any(|t| t.id == replaced.id && t.cancelled_at.is_some()),
        "{all:?}"
    );
    let fired = |t: &eventsource_store::ScheduledTimeout| {
        timeout_envelope(
            "reminder",
            "t-1",
            "ping",
            t.id.parse().expect("uuid"),
            t.due_at,
        )
    };
    // The replaced one fired before it was replaced (a scheduler's round
    // raced the step): it arrives now and is ignored.
    runner.handle(&fired(replaced)).await.expect("ignored");
    assert_eq!(
        runner
            .instance("t-1")
            .await
            .expect("load")
            .expect("exists")
            .0,
        0
    );
    runner.handle(&fired(live)).await.expect("handled");
    runner.handle(&fired(live)).await.expect("again");
    assert_eq!(
        runner
            .instance("t-1")
            .await
            .expect("load")
            .expect("exists")
            .0,
        1
    );
    db.drop_db().await;
}

#[tokio::test]
async fn sqlite_a_replaced_timeout_that_fired_is_ignored() {
    a_replaced_timeout_that_fired_is_ignored(TestDb::sqlite()).await;
}

#[tokio::test]
async fn postgres_a_replaced_timeout_that_fired_is_ignored() {
    a_replaced_timeout_that_fired_is_ignored(TestDb::postgres().await).await;
}

/// Counts the timeouts a group receives, then hands them on.
struct Counting {
    inner: ProcessRunner<CheckoutSaga>,
    timeouts: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl EventHandler for Counting {
    async fn handle(&self, event: &EventEnvelope) -> HandlerResult {
        if timeout_name(event).is_some() {
            self.timeouts.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.handle(event).await
    }
}

async fn subscribe(env: &Env, bus: &Arc<dyn EventBus>) -> (Arc<AtomicUsize>, SubscriptionHandle) {
    let timeouts = Arc::new(AtomicUsize::new(0));
    let handle = bus
        .subscribe(
            Subscription::builder("checkout")
                .handler(Counting {
                    inner: env.runner(true),
                    timeouts: Arc::clone(&timeouts),
                })
                .build()
                .expect("subscription"),
        )
        .await
        .expect("subscribe");
    (timeouts, handle)
}

/// Polls `check` every 20 ms until it holds or `within` passes.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_timeout_survives_a_restart_and_fires_once(db: TestDb) {
    // Before: the saga charges 0 cents (the provider never answers) and
    // schedules its payment timeout; no scheduler runs.
    {
        let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
        let env = Env::new(&db, Some(Arc::clone(&bus))).await;
        let (_, _sub) = subscribe(&env, &bus).await;
        env.place("o-3", 0).await;
        eventually(
            Duration::from_secs(10),
            "the timeout is scheduled",
            || async {
                TimeoutScheduler::list(&env.store, None, false)
                    .await
                    .expect("list")
                    .len()
                    == 1
            },
        )
        .await;
        bus.shutdown(Duration::from_secs(5))
            .await
            .expect("shutdown");
    }
    // After a restart: a new bus and runner, and two schedulers on their
    // own connections polling at once.
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
    let env = Env::new(&db, Some(Arc::clone(&bus))).await;
    let (timeouts, _sub) = subscribe(&env, &bus).await;
    let stop = CancellationToken::new();
    let started = tokio::time::Instant::now();
    for _ in 0..2 {
        let scheduler = TimeoutScheduler::new(db.store(false).await, Arc::clone(&bus))
            .poll_interval(Duration::from_millis(25))
            .expect("poll");
        let stop = stop.clone();
        tokio::spawn(async move { scheduler.run(stop).await });
    }
    eventually(
        PAYMENT_WAIT + Duration::from_secs(10),
        "the order is cancelled",
        || async { env.order_events("o-3").await.len() == 2 },
    )
    .await;
    let fired_after = started.elapsed();
    // Both schedulers keep polling; the fired timeout is not due again.
    let all = TimeoutScheduler::list(&env.store, None, true)
        .await
        .expect("list");
    assert_eq!(all.len(), 1);
    assert!(all[0].fired_at.is_some(), "{all:?}");
    for _ in 0..10 {
        assert_eq!(
            TimeoutScheduler::new(env.store.clone(), Arc::clone(&bus))
                .fire_due()
                .await
                .expect("fire"),
            0,
            "nothing left due"
        );
    }
    stop.cancel();
    assert_eq!(
        timeouts.load(Ordering::SeqCst),
        1,
        "delivered once by two schedulers"
    );
    assert_eq!(
        env.order_events("o-3").await,
        vec![
            OrderEvent::Placed { amount: 0 },
            OrderEvent::Cancelled {
                reason: "no payment in time".into()
            }
        ]
    );
    let late = all[0].fired_at.expect("fired") - all[0].due_at;
    assert!(
        late < chrono::Duration::seconds(2),
        "a timeout due while no scheduler ran fires within 2 s of the restart's due time: {late}"
    );
    eprintln!(
        "{}: timeout fired {} ms after it fell due ({fired_after:?} after the restart)",
        db.url.split(':').next().unwrap_or(""),
        late.num_milliseconds()
    );
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    db.drop_db().await;
}

async fn a_paid_order_cancels_its_timeout(db: TestDb) {
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
    let env = Env::new(&db, Some(Arc::clone(&bus))).await;
    let (timeouts, _sub) = subscribe(&env, &bus).await;
    env.place("o-4", 900).await;
    eventually(Duration::from_secs(10), "the order ships", || async {
        env.order_events("o-4").await.contains(&OrderEvent::Shipped)
    })
    .await;
    let all = TimeoutScheduler::list(&env.store, None, true)
        .await
        .expect("list");
    assert_eq!(all.len(), 1);
    let due = all[0].due_at;
    assert!(all[0].cancelled_at.is_some(), "{all:?}");
    // Once it would have been due, a scheduler finds nothing to fire.
    eventually(
        PAYMENT_WAIT + Duration::from_secs(5),
        "the due time passes",
        || async { chrono::Utc::now() > due },
    )
    .await;
    let scheduler = TimeoutScheduler::new(env.store.clone(), Arc::clone(&bus));
    assert_eq!(scheduler.fire_due().await.expect("fire"), 0);
    assert_eq!(timeouts.load(Ordering::SeqCst), 0);
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    db.drop_db().await;
}

#[tokio::test]
async fn sqlite_redeliveries_apply_each_effect_once() {
    redeliveries_apply_each_effect_once(TestDb::sqlite()).await;
}

#[tokio::test]
async fn postgres_redeliveries_apply_each_effect_once() {
    redeliveries_apply_each_effect_once(TestDb::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_timeout_survives_a_restart_and_fires_once() {
    a_timeout_survives_a_restart_and_fires_once(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_timeout_survives_a_restart_and_fires_once() {
    a_timeout_survives_a_restart_and_fires_once(TestDb::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_paid_order_cancels_its_timeout() {
    a_paid_order_cancels_its_timeout(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_paid_order_cancels_its_timeout() {
    a_paid_order_cancels_its_timeout(TestDb::postgres().await).await;
}

fn placed(id: &str, amount: u64) -> EventEnvelope {
    EventEnvelope::new(id, 1, &OrderEvent::Placed { amount })
        .expect("envelope")
        .with_correlation_id(id)
}

#[test]
fn the_fixture_runs_the_saga_on_a_virtual_clock() {
    let charged = EventEnvelope::new("o-5", 1, &PaymentEvent::Charged { amount: 10 })
        .expect("envelope")
        .with_correlation_id("o-5");
    ProcessFixture::new(CheckoutSaga)
        .given([placed("o-5", 10)])
        .when(charged)
        .then_commands([Effect::command::<Order>("o-5", &OrderCommand::Ship)])
        .then_publishes(&[CheckoutCompleted {
            order: "o-5".into(),
        }])
        .then_completes()
        // The timeout was cancelled: nothing fires later.
        .advance(PAYMENT_WAIT * 2)
        .then_nothing();

    let fixture = ProcessFixture::new(CheckoutSaga)
        .when(placed("o-6", 0))
        .then_commands([Effect::command::<Payment>("o-6", &Charge { amount: 0 })])
        .then_schedules("payment", PAYMENT_WAIT)
        .advance(PAYMENT_WAIT - Duration::from_millis(1))
        .then_nothing()
        .advance(Duration::from_millis(1))
        .then_commands([Effect::command::<Order>(
            "o-6",
            &OrderCommand::Cancel {
                reason: "no payment in time".into(),
            },
        )])
        .then_completes();
    assert_eq!(fixture.state().stage, "cancelled");
}

/// A timeout row whose time does not read is an error naming the column,
/// not a timeout listed as due in 1970.
#[tokio::test]
async fn an_unreadable_timeout_time_is_named() {
    let db = TestDb::sqlite();
    let store = db.store(false).await;
    sqlx::query(
        "INSERT INTO es_timeouts (id, process, instance, name, group_name, due_at, scheduled_at) \
         VALUES ('t', 'p', 'i', 'n', 'g', 'not a time', '2026-12-05T00:00:00Z')",
    )
    .execute(store.pool())
    .await
    .expect("insert");
    let err = TimeoutScheduler::list(&store, None, false)
        .await
        .expect_err("an unreadable due time");
    assert!(err.to_string().contains("column `due_at`"), "{err}");
    db.drop_db().await;
}
