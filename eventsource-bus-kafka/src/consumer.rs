//! One member of a consumer group: a Kafka consumer in the group, the
//! workers, offset tracking that never commits past an unhandled record,
//! and commits on rebalance.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventsource_core::dispatch::{
    join_tasks, run_worker, Delivery, KeyedQueue, Member as _, Outcome, Settle,
};
use eventsource_core::{Error, Result, Subscription};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::{client_config, kafka_err, lock, Inner, BACKEND};
use crate::dlq::dead_letter_record;
use crate::wire;

/// Offsets of one partition: which are out, and how far it has been read.
#[derive(Debug, Default)]
struct Tracker {
    pending: BTreeSet<i64>,
    next: i64,
}

impl Tracker {
    fn seen(&mut self, offset: i64) {
        self.pending.insert(offset);
        self.next = self.next.max(offset + 1);
    }

    /// The offset to commit: the oldest unfinished one, or the next to read.
    fn committable(&self) -> i64 {
        self.pending.first().copied().unwrap_or(self.next)
    }
}

type Trackers = Arc<Mutex<HashMap<(String, i32), Tracker>>>;

/// Builds the commit list of `trackers` (only partitions read from).
fn commit_list(trackers: &HashMap<(String, i32), Tracker>) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), t) in trackers {
        if t.next > 0 {
            let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(t.committable()));
        }
    }
    tpl
}

/// Commits what finished before partitions are revoked, and tells
/// `subscribe` when partitions are assigned.
pub(crate) struct MemberContext {
    trackers: Trackers,
    assigned: Arc<Notify>,
}

impl ClientContext for MemberContext {}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(revoked) = rebalance {
            let mut trackers = lock(&self.trackers);
            let mine: HashMap<(String, i32), Tracker> = revoked
                .elements()
                .iter()
                .filter_map(|e| {
                    trackers
                        .remove(&(e.topic().to_owned(), e.partition()))
                        .map(|t| ((e.topic().to_owned(), e.partition()), t))
                })
                .collect();
            let tpl = commit_list(&mine);
            if tpl.count() > 0 {
                if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
                    tracing::warn!(error = %e, "commit before rebalance failed; those records will be redelivered");
                }
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            if tpl.count() > 0 {
                self.assigned.notify_one();
            }
        }
    }
}

/// What a worker needs to settle a record.
pub(crate) struct Token {
    topic: String,
    partition: i32,
    offset: i64,
    key: String,
    _slot: OwnedSemaphorePermit,
}

pub(crate) struct Member {
    inner: Arc<Inner>,
    subscription: Subscription,
    consumer: Arc<StreamConsumer<MemberContext>>,
    trackers: Trackers,
    queue: KeyedQueue<Token>,
    slots: Arc<Semaphore>,
    stop: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Member {
    /// Creates the group's topics, joins the group and waits until it is
    /// assigned partitions, so that what is published next is seen.
    pub(crate) async fn start(inner: Arc<Inner>, subscription: Subscription) -> Result<Arc<Self>> {
        let config = &inner.config;
        let group = subscription.group().to_owned();
        let topics = [
            config.events_topic(),
            config.replay_topic(&group),
            config.dlq_topic(&group),
            config.dlq_done_topic(&group),
        ];
        inner.ensure_topics(&topics).await?;
        let trackers: Trackers = Arc::default();
        let assigned = Arc::new(Notify::new());
        let context = MemberContext {
            trackers: Arc::clone(&trackers),
            assigned: Arc::clone(&assigned),
        };
        let consumer: StreamConsumer<MemberContext> = client_config(config)
            .set("group.id", config.group_id(&group))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "session.timeout.ms",
                config.session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (config.session_timeout.as_millis() / 4)
                    .max(100)
                    .to_string(),
            )
            .set("enable.partition.eof", "false")
            .create_with_context(context)
            .map_err(|e| kafka_err(format!("creating a consumer for group `{group}`"), e))?;
        consumer
            .subscribe(&[&topics[0], &topics[1]])
            .map_err(|e| kafka_err(format!("subscribing group `{group}` to `{}`", topics[0]), e))?;
        let member = Arc::new(Member {
            queue: KeyedQueue::new(config.prefetch),
            slots: Arc::new(Semaphore::new(config.prefetch)),
            stop: inner.members.stop_token(),
            tasks: Mutex::new(Vec::new()),
            consumer: Arc::new(consumer),
            trackers,
            inner,
            subscription,
        });
        let waiting = assigned.notified();
        let mut tasks = vec![tokio::spawn(Arc::clone(&member).poll_loop())];
        for _ in 0..member.subscription.concurrency() {
            let m = Arc::clone(&member);
            tasks.push(tokio::spawn(async move {
                run_worker(
                    BACKEND,
                    &m.queue,
                    &m.subscription,
                    &m.stop,
                    &m.inner.stats,
                    &*m,
                )
                .await;
            }));
        }
        *lock(&member.tasks) = tasks;
        let timeout = member.inner.config.assignment_timeout;
        if tokio::time::timeout(timeout, waiting).await.is_err() {
            member.stop(None).await;
            return Err(Error::Timeout {
                operation: format!("kafka: waiting for group `{group}` to be assigned partitions"),
                after: timeout,
            });
        }
        Ok(member)
    }

    pub(crate) fn group(&self) -> &str {
        self.subscription.group()
    }

    pub(crate) fn consumer(&self) -> Arc<StreamConsumer<MemberContext>> {
        Arc::clone(&self.consumer)
    }

    pub(crate) fn queued(&self) -> usize {
        self.queue.queued()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.queue.in_flight()
    }

