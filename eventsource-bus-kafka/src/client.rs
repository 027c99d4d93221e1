//! The producer and admin client every part of a Kafka bus shares, and
//! the helpers they all use (the bottom of the crate: it imports only the
//! config).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use eventsource_core::driver::{Counters, PublishTarget, SendError};
use eventsource_core::{Error, Result};
use parking_lot::Mutex;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::KafkaBusConfig;

pub(crate) const BACKEND: &str = "kafka";

pub(crate) fn kafka_err(context: impl Into<String>, e: KafkaError) -> Error {
    Error::backend(BACKEND, context, e)
}

/// Whether the broker (or librdkafka, before sending) refused a record as
/// larger than it accepts.
pub(crate) fn is_too_large(e: &Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<KafkaError>())
        .and_then(KafkaError::rdkafka_error_code)
        == Some(RDKafkaErrorCode::MessageSizeTooLarge)
}

/// One record to produce.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub(crate) topic: String,
    pub(crate) key: String,
    /// The partition, where the bus chooses it (events: by
    /// [`partition_of`](eventsource_core::partition_of) of the key);
    /// `None`: librdkafka's partitioner on the key.
    pub(crate) partition: Option<i32>,
    pub(crate) headers: OwnedHeaders,
    pub(crate) payload: Vec<u8>,
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

/// The producer, admin client and counters behind a [`KafkaBus`](crate::KafkaBus).
pub(crate) struct Client {
    pub(crate) config: KafkaBusConfig,
    pub(crate) producer: FutureProducer,
    pub(crate) admin: AdminClient<DefaultClientContext>,
    created: Mutex<HashSet<String>>,
    pub(crate) stats: Arc<Counters>,
    pub(crate) groups: Mutex<BTreeSet<String>>,
    /// How many partitions the events topic has (read from the broker).
    pub(crate) event_partitions: u32,
    /// How many replicas its first partition has (read from the broker).
    pub(crate) event_replicas: usize,
}

impl Client {
    /// Creates the topics that do not exist yet (once per bus and topic).
    pub(crate) async fn ensure_topics(&self, topics: &[String]) -> Result<()> {
        let missing: Vec<&String> = {
            let created = self.created.lock();
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
                    self.created.lock().insert(name);
                }
                Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    self.created.lock().insert(name);
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

    /// Where a produce to `topic` goes, for its span and its errors.
    pub(crate) fn target<'a>(&'a self, topic: &'a str, redacted: &'a str) -> PublishTarget<'a> {
        PublishTarget::new(BACKEND, topic, redacted, self.config.publish_timeout)
    }

    /// Produces `records` and waits for every acknowledgement, until
    /// `publish_timeout`.
    pub(crate) async fn produce(&self, records: &[Outgoing]) -> Result<()> {
        let Some(first) = records.first() else {
            return Ok(());
        };
        let redacted = self.config.redacted_servers();
        let target = self.target(&first.topic, &redacted);
        let what = format!("{} record(s)", records.len());
        target
            .send(&what, || self.send_records(&target, &what, records))
            .await
    }

    /// One produce of `records` for [`PublishTarget::send`]: every failure
    /// is final (a produce that failed may have written some records).
    pub(crate) async fn send_records(
        &self,
        target: &PublishTarget<'_>,
        what: &str,
        records: &[Outgoing],
    ) -> std::result::Result<(), SendError> {
        self.try_produce(records).await.map_err(|e| match e {
            // librdkafka's own message.timeout.ms (= publish_timeout) ran out.
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut) => {
                SendError::Fatal(target.timed_out(what))
            }
            e => {
                let topic = records.first().map_or("", |r| r.topic.as_str());
                SendError::Fatal(kafka_err(format!("producing to `{topic}`"), e))
            }
        })
    }

    /// Enqueues every record (waiting while the producer's queue is full)
    /// and waits for their acknowledgements; the caller bounds the wait.
    async fn try_produce(&self, records: &[Outgoing]) -> Result<(), KafkaError> {
        let mut pending = Vec::with_capacity(records.len());
        for r in records {
            let mut record = FutureRecord::to(&r.topic)
                .key(&r.key)
                .payload(&r.payload)
                .headers(r.headers.clone());
            if let Some(p) = r.partition {
                record = record.partition(p);
            }
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err((e, _)) => return Err(e),
                }
            }
        }
        for delivery in pending {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(e),
                Err(_) => return Err(KafkaError::Canceled),
            }
        }
        Ok(())
    }
}

impl Client {
    pub(crate) async fn connect(config: KafkaBusConfig) -> Result<Client> {
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
            .set("linger.ms", config.linger.as_millis().to_string())
            .create()
            .map_err(|e| kafka_err("creating the producer", e))?;
        let admin: AdminClient<DefaultClientContext> = client_config(&config)
            .create()
            .map_err(|e| kafka_err("creating the admin client", e))?;
        let mut client = Client {
            config,
            producer,
            admin,
            created: Mutex::new(HashSet::new()),
            stats: Arc::new(Counters::new(BACKEND)),
            groups: Mutex::new(BTreeSet::new()),
            event_partitions: 0,
            event_replicas: 0,
        };
        let topic = client.config.events_topic();
        client.ensure_topics(std::slice::from_ref(&topic)).await?;
        (client.event_partitions, client.event_replicas) = client.partition_count(&topic).await?;
        Ok(client)
    }

    /// How many partitions `topic` has, and how many replicas its first
    /// partition, from the broker's metadata (the topic may predate this
    /// bus, with other counts than configured).
    async fn partition_count(&self, topic: &str) -> Result<(u32, usize)> {
        use rdkafka::producer::Producer;
        let producer = self.producer.clone();
        let name = topic.to_owned();
        let metadata = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&name), Duration::from_secs(10))
        })
        .await
        .map_err(|e| Error::backend(BACKEND, "reading topic metadata", e))?
        .map_err(|e| kafka_err(format!("reading the metadata of `{topic}`"), e))?;
        let (count, replicas) =
            metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .map_or((0, 0), |t| {
                    let replicas = t.partitions().first().map_or(0, |p| p.replicas().len());
                    (t.partitions().len(), replicas)
                });
        match u32::try_from(count) {
            Ok(n) if n > 0 => Ok((n, replicas)),
            _ => Err(Error::backend(
                BACKEND,
                format!("reading the metadata of `{topic}`"),
                "the broker reports no partitions",
            )),
        }
    }
}
