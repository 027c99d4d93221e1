//! The Kafka [`EventBus`]: topics, the idempotent producer, subscriptions.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventsource_core::driver::{publish, stamp, Members};
use eventsource_core::{
    partition_of, BusStats, DeadLetterQuery, DeadLetterQueue, EventBus, EventEnvelope, EventFilter,
    EventWatch, GroupStats, Result, ShutdownReport, Subscription, SubscriptionHandle,
};
use rdkafka::producer::Producer as _;

use crate::client::{Client, Outgoing, BACKEND};
use crate::consumer::GroupConsumer;
use crate::dlq::KafkaDeadLetterQueue;
use crate::{wire, KafkaBusConfig};

/// An [`EventBus`] on Kafka.
///
/// Every event goes to `{topic_prefix}.events` keyed by its aggregate id,
/// through an idempotent producer with `acks=all`; `publish` returns when
/// the broker has acknowledged every record. Each subscription joins the
/// Kafka group `{topic_prefix}.{group}`, handles different aggregates
/// concurrently and one aggregate's events in order, retries in place, and
/// commits an offset only when every record before it is handled or
/// dead-lettered. A new group starts at the earliest retained record.
///
/// ```no_run
/// use std::sync::Arc;
/// use eventsource_bus_kafka::{KafkaBus, KafkaBusConfig};
/// use eventsource_core::EventBus;
///
/// # async fn run() -> eventsource_core::Result<()> {
/// let config = KafkaBusConfig::from_url("kafka://127.0.0.1:9092")?.validated()?;
/// let bus: Arc<dyn EventBus> = Arc::new(KafkaBus::connect(config).await?);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct KafkaBus {
    client: Arc<Client>,
    members: Arc<Members<GroupConsumer>>,
}

impl std::fmt::Debug for KafkaBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBus")
            .field("config", &self.client.config)
            .finish_non_exhaustive()
    }
}

impl KafkaBus {
    /// Creates the producer and the events topic; an unreachable broker or
    /// bad configuration fails here.
    pub async fn connect(config: KafkaBusConfig) -> Result<Self> {
        let client = Client::connect(config).await?;
        crate::durability::check(&client).await?;
        Ok(KafkaBus {
            client: Arc::new(client),
            members: Members::new("kafka bus"),
        })
    }

    /// The configuration this bus runs with.
    pub fn config(&self) -> &KafkaBusConfig {
        &self.client.config
    }
}

#[async_trait]
impl EventBus for KafkaBus {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn publish(&self, events: &[EventEnvelope]) -> Result<()> {
        let client = &self.client;
        let (topic, redacted) = (
            client.config.events_topic(),
            client.config.redacted_servers(),
        );
        let events = stamp(events);
        let records: Vec<Outgoing> = events
            .iter()
            .map(|e| {
                let (headers, payload) = wire::encode(e, &client.config.source);
                Outgoing {
                    topic: topic.clone(),
                    key: e.aggregate_id.clone(),
                    // The same partition function as every backend's.
                    partition: Some(partition_of(&e.aggregate_id, client.event_partitions) as i32),
                    headers,
                    payload,
                }
            })
            .collect();
        let target = client.target(&topic, &redacted);
        let (records, what) = (&records, format!("{} record(s)", records.len()));
        publish(&self.members, &client.stats, &target, &events, |_| {
            client.send_records(&target, &what, records)
        })
        .await
    }

    async fn subscribe(&self, subscription: Subscription) -> Result<SubscriptionHandle> {
        self.members.check_open()?;
        self.members.check_filter(&subscription)?;
        let group = subscription.group().to_owned();
        let stop = self.members.stop_token();
        let member =
            GroupConsumer::start(Arc::clone(&self.client), subscription.clone(), stop).await?;
        self.client.groups.lock().insert(group.clone());
        Ok(self.members.register(&subscription, member))
    }

    async fn watch(&self, filter: EventFilter) -> Result<EventWatch> {
        self.members.check_open()?;
        crate::watch::watch(&self.client, filter, self.members.stop_token()).await
    }

    async fn redeliver(&self, group: &str, events: &[EventEnvelope]) -> Result<()> {
        self.members.check_open()?;
        crate::redeliver::redeliver(&self.client, group, events).await
    }

    fn dead_letters(&self) -> Arc<dyn DeadLetterQueue> {
        Arc::new(KafkaDeadLetterQueue {
            client: Arc::clone(&self.client),
        })
    }

    async fn stats(&self) -> Result<BusStats> {
        let mut stats = self.client.stats.snapshot();
        let groups: Vec<String> = self.client.groups.lock().iter().cloned().collect();
        let topic = self.client.config.events_topic();
        let length = crate::lag::topic_length(&self.client.config).await?;
        stats.streams.insert(topic, length);
        for group in groups {
            let found = self.group_stats(&group).await?.unwrap_or_default();
            stats.groups.insert(group, found);
        }
        Ok(stats)
    }

    /// From the broker: the lag after the group's committed offsets on the
    /// events topic, its dead letters, and the members the broker reports
    /// (or this process's, where the broker does not say); `None` when the
    /// group has committed nothing and has no dead letters, and this
    /// process is not a member. `pending` counts records not yet
    /// committed, including those this process holds.
    async fn group_stats(&self, group: &str) -> Result<Option<GroupStats>> {
        let offsets = crate::lag::group_offsets(&self.client.config, group).await?;
        let dead = self
            .dead_letters()
            .list(&DeadLetterQuery::group(group))
            .await?
            .len() as u64;
        let members: Vec<Arc<GroupConsumer>> = self.members.all();
        let mine: Vec<_> = members.iter().filter(|m| m.group() == group).collect();
        if offsets.committed == 0 && dead == 0 && mine.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            GroupStats::new(
                offsets.members.max(mine.len()),
                offsets.lag,
                mine.iter().map(|m| m.in_flight() as u64).sum(),
            )
            .with_dead_letters(dead)
            .with_offset_gaps(mine.iter().map(|m| m.offset_gaps()).sum()),
        ))
    }

    async fn shutdown(&self, timeout: Duration) -> Result<ShutdownReport> {
        let report = self.members.shutdown(timeout).await;
        let producer = self.client.producer.clone();
        let flush = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(5)));
        if let Ok(Err(e)) = flush.await {
            tracing::warn!(error = %e, "kafka producer flush at shutdown failed");
        }
        Ok(report)
    }
}
