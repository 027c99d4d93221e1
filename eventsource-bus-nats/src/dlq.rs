//! Dead-letter streams: `{NS}-dlq-{G}` (subject `{namespace}.dlq.{group}`),
//! one per consumer group. A letter's body is one JSON object: the
//! original message's headers with the failure in the core codec's
//! headers (`x-eventsource-…`), and the original body as text. Ids are
//! `{group}/{sequence in the dead-letter stream}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_nats::jetstream::message::PublishMessage;
use async_nats::HeaderMap;
use async_trait::async_trait;
use eventsource_core::driver::Letter;
use eventsource_core::wire::dead_letter;
use eventsource_core::{DeadLetter, DeadLetterQuery, DeadLetterQueue, Error, Failure, Result};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::client::{nats_err, Client, BACKEND};
use crate::config::unescape;
use crate::wire;

/// A message that did not decode: its headers as text, and its body.
pub(crate) type Raw = (BTreeMap<String, String>, Vec<u8>);

/// What a dead letter carries: the event, or the raw message.
pub(crate) type LetterToWrite = Letter<Raw>;

/// The body of a letter in a dead-letter stream.
#[derive(Serialize, Deserialize)]
struct Stored {
    /// The original headers and the failure's.
    headers: BTreeMap<String, String>,
    /// The original body (as text; bytes that are not UTF-8 are replaced).
    body: String,
}

/// Writes a dead letter of the message at `source` (waiting for the
/// stream's PubAck). Its `Nats-Msg-Id` is `source`: written twice within
/// the duplicate window (the ack after the first write was lost, the
/// message came again and failed again), it is stored once.
pub(crate) async fn write_dead_letter(
    client: &Client,
    source: &str,
    letter: &LetterToWrite,
    failure: &Failure,
) -> Result<()> {
    let config = &client.config;
    let group = &failure.group;
    let (mut headers, body) = match letter {
        Letter::Event(e) => {
            let (headers, body) = wire::encode(e, &config.source);
            (wire::headers_as_text(Some(&headers)), body)
        }
        Letter::Raw((headers, body)) => (headers.clone(), body.clone()),
    };
    headers.remove("Nats-Msg-Id");
    headers.extend(dead_letter::encode(
        failure,
        matches!(letter, Letter::Event(_)),
    ));
    let stored = Stored {
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let what = || format!("dead-lettering {source} to `{}`", config.dlq_stream(group));
    let payload = serde_json::to_vec(&stored).expect("a letter serializes");
    let publish = PublishMessage::build()
        .payload(payload.into())
        .message_id(source)
        .header("content-type", "application/json");
    client
        .js
        .send_publish(config.dlq_subject(group), publish)
        .await
        .map_err(|e| nats_err(what(), e))?
        .await
        .map_err(|e| nats_err(what(), e))?;
    Ok(())
}

/// A letter as stored; one that cannot be read is listed as
/// [`FailureKind::Unreadable`](eventsource_core::FailureKind::Unreadable)
/// with its raw content, never an error that hides the group's others.
fn parse_letter(
    group: &str,
    seq: u64,
    payload: &[u8],
    at: chrono::DateTime<chrono::Utc>,
) -> DeadLetter {
    let id = format!("{group}/{seq}");
    let stored: Stored = serde_json::from_slice(payload).unwrap_or_else(|e| Stored {
        headers: BTreeMap::from([(
            "x-eventsource-unreadable".to_owned(),
            format!("the letter is not the JSON this bus writes: {e}"),
        )]),
        body: String::from_utf8_lossy(payload).into_owned(),
    });
    let raw_of = |keep: &dyn Fn(&str) -> bool| {
        let mut raw: BTreeMap<&str, &str> = stored
            .headers
            .iter()
            .filter(|(k, _)| keep(k))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        raw.insert("body", &stored.body);
        serde_json::to_string(&raw).expect("a string map serializes")
    };
    dead_letter::read_letter(
        id,
        group,
        |k| stored.headers.get(k).map(String::as_str),
        || wire::decode(stored.body.as_bytes()),
        raw_of,
        || at,
    )
}

/// The [`DeadLetterQueue`] of a [`NatsBus`](crate::NatsBus).
pub(crate) struct NatsDeadLetterQueue {
    pub(crate) client: Arc<Client>,
}

fn parse_id(id: &str) -> Option<(&str, u64)> {
    let (group, seq) = id.rsplit_once('/')?;
    eventsource_core::validate_name("group", group).ok()?;
    Some((group, seq.parse().ok()?))
}

impl NatsDeadLetterQueue {
    /// The letters of `group`, oldest first, at most `limit`.
    async fn letters(&self, group: &str, limit: Option<usize>) -> Result<Vec<DeadLetter>> {
        let name = self.client.config.dlq_stream(group);
        let Some(stream) = self.client.stream(&name).await? else {
            return Ok(Vec::new());
        };
        let state = stream.cached_info().state.clone();
        let mut letters = Vec::new();
        if state.messages == 0 {
            return Ok(letters);
        }
        for seq in state.first_sequence..=state.last_sequence {
            if limit.is_some_and(|l| letters.len() >= l) {
                break;
            }
            if let Some(letter) = self.read(&stream, group, seq).await? {
                letters.push(letter);
            }
        }
        Ok(letters)
    }

    /// Letter `seq` of `group`'s stream, `None` if there is none (deleted).
    async fn read(
        &self,
        stream: &async_nats::jetstream::stream::Stream,
        group: &str,
        seq: u64,
    ) -> Result<Option<DeadLetter>> {
        use async_nats::jetstream::stream::RawMessageErrorKind;
        match stream.get_raw_message(seq).await {
            Ok(m) => {
                let at = chrono::DateTime::from_timestamp(m.time.unix_timestamp(), 0)
                    .unwrap_or_else(chrono::Utc::now);
                Ok(Some(parse_letter(group, seq, &m.payload, at)))
            }
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(nats_err(
                format!(
                    "reading letter {seq} of `{}`",
                    self.client.config.dlq_stream(group)
                ),
                e,
            )),
        }
    }

    /// Every group with a dead-letter stream, or the query's.
    async fn groups(&self, query: &DeadLetterQuery) -> Result<Vec<String>> {
        if let Some(g) = &query.group {
            return Ok(vec![g.clone()]);
        }
        let prefix = self.client.config.dlq_stream_prefix();
        let names: Vec<String> = self
            .client
            .js
            .stream_names()
            .try_collect()
            .await
            .map_err(|e| nats_err("listing streams", e))?;
        let mut groups: Vec<String> = names
            .iter()
            .filter_map(|n| unescape(n.strip_prefix(&prefix)?))
            .collect();
        groups.sort();
        Ok(groups)
    }

    /// Letter `id`, with its group's stream, group and sequence; `None`
    /// for an id that does not parse or names no letter.
    async fn find<'i>(
        &self,
        id: &'i str,
    ) -> Result<
        Option<(
            async_nats::jetstream::stream::Stream,
            &'i str,
            u64,
            DeadLetter,
        )>,
    > {
        let Some((group, seq)) = parse_id(id) else {
            return Ok(None);
        };
        let name = self.client.config.dlq_stream(group);
        let Some(stream) = self.client.stream(&name).await? else {
            return Ok(None);
        };
        let letter = self.read(&stream, group, seq).await?;
        Ok(letter.map(|letter| (stream, group, seq, letter)))
    }
}

