//! Building blocks for backend authors: a keyed work queue that keeps each
//! aggregate's events in order while different aggregates run in parallel,
//! and the attempt loop that applies a [`RetryPolicy`](crate::RetryPolicy).
//!
//! Every backend fetches messages its own way (XREADGROUP, basic.consume,
//! a Kafka poll), pushes them into a [`KeyedQueue`], and runs workers that
//! [`take`](KeyedQueue::take) a [`Delivery`], call [`attempt`], then ack,
//! dead-letter or put back according to the [`Outcome`], and
//! [`finish`](KeyedQueue::finish) the aggregate.

use std::any::Any;
use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{EventEnvelope, Subscription};

/// Locks a mutex, ignoring poisoning: every critical section in the
/// backends completes its update before the guard drops, so a panic
/// elsewhere never leaves the data half-changed.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Read-locks an `RwLock`, ignoring poisoning (as [`lock`]).
pub fn lock_read<T>(l: &std::sync::RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

/// Write-locks an `RwLock`, ignoring poisoning (as [`lock`]).
pub fn lock_write<T>(l: &std::sync::RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// One message on its way to a handler: the event, the backend's token to
/// ack it with, and its failure history.
#[derive(Debug, Clone)]
pub struct Delivery<T> {
    /// The event.
    pub envelope: Arc<EventEnvelope>,
    /// The backend's handle on the message (entry id, delivery tag, offset).
    pub token: T,
    /// Attempts already made.
    pub attempts: u32,
    /// When the first attempt failed.
    pub first_failed_at: Option<DateTime<Utc>>,
}

impl<T> Delivery<T> {
    /// A fresh delivery.
    pub fn new(envelope: Arc<EventEnvelope>, token: T) -> Self {
        Delivery {
            envelope,
            token,
            attempts: 0,
            first_failed_at: None,
        }
    }

    /// The ordering key: the aggregate id.
    pub fn key(&self) -> &str {
        &self.envelope.aggregate_id
    }
}

struct Queue<T> {
    /// Deliveries in arrival order, not yet looked at.
    ready: VecDeque<Delivery<T>>,
    /// Deliveries whose aggregate is being handled, per aggregate, in order.
    waiting: HashMap<String, VecDeque<Delivery<T>>>,
    /// Aggregates with a delivery out right now.
    busy: HashSet<String>,
    /// `ready` + `waiting` lengths.
    queued: usize,
}

/// A bounded queue that hands out at most one delivery per aggregate at a
/// time, in arrival order per aggregate.
///
/// The worker that [`finish`](Self::finish)es an aggregate gets that
/// aggregate's next delivery back and must handle it next, so order holds
/// without another worker racing for it.
pub struct KeyedQueue<T> {
    capacity: usize,
    queue: Mutex<Queue<T>>,
    work: Notify,
    room: Notify,
}

impl<T> std::fmt::Debug for KeyedQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let q = self.lock();
        f.debug_struct("KeyedQueue")
            .field("capacity", &self.capacity)
            .field("queued", &q.queued)
            .field("busy", &q.busy.len())
            .finish()
    }
}

