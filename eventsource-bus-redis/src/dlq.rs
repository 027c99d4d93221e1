//! Dead-letter streams: `{namespace}:dlq:{group}`, one per consumer group.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use eventsource_core::driver::Letter;
use eventsource_core::wire::dead_letter;
use eventsource_core::{
    DeadLetter, DeadLetterQuery, DeadLetterQueue, Error, Failure, LetterBody, Result,
};
use redis::streams::{StreamId, StreamRangeReply};

use crate::client::{redis_err, Client, BACKEND};
use crate::wire;

/// What a dead letter carries: the event, or the raw fields that did not decode.
pub(crate) type LetterToWrite = Letter<BTreeMap<String, String>>;

/// Appends a dead letter and acks the entry in one MULTI/EXEC, so a
/// message is either pending or dead-lettered, never lost nor both. The
/// failure is written by the core's codec, the body as `envelope` or `raw`.
/// Dead-letters in a partition only while `ARGV[1]` holds its lease
/// `KEYS[4]`: XADD `ARGV[4..]` to `KEYS[1]`, XACK `ARGV[3]` of `KEYS[2]` in
/// group `ARGV[2]`, SADD the group to `KEYS[3]`; -1 (nothing written) if
/// the lease is another's.
const FENCED: &str = r"
if redis.call('GET', KEYS[4]) ~= ARGV[1] then return -1 end
redis.call('XADD', KEYS[1], '*', unpack(ARGV, 4))
redis.call('XACK', KEYS[2], ARGV[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[2])
return 1
";

/// Who must hold which lease for a dead letter to be written (partitioned
/// mode): the lease key and the owner's name.
pub(crate) type Fence<'a> = Option<(String, &'a str)>;

/// Writes a dead letter and acks its entry in one step (fenced by the
/// partition's lease in partitioned mode). `Ok(false)`: refused, the lease
/// is another member's (nothing written, the entry stays pending for it).
pub(crate) async fn write_dead_letter(
    client: &Client,
    stream: &str,
    entry_id: &str,
    body: &LetterToWrite,
    failure: &Failure,
    fence: Fence<'_>,
) -> Result<bool> {
    let config = &client.config;
    let group = &failure.group;
    let dlq = config.dlq_stream(group);
    let (body_field, body_value) = match body {
        Letter::Event(e) => (
            "envelope",
            serde_json::to_string(&**e).expect("an envelope serializes"),
        ),
        Letter::Raw(fields) => (
            "raw",
            serde_json::to_string(fields).expect("a string map serializes"),
        ),
    };
    let decoded = matches!(body, Letter::Event(_));
    let what = || format!("dead-lettering entry {entry_id} of `{stream}` to `{dlq}`");
    let mut conn = client.conn.clone();
    if let Some((lease, owner)) = fence {
        let mut script = redis::cmd("EVAL");
        script
            .arg(FENCED)
            .arg(4)
            .arg(&dlq)
            .arg(stream)
            .arg(config.dlq_groups_key())
            .arg(lease)
            .arg(owner)
            .arg(group)
            .arg(entry_id);
        for (name, value) in dead_letter::encode(failure, decoded) {
            script.arg(name).arg(value);
        }
        script.arg(body_field).arg(body_value);
        let written: i64 = script
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_err(what(), e))?;
        return Ok(written >= 0);
    }
    let mut pipe = redis::pipe();
    let xadd = pipe.atomic().cmd("XADD").arg(&dlq).arg("*");
    for (name, value) in dead_letter::encode(failure, decoded) {
        xadd.arg(name).arg(value);
    }
    xadd.arg(body_field)
        .arg(body_value)
        .ignore()
        .cmd("XACK")
        .arg(stream)
        .arg(group)
        .arg(entry_id)
        .ignore()
        .cmd("SADD")
        .arg(config.dlq_groups_key())
        .arg(group)
        .ignore();
    pipe.query_async::<()>(&mut conn)
        .await
        .map_err(|e| redis_err(what(), e))?;
    Ok(true)
}

/// The [`DeadLetterQueue`] of a [`RedisBus`](crate::RedisBus). Ids are
/// `{group}/{dlq entry id}`.
pub(crate) struct RedisDeadLetterQueue {
    pub(crate) client: Arc<Client>,
}

fn parse_id(id: &str) -> Option<(&str, &str)> {
    id.split_once('/')
}

/// A letter as stored; one whose fields cannot be read is listed as
/// [`FailureKind::Unreadable`](eventsource_core::FailureKind::Unreadable)
/// with its raw fields, never an error that hides the group's others.
fn parse_letter(group: &str, entry: StreamId) -> DeadLetter {
    let f: BTreeMap<String, String> = wire::fields_as_text(entry.map);
    let id = format!("{group}/{}", entry.id);
    let read = || -> std::result::Result<_, String> {
        let envelope = match f.get("envelope") {
            Some(e) => Some(
                serde_json::from_str(e).map_err(|e| format!("field `envelope` malformed: {e}"))?,
            ),
            None => None,
        };
        let (failure, _) =
            dead_letter::decode(|k| f.get(k).map(String::as_str), envelope.is_some())
                .map_err(|e| e.to_string())?;
        let body = match (envelope, f.get("raw")) {
            (Some(envelope), _) => LetterBody::Envelope(envelope),
            (None, Some(raw)) => LetterBody::Raw(raw.clone()),
            (None, None) => return Err("neither field `envelope` nor field `raw`".to_owned()),
        };
        Ok((body, failure))
    };
    match read() {
        Ok((body, failure)) => DeadLetter::new(id, body, failure),
        Err(reason) => {
            // A stream entry id starts with its time in milliseconds.
            let at = entry
                .id
                .split('-')
                .next()
                .and_then(|ms| ms.parse::<i64>().ok())
                .and_then(chrono::DateTime::from_timestamp_millis)
                .unwrap_or_else(chrono::Utc::now);
            let raw: BTreeMap<&String, &String> = f.iter().collect();
            let failure = Failure::unreadable(group, &id, reason, at);
            let raw = serde_json::to_string(&raw).expect("a string map serializes");
            DeadLetter::raw(id, raw, failure)
        }
    }
}