#[async_trait]
impl DeadLetterQueue for NatsDeadLetterQueue {
    async fn list(&self, query: &DeadLetterQuery) -> Result<Vec<DeadLetter>> {
        let mut all = Vec::new();
        for group in self.groups(query).await? {
            all.extend(self.letters(&group, query.limit).await?);
        }
        all.sort_by_key(|l| l.failure.last_failed_at);
        if let Some(limit) = query.limit {
            all.truncate(limit);
        }
        Ok(all)
    }

    async fn get(&self, id: &str) -> Result<Option<DeadLetter>> {
        Ok(self.find(id).await?.map(|(_, _, _, letter)| letter))
    }

    async fn replay(&self, id: &str) -> Result<()> {
        let (stream, group, seq, letter) = self
            .find(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("nats: dead letter `{id}`")))?;
        let client = &self.client;
        let config = &client.config;
        let (headers, body) = match (letter.replayed_envelope(), letter.raw_body()) {
            (Some(env), _) => wire::encode(&env, &config.source),
            (None, Some(raw)) => {
                let mut fields: BTreeMap<String, String> = serde_json::from_str(raw)
                    .map_err(|e| Error::backend(BACKEND, format!("replaying {id}"), e))?;
                let body = fields.remove("body").unwrap_or_default();
                let mut headers = HeaderMap::new();
                for (k, v) in &fields {
                    headers.insert(k.as_str(), async_nats::HeaderValue::from_lossy(v));
                }
                (headers, body.into_bytes())
            }
            (None, None) => {
                return Err(Error::config(format!(
                    "nats: dead letter `{id}` holds nothing to replay"
                )))
            }
        };
        // Never the events subject every group reads (see `redeliver`).
        let to = crate::redeliver::destination(client, group, letter.envelope()).await?;
        crate::redeliver::send(client, to, headers, body).await?;
        stream
            .delete_message(seq)
            .await
            .map_err(|e| nats_err(format!("removing {id} after its replay"), e))?;
        client.stats.replayed(group);
        Ok(())
    }

    async fn delete(&self, id: &str) -> Result<bool> {
        let Some((stream, _, seq, _)) = self.find(id).await? else {
            return Ok(false);
        };
        stream
            .delete_message(seq)
            .await
            .map_err(|e| nats_err(format!("deleting dead letter {id}"), e))
    }
}