impl<T> KeyedQueue<T> {
    /// A queue that holds at most `capacity` deliveries not yet taken.
    pub fn new(capacity: usize) -> Self {
        KeyedQueue {
            capacity: capacity.max(1),
            queue: Mutex::new(Queue {
                ready: VecDeque::new(),
                waiting: HashMap::new(),
                busy: HashSet::new(),
                queued: 0,
            }),
            work: Notify::new(),
            room: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue<T>> {
        lock(&self.queue)
    }

    /// Appends a delivery, waiting for room; gives it back if `deadline`
    /// passes first.
    pub async fn push(
        &self,
        delivery: Delivery<T>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(), Delivery<T>> {
        let mut delivery = Some(delivery);
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut q = self.lock();
                if q.queued < self.capacity {
                    q.queued += 1;
                    if let Some(d) = delivery.take() {
                        q.ready.push_back(d);
                    }
                    drop(q);
                    self.work.notify_one();
                    return Ok(());
                }
            }
            match deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, room).await.is_err() {
                        return Err(delivery.take().expect("delivery kept until pushed"));
                    }
                }
                None => room.await,
            }
        }
    }

    /// Appends a delivery regardless of capacity (replays, reclaimed messages).
    pub fn push_now(&self, delivery: Delivery<T>) {
        let mut q = self.lock();
        q.queued += 1;
        q.ready.push_back(delivery);
        drop(q);
        self.work.notify_one();
    }

    /// Puts back a delivery that was taken but not finished, ahead of
    /// everything else, and frees its aggregate.
    pub fn requeue(&self, delivery: Delivery<T>) {
        let mut q = self.lock();
        q.busy.remove(delivery.key());
        q.queued += 1;
        q.ready.push_front(delivery);
        drop(q);
        self.work.notify_one();
    }

    /// Takes the next delivery whose aggregate is not busy, waiting for one.
    pub async fn take(&self) -> Delivery<T> {
        loop {
            let work = self.work.notified();
            tokio::pin!(work);
            work.as_mut().enable();
            if let Some(d) = self.try_take() {
                return d;
            }
            work.await;
        }
    }

    /// Takes the next delivery whose aggregate is not busy, if any.
    pub fn try_take(&self) -> Option<Delivery<T>> {
        let mut q = self.lock();
        while let Some(d) = q.ready.pop_front() {
            if q.busy.contains(d.key()) {
                q.waiting
                    .entry(d.key().to_owned())
                    .or_default()
                    .push_back(d);
                continue;
            }
            q.busy.insert(d.key().to_owned());
            q.queued -= 1;
            let more = !q.ready.is_empty();
            drop(q);
            self.room.notify_one();
            if more {
                // Let another idle worker look at the rest.
                self.work.notify_one();
            }
            return Some(d);
        }
        None
    }

    /// Marks `key` finished. Returns the next waiting delivery of the same
    /// aggregate, which the caller must handle next (the aggregate stays
    /// busy), or `None` when the aggregate is free again.
    pub fn finish(&self, key: &str) -> Option<Delivery<T>> {
        let mut q = self.lock();
        let next = q.waiting.get_mut(key).and_then(VecDeque::pop_front);
        if q.waiting.get(key).is_some_and(VecDeque::is_empty) {
            q.waiting.remove(key);
        }
        match next {
            Some(d) => {
                q.queued -= 1;
                drop(q);
                self.room.notify_one();
                Some(d)
            }
            None => {
                q.busy.remove(key);
                drop(q);
                // Deliveries of other aggregates may have piled up behind this one.
                self.work.notify_one();
                None
            }
        }
    }

    /// Deliveries queued and not yet taken.
    pub fn queued(&self) -> usize {
        self.lock().queued
    }

    /// Aggregates with a delivery out.
    pub fn in_flight(&self) -> usize {
        self.lock().busy.len()
    }

    /// Removes and returns everything not yet taken (for shutdown).
    pub fn drain(&self) -> Vec<Delivery<T>> {
        let mut q = self.lock();
        let mut all: Vec<Delivery<T>> = q.ready.drain(..).collect();
        for (_, w) in q.waiting.drain() {
            all.extend(w);
        }
        q.queued = 0;
        all
    }

    /// Removes and returns the deliveries not yet taken whose token `f`
    /// selects (a Kafka member's revoked partitions), keeping the others
    /// in order. A delivery already out is not touched.
    pub fn remove_where(&self, mut f: impl FnMut(&T) -> bool) -> Vec<Delivery<T>> {
        let mut q = self.lock();
        let mut removed = Vec::new();
        let mut sift = |deliveries: VecDeque<Delivery<T>>| -> VecDeque<Delivery<T>> {
            deliveries
                .into_iter()
                .filter_map(|d| {
                    if f(&d.token) {
                        removed.push(d);
                        None
                    } else {
                        Some(d)
                    }
                })
                .collect()
        };
        q.ready = sift(std::mem::take(&mut q.ready));
        for waiting in q.waiting.values_mut() {
            *waiting = sift(std::mem::take(waiting));
        }
        q.waiting.retain(|_, w| !w.is_empty());
        q.queued -= removed.len();
        drop(q);
        if !removed.is_empty() {
            self.room.notify_waiters();
        }
        removed
    }

    /// Applies `f` to the tokens of every delivery queued (not taken).
    pub fn for_each_token(&self, mut f: impl FnMut(&T)) {
        let q = self.lock();
        q.ready
            .iter()
            .chain(q.waiting.values().flatten())
            .for_each(|d| f(&d.token));
    }
}

/// The counters of [`BusStats`](crate::BusStats) that every backend keeps
/// the same way.
#[derive(Debug, Default)]
pub struct Counters {
    published: AtomicU64,
    handled: AtomicU64,
    failed_attempts: AtomicU64,
    dead_lettered: AtomicU64,
    replayed: AtomicU64,
    worker_restarts: AtomicU64,
}

