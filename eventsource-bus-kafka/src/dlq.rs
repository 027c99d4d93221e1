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

/// Marks a reduced dead letter ([`reduced_letter`]): the names of the
/// fields cut from it, comma-separated (`value` for the record's value).
pub(crate) const CUT_HEADER: &str = "x-eventsource-cut";

/// The most a dead letter's record may hold (key, value and headers):
/// librdkafka's default `message.max.bytes` (1,000,000), less room for the
/// record's own overhead. A larger letter is written reduced.
pub(crate) const LETTER_LIMIT: usize = 1_000_000 - 16 * 1024;

/// In a reduced letter, a field longer than this is cut.
const FIELD_KEPT: usize = 1024;

/// The bytes a record of these parts holds, near enough to compare with
/// [`LETTER_LIMIT`].
fn record_size<'a>(
    key: &str,
    headers: impl IntoIterator<Item = (&'a String, &'a String)>,
    payload: &[u8],
) -> usize {
    let headers: usize = headers
        .into_iter()
        .map(|(k, v)| k.len() + v.len() + 8)
        .sum();
    key.len() + payload.len() + headers
}

/// The record that goes to a group's DLQ topic: the original key, value and
/// `ce_` headers, plus the failure in the core codec's headers — or, when
/// that would pass [`LETTER_LIMIT`], the [`reduced_letter`].
pub(crate) fn dead_letter_record(
    config: &KafkaBusConfig,
    key: &str,
    headers: &BTreeMap<String, String>,
    payload: &[u8],
    failure: &Failure,
    decoded: bool,
) -> Outgoing {
    let failure_headers: BTreeMap<String, String> =
        dead_letter::encode(failure, decoded).into_iter().collect();
    if record_size(key, headers.iter().chain(&failure_headers), payload) > LETTER_LIMIT {
        return reduced_letter(config, key, headers, payload, failure);
    }
    Outgoing {
        topic: config.dlq_topic(&failure.group),
        key: key.to_owned(),
        partition: None,
        headers: wire::headers(
            headers
                .iter()
                .chain(&failure_headers)
                .map(|(k, v)| (k.as_str(), v.as_str())),
        ),
        payload: payload.to_vec(),
    }
}

