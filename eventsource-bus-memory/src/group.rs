//! A consumer group's queue: competing members, per-aggregate order.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use eventsource_core::{Error, EventEnvelope, EventFilter, GroupStats, Result};
use tokio::sync::Notify;

/// One message on its way to a group, with its failure history.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub(crate) envelope: Arc<EventEnvelope>,
    /// Attempts already made (kept when a retry is interrupted by shutdown).
    pub(crate) attempts: u32,
    pub(crate) first_failed_at: Option<DateTime<Utc>>,
}

impl Delivery {
    pub(crate) fn new(envelope: Arc<EventEnvelope>) -> Self {
        Delivery {
            envelope,
            attempts: 0,
            first_failed_at: None,
        }
    }

    fn key(&self) -> &str {
        &self.envelope.aggregate_id
    }
}

#[derive(Debug, Default)]
struct Queue {
    /// Deliveries in arrival order, not yet looked at.
    ready: VecDeque<Delivery>,
    /// Deliveries whose aggregate is being handled, per aggregate, in order.
    waiting: HashMap<String, VecDeque<Delivery>>,
    /// Aggregates with a delivery in a handler right now.
    busy: HashSet<String>,
    /// `ready` + `waiting` lengths.
    queued: usize,
    members: usize,
}

/// A consumer group: one queue that its members compete on.
///
/// At most one event per aggregate is handed out at a time, so the events
/// of one aggregate are handled in order while different aggregates run in
/// parallel on as many workers as the members have.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) name: String,
    pub(crate) filter: EventFilter,
    capacity: usize,
    queue: Mutex<Queue>,
    work: Notify,
    room: Notify,
}

impl Group {
    pub(crate) fn new(name: String, filter: EventFilter, capacity: usize) -> Self {
        Group {
            name,
            filter,
            capacity,
            queue: Mutex::new(Queue::default()),
            work: Notify::new(),
            room: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the queue half-updated
        // in a way that loses deliveries, so poisoning is ignored.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a delivery, waiting up to `timeout` for room.
    pub(crate) async fn push(&self, delivery: Delivery, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut q = self.lock();
                if q.queued < self.capacity {
                    q.queued += 1;
                    q.ready.push_back(delivery);
                    drop(q);
                    self.work.notify_one();
                    return Ok(());
                }
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return Err(Error::Timeout {
                    operation: format!(
                        "memory bus: publish to consumer group `{}` (full at {} undelivered events)",
                        self.name, self.capacity
                    ),
                    after: timeout,
                });
            }
        }
    }

    /// Puts back a delivery that was taken but not finished, ahead of
    /// everything else, and frees its aggregate.
    pub(crate) fn requeue(&self, delivery: Delivery) {
        let mut q = self.lock();
        q.busy.remove(delivery.key());
        q.queued += 1;
        q.ready.push_front(delivery);
        drop(q);
        self.work.notify_one();
    }

    /// Adds a replayed delivery regardless of capacity (it was counted once).
    pub(crate) fn push_replay(&self, delivery: Delivery) {
        let mut q = self.lock();
        q.queued += 1;
        q.ready.push_back(delivery);
        drop(q);
        self.work.notify_one();
    }

    /// Takes the next delivery whose aggregate is not busy, waiting for one.
    pub(crate) async fn take(&self) -> Delivery {
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

    fn try_take(&self) -> Option<Delivery> {
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

    /// Marks `aggregate_id` finished. Returns the next waiting delivery of
    /// the same aggregate, which the caller must handle next (its aggregate
    /// stays busy), so that order holds without another worker racing.
    pub(crate) fn finish(&self, aggregate_id: &str) -> Option<Delivery> {
        let mut q = self.lock();
        let next = match q.waiting.get_mut(aggregate_id) {
            Some(waiting) => {
                let next = waiting.pop_front();
                if waiting.is_empty() {
                    q.waiting.remove(aggregate_id);
                }
                next
            }
            None => None,
        };
        match next {
            Some(d) => {
                q.queued -= 1;
                drop(q);
                self.room.notify_one();
                Some(d)
            }
            None => {
                q.busy.remove(aggregate_id);
                drop(q);
                // Deliveries of other aggregates may have piled up behind this one.
                self.work.notify_one();
                None
            }
        }
    }

    pub(crate) fn join(&self) {
        self.lock().members += 1;
    }

    pub(crate) fn leave(&self) {
        let mut q = self.lock();
        q.members = q.members.saturating_sub(1);
    }

    pub(crate) fn stats(&self, dead_letters: u64) -> GroupStats {
        let q = self.lock();
        GroupStats {
            members: q.members,
            pending: q.queued as u64,
            in_flight: q.busy.len() as u64,
            dead_letters,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventsource_core::DomainEvent;
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

    fn delivery(agg: &str, version: u64) -> Delivery {
        Delivery::new(Arc::new(
            EventEnvelope::new(agg, version, &Ping).expect("encode"),
        ))
    }

    #[tokio::test]
    async fn one_aggregate_at_a_time_in_order() {
        let g = Group::new("g".into(), EventFilter::All, 10);
        for (agg, v) in [("a", 1), ("a", 2), ("b", 1), ("a", 3)] {
            g.push(delivery(agg, v), Duration::from_secs(1))
                .await
                .expect("room");
        }
        let first = g.try_take().expect("a1");
        assert_eq!((first.key(), first.envelope.aggregate_version), ("a", 1));
        let second = g.try_take().expect("b1 skips busy a");
        assert_eq!(second.key(), "b");
        assert!(g.try_take().is_none(), "a2 and a3 wait for a1");
        let next = g.finish("a").expect("a2 handed over");
        assert_eq!(next.envelope.aggregate_version, 2);
        let next = g.finish("a").expect("a3 handed over");
        assert_eq!(next.envelope.aggregate_version, 3);
        assert!(g.finish("a").is_none());
        assert!(g.finish("b").is_none());
        assert_eq!(g.stats(0).pending, 0);
        assert_eq!(g.stats(0).in_flight, 0);
    }

    #[tokio::test]
    async fn full_group_makes_publish_wait_then_time_out() {
        let g = Group::new("full".into(), EventFilter::All, 1);
        g.push(delivery("a", 1), Duration::from_secs(1))
            .await
            .expect("room");
        let err = g
            .push(delivery("a", 2), Duration::from_millis(20))
            .await
            .expect_err("no room");
        assert!(err.to_string().contains("`full`"), "{err}");
        let _taken = g.try_take().expect("a1");
        g.push(delivery("a", 2), Duration::from_millis(20))
            .await
            .expect("room again");
    }
}