impl Counters {
    /// Counts `n` published events.
    pub fn published(&self, n: usize) {
        self.published.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts one replayed dead letter.
    pub fn replayed(&self) {
        self.replayed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a dead letter written outside [`attempt`] (an undecodable message).
    pub fn dead_lettered(&self) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts what one [`attempt`] did with `delivery`.
    pub fn record<T>(&self, delivery: &Delivery<T>, outcome: &Outcome) {
        let failed = match outcome {
            Outcome::Handled => {
                self.handled.fetch_add(1, Ordering::Relaxed);
                delivery.attempts.saturating_sub(1)
            }
            Outcome::DeadLetter { .. } => {
                self.dead_lettered.fetch_add(1, Ordering::Relaxed);
                delivery.attempts
            }
            Outcome::Interrupted => delivery.attempts,
        };
        self.failed_attempts
            .fetch_add(u64::from(failed), Ordering::Relaxed);
    }

    /// The counters as stats, with no groups filled in.
    pub fn snapshot(&self) -> crate::BusStats {
        crate::BusStats {
            published: self.published.load(Ordering::Relaxed),
            handled: self.handled.load(Ordering::Relaxed),
            failed_attempts: self.failed_attempts.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            replayed: self.replayed.load(Ordering::Relaxed),
            worker_restarts: self.worker_restarts.load(Ordering::Relaxed),
            groups: Default::default(),
            streams: Default::default(),
        }
    }
}

/// What [`attempt`] made of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The handler succeeded: ack it.
    Handled,
    /// Attempts are used up or the failure is permanent: dead-letter it,
    /// then ack it.
    DeadLetter {
        /// The last error, as text.
        error: String,
        /// When the last attempt failed.
        last_failed_at: DateTime<Utc>,
    },
    /// `stop` fired during a retry backoff: leave it unacked for redelivery.
    Interrupted,
}

/// Runs the subscription's handler on `delivery` until it succeeds, the
/// failure is permanent, the attempts run out, or `stop` fires during a
/// backoff. Panics count as failures. Updates `delivery.attempts` and
/// `first_failed_at`. A handler already running when `stop` fires is let
/// finish.
pub async fn attempt<T>(
    subscription: &Subscription,
    delivery: &mut Delivery<T>,
    stop: &CancellationToken,
) -> Outcome {
    let retry = subscription.retry();
    loop {
        delivery.attempts += 1;
        let result = AssertUnwindSafe(subscription.handler().handle(&delivery.envelope))
            .catch_unwind()
            .await;
        let (error, permanent) = match result {
            Ok(Ok(())) => return Outcome::Handled,
            Ok(Err(e)) => (e.to_string(), e.is_permanent()),
            Err(panic) => (
                format!("handler panicked: {}", panic_message(&*panic)),
                false,
            ),
        };
        let now = Utc::now();
        delivery.first_failed_at.get_or_insert(now);
        if permanent || !retry.should_retry(delivery.attempts) {
            tracing::warn!(
                group = subscription.group(),
                event_id = %delivery.envelope.event_id,
                attempts = delivery.attempts,
                %error,
                "dead-lettering event"
            );
            return Outcome::DeadLetter {
                error,
                last_failed_at: now,
            };
        }
        let delay: Duration = retry.delay_before(delivery.attempts + 1);
        tracing::debug!(attempt = delivery.attempts, ?delay, %error, "handler failed, retrying");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return Outcome::Interrupted,
        }
    }
}

/// What a backend does with a delivery once [`attempt`] is done with it:
/// ack it ([`Outcome::Handled`]), or dead-letter and ack it
/// ([`Outcome::DeadLetter`]). [`Outcome::Interrupted`] never reaches it.
#[async_trait::async_trait]
pub trait Settle<T>: Send + Sync {
    /// Acks or dead-letters `delivery`.
    async fn settle(&self, delivery: Delivery<T>, outcome: Outcome);
}

