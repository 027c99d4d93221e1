//! Dead-letter topics: `{prefix}.{group}.dlq`, and `{prefix}.{group}.dlq-done`
//! for the ids of dead letters replayed or deleted (a topic cannot delete
//! one record, so done ones are marked and left out of listings).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventsource_core::wire::dead_letter;
use eventsource_core::{DeadLetter, DeadLetterQuery, DeadLetterQueue, Error, Failure, Result};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::{Offset, TopicPartitionList};

use crate::client::{client_config, kafka_err, Client, Outgoing, BACKEND};
use crate::{wire, KafkaBusConfig};

/// The record that goes to a group's DLQ topic: the original key, value and
/// `ce_` headers, plus the failure in the core codec's headers.
pub(crate) fn dead_letter_record(
    config: &KafkaBusConfig,
    key: &str,
    mut headers: BTreeMap<String, String>,
    payload: Vec<u8>,
    failure: &Failure,
    decoded: bool,
) -> Outgoing {
    headers.extend(dead_letter::encode(failure, decoded));
    Outgoing {
        topic: config.dlq_topic(&failure.group),
        key: key.to_owned(),
        partition: None,
        headers: wire::headers(headers.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        payload,
    }
}

/// One record read back from a topic.
struct Record {
    partition: i32,
    offset: i64,
    key: String,
    headers: BTreeMap<String, String>,
    payload: Vec<u8>,
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

/// Reads every record of `topic` up to its high watermarks.
async fn read_topic(config: &KafkaBusConfig, topic: &str) -> Result<Vec<Record>> {
    let consumer: StreamConsumer = client_config(config)
        .set("group.id", format!("{}.dlq-reader", config.topic_prefix))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(|e| kafka_err("creating a dead-letter reader", e))?;
    let consumer = Arc::new(consumer);
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
        let message = tokio::time::timeout(Duration::from_secs(10), consumer.recv())
            .await
            .map_err(|_| Error::Timeout {
                operation: format!("kafka: reading `{topic}` to its end"),
                after: Duration::from_secs(10),
            })?
            .map_err(|e| kafka_err(format!("reading `{topic}`"), e))?;
        let (p, o) = (message.partition(), message.offset());
        if remaining.get(&p).is_some_and(|high| o + 1 >= *high) {
            remaining.remove(&p);
        }
        records.push(Record {
            partition: p,
            offset: o,
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default(),
            headers: wire::headers_as_text(message.headers()),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        });
    }
    Ok(records)
}

/// Dead letters replayed per produce by `replay_all`.
const REPLAY_BATCH: usize = 200;

/// A letter as stored; one whose headers or event cannot be read is
/// listed as [`FailureKind::Unreadable`](eventsource_core::FailureKind::Unreadable)
/// with its raw headers and value, never an error that hides the
/// group's others.
fn parse_letter(group: &str, r: &Record) -> DeadLetter {
    let id = format!("{group}/{}/{}", r.partition, r.offset);
    let raw_of = |keep: &dyn Fn(&str) -> bool| {
        let mut raw: BTreeMap<&str, String> = r
            .headers
            .iter()
            .filter(|(k, _)| keep(k))
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        raw.insert("value", String::from_utf8_lossy(&r.payload).into_owned());
        serde_json::to_string(&raw).expect("a string map serializes")
    };
    dead_letter::read_letter(
        id,
        group,
        |k| r.headers.get(k).map(String::as_str),
        || wire::decode(&r.headers, Some(&r.payload)).map_err(|e| e.to_string()),
        raw_of,
        chrono::Utc::now,
    )
}

/// The [`DeadLetterQueue`] of a [`KafkaBus`](crate::KafkaBus). Ids are
/// `{group}/{partition}/{offset}` in the group's DLQ topic. Without a
/// group, `list` covers the groups this bus has subscribed.
pub(crate) struct KafkaDeadLetterQueue {
    pub(crate) client: Arc<Client>,
}

impl KafkaDeadLetterQueue {
    /// The group's dead letters not yet replayed or deleted, with their records.
    async fn letters(&self, group: &str) -> Result<Vec<(DeadLetter, Record)>> {
        let config = &self.client.config;
        self.client
            .ensure_topics(&[config.dlq_topic(group), config.dlq_done_topic(group)])
            .await?;
        let done: HashSet<String> = read_topic(config, &config.dlq_done_topic(group))
            .await?
            .into_iter()
            .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
            .collect();
        let mut letters = Vec::new();
        for r in read_topic(config, &config.dlq_topic(group)).await? {
            let letter = parse_letter(group, &r);
            if !done.contains(&letter.id) {
                letters.push((letter, r));
            }
        }
        letters.sort_by_key(|(l, _)| l.failure.last_failed_at);
        Ok(letters)
    }

    fn groups(&self, query: &DeadLetterQuery) -> Vec<String> {
        match &query.group {
            Some(g) => vec![g.clone()],
            None => self.client.groups.lock().iter().cloned().collect(),
        }
    }

    async fn find(&self, id: &str) -> Result<Option<(DeadLetter, Record)>> {
        let Some((group, _)) = id.split_once('/') else {
            return Ok(None);
        };
        if eventsource_core::validate_name("group", group).is_err() {
            return Ok(None);
        }
        Ok(self
            .letters(group)
            .await?
            .into_iter()
            .find(|(l, _)| l.id == id))
    }

    async fn mark_done(&self, letter: &DeadLetter) -> Result<()> {
        self.client
            .produce(std::slice::from_ref(&self.done_marker(letter)))
            .await
    }

    /// The record that marks `letter` replayed or deleted.
    fn done_marker(&self, letter: &DeadLetter) -> Outgoing {
        Outgoing {
            topic: self.client.config.dlq_done_topic(letter.group()),
            key: letter.id.clone(),
            partition: None,
            headers: OwnedHeaders::new(),
            payload: letter.id.clone().into_bytes(),
        }
    }

    /// Sends `letters` back (one produce): an event to its aggregate's
    /// partition of the events topic, a record that did not decode to its
    /// group's replay topic; then marks them done (another). A crash between the two replays
    /// them again on the next run: at least once, never lost.
    async fn replay_batch(&self, letters: &[(DeadLetter, Record)]) -> Result<()> {
        let replays: Vec<Outgoing> = letters
            .iter()
            .map(|(letter, record)| {
                if let Some(envelope) = letter.replayed_envelope() {
                    // Back through its aggregate's partition of the events
                    // topic, so that the partition's owner handles it in
                    // order with the aggregate's other events; the other
                    // groups skip it (it is marked as replayed for this one).
                    let config = &self.client.config;
                    let (headers, payload) = wire::encode(&envelope, &config.source);
                    return Outgoing {
                        topic: config.events_topic(),
                        key: envelope.aggregate_id.clone(),
                        partition: Some(eventsource_core::partition_of(
                            &envelope.aggregate_id,
                            self.client.event_partitions,
                        ) as i32),
                        headers,
                        payload,
                    };
                }
                // A record that did not decode: to the group's replay topic.
                let headers: Vec<(&str, &str)> = record
                    .headers
                    .iter()
                    .filter(|(k, _)| !dead_letter::is_failure_header(k))
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                Outgoing {
                    topic: self.client.config.replay_topic(letter.group()),
                    key: record.key.clone(),
                    partition: None,
                    headers: wire::headers(headers),
                    payload: record.payload.clone(),
                }
            })
            .collect();
        self.client.produce(&replays).await?;
        let markers: Vec<Outgoing> = letters.iter().map(|(l, _)| self.done_marker(l)).collect();
        self.client.produce(&markers).await?;
        for (letter, _) in letters {
            self.client.stats.replayed(letter.group());
        }
        Ok(())
    }
}

#[async_trait]
impl DeadLetterQueue for KafkaDeadLetterQueue {
    async fn list(&self, query: &DeadLetterQuery) -> Result<Vec<DeadLetter>> {
        let mut all = Vec::new();
        for group in self.groups(query) {
            all.extend(self.letters(&group).await?.into_iter().map(|(l, _)| l));
        }
        all.sort_by_key(|l| l.failure.last_failed_at);
        if let Some(limit) = query.limit {
            all.truncate(limit);
        }
        Ok(all)
    }

    async fn get(&self, id: &str) -> Result<Option<DeadLetter>> {
        Ok(self.find(id).await?.map(|(l, _)| l))
    }

    async fn replay(&self, id: &str) -> Result<()> {
        let found = self
            .find(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("kafka: dead letter `{id}`")))?;
        self.replay_batch(std::slice::from_ref(&found)).await
    }

    /// One read of each group's DLQ, then replays in batches of
    /// [`REPLAY_BATCH`]: one produce for the batch's records, one for their
    /// done markers.
    async fn replay_all_with_progress(
        &self,
        query: &DeadLetterQuery,
        progress: &(dyn Fn(usize, usize) + Send + Sync),
    ) -> Result<usize> {
        let mut all = Vec::new();
        for group in self.groups(query) {
            all.extend(self.letters(&group).await?);
        }
        all.sort_by_key(|(l, _)| l.failure.last_failed_at);
        if let Some(limit) = query.limit {
            all.truncate(limit);
        }
        let total = all.len();
        let mut done = 0;
        for batch in all.chunks(REPLAY_BATCH) {
            self.replay_batch(batch).await?;
            done += batch.len();
            progress(done, total);
        }
        Ok(total)
    }

    async fn delete(&self, id: &str) -> Result<bool> {
        match self.find(id).await? {
            Some((letter, _)) => {
                self.mark_done(&letter).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// One listing, then [`delete_many`](Self::delete_many): the trait's
    /// default deletes letter by letter, and each delete here reads the
    /// group's whole DLQ topic. Progress is reported once, at the end.
    async fn purge_with_progress(
        &self,
        query: &DeadLetterQuery,
        progress: &(dyn Fn(usize, usize) + Send + Sync),
    ) -> Result<usize> {
        let ids: Vec<String> = self.list(query).await?.into_iter().map(|l| l.id).collect();
        let n = self.delete_many(&ids).await?;
        progress(ids.len(), ids.len());
        Ok(n)
    }

    /// One read of each group's DLQ, then one produce of the done markers.
    async fn delete_many(&self, ids: &[String]) -> Result<usize> {
        let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let groups: std::collections::BTreeSet<&str> = wanted
            .iter()
            .filter_map(|id| id.split_once('/').map(|(g, _)| g))
            .filter(|g| eventsource_core::validate_name("group", g).is_ok())
            .collect();
        let (mut markers, mut marked) = (Vec::new(), HashSet::new());
        for group in groups {
            for (letter, _) in self.letters(group).await? {
                if wanted.contains(letter.id.as_str()) && marked.insert(letter.id.clone()) {
                    markers.push(self.done_marker(&letter));
                }
            }
        }
        if !markers.is_empty() {
            self.client.produce(&markers).await?;
        }
        Ok(markers.len())
    }
}
