//! The queue and worker working together.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::DomainEvent;
use crate::{EventEnvelope, Subscription};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Ping;
impl DomainEvent for Ping {
    fn event_type(&self) -> &str {
        "Ping"
    }
    const AGGREGATE_TYPE: &'static str = "Test";
}

fn delivery(agg: &str, version: u64) -> Delivery<()> {
    Delivery::new(
        Arc::new(EventEnvelope::new(agg, version, &Ping).expect("encode")),
        (),
    )
}

/// A delivery whose token is its aggregate id, which a test's
/// [`Settle`] reports.
fn keyed(agg: &str) -> Delivery<String> {
    Delivery::new(
        Arc::new(EventEnvelope::new(agg, 1, &Ping).expect("encode")),
        agg.to_owned(),
    )
}

#[tokio::test]
async fn one_aggregate_at_a_time_in_order() {
    let q = KeyedQueue::new(10);
    for (agg, v) in [("a", 1), ("a", 2), ("b", 1), ("a", 3)] {
        q.push(delivery(agg, v), None).await.expect("room");
    }
    let first = q.try_take().expect("a1");
    assert_eq!((first.key(), first.envelope.aggregate_version), ("a", 1));
    let second = q.try_take().expect("b1 skips busy a");
    assert_eq!(second.key(), "b");
    assert!(q.try_take().is_none(), "a2 and a3 wait for a1");
    assert_eq!(
        q.finish("a")
            .expect("a2 handed over")
            .envelope
            .aggregate_version,
        2
    );
    assert_eq!(
        q.finish("a")
            .expect("a3 handed over")
            .envelope
            .aggregate_version,
        3
    );
    assert!(q.finish("a").is_none());
    assert!(q.finish("b").is_none());
    assert_eq!(q.queued(), 0);
    assert_eq!(q.in_flight(), 0);
}

#[tokio::test]
async fn full_queue_waits_then_gives_the_delivery_back() {
    let q = KeyedQueue::new(1);
    q.push(delivery("a", 1), None).await.expect("room");
    let soon = tokio::time::Instant::now() + Duration::from_millis(20);
    let back = q
        .push(delivery("a", 2), Some(soon))
        .await
        .expect_err("no room");
    assert_eq!(back.envelope.aggregate_version, 2);
    let _taken = q.try_take().expect("a1");
    q.push(back, Some(soon + Duration::from_secs(1)))
        .await
        .expect("room again");
}

#[tokio::test(flavor = "current_thread")]
async fn a_blocked_pusher_is_woken_once_a_quarter_of_the_queue_is_free() {
    let q = Arc::new(KeyedQueue::new(8));
    for v in 1..=8 {
        q.push(delivery(&format!("a{v}"), 1), None)
            .await
            .expect("room");
    }
    let pusher = tokio::spawn({
        let q = Arc::clone(&q);
        async move { q.push(delivery("late", 1), None).await.is_ok() }
    });
    let settle = || async {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    };
    settle().await;
    let _first = q.try_take().expect("taken");
    settle().await;
    // One free slot does not wake it: it would push one event per wake-up.
    assert_eq!(q.queued(), 7, "the pusher waits for a quarter (2) of 8");
    assert!(!pusher.is_finished());
    let _second = q.try_take().expect("taken");
    let pushed = tokio::time::timeout(Duration::from_secs(5), pusher)
        .await
        .expect("woken at two free slots")
        .expect("join");
    assert!(pushed);
    assert_eq!(q.queued(), 7);
}

#[tokio::test]
async fn requeued_delivery_comes_first_and_frees_its_key() {
    let q = KeyedQueue::new(10);
    q.push(delivery("a", 1), None).await.expect("room");
    q.push(delivery("b", 1), None).await.expect("room");
    let a1 = q.try_take().expect("a1");
    q.requeue(a1);
    assert_eq!(q.try_take().expect("a1 again").key(), "a");
    let mut tokens = 0;
    q.for_each_token(|()| tokens += 1);
    assert_eq!(tokens, 1, "b1 still queued");
    assert_eq!(q.drain().len(), 1);
    assert_eq!(q.queued(), 0);
}

