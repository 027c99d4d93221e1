//! Dead letters: messages a consumer group gave up on, and what to do with them.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{EventEnvelope, Failure, FailureKind, Result};

/// The metadata key a replayed event carries: the id of the dead letter it
/// was replayed from. Handlers may read it; a group that parks aggregates
/// ([`park_aggregate_on_failure`](crate::SubscriptionBuilder::park_aggregate_on_failure))
/// releases a parked aggregate when one of its letters comes back so.
pub const REPLAYED_FROM: &str = "eventsource-replayed-from";

/// The metadata key a replayed event carries: the group it is replayed
/// for. A backend that sends replays through the aggregate's partition
/// (where every group reads) relies on it: the other groups skip the
/// event ([`triage`](crate::driver::triage)), and watches do not show it.
pub const REPLAYED_FOR: &str = "eventsource-replayed-for";

/// A message that a consumer group could not handle, with the reason.
///
/// Built with [`DeadLetter::new`], [`DeadLetter::event`] or
/// [`DeadLetter::raw`] (fields may be
/// added: it is `#[non_exhaustive]`). As JSON the body is one key,
/// `envelope` or `raw`, beside `id` and `failure`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The backend's id of this dead letter (stream entry id, message id, offset...).
    pub id: String,
    /// The event, or the raw message when it could not be decoded.
    #[serde(flatten)]
    pub body: LetterBody,
    /// Why it was given up on, by which group, and where it came from.
    pub failure: Failure,
}

/// What a dead letter holds: the event, or the message as the broker
/// kept it when it could not be decoded into one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LetterBody {
    /// The event.
    Envelope(EventEnvelope),
    /// The raw message (headers and body as text, in the backend's notation).
    Raw(String),
}

impl DeadLetter {
    /// A letter with backend id `id`.
    pub fn new(id: impl Into<String>, body: LetterBody, failure: Failure) -> Self {
        DeadLetter {
            id: id.into(),
            body,
            failure,
        }
    }

    /// A letter that holds an event.
    pub fn event(id: impl Into<String>, envelope: EventEnvelope, failure: Failure) -> Self {
        DeadLetter::new(id, LetterBody::Envelope(envelope), failure)
    }

    /// A letter that holds a message that did not decode into an event.
    pub fn raw(id: impl Into<String>, raw: impl Into<String>, failure: Failure) -> Self {
        DeadLetter::new(id, LetterBody::Raw(raw.into()), failure)
    }

    /// The event, when it decoded.
    pub fn envelope(&self) -> Option<&EventEnvelope> {
        match &self.body {
            LetterBody::Envelope(envelope) => Some(envelope),
            LetterBody::Raw(_) => None,
        }
    }

    /// The raw message, when it did not decode.
    pub fn raw_body(&self) -> Option<&str> {
        match &self.body {
            LetterBody::Envelope(_) => None,
            LetterBody::Raw(raw) => Some(raw),
        }
    }

    /// The consumer group that gave up on it.
    pub fn group(&self) -> &str {
        &self.failure.group
    }

    /// The aggregate of the event, when it decoded.
    pub fn aggregate_id(&self) -> Option<&str> {
        self.envelope().map(|e| e.aggregate_id.as_str())
    }

    /// The event to send back on replay: the envelope with
    /// [`REPLAYED_FROM`] set to this letter's id and [`REPLAYED_FOR`] to
    /// its group. Every backend's replay sends this.
    pub fn replayed_envelope(&self) -> Option<EventEnvelope> {
        let mut envelope = self.envelope()?.clone();
        envelope
            .metadata
            .insert(REPLAYED_FROM.to_owned(), self.id.clone());
        envelope
            .metadata
            .insert(REPLAYED_FOR.to_owned(), self.group().to_owned());
        Some(envelope)
    }
}

/// An aggregate whose events wait in a group's dead-letter queue behind
/// its oldest letter (see
/// [`park_aggregate_on_failure`](crate::SubscriptionBuilder::park_aggregate_on_failure)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedAggregate {
    /// The consumer group.
    pub group: String,
    /// The aggregate.
    pub aggregate_id: String,
    /// The id of its oldest letter (lowest aggregate version): the one to
    /// fix and replay, or discard.
    pub head: String,
    /// How many of its events wait behind the head.
    pub parked: usize,
}