    /// Polls records while there are free slots, and commits on a timer.
    async fn poll_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.inner.config.commit_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let slot = tokio::select! {
                () = self.stop.cancelled() => return,
                _ = tick.tick() => { self.commit(CommitMode::Async); continue; }
                slot = Arc::clone(&self.slots).acquire_owned() => match slot { Ok(s) => s, Err(_) => return },
            };
            tokio::select! {
                () = self.stop.cancelled() => return,
                _ = tick.tick() => self.commit(CommitMode::Async),
                received = self.consumer.recv() => match received {
                    Ok(message) => self.accept(&message, slot).await,
                    Err(e) => {
                        tracing::warn!(group = self.group(), error = %e, "kafka consumer error");
                        tokio::select! {
                            () = self.stop.cancelled() => return,
                            () = tokio::time::sleep(Duration::from_millis(200)) => {}
                        }
                    }
                },
            }
        }
    }

    async fn accept(&self, message: &BorrowedMessage<'_>, slot: OwnedSemaphorePermit) {
        let (topic, partition, offset) = (
            message.topic().to_owned(),
            message.partition(),
            message.offset(),
        );
        lock(&self.trackers)
            .entry((topic.clone(), partition))
            .or_default()
            .seen(offset);
        let key = message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        let headers = wire::headers_as_text(message.headers());
        match wire::decode(&headers, message.payload()) {
            Ok(envelope) if self.subscription.filter().matches(&envelope) => {
                let token = Token {
                    topic,
                    partition,
                    offset,
                    key,
                    _slot: slot,
                };
                self.queue
                    .push_now(Delivery::new(Arc::new(envelope), token));
            }
            Ok(_) => self.done(&topic, partition, offset),
            Err(reason) => {
                tracing::warn!(group = self.group(), %topic, partition, offset, %reason, "undecodable kafka record, dead-lettering it");
                let now = Utc::now();
                let error = format!("cannot decode record: {reason}");
                let payload = message.payload().map(<[u8]>::to_vec).unwrap_or_default();
                if self
                    .dead_letter(
                        &topic, partition, offset, &key, headers, payload, &error, 0, now, now,
                        false,
                    )
                    .await
                {
                    self.inner.stats.dead_lettered();
                    self.done(&topic, partition, offset);
                }
            }
        }
    }

    fn done(&self, topic: &str, partition: i32, offset: i64) {
        if let Some(t) = lock(&self.trackers).get_mut(&(topic.to_owned(), partition)) {
            t.pending.remove(&offset);
        }
    }

    fn commit(&self, mode: CommitMode) {
        let tpl = commit_list(&lock(&self.trackers));
        if tpl.count() == 0 {
            return;
        }
        if let Err(e) = self.consumer.commit(&tpl, mode) {
            tracing::debug!(group = self.group(), error = %e, "kafka commit failed; retried at the next interval");
        }
    }

    /// Produces a dead letter (acknowledged); `true` on success.
    #[allow(clippy::too_many_arguments)]
    async fn dead_letter(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        key: &str,
        headers: BTreeMap<String, String>,
        payload: Vec<u8>,
        error: &str,
        attempts: u32,
        first: DateTime<Utc>,
        last: DateTime<Utc>,
        decoded: bool,
    ) -> bool {
        let config = &self.inner.config;
        let record = dead_letter_record(
            config,
            self.group(),
            topic,
            partition,
            offset,
            key,
            headers,
            payload,
            error,
            attempts,
            first,
            last,
            decoded,
        );
        match self.inner.produce(vec![record]).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "could not dead-letter; the record stays uncommitted and is redelivered after a restart");
                false
            }
        }
    }
}

#[async_trait]
impl eventsource_core::dispatch::Member for Member {
    /// Stops polling, waits for the workers (until `deadline`, if any),
    /// commits what finished and leaves the group. Returns how many
    /// workers were aborted.
    async fn stop(&self, deadline: Option<tokio::time::Instant>) -> usize {
        self.stop.cancel();
        let tasks: Vec<JoinHandle<()>> = lock(&self.tasks).drain(..).collect();
        let abandoned = join_tasks(tasks, 1, deadline).await;
        let consumer = Arc::clone(&self.consumer);
        let tpl = commit_list(&lock(&self.trackers));
        let _ = tokio::task::spawn_blocking(move || {
            if tpl.count() > 0 {
                if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
                    tracing::warn!(error = %e, "final kafka commit failed; finished records may be redelivered");
                }
            }
            consumer.unsubscribe();
        })
        .await;
        abandoned
    }
}

#[async_trait]
impl Settle<Token> for Member {
    async fn settle(&self, delivery: Delivery<Token>, outcome: Outcome) {
        let Delivery {
            envelope,
            token,
            attempts,
            first_failed_at,
        } = delivery;
        if let Outcome::DeadLetter {
            error,
            last_failed_at,
        } = outcome
        {
            let (headers, payload) = wire::encode(&envelope, &self.inner.config.source);
            let headers = wire::headers_as_text(Some(&headers));
            let first = first_failed_at.unwrap_or(last_failed_at);
            if !self
                .dead_letter(
                    &token.topic,
                    token.partition,
                    token.offset,
                    &token.key,
                    headers,
                    payload,
                    &error,
                    attempts,
                    first,
                    last_failed_at,
                    true,
                )
                .await
            {
                return; // stays pending: never committed past
            }
        }
        self.done(&token.topic, token.partition, token.offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_commits_past_an_unfinished_offset() {
        let mut t = Tracker::default();
        for o in 10..15 {
            t.seen(o);
        }
        t.pending.remove(&10);
        t.pending.remove(&12);
        assert_eq!(t.committable(), 11, "11 is still out");
        t.pending.remove(&11);
        assert_eq!(t.committable(), 13);
        t.pending.remove(&13);
        t.pending.remove(&14);
        assert_eq!(t.committable(), 15, "all done: commit the next to read");
    }
}