struct PanicsOnce(
    std::sync::atomic::AtomicBool,
    tokio::sync::mpsc::UnboundedSender<String>,
);

#[async_trait::async_trait]
impl Settle<String> for PanicsOnce {
    type Raw = std::convert::Infallible;

    fn source(&self, key: &String) -> String {
        key.clone()
    }

    async fn ack(&self, key: String) {
        if !self.0.swap(true, Ordering::SeqCst) {
            panic!("settle bug");
        }
        let _ = self.1.send(key);
    }

    async fn dead_letter(&self, key: String, _: Letter<Self::Raw>, _: &crate::Failure) -> bool {
        self.ack(key).await;
        true
    }
}

/// Runs one worker over `q` until `settle` has reported `n` deliveries
/// on `settled` (within 5 s), then stops it; returns what was reported
/// and the worker's counters.
async fn work_until_settled<S: Settle<String>>(
    q: &KeyedQueue<String>,
    sub: &Subscription,
    settle: &S,
    settled: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    n: usize,
) -> (Vec<String>, Counters) {
    let (stop, counters) = (CancellationToken::new(), Counters::default());
    let worker = Worker {
        destination: "test",
        backend: "test",
        queue: q,
        subscription: sub,
        stop: &stop,
        counters: &counters,
        settle,
        parking: None,
    }
    .run();
    let check = async {
        let mut got = Vec::new();
        for _ in 0..n {
            got.push(settled.recv().await.expect("open"));
        }
        stop.cancel();
        got
    };
    let ((), got) = tokio::time::timeout(Duration::from_secs(5), async {
        tokio::join!(worker, check)
    })
    .await
    .unwrap_or_else(|_| panic!("{n} deliveries settled within 5 s"));
    (got, counters)
}

#[tokio::test]
async fn a_worker_that_panics_outside_the_handler_is_restarted() {
    let q = KeyedQueue::new(10);
    for agg in ["a", "b", "c"] {
        q.push(keyed(agg), None).await.expect("room");
    }
    let sub = Subscription::builder("g")
        .handler(crate::handler_fn(|_e| async { Ok(()) }))
        .build()
        .expect("valid");
    let (tx, mut settled) = tokio::sync::mpsc::unbounded_channel();
    let settle = PanicsOnce(std::sync::atomic::AtomicBool::new(false), tx);
    let (got, counters) = work_until_settled(&q, &sub, &settle, &mut settled, 2).await;
    assert_eq!(got, ["b", "c"], "a's settle panicked; b and c still settle");
    assert_eq!(counters.snapshot().worker_restarts, 1);
    assert_eq!(q.in_flight(), 0, "a is free again");
}

/// Writes no dead letter (the broker refused it): says so.
struct LetterRefused(tokio::sync::mpsc::UnboundedSender<String>);

#[async_trait::async_trait]
impl Settle<String> for LetterRefused {
    type Raw = std::convert::Infallible;

    fn source(&self, key: &String) -> String {
        key.clone()
    }

    async fn ack(&self, key: String) {
        let _ = self.0.send(key);
    }

    async fn dead_letter(&self, key: String, _: Letter<Self::Raw>, _: &crate::Failure) -> bool {
        let _ = self.0.send(key);
        false
    }
}

/// A dead letter counts once it is on the broker: one the backend could
/// not write is not in `dead_lettered` (it was counted before the write),
/// while a handled event still counts as handled.
#[tokio::test]
async fn a_dead_letter_not_written_is_not_counted() {
    let q = KeyedQueue::new(10);
    for agg in ["fails", "works"] {
        q.push(keyed(agg), None).await.expect("room");
    }
    let sub = Subscription::builder("g")
        .retry(crate::RetryPolicy::no_retry())
        .handler(crate::handler_fn(|e| async move {
            if e.aggregate_id == "fails" {
                Err(crate::HandlerError::permanent("a bug"))
            } else {
                Ok(())
            }
        }))
        .build()
        .expect("valid");
    let (tx, mut settled) = tokio::sync::mpsc::unbounded_channel();
    let settle = LetterRefused(tx);
    let (_, counters) = work_until_settled(&q, &sub, &settle, &mut settled, 2).await;
    let stats = counters.snapshot();
    assert_eq!(stats.dead_lettered, 0, "the letter was never written");
    assert_eq!(stats.handled, 1);
}