impl ParkedAggregate {
    /// The parked aggregates `letters` (a DLQ listing) show: those with
    /// letters of kind [`Parked`](FailureKind::Parked), each with its head
    /// (its letter of lowest version) and how many letters wait behind it.
    pub fn of(letters: Vec<DeadLetter>) -> Vec<ParkedAggregate> {
        by_aggregate(letters)
            .into_iter()
            .filter_map(|((group, aggregate_id), list)| {
                let waiting = list
                    .iter()
                    .filter(|l| l.failure.kind == FailureKind::Parked)
                    .count();
                (waiting > 0).then(|| ParkedAggregate {
                    group,
                    aggregate_id,
                    head: list[0].id.clone(),
                    parked: list.len() - 1,
                })
            })
            .collect()
    }
}

/// The letters of each aggregate, in the order a release handles them
/// (aggregate version, then queue order), keyed by group and aggregate.
pub(crate) fn by_aggregate(letters: Vec<DeadLetter>) -> Vec<((String, String), Vec<DeadLetter>)> {
    let mut out: Vec<((String, String), Vec<DeadLetter>)> = Vec::new();
    for letter in letters {
        let Some(aggregate) = letter.aggregate_id() else {
            continue;
        };
        let key = (letter.group().to_owned(), aggregate.to_owned());
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, list)) => list.push(letter),
            None => out.push((key, vec![letter])),
        }
    }
    for (_, list) in &mut out {
        release_order(list);
    }
    out
}

/// Sorts one aggregate's letters by aggregate version, keeping queue
/// order among equal versions (a stable sort).
fn release_order(letters: &mut [DeadLetter]) {
    letters.sort_by_key(|l| l.envelope().map_or(0, |e| e.aggregate_version));
}

/// `group`'s letters of `aggregate_id`, in the order a release handles
/// them: aggregate version, then queue order.
pub(crate) fn letters_of(
    letters: Vec<DeadLetter>,
    group: &str,
    aggregate_id: &str,
) -> Vec<DeadLetter> {
    let mut mine: Vec<DeadLetter> = letters
        .into_iter()
        .filter(|l| l.group() == group && l.aggregate_id() == Some(aggregate_id))
        .collect();
    release_order(&mut mine);
    mine
}

/// Which letters of a bulk replay go back themselves, taken in queue
/// order: a parked letter behind a head letter that is replayed too is
/// released by its group once the head is handled, in order; replaying it
/// as well would hand it to the group twice (or race its release).
///
/// Backends that override
/// [`replay_all_with_progress`](DeadLetterQueue::replay_all_with_progress)
/// filter their letters through it, as the default does.
#[derive(Debug, Default)]
pub struct BulkReplay {
    heads: std::collections::HashSet<(String, String)>,
}

impl BulkReplay {
    /// Whether `letter` (the next in queue order) is replayed itself;
    /// `false` for one its group releases after an earlier head.
    pub fn goes_back_itself(&mut self, letter: &DeadLetter) -> bool {
        let Some(aggregate) = letter.aggregate_id() else {
            return true;
        };
        let key = (letter.group().to_owned(), aggregate.to_owned());
        if letter.failure.kind == FailureKind::Parked {
            !self.heads.contains(&key)
        } else {
            self.heads.insert(key);
            true
        }
    }
}

/// Which dead letters to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterQuery {
    /// Only this consumer group's.
    pub group: Option<String>,
    /// At most this many (default: all).
    pub limit: Option<usize>,
}

impl DeadLetterQuery {
    /// All dead letters.
    pub fn all() -> Self {
        Self::default()
    }

    /// One group's dead letters.
    pub fn group(group: impl Into<String>) -> Self {
        DeadLetterQuery {
            group: Some(group.into()),
            limit: None,
        }
    }

    /// Caps the number returned.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }
}

/// The operator's view of a bus's dead-letter queue.
///
/// `replay` puts a message back where it came from *for its group only*:
/// other groups, which handled it the first time, do not see it again.
#[async_trait]
pub trait DeadLetterQueue: Send + Sync {
    /// Dead letters, oldest first.
    async fn list(&self, query: &DeadLetterQuery) -> Result<Vec<DeadLetter>>;

    /// One dead letter by id, or `None`.
    async fn get(&self, id: &str) -> Result<Option<DeadLetter>>;

    /// Redelivers one dead letter to its group and removes it from the queue.
    /// Fails with [`Error::NotFound`](crate::Error::NotFound) for an unknown id.
    async fn replay(&self, id: &str) -> Result<()>;

    /// Replays every dead letter the query selects; returns how many.
    async fn replay_all(&self, query: &DeadLetterQuery) -> Result<usize> {
        self.replay_all_with_progress(query, &|_, _| {}).await
    }

