//! Dead-letter streams: `{namespace}:dlq:{group}`, one per consumer group.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventsource_core::{
    DeadLetter, DeadLetterQuery, DeadLetterQueue, Error, EventEnvelope, Result,
};
use redis::streams::{StreamId, StreamRangeReply};

use crate::bus::{redis_err, Inner};
use crate::wire;

/// What a dead letter carries: the event, or the raw fields that did not decode.
pub(crate) enum DeadBody {
    Envelope(EventEnvelope),
    Raw(BTreeMap<String, String>),
}

/// Appends a dead letter and acks the entry in one MULTI/EXEC, so a
/// message is either pending or dead-lettered, never lost nor both.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn write_dead_letter(
    inner: &Inner,
    group: &str,
    stream: &str,
    entry_id: &str,
    body: &DeadBody,
    error: &str,
    attempts: u32,
    first_failed_at: DateTime<Utc>,
    last_failed_at: DateTime<Utc>,
) -> Result<()> {
    let config = &inner.config;
    let dlq = config.dlq_stream(group);
    let (body_field, body_value) = match body {
        DeadBody::Envelope(e) => (
            "envelope",
            serde_json::to_string(e).expect("an envelope serializes"),
        ),
        DeadBody::Raw(fields) => (
            "raw",
            serde_json::to_string(fields).expect("a string map serializes"),
        ),
    };
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("XADD")
        .arg(&dlq)
        .arg("*")
        .arg("group")
        .arg(group)
        .arg("source")
        .arg(format!("{stream}/{entry_id}"))
        .arg("error")
        .arg(error)
        .arg("attempts")
        .arg(attempts)
        .arg("first_failed_at")
        .arg(first_failed_at.to_rfc3339())
        .arg("last_failed_at")
        .arg(last_failed_at.to_rfc3339())
        .arg(body_field)
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
    let mut conn = inner.conn.clone();
    pipe.query_async::<()>(&mut conn).await.map_err(|e| {
        redis_err(
            format!("dead-lettering entry {entry_id} of `{stream}` to `{dlq}`"),
            e,
        )
    })
}

/// The [`DeadLetterQueue`] of a [`RedisBus`](crate::RedisBus). Ids are
/// `{group}/{dlq entry id}`.
pub(crate) struct RedisDeadLetterQueue {
    pub(crate) inner: Arc<Inner>,
}

fn parse_id(id: &str) -> Option<(&str, &str)> {
    id.split_once('/')
}

fn parse_letter(group: &str, entry: StreamId) -> Result<DeadLetter> {
    let f = wire::fields_as_text(&entry.map);
    let bad = |what: &str| {
        Error::backend(
            crate::bus::BACKEND,
            format!("reading dead letter {group}/{}", entry.id),
            format!("field `{what}` missing or malformed"),
        )
    };
    let time = |name: &str| -> Result<DateTime<Utc>> {
        f.get(name)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| bad(name))
    };
    let envelope = match f.get("envelope") {
        Some(e) => Some(serde_json::from_str(e).map_err(|_| bad("envelope"))?),
        None => None,
    };
    Ok(DeadLetter {
        id: format!("{group}/{}", entry.id),
        group: group.to_owned(),
        source: f.get("source").cloned().ok_or_else(|| bad("source"))?,
        envelope,
        raw: f.get("raw").cloned(),
        error: f.get("error").cloned().unwrap_or_default(),
        attempts: f
            .get("attempts")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| bad("attempts"))?,
        first_failed_at: time("first_failed_at")?,
        last_failed_at: time("last_failed_at")?,
    })
}

impl RedisDeadLetterQueue {
    async fn range(
        &self,
        group: &str,
        start: &str,
        end: &str,
        count: Option<usize>,
    ) -> Result<Vec<DeadLetter>> {
        let dlq = self.inner.config.dlq_stream(group);
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(&dlq).arg(start).arg(end);
        if let Some(n) = count {
            cmd.arg("COUNT").arg(n);
        }
        let mut conn = self.inner.conn.clone();
        let reply: StreamRangeReply = cmd
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_err(format!("XRANGE `{dlq}`"), e))?;
        reply
            .ids
            .into_iter()
            .map(|e| parse_letter(group, e))
            .collect()
    }

    async fn groups(&self, query: &DeadLetterQuery) -> Result<Vec<String>> {
        if let Some(g) = &query.group {
            return Ok(vec![g.clone()]);
        }
        let key = self.inner.config.dlq_groups_key();
        let mut conn = self.inner.conn.clone();
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
        all.sort_by_key(|l| l.last_failed_at);
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
        let config = &self.inner.config;
        let fields: Vec<(String, String)> = match (&letter.envelope, &letter.raw) {
            (Some(env), _) => wire::encode(env, &config.source)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            (None, Some(raw)) => serde_json::from_str::<BTreeMap<String, String>>(raw)
                .map_err(|e| Error::backend(crate::bus::BACKEND, format!("replaying {id}"), e))?
                .into_iter()
                .collect(),
            (None, None) => {
                return Err(Error::config(format!(
                    "redis: dead letter `{id}` holds nothing to replay"
                )))
            }
        };
        let replay = config.replay_stream(group);
        let dlq = config.dlq_stream(group);
        let mut pipe = redis::pipe();
        let xadd = pipe.atomic().cmd("XADD").arg(&replay).arg("*");
        for (k, v) in &fields {
            xadd.arg(k).arg(v);
        }
        xadd.ignore().cmd("XDEL").arg(&dlq).arg(entry).ignore();
        let mut conn = self.inner.conn.clone();
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| redis_err(format!("replaying {id} from `{dlq}` to `{replay}`"), e))?;
        self.inner.stats.replayed();
        Ok(())
    }

    async fn delete(&self, id: &str) -> Result<bool> {
        if self.get(id).await?.is_none() {
            return Ok(false);
        }
        let (group, entry) = parse_id(id).expect("get found it, so the id parses");
        let dlq = self.inner.config.dlq_stream(group);
        let mut conn = self.inner.conn.clone();
        let n: i64 = redis::cmd("XDEL")
            .arg(&dlq)
            .arg(entry)
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_err(format!("XDEL `{dlq}`"), e))?;
        Ok(n > 0)
    }
}