/// Writes a raw letter or not, as told; counts what it was given.
struct RawLetters(bool, std::sync::atomic::AtomicUsize);

#[async_trait::async_trait]
impl Settle<()> for RawLetters {
    type Raw = Vec<u8>;

    fn source(&self, (): &()) -> String {
        "raw".to_owned()
    }

    async fn ack(&self, (): ()) {}

    async fn dead_letter(&self, (): (), letter: Letter<Vec<u8>>, _: &crate::Failure) -> bool {
        assert!(
            matches!(letter, Letter::Raw(_)),
            "the raw message, as it came"
        );
        self.1.fetch_add(1, Ordering::SeqCst);
        self.0
    }
}

/// An undecodable message goes through the same door as a failed event:
/// counted once its letter is written, not when the write was refused.
#[tokio::test]
async fn an_undecodable_letter_counts_once_written() {
    let counters = Counters::default();
    let failure = || crate::Failure::undecodable("g", "s/1", "not json");
    let refused = RawLetters(false, Default::default());
    let raw = || Letter::Raw(b"{".to_vec());
    assert!(!dead_letter(&refused, &counters, (), raw(), failure()).await);
    assert_eq!(refused.1.load(Ordering::SeqCst), 1, "the backend was asked");
    assert_eq!(counters.snapshot().dead_lettered, 0, "refused: not counted");
    let written = RawLetters(true, Default::default());
    assert!(dead_letter(&written, &counters, (), raw(), failure()).await);
    assert_eq!(counters.snapshot().dead_lettered, 1, "written: counted");
}

#[tokio::test]
async fn remove_where_takes_queued_and_waiting_deliveries_only() {
    let q = KeyedQueue::new(10);
    for (agg, v) in [("a", 1), ("a", 2), ("b", 1), ("c", 1)] {
        q.push(delivery(agg, v), None).await.expect("room");
    }
    let a1 = q.try_take().expect("a1");
    assert_eq!(q.try_take().expect("b1").key(), "b"); // a2 now waits behind a1
    let removed = q.remove_where(|()| true);
    assert_eq!(
        removed.len(),
        2,
        "a2 (waiting) and c1 (ready); a1 and b1 are out"
    );
    assert_eq!(q.queued(), 0);
    assert!(q.finish(a1.key()).is_none(), "a2 was removed");
    assert!(q.finish("b").is_none());
}

#[tokio::test]
async fn push_all_fills_the_room_and_gives_back_the_rest_in_order() {
    let q = KeyedQueue::new(3);
    let batch = [("a", 1), ("b", 1), ("a", 2), ("c", 1), ("a", 3)].map(|(a, v)| delivery(a, v));
    let soon = tokio::time::Instant::now() + Duration::from_millis(20);
    let rest = q
        .push_all(batch, Some(soon))
        .await
        .expect_err("room for 3 of 5");
    let rest: Vec<_> = rest
        .iter()
        .map(|d| (d.key().to_owned(), d.envelope.aggregate_version))
        .collect();
    assert_eq!(rest, [("c".to_owned(), 1), ("a".to_owned(), 3)]);
    assert_eq!(q.queued(), 3);

    // A worker waiting on an empty queue is woken by a batch.
    let q = Arc::new(KeyedQueue::new(10));
    let taker = tokio::spawn({
        let q = Arc::clone(&q);
        async move { q.take().await.envelope.aggregate_version }
    });
    tokio::task::yield_now().await;
    q.push_all([delivery("a", 7), delivery("a", 8)], None)
        .await
        .expect("room");
    let first = tokio::time::timeout(Duration::from_secs(5), taker)
        .await
        .expect("woken")
        .expect("join");
    assert_eq!(first, 7);
}

/// A dead-letter queue in a vector, for [`Parking`]'s unit tests.
#[derive(Default)]
struct Letters(parking_lot::Mutex<Vec<crate::DeadLetter>>);

