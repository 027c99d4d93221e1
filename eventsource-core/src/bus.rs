//! The `EventBus` trait every backend implements.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{
    DeadLetterQueue, EventEnvelope, EventFilter, EventWatch, Result, Subscription,
    SubscriptionHandle,
};

/// Publishes events and delivers them to subscriptions.
///
/// Object-safe: applications hold an `Arc<dyn EventBus>` and the backend is
/// chosen by configuration. Every backend keeps the same delivery contract,
/// checked by the conformance suite (the `eventsource-testkit` crate):
///
/// - at-least-once delivery to each consumer group; one member per group
///   handles each event;
/// - the events of one aggregate are handled in order within a group —
///   across all its members on the memory bus and Kafka, and on Redis and
///   RabbitMQ when the bus has `partitions` (each partition has one owner
///   at a time); without partitions there, within each member;
/// - a handler that fails or panics is retried per its
///   [`RetryPolicy`](crate::RetryPolicy) (its aggregate waits; the member
///   goes on with the others), then the message goes to the dead-letter
///   queue and the consumer moves on;
/// - with [`park_aggregate_on_failure`](crate::SubscriptionBuilder::park_aggregate_on_failure),
///   the aggregate's later events are parked behind its dead letter, in
///   order, until the letter is replayed or discarded (on Redis and
///   RabbitMQ this needs `partitions` or `single_active_consumer`);
/// - `shutdown` stops fetching and lets in-flight handlers finish.
#[async_trait]
pub trait EventBus: Send + Sync {
    /// A short name of the backend (`memory`, `redis`, ...), for logs.
    fn backend(&self) -> &'static str;

    /// Publishes `events` in order. Returns when the backend has accepted
    /// them (durably, for brokers that confirm).
    async fn publish(&self, events: &[EventEnvelope]) -> Result<()>;

    /// [`publish`](Self::publish) for events the caller holds in `Arc`s:
    /// the same contract, and a backend that keeps events in memory (the
    /// memory bus) shares them instead of copying each one. Brokers encode
    /// from a reference either way; the default copies the events once and
    /// calls `publish`.
    async fn publish_shared(&self, events: &[Arc<EventEnvelope>]) -> Result<()> {
        let events: Vec<EventEnvelope> = events.iter().map(|e| EventEnvelope::clone(e)).collect();
        self.publish(&events).await
    }

    /// Starts delivering to `subscription`'s handler.
    async fn subscribe(&self, subscription: Subscription) -> Result<SubscriptionHandle>;

    /// Follows the events published from now on that `filter` selects,
    /// without joining or creating a consumer group (see [`EventWatch`]).
    /// The default says the backend cannot.
    async fn watch(&self, filter: EventFilter) -> Result<EventWatch> {
        let _ = filter;
        Err(crate::Error::config(format!(
            "{}: this backend cannot watch events",
            self.backend()
        )))
    }

    /// Delivers `events` again to consumer group `group` alone, through
    /// the backend's replay path (the one a dead letter goes back by):
    /// the other groups and watches get nothing, and where the group
    /// keeps order per aggregate (partitions, Kafka) each copy goes
    /// through its aggregate's partition. Each copy is marked with
    /// [`copy_for`](crate::copy_for); the caller adds what else it
    /// carries ([`REPLAY_ID`](crate::REPLAY_ID)). Returns when the broker
    /// has taken them. Used by the store's targeted replay. The default
    /// says the backend cannot.
    async fn redeliver(&self, group: &str, events: &[EventEnvelope]) -> Result<()> {
        let _ = (group, events);
        Err(crate::Error::config(format!(
            "{}: this backend cannot deliver events to one group",
            self.backend()
        )))
    }

    /// The dead-letter queue.
    fn dead_letters(&self) -> Arc<dyn DeadLetterQueue>;

    /// Counters and per-group state.
    async fn stats(&self) -> Result<BusStats>;