/// The worker loop every backend runs `concurrency` times per member:
/// take a delivery, [`attempt`] it, count it, [`Settle`] it, then take
/// the same aggregate's next delivery if one is waiting. Returns when
/// `stop` fires; a handler already running finishes first, and what was
/// taken but not finished goes back to the queue.
///
/// A panic outside the handler (handler panics are caught by [`attempt`])
/// does not end the worker: it frees the aggregate it was working on,
/// counts a restart in [`BusStats::worker_restarts`](crate::BusStats::worker_restarts),
/// logs an error, and goes on, so the other aggregates keep flowing. The
/// message it held is not acked, and is delivered again.
pub async fn run_worker<T: Send>(
    backend: &'static str,
    queue: &KeyedQueue<T>,
    subscription: &Subscription,
    stop: &CancellationToken,
    counters: &Counters,
    settle: &dyn Settle<T>,
) {
    loop {
        let holding: Mutex<Option<String>> = Mutex::new(None);
        let run = AssertUnwindSafe(work(
            backend,
            queue,
            subscription,
            stop,
            counters,
            settle,
            &holding,
        ))
        .catch_unwind()
        .await;
        let Err(panic) = run else { return };
        counters.worker_restarts.fetch_add(1, Ordering::Relaxed);
        let key = lock(&holding).take();
        tracing::error!(
            backend,
            group = subscription.group(),
            aggregate_id = key.as_deref().unwrap_or("-"),
            panic = %panic_message(&*panic),
            "worker panicked outside the handler; restarting it (the message it held is delivered again)"
        );
        if let Some(key) = key {
            // Free the aggregate; its next delivery, if one waits, goes back first.
            if let Some(next) = queue.finish(&key) {
                queue.requeue(next);
            }
        }
        if stop.is_cancelled() {
            return;
        }
    }
}

async fn work<T: Send>(
    backend: &'static str,
    queue: &KeyedQueue<T>,
    subscription: &Subscription,
    stop: &CancellationToken,
    counters: &Counters,
    settle: &dyn Settle<T>,
    holding: &Mutex<Option<String>>,
) {
    loop {
        let mut next = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            d = queue.take() => Some(d),
        };
        while let Some(mut delivery) = next.take() {
            *lock(holding) = Some(delivery.key().to_owned());
            let span = tracing::info_span!(
                "eventsource.handle",
                backend,
                group = subscription.group(),
                event_id = %delivery.envelope.event_id,
                event_type = %delivery.envelope.event_type,
                aggregate_id = %delivery.envelope.aggregate_id,
            );
            crate::trace::set_parent(&span, &delivery.envelope);
            let outcome =
                tracing::Instrument::instrument(attempt(subscription, &mut delivery, stop), span)
                    .await;
            counters.record(&delivery, &outcome);
            if outcome == Outcome::Interrupted {
                queue.requeue(delivery);
                return;
            }
            let envelope = Arc::clone(&delivery.envelope);
            settle.settle(delivery, outcome).await;
            *lock(holding) = None;
            next = queue.finish(&envelope.aggregate_id);
            if stop.is_cancelled() {
                if let Some(d) = next.take() {
                    queue.requeue(d);
                }
                return;
            }
        }
    }
}

/// Waits for a member's tasks — `helpers` tasks first (reader, refresher),
/// then its workers — until `deadline` (or for as long as they take
/// without one), aborting those still running then. Returns how many
/// *workers* were aborted: handlers cut off mid-flight.
pub async fn join_tasks(
    tasks: Vec<tokio::task::JoinHandle<()>>,
    helpers: usize,
    deadline: Option<tokio::time::Instant>,
) -> usize {
    let mut abandoned = 0;
    for (i, mut task) in tasks.into_iter().enumerate() {
        let finished = match deadline {
            Some(d) => tokio::time::timeout_at(d, &mut task).await.is_ok(),
            None => {
                // A task that panicked has nothing left to clean up.
                let _ = (&mut task).await;
                true
            }
        };
        if !finished {
            task.abort();
            if i >= helpers {
                abandoned += 1;
            }
        }
    }
    abandoned
}

/// A running subscription member that a backend can stop.
#[async_trait::async_trait]
pub trait Member: Send + Sync + 'static {
    /// Stops fetching, lets in-flight handlers finish (until `deadline`,
    /// if any, then aborts them) and leaves the group; returns how many
    /// handlers were aborted.
    async fn stop(&self, deadline: Option<tokio::time::Instant>) -> usize;
}

struct Registered<M> {
    group: String,
    filter: String,
    member: Arc<M>,
}

/// The members of a bus and its open/closed state: what every backend's
/// `subscribe`, `unsubscribe` and `shutdown` share.
pub struct Members<M: Member> {
    bus: &'static str,
    /// Each running member with its group and canonical filter.
    members: Mutex<HashMap<u64, Registered<M>>>,
    next: AtomicU64,
    closed: std::sync::atomic::AtomicBool,
    shutdown: CancellationToken,
}

