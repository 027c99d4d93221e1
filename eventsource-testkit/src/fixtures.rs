//! The events, recorders and waits the cases share.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use eventsource_core::{
    handler_fn, DeadLetter, DeadLetterQuery, DomainEvent, EventBus, EventEnvelope, EventHandler,
    RetryPolicy, Subscription, SubscriptionHandle,
};

/// The event type the suite publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Probe {
    /// `Probe.Created`
    Created {
        /// A sequence number.
        n: u64,
    },
    /// `Probe.Updated`
    Updated {
        /// A sequence number.
        n: u64,
    },
}

impl DomainEvent for Probe {
    fn event_type(&self) -> &str {
        match self {
            Probe::Created { .. } => "Created",
            Probe::Updated { .. } => "Updated",
        }
    }
    const AGGREGATE_TYPE: &'static str = "Probe";
}

/// A second aggregate type, for filters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtherCreated {
    /// A sequence number.
    pub n: u64,
}

impl DomainEvent for OtherCreated {
    fn event_type(&self) -> &str {
        "Created"
    }
    const AGGREGATE_TYPE: &'static str = "Other";
}

/// `Probe.Created { n }` for `aggregate` at `version`.
pub fn probe(aggregate: &str, version: u64, n: u64) -> EventEnvelope {
    EventEnvelope::new(aggregate, version, &Probe::Created { n }).expect("Probe encodes")
}

/// A handler that sends every event it handles to a channel.
pub struct Recorder {
    rx: mpsc::UnboundedReceiver<EventEnvelope>,
    pub(crate) label: String,
}

impl Recorder {
    /// A recorder and the handler that feeds it.
    pub fn new(label: &str) -> (Self, impl EventHandler) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handler = handler_fn(move |e: EventEnvelope| {
            let tx = tx.clone();
            async move {
                // The test may have finished and dropped the receiver.
                let _ = tx.send(e);
                Ok(())
            }
        });
        (
            Recorder {
                rx,
                label: label.to_owned(),
            },
            handler,
        )
    }

    /// Waits for `n` events, failing the test after `patience`.
    pub async fn expect(&mut self, n: usize, patience: Duration) -> Vec<EventEnvelope> {
        let mut got = Vec::with_capacity(n);
        let deadline = tokio::time::Instant::now() + patience;
        while got.len() < n {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(e)) => got.push(e),
                Ok(None) => panic!(
                    "{}: handler dropped after {} of {n} events",
                    self.label,
                    got.len()
                ),
                Err(_) => panic!(
                    "{}: received {} of {n} expected events within {patience:?}: {:?}",
                    self.label,
                    got.len(),
                    got.iter()
                        .map(|e| (&e.aggregate_id, e.aggregate_version))
                        .collect::<Vec<_>>()
                ),
            }
        }
        got
    }

    /// Fails the test if anything arrives within `quiet`.
    pub async fn expect_nothing(&mut self, quiet: Duration) {
        if let Ok(Some(e)) = tokio::time::timeout(quiet, self.rx.recv()).await {
            panic!(
                "{}: expected no more events, got {} {}/{} v{}",
                self.label, e.event_id, e.aggregate_type, e.aggregate_id, e.aggregate_version
            );
        }
    }
}

/// Polls `check` every 20 ms until it returns `Some`, failing after `patience`.
pub async fn eventually<T, F, Fut>(what: &str, patience: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {patience:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `group` has `n` dead letters and returns them.
pub async fn dead_letters_of(
    bus: &Arc<dyn EventBus>,
    group: &str,
    n: usize,
    patience: Duration,
) -> Vec<DeadLetter> {
    let dlq = bus.dead_letters();
    eventually(
        &format!("{n} dead letter(s) of group `{group}`"),
        patience,
        || {
            let dlq = Arc::clone(&dlq);
            async move {
                let letters = dlq
                    .list(&DeadLetterQuery::group(group))
                    .await
                    .expect("listing dead letters");
                (letters.len() >= n).then_some(letters)
            }
        },
    )
    .await
}

pub(crate) fn sub(group: &str, handler: impl EventHandler) -> Subscription {
    Subscription::builder(group)
        .handler(handler)
        .build()
        .expect("valid subscription")
}

pub(crate) fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy::fixed(max_attempts, Duration::from_millis(20)).expect("valid policy")
}

pub(crate) async fn subscribe(bus: &Arc<dyn EventBus>, s: Subscription) -> SubscriptionHandle {
    bus.subscribe(s).await.expect("subscribe")
}

pub(crate) async fn publish(bus: &Arc<dyn EventBus>, events: &[EventEnvelope]) {
    bus.publish(events).await.expect("publish");
}

pub(crate) async fn finish(bus: Arc<dyn EventBus>) {
    let report = bus
        .shutdown(Duration::from_secs(10))
        .await
        .expect("shutdown");
    assert!(
        report.drained,
        "bus did not drain at the end of the case: {report:?}"
    );
}