    /// What the broker knows of one consumer group — backlog, members,
    /// dead letters — whether or not this process is a member; `None`
    /// when the broker has never seen the group (a typo, or another
    /// namespace). The default looks the group up in [`stats`](Self::stats).
    async fn group_stats(&self, group: &str) -> Result<Option<GroupStats>> {
        Ok(self.stats().await?.groups.remove(group))
    }

    /// Stops accepting publishes, stops fetching, waits up to `timeout` for
    /// in-flight handlers, and reports what it did.
    async fn shutdown(&self, timeout: Duration) -> Result<ShutdownReport>;
}

/// What a bus knows: this process's counters since the bus started, and
/// per-group and per-stream state read from the broker where the backend
/// can (see [`EventBus::group_stats`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BusStats {
    /// Events accepted by `publish` (this process).
    pub published: u64,
    /// Handler calls that succeeded (this process).
    pub handled: u64,
    /// Handler calls that failed, each failed attempt counted (this process).
    pub failed_attempts: u64,
    /// Messages moved to the dead-letter queue because they failed (this
    /// process); events parked behind an earlier letter are counted in
    /// [`parked`](Self::parked) instead.
    pub dead_lettered: u64,
    /// Events parked in the dead-letter queue behind an earlier letter of
    /// their aggregate (`park_aggregate_on_failure`), or because they were
    /// written at a schema version newer than the consumer knows
    /// ([`FailureKind::NewerVersion`](crate::FailureKind::NewerVersion));
    /// this process.
    #[serde(default)]
    pub parked: u64,
    /// Dead letters replayed (this process).
    pub replayed: u64,
    /// Workers that panicked outside the handler (a bug in a backend or
    /// its settle path) and were restarted; the message each held is
    /// redelivered. 0 in a healthy bus.
    #[serde(default)]
    pub worker_restarts: u64,
    /// Per consumer group: from the broker on Redis (every group), RabbitMQ
    /// and Kafka (the groups this bus has seen; ask for others with
    /// [`EventBus::group_stats`]), in-process on the memory bus.
    pub groups: BTreeMap<String, GroupStats>,
    /// Length of each stream, queue or topic the bus publishes to, where
    /// the backend can tell (e.g. Redis `XLEN`).
    #[serde(default)]
    pub streams: BTreeMap<String, u64>,
}

/// The state of one consumer group. Backends build it with
/// [`GroupStats::new`] (fields may be added: it is `#[non_exhaustive]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GroupStats {
    /// Members (subscriptions) currently consuming.
    pub members: usize,
    /// Events waiting to be delivered (lag).
    pub pending: u64,
    /// Events being handled right now (delivered, not yet acked).
    pub in_flight: u64,
    /// Dead letters of this group.
    pub dead_letters: u64,
    /// Times a partitioned backend (Kafka) found offsets missing between
    /// two records of a partition, or between the committed offset and the
    /// first record read: records the broker skipped (0 elsewhere). Each is
    /// also logged with topic, partition and offsets.
    #[serde(default)]
    pub offset_gaps: u64,
}

impl GroupStats {
    /// A group with `members` members, `pending` events waiting (its lag)
    /// and `in_flight` being handled; no dead letters and no offset gaps
    /// until set with [`with_dead_letters`](Self::with_dead_letters) and
    /// [`with_offset_gaps`](Self::with_offset_gaps).
    pub fn new(members: usize, pending: u64, in_flight: u64) -> Self {
        GroupStats {
            members,
            pending,
            in_flight,
            ..Self::default()
        }
    }

    /// With the group's dead letters.
    #[must_use]
    pub fn with_dead_letters(mut self, dead_letters: u64) -> Self {
        self.dead_letters = dead_letters;
        self
    }

    /// With the offset gaps a partitioned backend found.
    #[must_use]
    pub fn with_offset_gaps(mut self, offset_gaps: u64) -> Self {
        self.offset_gaps = offset_gaps;
        self
    }
}

/// What `shutdown` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Whether every in-flight handler finished within the timeout.
    pub drained: bool,
    /// Handlers still running when the timeout passed; their messages are
    /// not acked and will be redelivered (on a durable backend).
    pub abandoned: usize,
}