impl<M: Member> Members<M> {
    /// No members yet; `bus` names the bus in errors (`"redis bus"`).
    pub fn new(bus: &'static str) -> Arc<Self> {
        Arc::new(Members {
            bus,
            members: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            closed: std::sync::atomic::AtomicBool::new(false),
            shutdown: CancellationToken::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Registered<M>>> {
        lock(&self.members)
    }

    /// Refuses `subscription` when a running member of its group (on this
    /// bus) uses another filter: [`Error::GroupFilterConflict`](crate::Error::GroupFilterConflict).
    /// Backends whose members live in other processes too check the broker
    /// as well.
    pub fn check_filter(&self, subscription: &Subscription) -> crate::Result<()> {
        let requested = subscription.filter().canonical();
        let members = self.lock();
        let other = members
            .values()
            .find(|r| r.group == subscription.group() && r.filter != requested);
        match other {
            Some(r) => Err(crate::Error::group_filter_conflict(
                &r.group, &r.filter, &requested,
            )),
            None => Ok(()),
        }
    }

    /// [`Error::ShutDown`](crate::Error::ShutDown) once [`shutdown`](Self::shutdown) began.
    pub fn check_open(&self) -> crate::Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(crate::Error::ShutDown(self.bus))
        } else {
            Ok(())
        }
    }

    /// A token cancelled at shutdown, for a new member's tasks.
    pub fn stop_token(&self) -> CancellationToken {
        self.shutdown.child_token()
    }

    /// The members running now.
    pub fn all(&self) -> Vec<Arc<M>> {
        self.lock()
            .values()
            .map(|r| Arc::clone(&r.member))
            .collect()
    }

    /// Registers a started member of `subscription`'s group; its handle's
    /// `unsubscribe` stops it.
    pub fn register(
        self: &Arc<Self>,
        subscription: &Subscription,
        member: Arc<M>,
    ) -> crate::SubscriptionHandle {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            id,
            Registered {
                group: subscription.group().to_owned(),
                filter: subscription.filter().canonical(),
                member,
            },
        );
        let members = Arc::clone(self);
        crate::SubscriptionHandle::new(subscription.group(), move || async move {
            let registered = members.lock().remove(&id);
            if let Some(r) = registered {
                r.member.stop(None).await;
            }
        })
    }

    /// Refuses new work, stops every member within `timeout` and reports.
    pub async fn shutdown(&self, timeout: Duration) -> crate::ShutdownReport {
        self.closed.store(true, Ordering::Release);
        self.shutdown.cancel();
        let members: Vec<Arc<M>> = self.lock().drain().map(|(_, r)| r.member).collect();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut abandoned = 0;
        for member in members {
            abandoned += member.stop(Some(deadline)).await;
        }
        if abandoned > 0 {
            tracing::warn!(
                bus = self.bus,
                abandoned,
                ?timeout,
                "handlers still running at shutdown were aborted; their messages are redelivered"
            );
        }
        crate::ShutdownReport {
            drained: abandoned == 0,
            abandoned,
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DomainEvent;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    struct Ping;
    impl DomainEvent for Ping {
        fn event_type(&self) -> &str {
            "Ping"
        }
        fn aggregate_type(&self) -> &str {
            "Test"
        }
    }

    fn delivery(agg: &str, version: u64) -> Delivery<()> {
        Delivery::new(
            Arc::new(EventEnvelope::new(agg, version, &Ping).expect("encode")),
            (),
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
    impl Settle<()> for PanicsOnce {
        async fn settle(&self, delivery: Delivery<()>, _outcome: Outcome) {
            if !self.0.swap(true, Ordering::SeqCst) {
                panic!("settle bug");
            }
            let _ = self.1.send(delivery.key().to_owned());
        }
    }

    #[tokio::test]
    async fn a_worker_that_panics_outside_the_handler_is_restarted() {
        let q = KeyedQueue::new(10);
        for agg in ["a", "b", "c"] {
            q.push(delivery(agg, 1), None).await.expect("room");
        }
        let sub = Subscription::builder("g")
            .handler(crate::handler_fn(|_e| async { Ok(()) }))
            .build()
            .expect("valid");
        let (tx, mut settled) = tokio::sync::mpsc::unbounded_channel();
        let settle = PanicsOnce(std::sync::atomic::AtomicBool::new(false), tx);
        let (stop, counters) = (CancellationToken::new(), Counters::default());
        let worker = run_worker("test", &q, &sub, &stop, &counters, &settle);
        let check = async {
            let mut got = Vec::new();
            for _ in 0..2 {
                got.push(settled.recv().await.expect("open"));
            }
            stop.cancel();
            got
        };
        let ((), got) = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::join!(worker, check)
        })
        .await
        .expect("the worker goes on after the panic");
        assert_eq!(got, ["b", "c"], "a's settle panicked; b and c still settle");
        assert_eq!(counters.snapshot().worker_restarts, 1);
        assert_eq!(q.in_flight(), 0, "a is free again");
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
}