#[async_trait::async_trait]
impl crate::DeadLetterQueue for Letters {
    async fn list(&self, q: &crate::DeadLetterQuery) -> crate::Result<Vec<crate::DeadLetter>> {
        let all = self.0.lock().clone();
        Ok(all
            .into_iter()
            .filter(|l| q.group.as_deref().is_none_or(|g| g == l.group()))
            .collect())
    }
    async fn get(&self, id: &str) -> crate::Result<Option<crate::DeadLetter>> {
        Ok(self.0.lock().iter().find(|l| l.id == id).cloned())
    }
    async fn replay(&self, _id: &str) -> crate::Result<()> {
        Ok(())
    }
    async fn delete(&self, id: &str) -> crate::Result<bool> {
        let mut all = self.0.lock();
        let before = all.len();
        all.retain(|l| l.id != id);
        Ok(all.len() < before)
    }
}

/// [`Letters`] that counts `delete_many` calls (each a DLQ read on a
/// backend that scans to delete).
#[derive(Default)]
struct CountedLetters(Letters, std::sync::atomic::AtomicUsize);

#[async_trait::async_trait]
impl crate::DeadLetterQueue for CountedLetters {
    async fn list(&self, q: &crate::DeadLetterQuery) -> crate::Result<Vec<crate::DeadLetter>> {
        self.0.list(q).await
    }
    async fn get(&self, id: &str) -> crate::Result<Option<crate::DeadLetter>> {
        self.0.get(id).await
    }
    async fn replay(&self, id: &str) -> crate::Result<()> {
        self.0.replay(id).await
    }
    async fn delete(&self, id: &str) -> crate::Result<bool> {
        self.0.delete(id).await
    }
    async fn delete_many(&self, ids: &[String]) -> crate::Result<usize> {
        self.1.fetch_add(1, Ordering::SeqCst);
        let mut all = self.0 .0.lock();
        let before = all.len();
        all.retain(|l| !ids.contains(&l.id));
        Ok(before - all.len())
    }
}

/// Settles nothing; tells which aggregate versions were settled.
struct Settled(tokio::sync::mpsc::UnboundedSender<u64>);

#[async_trait::async_trait]
impl Settle<u64> for Settled {
    type Raw = std::convert::Infallible;

    fn source(&self, version: &u64) -> String {
        version.to_string()
    }

    async fn ack(&self, version: u64) {
        let _ = self.0.send(version);
    }

    async fn dead_letter(&self, version: u64, _: Letter<Self::Raw>, _: &crate::Failure) -> bool {
        let _ = self.0.send(version);
        true
    }
}

/// A replayed head with 69 letters parked behind it: the worker handles
/// the head, then the 69 in version order, deletes them in two DLQ calls
/// (batches of 64, not one per letter) and releases the aggregate.
#[tokio::test]
async fn a_long_release_deletes_its_letters_in_batches() {
    let dlq = Arc::new(CountedLetters::default());
    let mut head = letter("head", "g", "a", 1);
    head.failure.kind = crate::FailureKind::Permanent;
    // Replayed: taken off the DLQ, on its way back.
    let replayed = head.replayed_envelope().expect("decoded");
    for v in (2..=70).rev() {
        dlq.0 .0.lock().push(letter(&format!("p{v}"), "g", "a", v));
    }
    let parking = Parking::new("g", Arc::clone(&dlq) as Arc<dyn crate::DeadLetterQueue>);
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let sub = Subscription::builder("g")
        .park_aggregate_on_failure(true)
        .handler(crate::handler_fn(move |e: EventEnvelope| {
            let seen = seen_tx.clone();
            async move {
                let _ = seen.send(e.aggregate_version);
                Ok(())
            }
        }))
        .build()
        .expect("valid");
    let q = KeyedQueue::new(10);
    q.push(Delivery::new(Arc::new(replayed), 1_u64), None)
        .await
        .expect("room");
    let (settled_tx, mut settled) = tokio::sync::mpsc::unbounded_channel();
    let settle = Settled(settled_tx);
    let (stop, counters) = (CancellationToken::new(), Counters::default());
    let worker = Worker {
        destination: "test",
        backend: "test",
        queue: &q,
        subscription: &sub,
        stop: &stop,
        counters: &counters,
        settle: &settle,
        parking: Some(&parking),
    }
    .run();
    let check = async {
        assert_eq!(settled.recv().await, Some(1), "the head is settled");
        stop.cancel();
    };
    tokio::time::timeout(Duration::from_secs(5), async {
        tokio::join!(worker, check)
    })
    .await
    .expect("the release ends");
    let mut handled = Vec::new();
    while let Ok(v) = seen.try_recv() {
        handled.push(v);
    }
    assert_eq!(handled, (1..=70).collect::<Vec<u64>>(), "in version order");
    assert!(dlq.0 .0.lock().is_empty(), "every released letter deleted");
    assert_eq!(
        dlq.1.load(Ordering::SeqCst),
        2,
        "64 + 5 letters: two deletes"
    );
    assert!(!parking.is_parked("a"), "released");
}

