//! The Kafka [`EventBus`]: topics, the idempotent producer, subscriptions.

pub(crate) use eventsource_core::dispatch::lock;
use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use eventsource_core::dispatch::{Counters, Members};
use eventsource_core::{
    BusStats, DeadLetterQuery, DeadLetterQueue, Error, EventBus, EventEnvelope, GroupStats, Result,
    ShutdownReport, Subscription, SubscriptionHandle,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;
use tracing::Instrument;

use crate::consumer::Member;
use crate::dlq::KafkaDeadLetterQueue;
use crate::{wire, KafkaBusConfig};

pub(crate) const BACKEND: &str = "kafka";

pub(crate) fn kafka_err(context: impl Into<String>, e: KafkaError) -> Error {
    Error::backend(BACKEND, context, e)
}

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
/// let config = KafkaBusConfig::from_url("kafka://127.0.0.1:9092")?.build()?;
/// let bus: Arc<dyn EventBus> = Arc::new(KafkaBus::connect(config).await?);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct KafkaBus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KafkaBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBus")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) config: KafkaBusConfig,
    pub(crate) producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    created: Mutex<HashSet<String>>,
    pub(crate) stats: Counters,
    pub(crate) members: Arc<Members<Member>>,
    pub(crate) groups: Mutex<BTreeSet<String>>,
}

/// The client settings every producer, consumer and admin client shares.
pub(crate) fn client_config(config: &KafkaBusConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.bootstrap_servers)
        .set("socket.timeout.ms", "10000")
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "2000");
    c
}

impl Inner {
    /// Creates the topics that do not exist yet (once per bus and topic).
    pub(crate) async fn ensure_topics(&self, topics: &[String]) -> Result<()> {
        let missing: Vec<&String> = {
            let created = lock(&self.created);
            topics.iter().filter(|t| !created.contains(*t)).collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let new: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|t| {
                NewTopic::new(
                    t,
                    self.config.partitions,
                    TopicReplication::Fixed(self.config.replication),
                )
            })
            .collect();
        let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
        let results = self.admin.create_topics(new.iter(), &opts).await.map_err(|e| {
            kafka_err(
                format!(
                    "creating topics {missing:?} on {} (is the broker running? ./scripts/test.sh starts tansu)",
                    self.config.redacted_servers()
                ),
                e,
            )
        })?;
        for r in results {
            match r {
                Ok(name) => {
                    lock(&self.created).insert(name);
                }
                Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    lock(&self.created).insert(name);
                }
                Err((name, code)) => {
                    return Err(Error::backend(
                        BACKEND,
                        format!("creating topic `{name}`"),
                        code.to_string(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Produces records and waits for every acknowledgement.
    pub(crate) async fn produce(
        &self,
        records: Vec<(String, String, OwnedHeaders, Vec<u8>)>,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.config.publish_timeout;
        let timed_out = |topic: &str| Error::Timeout {
            operation: format!(
                "kafka: producing to `{topic}` on {} (no acknowledgement from the broker)",
                self.config.redacted_servers()
            ),
            after: self.config.publish_timeout,
        };
        let mut pending = Vec::with_capacity(records.len());
        for (topic, key, headers, payload) in &records {
            let mut record = FutureRecord::to(topic)
                .key(key)
                .payload(payload)
                .headers(headers.clone());
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push((topic, delivery));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        if tokio::time::Instant::now() >= deadline {
                            return Err(timed_out(topic));
                        }
                        record = back;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err((e, _)) => return Err(kafka_err(format!("producing to `{topic}`"), e)),
                }
            }
        }
        for (topic, delivery) in pending {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut), _))) => {
                    return Err(timed_out(topic))
                }
                Ok(Err((e, _))) => return Err(kafka_err(format!("producing to `{topic}`"), e)),
                Err(_) => {
                    return Err(Error::backend(
                        BACKEND,
                        format!("producing to `{topic}`"),
                        "the producer was dropped",
                    ))
                }
            }
        }
        Ok(())
    }
}