/// A dead letter that fits where the whole one does not (a record with a
/// megabyte header, refused by the broker as too large, would otherwise
/// stay uncommitted and block its partition): the value and every header
/// longer than 1 KiB are cut — all headers, if they are still too many —
/// and named in [`CUT_HEADER`] and in the failure's message. The letter
/// keeps the failure, whose `source` (`topic[partition]@offset`) says
/// where the original is: replaying the letter reads the original from
/// there.
pub(crate) fn reduced_letter(
    config: &KafkaBusConfig,
    key: &str,
    headers: &BTreeMap<String, String>,
    payload: &[u8],
    failure: &Failure,
) -> Outgoing {
    let mut cut: Vec<String> = Vec::new();
    if payload.len() > FIELD_KEPT {
        cut.push("value".to_owned());
    }
    let mut kept: BTreeMap<String, String> = headers
        .iter()
        .filter(|(k, v)| {
            let keep = v.len() <= FIELD_KEPT && !dead_letter::is_failure_header(k);
            if !keep && !dead_letter::is_failure_header(k) {
                cut.push((*k).clone());
            }
            keep
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if record_size(key, &kept, &[]) > LETTER_LIMIT / 2 {
        cut.extend(std::mem::take(&mut kept).into_keys());
    }
    let cut = match cut.len() {
        0..=10 => cut.join(", "),
        n => format!("{} and {} more", cut[..10].join(", "), n - 10),
    };
    let mut failure = failure.clone();
    let mut error: String = failure.error.chars().take(FIELD_KEPT).collect();
    if error.len() < failure.error.len() {
        error.push('…');
    }
    failure.error = format!(
        "{error} (this dead letter was too large for the broker: {cut} cut; replaying it \
         reads the original at {})",
        failure.source
    );
    kept.extend(dead_letter::encode(&failure, false));
    kept.insert(CUT_HEADER.to_owned(), cut);
    let payload = if payload.len() > FIELD_KEPT {
        Vec::new()
    } else {
        payload.to_vec()
    };
    Outgoing {
        topic: config.dlq_topic(&failure.group),
        key: key.chars().take(FIELD_KEPT).collect(),
        partition: None,
        headers: wire::headers(kept.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
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

/// A consumer that reads topics by assignment, committing nothing.
fn reader(config: &KafkaBusConfig) -> Result<Arc<StreamConsumer>> {
    let consumer: StreamConsumer = client_config(config)
        .set("group.id", format!("{}.dlq-reader", config.topic_prefix))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(|e| kafka_err("creating a dead-letter reader", e))?;
    Ok(Arc::new(consumer))
}

/// The next record `consumer` receives, within 10 s.
async fn next_record(consumer: &StreamConsumer, topic: &str) -> Result<Record> {
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
async fn read_topic(config: &KafkaBusConfig, topic: &str) -> Result<Vec<Record>> {
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
fn source_of(source: &str) -> Option<(&str, i32, i64)> {
    let (at, offset) = source.rsplit_once('@')?;
    let (topic, partition) = at.strip_suffix(']')?.rsplit_once('[')?;
    Some((topic, partition.parse().ok()?, offset.parse().ok()?))
}

/// The original record of a reduced letter ([`reduced_letter`]), read
/// back from the `topic[partition]@offset` of its failure's source.
async fn read_original(config: &KafkaBusConfig, letter: &DeadLetter) -> Result<Record> {
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
        // A reduced letter replays its original, read back from its source.
        let mut originals = BTreeMap::new();
        for (i, (letter, record)) in letters.iter().enumerate() {
            if record.headers.contains_key(CUT_HEADER) {
                let original = read_original(&self.client.config, letter).await?;
                let mut letter = letter.clone();
                letter.envelope = wire::decode(&original.headers, Some(&original.payload)).ok();
                originals.insert(i, (letter, original));
            }
        }
        let replays: Vec<Outgoing> = letters
            .iter()
            .enumerate()
            .map(|(i, found)| originals.get(&i).unwrap_or(found))
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

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Headers;

    fn failure() -> Failure {
        let at = chrono::Utc::now();
        Failure {
            error: "boom".into(),
            kind: eventsource_core::FailureKind::Permanent,
            attempts: 3,
            first_failed_at: at,
            last_failed_at: at,
            group: "billing".into(),
            source: "es.events[2]@41".into(),
            handler: None,
        }
    }

    fn header_names(record: &Outgoing) -> BTreeMap<String, String> {
        wire::headers_as_text(Some(&record.headers))
    }

    #[test]
    fn a_source_names_topic_partition_and_offset() {
        assert_eq!(source_of("es.events[2]@41"), Some(("es.events", 2, 41)));
        assert_eq!(source_of("a[b]c[0]@7"), Some(("a[b]c", 0, 7)));
        assert_eq!(source_of("es.events/1-0"), None);
        assert_eq!(source_of("es.events[x]@1"), None);
    }

    /// A letter with a megabyte header would be refused by the broker and
    /// block its partition: it is written reduced, naming what was cut.
    #[test]
    fn a_letter_past_the_limit_is_reduced_and_says_what_was_cut() {
        let config = KafkaBusConfig::new("127.0.0.1:9092");
        let headers: BTreeMap<String, String> = [
            ("ce_id".to_owned(), "e-1".to_owned()),
            ("ce_big".to_owned(), "x".repeat(LETTER_LIMIT)),
        ]
        .into();
        let whole = dead_letter_record(&config, "a-1", &headers, b"{}", &failure(), true);
        let kept = header_names(&whole);
        assert_eq!(kept.get(CUT_HEADER).map(String::as_str), Some("ce_big"));
        assert!(!kept.contains_key("ce_big"));
        assert_eq!(kept.get("ce_id").map(String::as_str), Some("e-1"));
        assert_eq!(whole.payload, b"{}");
        let letter = parse_letter(
            "billing",
            &Record {
                partition: 0,
                offset: 0,
                key: whole.key.clone(),
                headers: kept,
                payload: whole.payload.clone(),
            },
        );
        assert!(letter.envelope.is_none(), "listed by its raw fields");
        assert!(
            letter
                .failure
                .error
                .starts_with("boom (this dead letter was too large")
                && letter.failure.error.contains("ce_big cut")
                && letter.failure.error.contains("es.events[2]@41"),
            "{}",
            letter.failure.error
        );
        // A big value is cut too; a small letter is left whole.
        let big_value = vec![b'x'; LETTER_LIMIT];
        let reduced = dead_letter_record(
            &config,
            "a-1",
            &BTreeMap::new(),
            &big_value,
            &failure(),
            true,
        );
        assert!(reduced.payload.is_empty());
        assert_eq!(
            header_names(&reduced).get(CUT_HEADER).map(String::as_str),
            Some("value")
        );
        let small =
            dead_letter_record(&config, "a-1", &headers_of_small(), b"{}", &failure(), true);
        assert!(small.headers.iter().all(|h| h.key != CUT_HEADER));
    }

    fn headers_of_small() -> BTreeMap<String, String> {
        [("ce_id".to_owned(), "e-1".to_owned())].into()
    }

    /// Many small headers that together pass the limit are all cut.
    #[test]
    fn too_many_small_headers_are_all_cut() {
        let config = KafkaBusConfig::new("127.0.0.1:9092");
        let headers: BTreeMap<String, String> = (0..2000)
            .map(|i| (format!("h{i}"), "y".repeat(1000)))
            .collect();
        let reduced = reduced_letter(&config, "a-1", &headers, b"{}", &failure());
        let kept = header_names(&reduced);
        assert!(
            kept.keys().all(|k| k.starts_with("x-eventsource-")),
            "{:?}",
            kept.keys().take(3).collect::<Vec<_>>()
        );
        assert!(record_size(&reduced.key, &kept, &reduced.payload) < LETTER_LIMIT);
    }
}