fn letter(id: &str, group: &str, agg: &str, version: u64) -> crate::DeadLetter {
    let envelope = EventEnvelope::new(agg, version, &Ping).expect("encode");
    let failure = crate::Failure::parked(group, &envelope);
    crate::DeadLetter::event(id, envelope, failure)
}

/// The parked set is the group's DLQ as of the last load: loaded before
/// first use, reloaded only after `invalidate` (a member took partitions
/// another parked in), and other groups' letters park nothing.
#[tokio::test]
async fn parking_loads_from_the_dlq_and_reloads_after_invalidate() {
    let dlq = Arc::new(Letters::default());
    dlq.0.lock().push(letter("1", "g", "a", 2));
    dlq.0.lock().push(letter("2", "other", "b", 2));
    let parking = Parking::new("g", Arc::clone(&dlq) as Arc<dyn crate::DeadLetterQueue>);
    let stop = CancellationToken::new();
    assert!(parking.ready(&stop).await);
    assert!(parking.is_parked("a"));
    assert!(!parking.is_parked("b"), "another group's letter");
    // Another member parks `c` in a partition this one then takes.
    dlq.0.lock().push(letter("3", "g", "c", 5));
    assert!(parking.ready(&stop).await);
    assert!(!parking.is_parked("c"), "not reloaded without a reason");
    parking.invalidate();
    assert!(parking.ready(&stop).await);
    assert!(parking.is_parked("c"), "reloaded after invalidate");
    // A release here, then a reload: the DLQ says the same.
    dlq.0.lock().retain(|l| l.id != "1");
    parking.set("a", false);
    parking.invalidate();
    assert!(parking.ready(&stop).await);
    assert!(!parking.is_parked("a"));
}

/// `parked` lists an aggregate with parked letters, its head being its
/// lowest version whatever the queue order; `discard` deletes the head
/// and replays the next one.
#[tokio::test]
async fn parked_view_and_discard() {
    use crate::DeadLetterQueue;
    let dlq = Letters::default();
    let mut head = letter("h", "g", "a", 3);
    head.failure.kind = crate::FailureKind::Permanent;
    dlq.0.lock().push(letter("p5", "g", "a", 5));
    dlq.0.lock().push(head);
    dlq.0.lock().push(letter("p4", "g", "a", 4));
    let mut alone = letter("z", "g", "z", 1);
    alone.failure.kind = crate::FailureKind::Exhausted;
    dlq.0.lock().push(alone);
    let view = dlq
        .parked(&crate::DeadLetterQuery::all())
        .await
        .expect("parked");
    assert_eq!(
        view,
        [crate::ParkedAggregate {
            group: "g".into(),
            aggregate_id: "a".into(),
            head: "h".into(),
            parked: 2,
        }],
        "a letter with nothing behind it is not listed"
    );
    assert!(dlq.discard("h").await.expect("discard"));
    assert!(!dlq.discard("h").await.expect("discard again"));
}

