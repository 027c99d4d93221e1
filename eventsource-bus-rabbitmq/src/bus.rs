//! The RabbitMQ [`EventBus`] and its confirmed publisher.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventsource_core::driver::{publish, stamp, Members};
use eventsource_core::{
    BusStats, DeadLetterQueue, EventBus, EventEnvelope, EventFilter, EventWatch, GroupStats,
    Result, ShutdownReport, Subscription, SubscriptionHandle,
};

use crate::client::{Client, Outgoing, BACKEND};
use crate::consumer::GroupConsumer;
use crate::dlq::RabbitDeadLetterQueue;
use crate::lag::{partitioned_counts, queue_counts};
use crate::{wire, RabbitBusConfig};

/// An [`EventBus`] on RabbitMQ.
///
/// Events are published, persistent and with publisher confirms, to the
/// exchange `{namespace}.events` with routing key
/// `{aggregate_type}.{event_type}`; `publish` returns once the broker has
/// confirmed every message. Each consumer group has a durable queue bound
/// with its filter's patterns; each subscription consumes it with
/// `prefetch` unacked messages, handles different aggregates concurrently
/// and one aggregate's events in order, retries in place and dead-letters
/// to the group's `.dlq` queue. A lost connection is re-established with
/// backoff, the topology declared again and consuming resumed.
///
/// Ordering holds per member, or across the whole group with
/// [`RabbitBusConfig::partitions`]: one queue per partition, each consumed
/// by one member at a time, the members splitting the partitions.
///
/// ```no_run
/// use std::sync::Arc;
/// use eventsource_bus_rabbitmq::{RabbitBus, RabbitBusConfig};
/// use eventsource_core::EventBus;
///
/// # async fn run() -> eventsource_core::Result<()> {
/// let config = RabbitBusConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f").validated()?;
/// let bus: Arc<dyn EventBus> = Arc::new(RabbitBus::connect(config).await?);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RabbitBus {
    client: Arc<Client>,
    members: Arc<Members<GroupConsumer>>,
}

impl std::fmt::Debug for RabbitBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitBus")
            .field("config", &self.client.config)
            .finish_non_exhaustive()
    }
}

impl RabbitBus {
    /// Connects, declares the exchange and checks publisher confirms work;
    /// bad configuration or an unreachable broker fails here.
    pub async fn connect(config: RabbitBusConfig) -> Result<Self> {
        config.validate()?;
        crate::topology::check_partitions(&config).await?;
        Ok(RabbitBus {
            client: Arc::new(Client::connect(config).await?),
            members: Members::new("rabbitmq bus"),
        })
    }

    /// The configuration this bus runs with.
    pub fn config(&self) -> &RabbitBusConfig {
        &self.client.config
    }
}

#[async_trait]
impl EventBus for RabbitBus {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn publish(&self, events: &[EventEnvelope]) -> Result<()> {
        let client = &self.client;
        let config = &client.config;
        let (exchange, redacted) = (config.exchange(), config.redacted_url());
        let events = stamp(events);
        let messages: Vec<Outgoing<'_>> = events
            .iter()
            .map(|e| {
                let (properties, body) = wire::encode(e, &config.source);
                Outgoing {
                    exchange: &exchange,
                    routing_key: config.routing_key_of(&e.aggregate_id, e.routing_key()),
                    properties,
                    body,
                }
            })
            .collect();
        let target = client.target(&exchange, &redacted);
        let messages = &messages;
        let sent = publish(&self.members, &client.stats, &target, &events, |_| {
            client.send_confirmed(messages)
        })
        .await;
        client.drop_if_wedged(&sent);
        sent
    }

    async fn subscribe(&self, subscription: Subscription) -> Result<SubscriptionHandle> {
        self.members.check_open()?;
        self.members.check_filter(&subscription)?;
        let group = subscription.group().to_owned();
        crate::topology::binding_keys(&self.client.config, subscription.filter())?;
        let stop = self.members.stop_token();
        let member =
            GroupConsumer::start(Arc::clone(&self.client), subscription.clone(), stop).await?;
        self.client.groups.lock().insert(group.clone());
        Ok(self.members.register(&subscription, member))
    }

    async fn watch(&self, filter: EventFilter) -> Result<EventWatch> {
        self.members.check_open()?;
        crate::watch::watch(&self.client.config, filter, self.members.stop_token()).await
    }

    async fn redeliver(&self, group: &str, events: &[EventEnvelope]) -> Result<()> {
        self.members.check_open()?;
        crate::redeliver::redeliver(&self.client, group, events).await
    }

    fn dead_letters(&self) -> Arc<dyn DeadLetterQueue> {
        Arc::new(RabbitDeadLetterQueue {
            client: Arc::clone(&self.client),
        })
    }

    async fn stats(&self) -> Result<BusStats> {
        let mut stats = self.client.stats.snapshot();
        let groups: Vec<String> = self.client.groups.lock().iter().cloned().collect();
        for group in groups {
            let found = self.group_stats(&group).await?.unwrap_or_default();
            stats.groups.insert(group, found);
        }
        Ok(stats)
    }

    /// From the broker: the group's queue (ready messages as `pending`,
    /// its consumers as `members`) and its dead-letter queue; `None` when
    /// the group has no queue. `in_flight` is this process's.
    async fn group_stats(&self, group: &str) -> Result<Option<GroupStats>> {
        let config = &self.client.config;
        let Some((pending, members)) = (match config.partitions {
            None => queue_counts(config, &config.queue(group)).await?,
            Some(n) => partitioned_counts(config, group, n).await?,
        }) else {
            return Ok(None);
        };
        let (dead, _) = queue_counts(config, &config.dlq(group))
            .await?
            .unwrap_or((0, 0));
        let in_flight = self
            .members
            .all()
            .iter()
            .filter(|m| m.group() == group)
            .map(|m| m.in_flight() as u64)
            .sum();
        Ok(Some(
            GroupStats::new(members as usize, u64::from(pending), in_flight)
                .with_dead_letters(u64::from(dead)),
        ))
    }

    async fn shutdown(&self, timeout: Duration) -> Result<ShutdownReport> {
        let report = self.members.shutdown(timeout).await;
        if let Some(session) = self.client.publisher.lock().await.take() {
            session.close().await;
        }
        Ok(report)
    }
}
