//! Repository and in-memory store: load, save, optimistic concurrency,
//! auto-publish, and what happens when the bus refuses.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use eventsource_core::{
    Aggregate, AppendResult, BusStats, CommandError, DeadLetterQueue, DomainEvent, Error, EventBus,
    EventEnvelope, EventStore, ExpectedVersion, InMemoryEventStore, Repository, Result,
    SaveContext, ShutdownReport, Subscription, SubscriptionHandle,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
enum AccountEvent {
    Deposited { amount: u64 },
    Withdrawn { amount: u64 },
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> &str {
        match self {
            AccountEvent::Deposited { .. } => "Deposited",
            AccountEvent::Withdrawn { .. } => "Withdrawn",
        }
    }
    const AGGREGATE_TYPE: &'static str = "Account";
}

#[derive(Debug, thiserror::Error)]
#[error("insufficient funds: balance {balance}, asked {asked}")]
struct Insufficient {
    balance: u64,
    asked: u64,
}

#[derive(Default, Debug)]
struct Account {
    balance: u64,
}

#[derive(Clone)]
enum Cmd {
    Deposit(u64),
    Withdraw(u64),
}

impl Aggregate for Account {
    type Event = AccountEvent;
    type Command = Cmd;
    type Error = Insufficient;
    fn apply(&mut self, e: &AccountEvent) {
        match e {
            AccountEvent::Deposited { amount } => self.balance += amount,
            AccountEvent::Withdrawn { amount } => self.balance -= amount,
        }
    }
    fn handle(&self, c: Cmd) -> std::result::Result<Vec<AccountEvent>, Insufficient> {
        match c {
            Cmd::Deposit(amount) => Ok(vec![AccountEvent::Deposited { amount }]),
            Cmd::Withdraw(asked) if asked > self.balance => Err(Insufficient {
                balance: self.balance,
                asked,
            }),
            Cmd::Withdraw(amount) => Ok(vec![AccountEvent::Withdrawn { amount }]),
        }
    }
}

/// A unit-test stand-in for a bus: records publishes, or refuses them.
#[derive(Default)]
struct RecordingBus {
    published: Mutex<Vec<EventEnvelope>>,
    refuse: bool,
}

#[async_trait]
impl EventBus for RecordingBus {
    fn backend(&self) -> &'static str {
        "recording"
    }
    async fn publish(&self, events: &[EventEnvelope]) -> Result<()> {
        if self.refuse {
            return Err(Error::backend("recording", "publish", "broker unreachable"));
        }
        self.published
            .lock()
            .expect("lock")
            .extend_from_slice(events);
        Ok(())
    }
    async fn subscribe(&self, _s: Subscription) -> Result<SubscriptionHandle> {
        Err(Error::config("not supported"))
    }
    fn dead_letters(&self) -> Arc<dyn DeadLetterQueue> {
        unimplemented!("not used")
    }
    async fn stats(&self) -> Result<BusStats> {
        Ok(BusStats::default())
    }
    async fn shutdown(&self, _t: Duration) -> Result<ShutdownReport> {
        Ok(ShutdownReport::default())
    }
}

fn setup(
    refuse: bool,
) -> (
    Arc<InMemoryEventStore>,
    Arc<RecordingBus>,
    Repository<Account>,
) {
    let store = Arc::new(InMemoryEventStore::new());
    let bus = Arc::new(RecordingBus {
        refuse,
        ..Default::default()
    });
    let repo = Repository::<Account>::new(store.clone()).with_bus(bus.clone());
    (store, bus, repo)
}