/// A deferred retry keeps its aggregate busy (its later deliveries wait)
/// while other aggregates are taken; it is handed out once due, ahead of
/// the rest; a worker waiting in `take` wakes for it.
#[tokio::test(start_paused = true)]
async fn a_deferred_delivery_keeps_its_aggregate_and_comes_back_when_due() {
    let q = KeyedQueue::new(10);
    for (agg, v) in [("a", 1), ("a", 2), ("b", 1)] {
        q.push(delivery(agg, v), None).await.expect("room");
    }
    let a1 = q.try_take().expect("a1");
    q.defer(a1, tokio::time::Instant::now() + Duration::from_secs(5));
    assert_eq!(q.deferred(), 1);
    let b1 = q.try_take().expect("b1 while a1 waits");
    assert_eq!(b1.key(), "b");
    assert!(q.finish("b").is_none());
    assert!(q.try_take().is_none(), "a2 waits behind the deferred a1");
    let started = tokio::time::Instant::now();
    let again = q.take().await;
    assert_eq!(
        (again.key(), again.envelope.aggregate_version),
        ("a", 1),
        "a1 comes back first"
    );
    assert!(started.elapsed() >= Duration::from_secs(5), "when due");
    let a2 = q.finish("a").expect("then a2, in order");
    assert_eq!(a2.envelope.aggregate_version, 2);
}

/// Draining or removing a deferred delivery frees its aggregate; a
/// delivery of it still waiting is handed out next.
#[tokio::test]
async fn a_removed_deferred_delivery_frees_its_aggregate() {
    let q = KeyedQueue::new(10);
    for v in [1, 2] {
        let d = delivery("a", v);
        q.push(Delivery::new(d.envelope, v), None)
            .await
            .expect("room");
    }
    let a1 = q.try_take().expect("a1");
    assert!(q.try_take().is_none(), "a2 now waits behind a1");
    q.defer(a1, tokio::time::Instant::now() + Duration::from_secs(60));
    let mut tokens = Vec::new();
    q.for_each_token(|t| tokens.push(*t));
    tokens.sort_unstable();
    assert_eq!(tokens, [1, 2], "the deferred one counts as held");
    let removed = q.remove_where(|t| *t == 1);
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].token, 1);
    let a2 = q.try_take().expect("a is free: a2 is next");
    assert_eq!(a2.token, 2);
    q.defer(a2, tokio::time::Instant::now() + Duration::from_secs(60));
    assert_eq!(q.drain().len(), 1, "drain takes the deferred one");
    assert_eq!(q.in_flight(), 0, "and frees its aggregate");
}

#[tokio::test]
async fn the_backlog_leaves_out_what_waits_behind_a_retry() {
    let q = KeyedQueue::new(10);
    for d in [delivery("a", 1), delivery("a", 2), delivery("b", 1)] {
        q.push(d, None).await.expect("room");
    }
    assert_eq!(q.backlog(), 3);
    let a1 = q.try_take().expect("a1");
    let b1 = q.try_take().expect("b1: a2 waits behind a1");
    assert_eq!(b1.key(), "b");
    assert_eq!(q.backlog(), 1, "a2 is taken as soon as a1 is handled");
    let dry = q.ran_dry();
    tokio::pin!(dry);
    dry.as_mut().enable();
    q.defer(a1, tokio::time::Instant::now() + Duration::from_secs(60));
    assert_eq!(q.backlog(), 0, "a2 now waits out a1's backoff");
    tokio::time::timeout(Duration::from_secs(5), dry)
        .await
        .expect("deferring wakes a reader holding back its fetch");
}

/// A core of `prefetch` slots for a group whose handler does nothing.
fn core(prefetch: usize) -> MemberCore<()> {
    let sub = Subscription::builder("g")
        .handler(crate::handler_fn(|_e| async { Ok(()) }))
        .build()
        .expect("subscription");
    MemberCore::new(
        Arc::new(Counters::new("test")),
        sub,
        prefetch,
        CancellationToken::new(),
        || Arc::new(Letters::default()),
    )
}

#[tokio::test]
async fn a_reader_fetches_half_its_prefetch_while_workers_have_a_backlog() {
    let core = core(8);
    // Six fetched and queued, none handled: two slots free.
    let mut held: Vec<_> = (0..6).map(|_| core.try_slot().expect("slot")).collect();
    for v in 1..=6 {
        core.queue().push_now(delivery(&format!("a{v}"), 1));
    }
    let fetch = core.fetch_slots();
    tokio::pin!(fetch);
    assert!(
        futures::poll!(fetch.as_mut()).is_pending(),
        "two free slots and six queued: the reader waits for a fuller fetch"
    );
    // Two handled: four free, half the prefetch.
    drop(held.split_off(4));
    let slots = tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .expect("fetches at half the prefetch")
        .expect("not stopped");
    assert_eq!(slots.len(), 4);
    assert_eq!(held.len(), 4, "still being handled");
}

