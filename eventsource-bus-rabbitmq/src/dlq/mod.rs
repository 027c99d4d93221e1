//! Dead-letter queues: `{namespace}.{group}.dlq`, one per consumer group.
//!
//! A queue cannot be browsed in AMQP, so listing takes messages with
//! `basic.get` on a channel of its own and closes it without acking: the
//! broker puts them all back, in order. Replay and delete ack only the one
//! message they act on. How a letter is written, read and replayed as a
//! message is in `letter.rs`.

mod letter;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use eventsource_core::{DeadLetter, DeadLetterQuery, DeadLetterQueue, Error, Result};
use lapin::options::{BasicAckOptions, BasicGetOptions, QueuePurgeOptions};

use crate::client::{amqp_err, short, Client, Session};
use crate::lag::queue_counts;
use crate::RabbitBusConfig;

pub(crate) use letter::{dead_letter_message, LetterToWrite, RawMessage};
use letter::{parse_letter, replay_message};

/// Makes `session` the only scanner of `dlq` until it closes: it declares
/// the exclusive queue `{dlq}.scan-lock`, which the broker refuses to a
/// second connection and deletes with the first. A scan takes the letters
/// it reads off the queue until it ends, so two at once would each miss
/// the other's: a member loading its parked aggregates must see them all.
/// Waits (20 ms between tries) up to `connect_timeout` for a scan of
/// another process to end.
async fn lock_scans(session: &Session, config: &RabbitBusConfig, dlq: &str) -> Result<()> {
    let lock = format!("{dlq}.scan-lock");
    let deadline = tokio::time::Instant::now() + config.connect_timeout;
    loop {
        match session.claim_exclusive(&lock).await? {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(amqp_err(
                    format!("waiting for another scan of `{dlq}` to end (`{lock}`)"),
                    e,
                ))
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
}

/// Letters replayed per confirmed publish (and one multiple ack) by
/// `replay_all`.
const REPLAY_BATCH: usize = 200;

/// The [`DeadLetterQueue`] of a [`RabbitBus`](crate::RabbitBus). Ids are
/// `{group}/{message id}`. Without a group, `list` covers the groups this
/// bus has subscribed.
pub(crate) struct RabbitDeadLetterQueue {
    pub(crate) client: Arc<Client>,
}

/// What to do with the dead letter a scan finds.
enum Act {
    Replay,
    Delete,
}

/// The letters a scan acts on: one, or a set to delete.
enum Target<'a> {
    /// The letter with this message id.
    One(&'a str, Act),
    /// Every letter with one of these message ids: deleted.
    Delete(&'a HashSet<&'a str>),
}

impl RabbitDeadLetterQueue {
    /// Takes up to `limit` messages of `group`'s DLQ without acking them,
    /// and acts on the `target` ones; returns the letters not acted on
    /// (the one acted on, for [`Target::One`]) and how many were. The
    /// channel is closed at the end, so every other message goes back.
    async fn scan(
        &self,
        group: &str,
        limit: Option<usize>,
        target: Option<Target<'_>>,
    ) -> Result<(Vec<DeadLetter>, usize)> {
        let config = &self.client.config;
        let dlq = config.dlq(group);
        let session = Session::open(config, false).await?;
        let result = async {
            lock_scans(&session, config, &dlq).await?;
            // Counted once the lock is held: while another scan holds the
            // letters, the queue counts none ready.
            let Some((count, _)) = queue_counts(config, &dlq).await? else {
                return Ok((Vec::new(), 0));
            };
            self.scan_on(&session, group, &dlq, count, limit, target)
                .await
        }
        .await;
        session.close().await;
        result
    }

    async fn scan_on(
        &self,
        session: &Session,
        group: &str,
        dlq: &str,
        count: u32,
        limit: Option<usize>,
        target: Option<Target<'_>>,
    ) -> Result<(Vec<DeadLetter>, usize)> {
        let config = &self.client.config;
        let mut letters = Vec::new();
        let mut deleted = 0;
        let max = limit.unwrap_or(usize::MAX).min(count as usize);
        while letters.len() + deleted < max {
            let got = session
                .channel
                .basic_get(short("queue", dlq)?, BasicGetOptions { no_ack: false })
                .await
                .map_err(|e| amqp_err(format!("basic.get from `{dlq}`"), e))?;
            let Some(message) = got else { break };
            let d = message.delivery;
            let letter = parse_letter(group, &d.properties, &d.data);
            let message_id = letter.id.split_once('/').map(|(_, m)| m);
            if let Some(Target::Delete(ids)) = &target {
                if message_id.is_some_and(|m| ids.contains(m)) {
                    d.acker
                        .ack(BasicAckOptions::default())
                        .await
                        .map_err(|e| amqp_err(format!("acking dead letter {}", letter.id), e))?;
                    deleted += 1;
                    if deleted == ids.len() {
                        break;
                    }
                    continue;
                }
            }
            if let Some(Target::One(id, act)) = &target {
                if message_id == Some(*id) {
                    if let Act::Replay = act {
                        let message =
                            replay_message(config, group, &letter, &d.properties, &d.data);
                        let redacted = config.redacted_url();
                        let target = self.client.target(&message.routing_key, &redacted);
                        self.client
                            .publish_confirmed(&target, std::slice::from_ref(&message))
                            .await?;
                        self.client.stats.replayed(group);
                    }
                    d.acker
                        .ack(BasicAckOptions::default())
                        .await
                        .map_err(|e| amqp_err(format!("acking dead letter {}", letter.id), e))?;
                    return Ok((vec![letter], 1));
                }
            }
            letters.push(letter);
        }
        Ok((letters, deleted))
    }

    /// Replays up to `limit` letters of `group` from the head of its DLQ
    /// on one connection, holding the scan lock: each batch is published
    /// with confirms, then acked at once (a crash in between replays the
    /// batch again: at least once, never lost). `progress(n)` after each
    /// batch, with how many of this group went back so far.
    async fn replay_group(
        &self,
        group: &str,
        limit: usize,
        progress: &(dyn Fn(usize) + Send + Sync),
    ) -> Result<usize> {
        let config = &self.client.config;
        let dlq = config.dlq(group);
        let session = Session::open(config, false).await?;
        let result = async {
            lock_scans(&session, config, &dlq).await?;
            let Some((count, _)) = queue_counts(config, &dlq).await? else {
                return Ok(0);
            };
            let max = limit.min(count as usize);
            let redacted = config.redacted_url();
            let queue = config.queue(group);
            let target = self.client.target(&queue, &redacted);
            let mut replayed = 0;
            while replayed < max {
                let mut batch = Vec::new();
                let mut last = None;
                while replayed + batch.len() < max && batch.len() < REPLAY_BATCH {
                    let got = session
                        .channel
                        .basic_get(short("queue", &dlq)?, BasicGetOptions { no_ack: false })
                        .await
                        .map_err(|e| amqp_err(format!("basic.get from `{dlq}`"), e))?;
                    let Some(message) = got else { break };
                    let d = message.delivery;
                    let letter = parse_letter(group, &d.properties, &d.data);
                    batch.push(replay_message(
                        config,
                        group,
                        &letter,
                        &d.properties,
                        &d.data,
                    ));
                    last = Some(d.acker);
                }
                let Some(last) = last else { break };
                self.client.publish_confirmed(&target, &batch).await?;
                // Every delivery of this channel up to the last: the batch.
                last.ack(BasicAckOptions { multiple: true })
                    .await
                    .map_err(|e| amqp_err(format!("acking replayed dead letters of `{dlq}`"), e))?;
                for _ in &batch {
                    self.client.stats.replayed(group);
                }
                replayed += batch.len();
                progress(replayed);
            }
            Ok(replayed)
        }
        .await;
        session.close().await;
        result
    }

    fn groups(&self, query: &DeadLetterQuery) -> Vec<String> {
        match &query.group {
            Some(g) => vec![g.clone()],
            None => self.client.groups.lock().iter().cloned().collect(),
        }
    }

    async fn act(&self, id: &str, act: Act) -> Result<bool> {
        let Some((group, message_id)) = id.split_once('/') else {
            return Ok(false);
        };
        if eventsource_core::validate_name("group", group).is_err() {
            return Ok(false);
        }
        let (_, found) = self
            .scan(group, None, Some(Target::One(message_id, act)))
            .await?;
        Ok(found > 0)
    }
}

#[async_trait]
impl DeadLetterQueue for RabbitDeadLetterQueue {
    async fn list(&self, query: &DeadLetterQuery) -> Result<Vec<DeadLetter>> {
        let mut all = Vec::new();
        for group in self.groups(query) {
            all.extend(self.scan(&group, query.limit, None).await?.0);
        }
        all.sort_by_key(|l| l.failure.last_failed_at);
        if let Some(limit) = query.limit {
            all.truncate(limit);
        }
        Ok(all)
    }

    async fn get(&self, id: &str) -> Result<Option<DeadLetter>> {
        let Some((group, _)) = id.split_once('/') else {
            return Ok(None);
        };
        if eventsource_core::validate_name("group", group).is_err() {
            return Ok(None);
        }
        Ok(self
            .scan(group, None, None)
            .await?
            .0
            .into_iter()
            .find(|l| l.id == id))
    }

    async fn replay(&self, id: &str) -> Result<()> {
        if self.act(id, Act::Replay).await? {
            Ok(())
        } else {
            Err(Error::not_found(format!("rabbitmq: dead letter `{id}`")))
        }
    }

    /// One connection and one scan per group, replaying in confirmed
    /// batches from the head of the queue (a replay of each letter was a
    /// scan of each: ~90 ms a letter, 111 s for 1,000).
    async fn replay_all_with_progress(
        &self,
        query: &DeadLetterQuery,
        progress: &(dyn Fn(usize, usize) + Send + Sync),
    ) -> Result<usize> {
        let config = &self.client.config;
        let groups = self.groups(query);
        let mut total = 0;
        for group in &groups {
            if let Some((ready, _)) = queue_counts(config, &config.dlq(group)).await? {
                total += ready as usize;
            }
        }
        let total = query.limit.map_or(total, |limit| limit.min(total));
        let mut done = 0;
        for group in &groups {
            let left = query.limit.map_or(usize::MAX, |limit| limit - done);
            if left == 0 {
                break;
            }
            let before = done;
            done += self
                .replay_group(group, left, &|n| {
                    progress(before + n, total.max(before + n))
                })
                .await?;
        }
        Ok(done)
    }

    async fn delete(&self, id: &str) -> Result<bool> {
        self.act(id, Act::Delete).await
    }

    /// One scan per group, acking every named letter it meets.
    async fn delete_many(&self, ids: &[String]) -> Result<usize> {
        let mut by_group: BTreeMap<&str, HashSet<&str>> = BTreeMap::new();
        for id in ids {
            if let Some((group, message_id)) = id.split_once('/') {
                if eventsource_core::validate_name("group", group).is_ok() {
                    by_group.entry(group).or_default().insert(message_id);
                }
            }
        }
        let mut n = 0;
        for (group, message_ids) in &by_group {
            n += self
                .scan(group, None, Some(Target::Delete(message_ids)))
                .await?
                .1;
        }
        Ok(n)
    }

    async fn purge_with_progress(
        &self,
        query: &DeadLetterQuery,
        progress: &(dyn Fn(usize, usize) + Send + Sync),
    ) -> Result<usize> {
        if query.limit.is_some() {
            // Only some: the listed ones, in one scan per group (a delete
            // of each was a scan of each).
            let ids: Vec<String> = self.list(query).await?.into_iter().map(|l| l.id).collect();
            let n = self.delete_many(&ids).await?;
            progress(ids.len(), ids.len());
            return Ok(n);
        }
        let config = &self.client.config;
        let mut n = 0;
        for group in self.groups(query) {
            let dlq = config.dlq(&group);
            if queue_counts(config, &dlq).await?.is_none() {
                continue;
            }
            let session = Session::open(config, false).await?;
            // A purge leaves what a scan holds unacked: wait for it to end.
            let purged = match lock_scans(&session, config, &dlq).await {
                Ok(()) => session
                    .channel
                    .queue_purge(short("queue", &dlq)?, QueuePurgeOptions::default())
                    .await
                    .map_err(|e| amqp_err(format!("purging `{dlq}`"), e)),
                Err(e) => Err(e),
            };
            session.close().await;
            n += purged? as usize;
        }
        // A queue goes at once: one report of the whole.
        progress(n, n);
        Ok(n)
    }
}
