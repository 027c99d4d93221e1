//! The RabbitMQ [`EventBus`] and its confirmed publisher.

pub(crate) use eventsource_core::dispatch::lock;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use eventsource_core::dispatch::{Counters, Members};
use eventsource_core::{
    BusStats, DeadLetterQueue, Error, EventBus, EventEnvelope, GroupStats, Result, ShutdownReport,
    Subscription, SubscriptionHandle,
};
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Confirmation};
use tracing::Instrument;

use crate::consumer::Member;
use crate::dlq::RabbitDeadLetterQueue;
use crate::topology::{amqp_err, queue_counts, short, Session, BACKEND};
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
/// ```no_run
/// use std::sync::Arc;
/// use eventsource_bus_rabbitmq::{RabbitBus, RabbitBusConfig};
/// use eventsource_core::EventBus;
///
/// # async fn run() -> eventsource_core::Result<()> {
/// let config = RabbitBusConfig::builder("amqp://guest:guest@127.0.0.1:5672/%2f").build()?;
/// let bus: Arc<dyn EventBus> = Arc::new(RabbitBus::connect(config).await?);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RabbitBus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RabbitBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitBus")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) config: RabbitBusConfig,
    publisher: tokio::sync::Mutex<Option<Session>>,
    pub(crate) stats: Counters,
    pub(crate) members: Arc<Members<Member>>,
    /// Groups this bus has subscribed, for listing dead letters of all groups.
    pub(crate) groups: Mutex<BTreeSet<String>>,
}

/// One message to publish: where to, and what.
pub(crate) struct Outgoing<'a> {
    pub(crate) exchange: &'a str,
    pub(crate) routing_key: String,
    pub(crate) properties: BasicProperties,
    pub(crate) body: Vec<u8>,
}