/// Counts the wake-ups of the task it wakes.
struct Wakes(std::sync::atomic::AtomicUsize);

impl futures::task::ArcWake for Wakes {
    fn wake_by_ref(this: &Arc<Self>) {
        this.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A reader short of half its prefetch is woken once the slots it lacks
/// are free, not once per settled message (each wake-up is a thread
/// woken and a poll for nothing).
#[tokio::test]
async fn a_reader_waiting_for_slots_is_woken_once_they_are_all_free() {
    let core = core(8);
    // Two free slots, six queued: the fetch waits for two more.
    let mut held: Vec<_> = (0..6).map(|_| core.try_slot().expect("slot")).collect();
    for v in 1..=6 {
        core.queue().push_now(delivery(&format!("a{v}"), 1));
    }
    let wakes = Arc::new(Wakes(std::sync::atomic::AtomicUsize::new(0)));
    let waker = futures::task::waker(Arc::clone(&wakes));
    let mut cx = std::task::Context::from_waker(&waker);
    let fetch = core.fetch_slots();
    tokio::pin!(fetch);
    assert!(std::future::Future::poll(fetch.as_mut(), &mut cx).is_pending());
    drop(held.pop());
    assert_eq!(wakes.0.load(Ordering::SeqCst), 0, "one of two slots freed");
    drop(held.pop());
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "both freed");
    match std::future::Future::poll(fetch.as_mut(), &mut cx) {
        std::task::Poll::Ready(Some(slots)) => assert_eq!(slots.len(), 4),
        other => panic!(
            "expected four slots, got {:?}",
            other.map(|s| s.map(|s| s.len()))
        ),
    }
}

#[tokio::test]
async fn a_reader_fetches_at_once_when_the_workers_run_dry() {
    let core = core(8);
    let held: Vec<_> = (0..7).map(|_| core.try_slot().expect("slot")).collect();
    core.queue().push_now(delivery("a", 1));
    let fetch = core.fetch_slots();
    tokio::pin!(fetch);
    assert!(
        futures::poll!(fetch.as_mut()).is_pending(),
        "one free slot and one queued: the reader waits"
    );
    // The worker takes the last delivery and finds nothing more.
    let _a = core.queue().try_take().expect("a");
    let taken = core.queue().take();
    tokio::pin!(taken);
    assert!(futures::poll!(taken.as_mut()).is_pending());
    let slots = tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .expect("a worker with nothing to do wakes the reader")
        .expect("not stopped");
    assert_eq!(slots.len(), 1);
    drop(held);
}

/// An event of a schema version newer than the typed handler knows is
/// parked at once as `NewerVersion` (no retries, though the policy allows
/// five), counted as parked, not as a failure.
#[tokio::test]
async fn a_newer_version_is_parked_at_once_not_retried() {
    let sub = Subscription::builder("g")
        .retry(crate::RetryPolicy::fixed(5, Duration::from_millis(1)).expect("valid"))
        .handler(crate::handler_for(|_: Ping, _| async { Ok(()) }))
        .build()
        .expect("valid");
    let mut envelope = EventEnvelope::new("a", 1, &Ping).expect("encode");
    envelope.schema_version = 2;
    let mut d = Delivery::new(Arc::new(envelope), ());
    let counters = Counters::default();
    let step = attempt_once(&sub, &mut d, &counters).await;
    let Step::Done(Outcome::DeadLetter(failure)) = &step else {
        panic!("parked at once: {step:?}");
    };
    assert_eq!(failure.kind, crate::FailureKind::NewerVersion);
    assert_eq!(d.attempts, 1);
    assert!(
        failure.error.contains("schema version 2"),
        "{}",
        failure.error
    );
    counters.record("g", &d, &Outcome::DeadLetter(failure.clone()));
    counters.letter_written("g", failure.kind);
    let stats = counters.snapshot();
    assert_eq!(
        (stats.failed_attempts, stats.dead_lettered, stats.parked),
        (0, 0, 1)
    );
}