impl KafkaBus {
    /// Creates the producer and the events topic; an unreachable broker or
    /// bad configuration fails here.
    pub async fn connect(config: KafkaBusConfig) -> Result<Self> {
        config.validate()?;
        let mut producer_config = client_config(&config);
        if let Some(n) = config.max_batch_records {
            producer_config.set("batch.num.messages", n.to_string());
        }
        let producer: FutureProducer = producer_config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", config.compression.as_str())
            .set(
                "message.timeout.ms",
                config.publish_timeout.as_millis().to_string(),
            )
            .set("linger.ms", "2")
            .create()
            .map_err(|e| kafka_err("creating the producer", e))?;
        let admin: AdminClient<DefaultClientContext> = client_config(&config)
            .create()
            .map_err(|e| kafka_err("creating the admin client", e))?;
        let inner = Inner {
            config,
            producer,
            admin,
            created: Mutex::new(HashSet::new()),
            stats: Counters::default(),
            members: Members::new("kafka bus"),
            groups: Mutex::new(BTreeSet::new()),
        };
        inner.ensure_topics(&[inner.config.events_topic()]).await?;
        Ok(KafkaBus {
            inner: Arc::new(inner),
        })
    }

    /// The configuration this bus runs with.
    pub fn config(&self) -> &KafkaBusConfig {
        &self.inner.config
    }
}

#[async_trait]
impl EventBus for KafkaBus {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn publish(&self, events: &[EventEnvelope]) -> Result<()> {
        self.inner.members.check_open()?;
        let topic = self.inner.config.events_topic();
        let records = events
            .iter()
            .map(|e| {
                let (headers, payload) = wire::encode(e, &self.inner.config.source);
                (topic.clone(), e.aggregate_id.clone(), headers, payload)
            })
            .collect();
        let span = tracing::info_span!("eventsource.publish", backend = BACKEND, %topic, events = events.len());
        self.inner.produce(records).instrument(span).await?;
        self.inner.stats.published(events.len());
        Ok(())
    }

    async fn subscribe(&self, subscription: Subscription) -> Result<SubscriptionHandle> {
        self.inner.members.check_open()?;
        self.inner.members.check_filter(&subscription)?;
        let group = subscription.group().to_owned();
        let member = Member::start(Arc::clone(&self.inner), subscription.clone()).await?;
        lock(&self.inner.groups).insert(group.clone());
        Ok(self.inner.members.register(&subscription, member))
    }

    fn dead_letters(&self) -> Arc<dyn DeadLetterQueue> {
        Arc::new(KafkaDeadLetterQueue {
            inner: Arc::clone(&self.inner),
        })
    }

    async fn stats(&self) -> Result<BusStats> {
        let mut stats = self.inner.stats.snapshot();
        let members: Vec<Arc<Member>> = self.inner.members.all();
        let groups: Vec<String> = lock(&self.inner.groups).iter().cloned().collect();
        let dlq = self.dead_letters();
        if let Some(member) = members.first() {
            let topic = self.inner.config.events_topic();
            let bounds = crate::dlq::topic_bounds(member.consumer(), &topic).await?;
            let length = bounds
                .iter()
                .map(|(_, low, high)| (high - low).max(0) as u64)
                .sum();
            stats.streams.insert(topic, length);
        }
        for group in groups {
            let dead = dlq.list(&DeadLetterQuery::group(&group)).await?.len() as u64;
            let mine = members.iter().filter(|m| m.group() == group);
            let (members, pending, in_flight, offset_gaps) =
                mine.fold((0, 0, 0, 0), |(n, p, f, g), m| {
                    (
                        n + 1,
                        p + m.queued() as u64,
                        f + m.in_flight() as u64,
                        g + m.offset_gaps(),
                    )
                });
            stats.groups.insert(
                group,
                GroupStats {
                    members,
                    pending,
                    in_flight,
                    dead_letters: dead,
                    offset_gaps,
                },
            );
        }
        Ok(stats)
    }

    async fn shutdown(&self, timeout: Duration) -> Result<ShutdownReport> {
        let report = self.inner.members.shutdown(timeout).await;
        let producer = self.inner.producer.clone();
        let flush = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(5)));
        if let Ok(Err(e)) = flush.await {
            tracing::warn!(error = %e, "kafka producer flush at shutdown failed");
        }
        Ok(report)
    }
}
