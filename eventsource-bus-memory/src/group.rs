//! A consumer group of the memory bus: one keyed queue its members share.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventsource_core::driver::{Delivery, KeyedQueue, Parking};
use eventsource_core::{DeadLetterQueue, Error, EventEnvelope, EventFilter, GroupStats, Result};

/// A consumer group: its filter and the queue its members compete on.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) name: String,
    pub(crate) filter: EventFilter,
    pub(crate) queue: KeyedQueue<()>,
    /// Its parked aggregates, shared by its members as the queue is (used
    /// by members whose subscription parks aggregates).
    pub(crate) parking: Arc<Parking>,
    members: AtomicUsize,
}

impl Group {
    pub(crate) fn new(
        name: String,
        filter: EventFilter,
        capacity: usize,
        dlq: Arc<dyn DeadLetterQueue>,
    ) -> Self {
        Group {
            parking: Parking::new(name.clone(), dlq),
            name,
            filter,
            queue: KeyedQueue::new(capacity),
            members: AtomicUsize::new(0),
        }
    }

    /// Queues the `events` this group's filter matches, in order, waiting
    /// up to `timeout` for room.
    pub(crate) async fn push(
        &self,
        events: &[Arc<EventEnvelope>],
        timeout: Duration,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let matching: Vec<Delivery<()>> = events
            .iter()
            .filter(|e| self.filter.matches(e))
            .map(|e| Delivery::new(Arc::clone(e), ()))
            .collect();
        self.queue
            .push_all(matching, Some(deadline))
            .await
            .map_err(|_| Error::Timeout {
                operation: format!(
                    "memory bus: publish to consumer group `{}` (full of undelivered events)",
                    self.name
                ),
                after: timeout,
            })
    }

    pub(crate) fn join(&self) {
        self.members.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn leave(&self) {
        self.members.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self, dead_letters: u64) -> GroupStats {
        GroupStats::new(
            self.members.load(Ordering::Relaxed),
            self.queue.queued() as u64,
            self.queue.in_flight() as u64,
        )
        .with_dead_letters(dead_letters)
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
        const AGGREGATE_TYPE: &'static str = "Test";
    }

    #[tokio::test]
    async fn full_group_times_out_with_its_name() {
        let dlq = Arc::new(crate::dlq::MemoryDeadLetterQueue {
            inner: std::sync::Weak::new(),
        });
        let g = Group::new("full".into(), EventFilter::all(), 1, dlq);
        let e = Arc::new(EventEnvelope::new("a", 1, &Ping).expect("encode"));
        g.push(&[Arc::clone(&e)], Duration::from_secs(1))
            .await
            .expect("room");
        let err = g
            .push(&[e], Duration::from_millis(20))
            .await
            .expect_err("no room");
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("`full`"), "{err}");
        assert_eq!(g.stats(0).pending, 1);
    }
}
