//! Reading a topic back: every record of a DLQ topic up to its high
//! watermarks, and one record at an offset (the original of a reduced
//! letter).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use eventsource_core::{DeadLetter, Error, Result};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::client::{client_config, kafka_err, BACKEND};
use crate::{wire, KafkaBusConfig};

/// One record read back from a topic.
pub(super) struct Record {
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) key: String,
    pub(super) headers: BTreeMap<String, String>,
    pub(super) payload: Vec<u8>,
}

/// `(partition, low, high)` watermarks of every partition of `topic`.
pub(crate) async fn topic_bounds<X, C>(client: Arc<C>, topic: &str) -> Result<Vec<(i32, i64, i64)>>
where
    X: rdkafka::consumer::ConsumerContext + 'static,
    C: Consumer<X> + Send + Sync + 'static,
{
    let t = topic.to_owned();
    tokio::task::spawn_blocking(move || -> Result<Vec<(i32, i64, i64)>> {
        let metadata = client
            .fetch_metadata(Some(&t), Duration::from_secs(10))
            .map_err(|e| kafka_err(format!("reading metadata of `{t}`"), e))?;
        let mut bounds = Vec::new();
        for p in metadata.topics().iter().flat_map(|m| m.partitions()) {
            let (low, high) = client
                .fetch_watermarks(&t, p.id(), Duration::from_secs(10))
                .map_err(|e| kafka_err(format!("reading watermarks of `{t}`"), e))?;
            bounds.push((p.id(), low, high));
        }
        Ok(bounds)
    })
    .await
    .map_err(|e| Error::backend(BACKEND, "reading watermarks", e))?
}

/// A consumer that reads topics by assignment, committing nothing.
pub(super) fn reader(config: &KafkaBusConfig) -> Result<Arc<StreamConsumer>> {
    let consumer: StreamConsumer = client_config(config)
        .set("group.id", format!("{}.dlq-reader", config.topic_prefix))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(|e| kafka_err("creating a dead-letter reader", e))?;
    Ok(Arc::new(consumer))
}

/// The next record `consumer` receives, within 10 s.
pub(super) async fn next_record(consumer: &StreamConsumer, topic: &str) -> Result<Record> {
    let message = tokio::time::timeout(Duration::from_secs(10), consumer.recv())
        .await
        .map_err(|_| Error::Timeout {
            operation: format!("kafka: reading `{topic}`"),
            after: Duration::from_secs(10),
        })?
        .map_err(|e| kafka_err(format!("reading `{topic}`"), e))?;
    Ok(Record {
        partition: message.partition(),
        offset: message.offset(),
        key: message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default(),
        headers: wire::headers_as_text(message.headers()),
        payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
    })
}

/// Reads every record of `topic` up to its high watermarks.
pub(super) async fn read_topic(config: &KafkaBusConfig, topic: &str) -> Result<Vec<Record>> {
    let consumer = reader(config)?;
    let bounds: Vec<(i32, i64, i64)> = topic_bounds(Arc::clone(&consumer), topic)
        .await?
        .into_iter()
        .filter(|(_, low, high)| high > low)
        .collect();
    if bounds.is_empty() {
        return Ok(Vec::new());
    }
    let mut tpl = TopicPartitionList::new();
    for (p, low, _) in &bounds {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*low))
            .map_err(|e| kafka_err(format!("assigning `{topic}`"), e))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| kafka_err(format!("assigning `{topic}`"), e))?;
    let mut remaining: BTreeMap<i32, i64> = bounds.iter().map(|(p, _, high)| (*p, *high)).collect();
    let mut records = Vec::new();
    while !remaining.is_empty() {
        let record = next_record(&consumer, topic).await?;
        if remaining
            .get(&record.partition)
            .is_some_and(|high| record.offset + 1 >= *high)
        {
            remaining.remove(&record.partition);
        }
        records.push(record);
    }
    Ok(records)
}

/// Where a letter's `source` (`topic[partition]@offset`) says its
/// record was.
pub(super) fn source_of(source: &str) -> Option<(&str, i32, i64)> {
    let (at, offset) = source.rsplit_once('@')?;
    let (topic, partition) = at.strip_suffix(']')?.rsplit_once('[')?;
    Some((topic, partition.parse().ok()?, offset.parse().ok()?))
}

/// The original record of a reduced letter ([`reduced_letter`](super::reduced_letter)), read
/// back from the `topic[partition]@offset` of its failure's source.
pub(super) async fn read_original(config: &KafkaBusConfig, letter: &DeadLetter) -> Result<Record> {
    let source = letter.failure.source.as_str();
    let gone = || {
        Error::not_found(format!(
            "kafka: the original of dead letter `{}`, which was written reduced, at {source} \
             (the topic no longer holds it; the letter's fields that were kept are all there is)",
            letter.id
        ))
    };
    let (topic, partition, offset) = source_of(source).ok_or_else(gone)?;
    let consumer = reader(config)?;
    let (_, low, high) = topic_bounds(Arc::clone(&consumer), topic)
        .await?
        .into_iter()
        .find(|(p, _, _)| *p == partition)
        .ok_or_else(gone)?;
    if offset < low || offset >= high {
        return Err(gone());
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .map_err(|e| kafka_err(format!("assigning `{topic}`"), e))?;
    consumer
        .assign(&tpl)
        .map_err(|e| kafka_err(format!("assigning `{topic}`"), e))?;
    loop {
        let record = next_record(&consumer, topic).await?;
        match record.offset.cmp(&offset) {
            std::cmp::Ordering::Less => continue,
            std::cmp::Ordering::Equal => return Ok(record),
            std::cmp::Ordering::Greater => return Err(gone()),
        }
    }
}
