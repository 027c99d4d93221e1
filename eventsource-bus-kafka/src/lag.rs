//! What the broker knows of a consumer group: its committed offsets on the
//! events topic, and from them its lag.

use std::time::Duration;

use eventsource_core::{Error, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::client::{client_config, kafka_err, BACKEND};
use crate::KafkaBusConfig;

/// A group's position on the events topic, read from the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GroupOffsets {
    /// Partitions on which the group has committed an offset.
    pub(crate) committed: usize,
    /// Records after the committed offsets (after the start of partitions
    /// where nothing is committed: a new group starts at the earliest).
    pub(crate) lag: u64,
    /// Members the broker reports (0 where the broker does not say).
    pub(crate) members: usize,
}

/// A consumer under `group_id` that only reads metadata, watermarks and
/// committed offsets: it never subscribes, so it never joins the group.
fn reader(config: &KafkaBusConfig, group_id: &str) -> Result<BaseConsumer> {
    client_config(config)
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| kafka_err("creating an offset reader", e))
}

/// Reads `group`'s committed offsets and the topic's watermarks without
/// joining the group (an offset fetch, not a subscription).
pub(crate) async fn group_offsets(config: &KafkaBusConfig, group: &str) -> Result<GroupOffsets> {
    let group_id = config.group_id(group);
    let topic = config.events_topic();
    let consumer = reader(config, &group_id)?;
    tokio::task::spawn_blocking(move || -> Result<GroupOffsets> {
        let timeout = Duration::from_secs(10);
        let metadata = consumer
            .fetch_metadata(Some(&topic), timeout)
            .map_err(|e| kafka_err(format!("reading metadata of `{topic}`"), e))?;
        let mut partitions = TopicPartitionList::new();
        for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
            partitions.add_partition(&topic, p.id());
        }
        let committed = consumer
            .committed_offsets(partitions, timeout)
            .map_err(|e| kafka_err(format!("reading the offsets of `{group_id}`"), e))?;
        let mut offsets = GroupOffsets {
            committed: 0,
            lag: 0,
            members: 0,
        };
        for element in committed.elements() {
            let (low, high) = consumer
                .fetch_watermarks(&topic, element.partition(), timeout)
                .map_err(|e| kafka_err(format!("reading watermarks of `{topic}`"), e))?;
            let from = match element.offset() {
                Offset::Offset(at) => {
                    offsets.committed += 1;
                    at.max(low)
                }
                _ => low,
            };
            offsets.lag += u64::try_from(high - from).unwrap_or(0);
        }
        offsets.members = consumer
            .fetch_group_list(Some(&group_id), timeout)
            .ok()
            .and_then(|list| list.groups().first().map(|g| g.members().len()))
            .unwrap_or(0);
        Ok(offsets)
    })
    .await
    .map_err(|e| Error::backend(BACKEND, "reading a group's offsets", e))?
}

/// The events topic's length: records between the low and high watermarks
/// of every partition (0 when the topic does not exist yet).
pub(crate) async fn topic_length(config: &KafkaBusConfig) -> Result<u64> {
    let topic = config.events_topic();
    let consumer = reader(config, &format!("{}.stats", config.topic_prefix))?;
    tokio::task::spawn_blocking(move || -> Result<u64> {
        let timeout = Duration::from_secs(10);
        let metadata = consumer
            .fetch_metadata(Some(&topic), timeout)
            .map_err(|e| kafka_err(format!("reading metadata of `{topic}`"), e))?;
        let mut length = 0;
        for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let (low, high) = consumer
                .fetch_watermarks(&topic, p.id(), timeout)
                .map_err(|e| kafka_err(format!("reading watermarks of `{topic}`"), e))?;
            length += u64::try_from(high - low).unwrap_or(0);
        }
        Ok(length)
    })
    .await
    .map_err(|e| Error::backend(BACKEND, "reading the topic's length", e))?
}