    /// [`replay_all`](Self::replay_all), calling `progress(done, total)`
    /// as letters go back (after each one, or after each batch where a
    /// backend replays in batches). Stops at the first failure; what was
    /// replayed before it stays replayed. A parked letter whose head
    /// letter is replayed too goes back through its group's release, in
    /// order after the head, and counts as replayed.
    async fn replay_all_with_progress(
        &self,
        query: &DeadLetterQuery,
        progress: &(dyn Fn(usize, usize) + Send + Sync),
    ) -> Result<usize> {
        let letters = self.list(query).await?;
        let mut bulk = BulkReplay::default();
        for (i, letter) in letters.iter().enumerate() {
            if bulk.goes_back_itself(letter) {
                self.replay(&letter.id).await?;
            }
            progress(i + 1, letters.len());
        }
        Ok(letters.len())
    }

    /// Deletes one dead letter; returns whether it existed.
    ///
    /// In a group that parks aggregates, deleting a head letter releases
    /// nothing: use [`discard`](Self::discard) for that.
    async fn delete(&self, id: &str) -> Result<bool>;

    /// Deletes the dead letters `ids` (unknown ones are skipped); returns
    /// how many existed. A backend that finds a letter by reading its
    /// whole queue (RabbitMQ, Kafka) reads it once per group here, not
    /// once per letter. Like [`delete`](Self::delete), it releases nothing
    /// parked.
    async fn delete_many(&self, ids: &[String]) -> Result<usize> {
        let mut n = 0;
        for id in ids {
            n += usize::from(self.delete(id).await?);
        }
        Ok(n)
    }

    /// Deletes one dead letter and, when events of its aggregate are
    /// parked behind it, releases them: the oldest parked letter is
    /// replayed, and the group handles the rest after it, in order.
    /// Returns whether the letter existed.
    async fn discard(&self, id: &str) -> Result<bool> {
        let Some(letter) = self.get(id).await? else {
            return Ok(false);
        };
        let existed = self.delete(id).await?;
        if let Some(aggregate) = letter.aggregate_id() {
            let rest = letters_of(
                self.list(&DeadLetterQuery::group(letter.group())).await?,
                letter.group(),
                aggregate,
            );
            if let Some(next) = rest.iter().find(|l| l.failure.kind == FailureKind::Parked) {
                self.replay(&next.id).await?;
            }
        }
        Ok(existed)
    }

    /// The aggregates with events parked behind a dead letter, per group
    /// (the query's group, or all), in queue order of their first letter.
    async fn parked(&self, query: &DeadLetterQuery) -> Result<Vec<ParkedAggregate>> {
        let letters = self
            .list(&DeadLetterQuery {
                group: query.group.clone(),
                limit: None,
            })
            .await?;
        let mut parked = ParkedAggregate::of(letters);
        if let Some(limit) = query.limit {
            parked.truncate(limit);
        }
        Ok(parked)
    }

    /// Deletes every dead letter the query selects; returns how many.
    async fn purge(&self, query: &DeadLetterQuery) -> Result<usize> {
        self.purge_with_progress(query, &|_, _| {}).await
    }

    /// [`purge`](Self::purge), calling `progress(done, total)` as letters
    /// go (after each one, or once where a backend purges a whole queue at
    /// once). Stops at the first failure; what was deleted stays deleted.
    async fn purge_with_progress(
        &self,
        query: &DeadLetterQuery,
        progress: &(dyn Fn(usize, usize) + Send + Sync),
    ) -> Result<usize> {
        let letters = self.list(query).await?;
        let mut n = 0;
        for (i, letter) in letters.iter().enumerate() {
            if self.delete(&letter.id).await? {
                n += 1;
            }
            progress(i + 1, letters.len());
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure() -> Failure {
        Failure::undecodable("billing", "es:events 1-0", "not JSON")
    }

    #[test]
    fn a_letter_is_one_body_key_beside_id_and_failure() {
        let envelope = EventEnvelope::from_json("Order", "o-1", 1, "Placed", serde_json::json!({}));
        let event = DeadLetter::event("g/1", envelope.clone(), failure());
        let json = serde_json::to_value(&event).expect("serializes");
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["envelope", "failure", "id"]);
        assert_eq!(event.envelope(), Some(&envelope));
        assert_eq!(event.raw_body(), None);

        let raw = DeadLetter::raw("g/2", "{\"payload\":\"x\"}", failure());
        let json = serde_json::to_value(&raw).expect("serializes");
        assert_eq!(json["raw"], "{\"payload\":\"x\"}");
        assert!(json.get("envelope").is_none(), "{json}");
        assert_eq!(raw.raw_body(), Some("{\"payload\":\"x\"}"));

        for letter in [event, raw] {
            let text = serde_json::to_string(&letter).expect("serializes");
            let back: DeadLetter = serde_json::from_str(&text).expect("reads back");
            assert_eq!(back, letter);
        }
    }
}
