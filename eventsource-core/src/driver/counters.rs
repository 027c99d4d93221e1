//! The process counters behind [`BusStats`](crate::BusStats).

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Delivery, Outcome};

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

    /// Counts a dead letter written outside [`attempt`](super::attempt) (an undecodable message).
    pub fn dead_lettered(&self) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a worker restarted after a panic outside the handler.
    pub(crate) fn worker_restarted(&self) {
        self.worker_restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts what one [`attempt`](super::attempt) did with `delivery`.
    pub fn record<T>(&self, delivery: &Delivery<T>, outcome: &Outcome) {
        let failed = match outcome {
            Outcome::Handled => {
                self.handled.fetch_add(1, Ordering::Relaxed);
                delivery.attempts.saturating_sub(1)
            }
            Outcome::DeadLetter(_) => {
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
