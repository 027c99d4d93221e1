//! The keyed work queue: at most one delivery per aggregate out at a time,
//! in arrival order per aggregate, different aggregates in parallel.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::Notify;

use crate::EventEnvelope;

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

/// An aggregate as the queue knows it: a 64-bit hash of its id (no string
/// copied per delivery). Two aggregates whose ids collide (odds 2^-64 per
/// pair, the hasher seeded per queue) are only serialized together: each
/// still gets its events in order. The hash is foldhash's, several times
/// faster than SipHash on short ids; its weaker flooding resistance does
/// not matter here, where a map never holds more than the queue's
/// capacity of aggregates.
type Key = u64;

/// The queue's maps hash a [`Key`] as itself: it already is a keyed hash
/// of the aggregate id, so hashing it again (SipHash, the maps' default)
/// only cost time — five of the seven hashes per delivery.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached for a `u64` key; kept correct for any other.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type KeyMap<V> = HashMap<Key, V, BuildHasherDefault<KeyHasher>>;
type KeySet = HashSet<Key, BuildHasherDefault<KeyHasher>>;

struct Queue<T> {
    /// Deliveries in arrival order, not yet looked at.
    ready: VecDeque<Delivery<T>>,
    /// Deliveries whose aggregate is being handled, per aggregate, in order.
    waiting: KeyMap<VecDeque<Delivery<T>>>,
    /// Aggregates with a delivery out right now.
    busy: KeySet,
    /// Deliveries waiting out a retry backoff, with when each is due. Each
    /// is its aggregate's delivery out (its key stays in `busy`, so the
    /// aggregate's later deliveries wait behind it), but no worker holds
    /// it meanwhile. Few at a time: scanned, not sorted.
    deferred: Vec<(tokio::time::Instant, Delivery<T>)>,
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
    /// How much room wakes a pusher waiting for it (see [`freed`](Self::freed)).
    refill: usize,
    hasher: foldhash::fast::RandomState,
    queue: Mutex<Queue<T>>,
    work: Notify,
    room: Notify,
    /// Woken when a worker finds nothing to take, or a delivery is set
    /// aside for a retry: the backlog may have run dry (see
    /// [`ran_dry`](Self::ran_dry)).
    dry: Notify,
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
        let capacity = capacity.max(1);
        KeyedQueue {
            capacity,
            refill: (capacity / 4).max(1),
            hasher: foldhash::fast::RandomState::default(),
            queue: Mutex::new(Queue {
                ready: VecDeque::new(),
                waiting: KeyMap::default(),
                busy: KeySet::default(),
                deferred: Vec::new(),
                queued: 0,
            }),
            work: Notify::new(),
            room: Notify::new(),
            dry: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue<T>> {
        self.queue.lock()
    }

    /// A delivery left the queue, which now holds `queued`: wakes a pusher
    /// waiting for room when that has fallen to a quarter of the capacity
    /// below full. A pusher waits only on a full queue, and the count falls
    /// one at a time, so it passes that mark after every wait; a blocked
    /// publisher is woken once per quarter of the queue taken, and pushes
    /// that much under one lock, instead of being woken (and pushing one)
    /// per delivery taken.
    fn freed(&self, queued: usize) {
        if queued + self.refill == self.capacity {
            self.room.notify_one();
        }
    }

    fn key(&self, aggregate_id: &str) -> Key {
        self.hasher.hash_one(aggregate_id)
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

    /// Appends `deliveries` in order under one lock per run of room (one
    /// wake-up per batch instead of one per delivery), waiting for room as
    /// [`push`](Self::push) does; gives back those not queued if
    /// `deadline` passes first.
    pub async fn push_all(
        &self,
        deliveries: impl IntoIterator<Item = Delivery<T>>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(), Vec<Delivery<T>>> {
        let mut rest = deliveries.into_iter().peekable();
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut q = self.lock();
                let mut pushed = false;
                while q.queued < self.capacity {
                    let Some(d) = rest.next() else { break };
                    q.queued += 1;
                    q.ready.push_back(d);
                    pushed = true;
                }
                drop(q);
                if pushed {
                    self.work.notify_one();
                }
                if rest.peek().is_none() {
                    return Ok(());
                }
            }
            match deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, room).await.is_err() {
                        return Err(rest.collect());
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
        let key = self.key(delivery.key());
        let mut q = self.lock();
        q.busy.remove(&key);
        q.queued += 1;
        q.ready.push_front(delivery);
        drop(q);
        self.work.notify_one();
    }

    /// Sets `delivery` aside until `due` (a retry's backoff): its
    /// aggregate stays busy, so its later deliveries keep waiting behind
    /// it, while the worker that deferred it goes on with other
    /// aggregates. [`take`](Self::take) hands it out again once it is due,
    /// ahead of anything else.
    pub fn defer(&self, delivery: Delivery<T>, due: tokio::time::Instant) {
        self.lock().deferred.push((due, delivery));
        // Every idle worker recomputes when it must wake next.
        self.work.notify_waiters();
        // What waits behind this aggregate left the backlog.
        self.dry.notify_waiters();
    }

    /// Deliveries waiting out a retry backoff.
    pub fn deferred(&self) -> usize {
        self.lock().deferred.len()
    }

    /// Takes the next delivery: a deferred one that is due, else the next
    /// whose aggregate is not busy; waits for one.
    pub async fn take(&self) -> Delivery<T> {
        // Fast path: no waiter registered while there is work.
        if let Some(d) = self.try_take() {
            return d;
        }
        loop {
            let work = self.work.notified();
            tokio::pin!(work);
            work.as_mut().enable();
            if let Some(d) = self.try_take() {
                return d;
            }
            // A worker about to wait: a reader holding back its next
            // fetch for a fuller one fetches now.
            self.dry.notify_waiters();
            let next_due = self.lock().deferred.iter().map(|(due, _)| *due).min();
            match next_due {
                Some(due) => {
                    tokio::select! {
                        () = work => {}
                        () = tokio::time::sleep_until(due) => {}
                    }
                }
                None => work.await,
            }
        }
    }

    /// Takes a deferred delivery that is due, else the next delivery
    /// whose aggregate is not busy, if any.
    pub fn try_take(&self) -> Option<Delivery<T>> {
        let mut q = self.lock();
        if !q.deferred.is_empty() {
            let now = tokio::time::Instant::now();
            let due = q
                .deferred
                .iter()
                .enumerate()
                .filter(|(_, (at, _))| *at <= now)
                .min_by_key(|(_, (at, _))| *at)
                .map(|(i, _)| i);
            if let Some(i) = due {
                // Its aggregate is still busy: it is that aggregate's turn.
                return Some(q.deferred.swap_remove(i).1);
            }
        }
        while let Some(d) = q.ready.pop_front() {
            let key = self.key(d.key());
            if q.busy.contains(&key) {
                q.waiting.entry(key).or_default().push_back(d);
                continue;
            }
            q.busy.insert(key);
            q.queued -= 1;
            let (queued, more) = (q.queued, !q.ready.is_empty());
            drop(q);
            self.freed(queued);
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
        let key = self.key(key);
        let mut q = self.lock();
        let next = match q.waiting.entry(key) {
            std::collections::hash_map::Entry::Occupied(mut waiting) => {
                let next = waiting.get_mut().pop_front();
                if waiting.get().is_empty() {
                    waiting.remove();
                }
                next
            }
            std::collections::hash_map::Entry::Vacant(_) => None,
        };
        match next {
            Some(d) => {
                q.queued -= 1;
                let queued = q.queued;
                drop(q);
                self.freed(queued);
                Some(d)
            }
            None => {
                q.busy.remove(&key);
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

    /// Deliveries queued that a worker takes without waiting out a retry
    /// backoff: those not taken yet, less those waiting behind a deferred
    /// delivery of their aggregate.
    pub fn backlog(&self) -> usize {
        let q = self.lock();
        let behind_deferred: usize = q
            .deferred
            .iter()
            .filter_map(|(_, d)| q.waiting.get(&self.key(d.key())))
            .map(VecDeque::len)
            .sum();
        q.queued - behind_deferred
    }

    /// Resolves once a worker finds nothing to take, or a delivery is
    /// deferred (either may leave the [`backlog`](Self::backlog) empty).
    /// Enable it (see [`Notified::enable`](tokio::sync::futures::Notified::enable))
    /// before looking at the backlog, so that a wake-up between the two is
    /// not missed.
    pub fn ran_dry(&self) -> tokio::sync::futures::Notified<'_> {
        self.dry.notified()
    }

    /// Aggregates with a delivery out.
    pub fn in_flight(&self) -> usize {
        self.lock().busy.len()
    }

    /// Removes and returns everything not yet taken, deferred retries
    /// included (for shutdown, or a channel whose tokens died); the
    /// aggregates of the deferred ones are free again.
    pub fn drain(&self) -> Vec<Delivery<T>> {
        let mut q = self.lock();
        let deferred: Vec<Delivery<T>> = q.deferred.drain(..).map(|(_, d)| d).collect();
        for d in &deferred {
            let key = self.key(d.key());
            q.busy.remove(&key);
        }
        let mut all: Vec<Delivery<T>> = deferred;
        all.extend(q.ready.drain(..));
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
        let queued_removed = removed.len();
        // A deferred retry removed frees its aggregate; one of that
        // aggregate's deliveries still waiting, if any, goes first.
        let mut kept = Vec::new();
        for (due, d) in std::mem::take(&mut q.deferred) {
            if f(&d.token) {
                let key = self.key(d.key());
                q.busy.remove(&key);
                if let Some(mut waiting) = q.waiting.remove(&key) {
                    while let Some(w) = waiting.pop_back() {
                        q.ready.push_front(w);
                    }
                }
                removed.push(d);
            } else {
                kept.push((due, d));
            }
        }
        q.deferred = kept;
        q.queued -= queued_removed;
        drop(q);
        self.work.notify_waiters();
        if !removed.is_empty() {
            self.room.notify_waiters();
        }
        removed
    }

    /// Applies `f` to the tokens of every delivery queued (not taken),
    /// deferred retries included.
    pub fn for_each_token(&self, mut f: impl FnMut(&T)) {
        let q = self.lock();
        q.ready
            .iter()
            .chain(q.waiting.values().flatten())
            .chain(q.deferred.iter().map(|(_, d)| d))
            .for_each(|d| f(&d.token));
    }
}