impl Inner {
    /// Publishes and waits for every confirm, reconnecting with backoff
    /// while the broker is unreachable, until `publish_timeout`.
    pub(crate) async fn publish_confirmed(&self, messages: &[Outgoing<'_>]) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.config.publish_timeout;
        let mut delay = Duration::from_millis(100);
        loop {
            // Every wait (connect, publish, confirm) is bounded by what is
            // left of publish_timeout: a broker that hangs (memory alarm,
            // partition) must not hold the caller past it.
            let Ok(attempt) = tokio::time::timeout_at(deadline, self.try_publish(messages)).await
            else {
                // The session may be wedged: the next publish opens another.
                if let Ok(mut publisher) = self.publisher.try_lock() {
                    *publisher = None;
                }
                let exchanges: std::collections::BTreeSet<&str> =
                    messages.iter().map(|m| m.exchange).collect();
                return Err(Error::Timeout {
                    operation: format!(
                        "rabbitmq: publishing {} message(s) to exchange(s) {exchanges:?} on {} \
                         (no confirm from the broker)",
                        messages.len(),
                        self.config.redacted_url()
                    ),
                    after: self.config.publish_timeout,
                });
            };
            match attempt {
                Ok(()) => return Ok(()),
                Err(e @ Error::Config(_)) => return Err(e),
                Err(e) if tokio::time::Instant::now() + delay < deadline => {
                    tracing::warn!(error = %e, ?delay, "rabbitmq publish failed, reconnecting");
                    *self.publisher.lock().await = None;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn try_publish(&self, messages: &[Outgoing<'_>]) -> Result<()> {
        let mut guard = self.publisher.lock().await;
        if !guard.as_ref().is_some_and(Session::is_usable) {
            *guard = Some(Session::open(&self.config, true).await?);
        }
        let channel = &guard.as_ref().expect("session just opened").channel;
        let mut confirms = Vec::with_capacity(messages.len());
        for m in messages {
            let confirm = channel
                .basic_publish(
                    short("exchange", m.exchange)?,
                    short("routing key", &m.routing_key)?,
                    BasicPublishOptions::default(),
                    &m.body,
                    m.properties.clone(),
                )
                .await
                .map_err(|e| {
                    amqp_err(
                        format!(
                            "publishing to `{}` with key `{}`",
                            m.exchange, m.routing_key
                        ),
                        e,
                    )
                })?;
            confirms.push(confirm);
        }
        drop(guard);
        for (confirm, m) in confirms.into_iter().zip(messages) {
            match confirm.await {
                Ok(Confirmation::Nack(_)) => {
                    return Err(Error::backend(
                        BACKEND,
                        format!(
                            "publishing to `{}` with key `{}`",
                            m.exchange, m.routing_key
                        ),
                        "the broker refused the message (nack)",
                    ))
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(amqp_err(
                        format!("waiting for the confirm of `{}`", m.routing_key),
                        e,
                    ))
                }
            }
        }
        Ok(())
    }
}

impl RabbitBus {
    /// Connects, declares the exchange and checks publisher confirms work;
    /// bad configuration or an unreachable broker fails here.
    pub async fn connect(config: RabbitBusConfig) -> Result<Self> {
        config.validate()?;
        let session = Session::open(&config, true).await?;
        Ok(RabbitBus {
            inner: Arc::new(Inner {
                config,
                publisher: tokio::sync::Mutex::new(Some(session)),
                stats: Counters::default(),
                members: Members::new("rabbitmq bus"),
                groups: Mutex::new(BTreeSet::new()),
            }),
        })
    }

    /// The configuration this bus runs with.
    pub fn config(&self) -> &RabbitBusConfig {
        &self.inner.config
    }
}

#[async_trait]
impl EventBus for RabbitBus {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn publish(&self, events: &[EventEnvelope]) -> Result<()> {
        self.inner.members.check_open()?;
        let config = &self.inner.config;
        let exchange = config.exchange();
        let messages: Vec<Outgoing<'_>> = events
            .iter()
            .map(|e| {
                let (properties, body) = wire::encode(e, &config.source);
                Outgoing {
                    exchange: &exchange,
                    routing_key: e.routing_key(),
                    properties,
                    body,
                }
            })
            .collect();
        let span = tracing::info_span!("eventsource.publish", backend = BACKEND, %exchange, events = events.len());
        self.inner
            .publish_confirmed(&messages)
            .instrument(span)
            .await?;
        self.inner.stats.published(events.len());
        Ok(())
    }

    async fn subscribe(&self, subscription: Subscription) -> Result<SubscriptionHandle> {
        self.inner.members.check_open()?;
        self.inner.members.check_filter(&subscription)?;
        let group = subscription.group().to_owned();
        crate::topology::binding_keys(&self.inner.config, subscription.filter())?;
        let member = Member::start(Arc::clone(&self.inner), subscription.clone()).await?;
        lock(&self.inner.groups).insert(group.clone());
        Ok(self.inner.members.register(&subscription, member))
    }

    fn dead_letters(&self) -> Arc<dyn DeadLetterQueue> {
        Arc::new(RabbitDeadLetterQueue {
            inner: Arc::clone(&self.inner),
        })
    }

    async fn stats(&self) -> Result<BusStats> {
        let mut stats = self.inner.stats.snapshot();
        let groups: Vec<String> = lock(&self.inner.groups).iter().cloned().collect();
        let in_flight: HashMap<String, u64> =
            self.inner
                .members
                .all()
                .iter()
                .fold(HashMap::new(), |mut m, member| {
                    *m.entry(member.group().to_owned()).or_default() += member.in_flight() as u64;
                    m
                });
        for group in groups {
            let config = &self.inner.config;
            let (pending, members) = queue_counts(config, &config.queue(&group))
                .await?
                .unwrap_or((0, 0));
            let (dead, _) = queue_counts(config, &config.dlq(&group))
                .await?
                .unwrap_or((0, 0));
            stats.groups.insert(
                group.clone(),
                GroupStats {
                    members: members as usize,
                    pending: u64::from(pending),
                    in_flight: in_flight.get(&group).copied().unwrap_or(0),
                    dead_letters: u64::from(dead),
                    offset_gaps: 0,
                },
            );
        }
        Ok(stats)
    }

    async fn shutdown(&self, timeout: Duration) -> Result<ShutdownReport> {
        let report = self.inner.members.shutdown(timeout).await;
        if let Some(session) = self.inner.publisher.lock().await.take() {
            session.close().await;
        }
        Ok(report)
    }
}
