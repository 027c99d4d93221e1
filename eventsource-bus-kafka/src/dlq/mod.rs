//! Dead-letter topics: `{prefix}.{group}.dlq`, and `{prefix}.{group}.dlq-done`
//! for the ids of dead letters replayed or deleted (a topic cannot delete
//! one record, so done ones are marked and left out of listings). The
//! record a letter is written as is in `letter.rs`; reading topics back
//! in `read.rs`.

mod letter;
mod read;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use eventsource_core::wire::dead_letter;
use eventsource_core::{DeadLetter, DeadLetterQuery, DeadLetterQueue, Error, LetterBody, Result};
use rdkafka::message::OwnedHeaders;

use crate::client::{Client, Outgoing};
use crate::wire;

use letter::CUT_HEADER;
pub(crate) use letter::{dead_letter_record, reduced_letter};
pub(crate) use read::topic_bounds;
use read::{read_original, read_topic, Record};

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
                letter.body = match wire::decode(&original.headers, Some(&original.payload)) {
                    Ok(envelope) => LetterBody::Envelope(envelope),
                    Err(e) => LetterBody::Raw(format!("the original does not decode: {e}")),
                };
                originals.insert(i, (letter, original));
            }
        }
        let replays: Vec<Outgoing> = letters
            .iter()
            .enumerate()
            .map(|(i, found)| originals.get(&i).unwrap_or(found))
            .map(|(letter, record)| {
                if let Some(envelope) = letter.replayed_envelope() {
                    // Back through its aggregate's partition (see `redeliver`).
                    return crate::redeliver::through_its_partition(&self.client, &envelope);
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
        // Parked letters behind a head that goes back are released by
        // the group, not replayed (they would be handled twice).
        let mut bulk = eventsource_core::BulkReplay::default();
        all.retain(|(letter, _)| bulk.goes_back_itself(letter));
        let mut done = total - all.len();
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
    use super::letter::{record_size, LETTER_LIMIT};
    use super::read::source_of;
    use super::*;
    use crate::KafkaBusConfig;
    use eventsource_core::Failure;
    use rdkafka::message::Headers;

    fn failure() -> Failure {
        let mut failure = Failure::undecodable("billing", "es.events[2]@41", "");
        failure.error = "boom".into();
        failure.kind = eventsource_core::FailureKind::Permanent;
        failure.attempts = 3;
        failure
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
        assert!(letter.envelope().is_none(), "listed by its raw fields");
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