impl RedisDeadLetterQueue {
    async fn range(
        &self,
        group: &str,
        start: &str,
        end: &str,
        count: Option<usize>,
    ) -> Result<Vec<DeadLetter>> {
        let dlq = self.client.config.dlq_stream(group);
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(&dlq).arg(start).arg(end);
        if let Some(n) = count {
            cmd.arg("COUNT").arg(n);
        }
        let mut conn = self.client.conn.clone();
        let reply: StreamRangeReply = cmd
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_err(format!("XRANGE `{dlq}`"), e))?;
        Ok(reply
            .ids
            .into_iter()
            .map(|e| parse_letter(group, e))
            .collect())
    }

    async fn groups(&self, query: &DeadLetterQuery) -> Result<Vec<String>> {
        if let Some(g) = &query.group {
            return Ok(vec![g.clone()]);
        }
        let key = self.client.config.dlq_groups_key();
        let mut conn = self.client.conn.clone();
        let mut groups: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_err(format!("SMEMBERS `{key}`"), e))?;
        groups.sort();
        Ok(groups)
    }
}

#[async_trait]
impl DeadLetterQueue for RedisDeadLetterQueue {
    async fn list(&self, query: &DeadLetterQuery) -> Result<Vec<DeadLetter>> {
        let mut all = Vec::new();
        for group in self.groups(query).await? {
            all.extend(self.range(&group, "-", "+", query.limit).await?);
        }
        all.sort_by_key(|l| l.failure.last_failed_at);
        if let Some(limit) = query.limit {
            all.truncate(limit);
        }
        Ok(all)
    }

    async fn get(&self, id: &str) -> Result<Option<DeadLetter>> {
        let Some((group, entry)) = parse_id(id) else {
            return Ok(None);
        };
        if eventsource_core::validate_name("group", group).is_err() {
            return Ok(None);
        }
        match self.range(group, entry, entry, Some(1)).await {
            Ok(mut v) => Ok(v.pop()),
            // A malformed entry id is simply not found.
            Err(Error::Backend { source, .. })
                if source.to_string().contains("Invalid stream ID") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    async fn replay(&self, id: &str) -> Result<()> {
        let letter = self
            .get(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("redis: dead letter `{id}`")))?;
        let (group, entry) = parse_id(id).expect("get found it, so the id parses");
        let config = &self.client.config;
        let fields: Vec<(String, String)> = match (letter.replayed_envelope(), letter.raw_body()) {
            (Some(env), _) => wire::encode(&env, &config.source)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            (None, Some(raw)) => serde_json::from_str::<BTreeMap<String, String>>(raw)
                .map_err(|e| Error::backend(BACKEND, format!("replaying {id}"), e))?
                .into_iter()
                .collect(),
            (None, None) => {
                return Err(Error::config(format!(
                    "redis: dead letter `{id}` holds nothing to replay"
                )))
            }
        };
        // In partitioned mode an event goes back through its aggregate's
        // partition, so that the partition's owner handles it in order
        // with the aggregate's other events (the other groups skip it:
        // it is marked as replayed for this one); else, and for a message
        // that did not decode, to the group's replay stream.
        let replay = match (config.partitions, letter.envelope()) {
            (Some(_), Some(env)) => config.stream_of(&env.aggregate_id),
            _ => config.replay_stream(group),
        };
        let dlq = config.dlq_stream(group);
        let mut pipe = redis::pipe();
        let xadd = pipe.atomic().cmd("XADD").arg(&replay).arg("*");
        for (k, v) in &fields {
            xadd.arg(k).arg(v);
        }
        xadd.ignore().cmd("XDEL").arg(&dlq).arg(entry).ignore();
        let mut conn = self.client.conn.clone();
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| redis_err(format!("replaying {id} from `{dlq}` to `{replay}`"), e))?;
        self.client.stats.replayed(group);
        Ok(())
    }

    async fn delete(&self, id: &str) -> Result<bool> {
        if self.get(id).await?.is_none() {
            return Ok(false);
        }
        let (group, entry) = parse_id(id).expect("get found it, so the id parses");
        let dlq = self.client.config.dlq_stream(group);
        let mut conn = self.client.conn.clone();
        let n: i64 = redis::cmd("XDEL")
            .arg(&dlq)
            .arg(entry)
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_err(format!("XDEL `{dlq}`"), e))?;
        Ok(n > 0)
    }
}
