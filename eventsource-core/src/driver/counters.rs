//! The process counters behind [`BusStats`](crate::BusStats), and the
//! OpenTelemetry metrics beside them (feature `metrics`, see
//! [`crate::metrics`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{Delivery, Outcome};

/// When a handler call started ([`Counters::start_call`]): nothing without
/// the `metrics` feature, which spares two clock reads per event.
pub(crate) struct CallTimer {
    #[cfg(feature = "metrics")]
    started: std::time::Instant,
}

/// The counters of [`BusStats`](crate::BusStats) that every backend keeps
/// the same way; with the `metrics` feature each count is also recorded
/// to OpenTelemetry, labelled with the backend and the group.
#[derive(Debug)]
pub struct Counters {
    backend: &'static str,
    published: AtomicU64,
    handled: AtomicU64,
    failed_attempts: AtomicU64,
    dead_lettered: AtomicU64,
    parked: AtomicU64,
    replayed: AtomicU64,
    worker_restarts: AtomicU64,
    #[cfg(feature = "metrics")]
    metrics: crate::metrics::Instruments,
}

impl Default for Counters {
    fn default() -> Self {
        Counters::new("unknown")
    }
}

impl Counters {
    /// Counters of a `backend` bus (its name labels the metrics).
    pub fn new(backend: &'static str) -> Self {
        Counters {
            backend,
            published: AtomicU64::new(0),
            handled: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            parked: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            worker_restarts: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            metrics: crate::metrics::Instruments::new(backend),
        }
    }

    /// The backend whose bus counts here (`"redis"`, `"kafka"`, …).
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Counts `n` events published by one `publish` that took `took`.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn published(&self, n: usize, took: Duration) {
        self.published.fetch_add(n as u64, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.metrics.published(n as u64, took);
    }

    /// Counts one replayed dead letter of `group`.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn replayed(&self, group: &str) {
        self.replayed.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.metrics.replayed(group);
    }

    /// Counts a dead letter of `group` (through [`letter_written`](Self::letter_written)).
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    fn dead_lettered(&self, group: &str) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.metrics.dead_lettered(group);
    }

    /// Counts a worker restarted after a panic outside the handler.
    pub(crate) fn worker_restarted(&self) {
        self.worker_restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// Starts timing one handler call; the clock is read only where the
    /// time is recorded (feature `metrics`).
    pub(crate) fn start_call(&self) -> CallTimer {
        CallTimer {
            #[cfg(feature = "metrics")]
            started: std::time::Instant::now(),
        }
    }

    /// Records one handler call of `group`, timed since `timer` started.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn handler_call(&self, group: &str, timer: CallTimer, ok: bool) {
        #[cfg(feature = "metrics")]
        self.metrics
            .handler_call(group, timer.started.elapsed(), ok);
    }

    /// A letter of `group` reached the broker: a dead letter, or (`kind`
    /// [`Parked`](crate::FailureKind::Parked) or
    /// [`NewerVersion`](crate::FailureKind::NewerVersion)) an event that
    /// waits, with nothing wrong with it.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn letter_written(&self, group: &str, kind: crate::FailureKind) {
        if matches!(
            kind,
            crate::FailureKind::Parked | crate::FailureKind::NewerVersion
        ) {
            self.parked.fetch_add(1, Ordering::Relaxed);
            #[cfg(feature = "metrics")]
            self.metrics.parked(group);
        } else {
            self.dead_lettered(group);
        }
    }

    /// A handler of `group` started (`+1`) or ended (`-1`).
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn in_flight(&self, group: &str, delta: i64) {
        #[cfg(feature = "metrics")]
        self.metrics.in_flight(group, delta);
    }

    /// Counts what one [`attempt`](super::attempt) of `group` did with
    /// `delivery`.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn record<T>(&self, group: &str, delivery: &Delivery<T>, outcome: &Outcome) {
        let failed = match outcome {
            Outcome::Handled => {
                self.handled.fetch_add(1, Ordering::Relaxed);
                #[cfg(feature = "metrics")]
                self.metrics.handled(group);
                delivery.attempts.saturating_sub(1)
            }
            // Its letter is counted once written: see `letter_written`.
            Outcome::DeadLetter(f)
                if matches!(
                    f.kind,
                    crate::FailureKind::Parked | crate::FailureKind::NewerVersion
                ) =>
            {
                0
            }
            Outcome::DeadLetter(_) => delivery.attempts,
            Outcome::Interrupted => delivery.attempts,
        };
        self.failed_attempts
            .fetch_add(u64::from(failed), Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.metrics.failed(group, u64::from(failed));
    }

    /// The counters as stats, with no groups filled in.
    pub fn snapshot(&self) -> crate::BusStats {
        crate::BusStats {
            published: self.published.load(Ordering::Relaxed),
            handled: self.handled.load(Ordering::Relaxed),
            failed_attempts: self.failed_attempts.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            parked: self.parked.load(Ordering::Relaxed),
            replayed: self.replayed.load(Ordering::Relaxed),
            worker_restarts: self.worker_restarts.load(Ordering::Relaxed),
            groups: Default::default(),
            streams: Default::default(),
        }
    }
}