#[tokio::test]
async fn save_appends_then_publishes_and_load_replays() {
    let (store, bus, repo) = setup(false);
    let mut acc = repo.load("acc-1").await.expect("load");
    assert!(acc.is_new());
    acc.execute(Cmd::Deposit(100)).expect("deposit");
    acc.execute(Cmd::Withdraw(30)).expect("withdraw");
    let ctx = SaveContext {
        correlation_id: Some("req-1".into()),
        ..Default::default()
    };
    let saved = repo.save_with(&mut acc, &ctx).await.expect("save");
    assert_eq!(saved.len(), 2);
    assert_eq!(acc.version(), 2);
    assert!(acc.uncommitted().is_empty());
    assert_eq!(
        saved
            .iter()
            .map(|e| e.aggregate_version)
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(saved
        .iter()
        .all(|e| e.correlation_id.as_deref() == Some("req-1")));
    assert_eq!(
        *bus.published.lock().expect("lock"),
        saved,
        "published what was stored"
    );
    let stored = store.read_stream("Account-acc-1", 1).await.expect("read");
    assert_eq!(stored, saved);

    let again = repo.load("acc-1").await.expect("load");
    assert_eq!(again.state().balance, 70);
    assert_eq!(again.version(), 2);
    assert_eq!(
        repo.save(&mut repo.load("acc-1").await.expect("load"))
            .await
            .expect("no-op")
            .len(),
        0
    );
}

#[tokio::test]
async fn stale_save_is_a_concurrency_error_and_stores_nothing() {
    let (store, bus, repo) = setup(false);
    let mut first = repo.load("acc-2").await.expect("load");
    first.execute(Cmd::Deposit(10)).expect("cmd");
    repo.save(&mut first).await.expect("save");

    let mut a = repo.load("acc-2").await.expect("load");
    let mut b = repo.load("acc-2").await.expect("load");
    a.execute(Cmd::Deposit(1)).expect("cmd");
    b.execute(Cmd::Withdraw(5)).expect("cmd");
    repo.save(&mut a).await.expect("first writer wins");
    let err = repo.save(&mut b).await.expect_err("second writer loses");
    match &err {
        Error::Concurrency { stream, actual, .. } => {
            assert_eq!(stream, "Account-acc-2");
            assert_eq!(*actual, 2);
        }
        other => panic!("expected a concurrency error, got {other}"),
    }
    assert_eq!(
        store
            .read_stream("Account-acc-2", 1)
            .await
            .expect("read")
            .len(),
        2
    );
    assert_eq!(
        bus.published.lock().expect("lock").len(),
        2,
        "the loser published nothing"
    );
    assert_eq!(
        b.uncommitted().len(),
        1,
        "the loser keeps its events to retry"
    );
}

#[tokio::test]
async fn rejected_command_is_typed_and_changes_nothing() {
    let (_store, _bus, repo) = setup(false);
    let mut acc = repo.load("acc-3").await.expect("load");
    let err = acc.execute(Cmd::Withdraw(5)).expect_err("no funds");
    // The domain error is reachable with `match`, no downcast.
    match &err {
        CommandError::Rejected {
            aggregate_type: "Account",
            error:
                Insufficient {
                    balance: 0,
                    asked: 5,
                },
            ..
        } => {}
        other => panic!("expected the aggregate's own rejection, got {other}"),
    }
    assert!(err.to_string().contains("insufficient funds"), "{err}");
    assert!(acc.uncommitted().is_empty());
    // `?` into the crate's error keeps working.
    let as_error: Error = err.into();
    assert!(matches!(
        as_error,
        Error::Command {
            aggregate_type: "Account",
            ..
        }
    ));
}

#[tokio::test]
async fn bus_failure_after_append_says_events_are_stored() {
    let (store, _bus, repo) = setup(true);
    let mut acc = repo.load("acc-4").await.expect("load");
    acc.execute(Cmd::Deposit(5)).expect("cmd");
    let err = repo.save(&mut acc).await.expect_err("bus refuses");
    assert!(
        matches!(err, Error::PublishAfterAppend { stored: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("broker unreachable"), "{err}");
    assert_eq!(acc.version(), 1, "the root reflects what was stored");
    assert_eq!(
        store
            .read_stream("Account-acc-4", 1)
            .await
            .expect("read")
            .len(),
        1
    );
}

#[tokio::test]
async fn store_checks_versions_and_duplicate_ids_atomically() {
    let store = InMemoryEventStore::new();
    let e1 = EventEnvelope::new("x", 1, &AccountEvent::Deposited { amount: 1 }).expect("enc");
    let e2 = EventEnvelope::new("x", 2, &AccountEvent::Deposited { amount: 2 }).expect("enc");
    store
        .append("s", ExpectedVersion::NoStream, std::slice::from_ref(&e1))
        .await
        .expect("append");
    let err = store
        .append("s", ExpectedVersion::NoStream, std::slice::from_ref(&e2))
        .await
        .expect_err("exists");
    assert!(matches!(err, Error::Concurrency { .. }));
    let err = store
        .append("s", ExpectedVersion::Exact(1), &[e2.clone(), e1.clone()])
        .await
        .expect_err("duplicate id");
    assert!(matches!(err, Error::DuplicateEvent { .. }), "{err}");
    assert_eq!(
        store.read_stream("s", 1).await.expect("read").len(),
        1,
        "batch rejected whole"
    );
    let r = store
        .append("s", ExpectedVersion::Any, &[e2])
        .await
        .expect("append");
    assert_eq!(r.version, 2);
    let other = EventEnvelope::new("y", 1, &AccountEvent::Deposited { amount: 3 }).expect("enc");
    store
        .append("t", ExpectedVersion::Exact(0), &[other])
        .await
        .expect("append");
    let all = store.read_all(0, 10).await.expect("read_all");
    assert_eq!(
        all.iter().map(|r| r.position).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(store.read_all(2, 10).await.expect("read_all").len(), 1);
    assert_eq!(store.read_all(0, 2).await.expect("read_all").len(), 2);
    assert_eq!(store.read_stream("s", 2).await.expect("read").len(), 1);
}

/// The in-memory store, except that the first `races` appends each find
/// another writer's event appended to the stream just before.
struct RacingStore {
    inner: InMemoryEventStore,
    races: Mutex<u32>,
    appends: Mutex<u32>,
}

#[async_trait]
impl EventStore for RacingStore {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventEnvelope],
    ) -> Result<AppendResult> {
        *self.appends.lock().expect("lock") += 1;
        let race = {
            let mut races = self.races.lock().expect("lock");
            let race = *races > 0;
            *races = races.saturating_sub(1);
            race
        };
        if race {
            let current = self.inner.read_stream(stream, 1).await?.len() as u64;
            let rival = EventEnvelope::new(
                events[0].aggregate_id.clone(),
                current + 1,
                &AccountEvent::Deposited { amount: 1 },
            )?;
            self.inner
                .append(stream, ExpectedVersion::Any, &[rival])
                .await?;
        }
        self.inner.append(stream, expected, events).await
    }
    async fn read_stream(&self, stream: &str, from: u64) -> Result<Vec<EventEnvelope>> {
        self.inner.read_stream(stream, from).await
    }
    async fn read_all(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<eventsource_core::RecordedEvent>> {
        self.inner.read_all(after, limit).await
    }
}

fn racing(races: u32) -> (Arc<RacingStore>, Repository<Account>) {
    let store = Arc::new(RacingStore {
        inner: InMemoryEventStore::new(),
        races: Mutex::new(races),
        appends: Mutex::new(0),
    });
    (Arc::clone(&store), Repository::<Account>::new(store))
}

#[tokio::test]
async fn execute_loads_decides_and_saves_retrying_a_conflict() {
    let (store, repo) = racing(1);
    let saved = repo
        .execute("acc-1", Cmd::Deposit(10))
        .await
        .expect("the second attempt saves");
    assert_eq!(saved.len(), 1);
    assert_eq!(
        saved[0].aggregate_version, 2,
        "decided again after the rival's event"
    );
    assert_eq!(*store.appends.lock().expect("lock"), 2);
    let account = repo.load("acc-1").await.expect("load");
    assert_eq!(account.state().balance, 11, "the rival's 1 and our 10");
}

#[tokio::test]
async fn execute_gives_up_after_its_attempts_and_returns_typed_rejections() {
    let (store, repo) = racing(u32::MAX);
    let err = repo
        .execute("acc-2", Cmd::Deposit(10))
        .await
        .expect_err("every attempt races");
    assert!(
        matches!(err, CommandError::Failed(Error::Concurrency { .. })),
        "{err}"
    );
    assert_eq!(
        *store.appends.lock().expect("lock"),
        Repository::<Account>::EXECUTE_ATTEMPTS
    );
    let (_, repo) = racing(0);
    let err = repo
        .execute("acc-3", Cmd::Withdraw(5))
        .await
        .expect_err("nothing to withdraw");
    assert!(
        matches!(err.rejection(), Some(Insufficient { asked: 5, .. })),
        "{err}"
    );
    assert!(
        repo.load("acc-3").await.expect("load").is_new(),
        "nothing saved"
    );
}

/// An event of the `BankAccount` aggregate, recorded by `Ledger`: the
/// aggregate has no type of its own, so it is stored and routed as the
/// event declares (it once had `Aggregate::TYPE`, which could differ).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entered;
impl DomainEvent for Entered {
    fn event_type(&self) -> &str {
        "Entered"
    }
    const AGGREGATE_TYPE: &'static str = "BankAccount";
}

#[derive(Default)]
struct Ledger;
impl Aggregate for Ledger {
    type Event = Entered;
    type Command = ();
    type Error = std::io::Error;
    fn apply(&mut self, _e: &Entered) {}
    fn handle(&self, (): ()) -> std::result::Result<Vec<Entered>, std::io::Error> {
        Ok(vec![Entered])
    }
}

#[tokio::test]
async fn an_aggregate_is_stored_and_routed_under_its_events_type() {
    let store = Arc::new(InMemoryEventStore::new());
    let bus = Arc::new(RecordingBus::default());
    let repo = Repository::<Ledger>::new(store.clone()).with_bus(bus.clone());
    let saved = repo.execute("l-1", ()).await.expect("saved");
    assert_eq!(saved[0].routing_key(), "BankAccount.Entered");
    assert_eq!(
        store
            .read_stream("BankAccount-l-1", 1)
            .await
            .expect("read")
            .len(),
        1,
        "stored in the stream named after the event's aggregate type"
    );
    assert_eq!(bus.published.lock().expect("lock").len(), 1);
}
