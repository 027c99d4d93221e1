//! One member of a consumer group: a Kafka consumer in the group, the
//! workers, offset tracking that never commits past an unhandled record,
//! and commits on rebalance.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventsource_core::driver::{
    triage, Delivery, Intake, KeyedQueue, Member, MemberTasks, Outcome, Parking, Settle,
};
use eventsource_core::{Error, Failure, Result, Subscription};
use parking_lot::Mutex;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::Producer as _;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::client::{client_config, is_too_large, kafka_err, Client, BACKEND};
use crate::dlq::{dead_letter_record, reduced_letter};
use crate::wire;

/// How a record's offset follows the partition's last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// The offset expected.
    Next,
    /// Past it: the broker skipped the records from `gap_from` on.
    After {
        /// The first offset skipped.
        gap_from: i64,
    },
    /// Already read in this assignment: a copy fetched before a rebalance
    /// gave the partition back to this member. Not handled twice.
    Again,
}

/// Offsets of one partition: which are out, and how far it has been read.
#[derive(Debug, Default)]
struct Tracker {
    pending: BTreeSet<i64>,
    /// One past the last offset read in this assignment (0: none read yet).
    next: i64,
    /// The group's offset when the partition was assigned: what the first
    /// record must have.
    committed: Option<i64>,
}

impl Tracker {
    /// A partition just assigned, whose group offset is `committed`
    /// (`None` when the group has none yet: it starts at the earliest record).
    fn assigned(committed: Option<i64>) -> Self {
        Tracker {
            committed,
            ..Tracker::default()
        }
    }

    /// Records `offset` as read and says how it follows the last one.
    fn seen(&mut self, offset: i64) -> Read {
        let read_before = self.next > 0;
        if read_before && offset < self.next {
            return Read::Again;
        }
        let expected = if read_before {
            Some(self.next)
        } else {
            self.committed
        };
        self.pending.insert(offset);
        self.next = offset + 1;
        match expected {
            Some(expected) if offset > expected => Read::After { gap_from: expected },
            _ => Read::Next,
        }
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

/// Hands revoked partitions over cleanly, and tells `subscribe` when the
/// member has joined (with partitions, or none: a standby).
pub(crate) struct MemberContext {
    group: String,
    trackers: Trackers,
    queue: Arc<KeyedQueue<Token>>,
    assigned: Arc<Notify>,
    /// How long a revoke waits for handlers of revoked partitions.
    revoke_wait: Duration,
    /// The group's parked aggregates, when the subscription parks them:
    /// reloaded after each assignment.
    parking: Option<Arc<Parking>>,
}

impl ClientContext for MemberContext {}

impl MemberContext {
    /// Before partitions go to another member: drops their records not
    /// yet started (the new owner reads them again from the commit), waits
    /// up to `revoke_wait` for those being handled, then commits the
    /// oldest unfinished offset of each. The new owner starts only after
    /// this returns, so no aggregate runs on two members at once unless a
    /// handler outlasts the wait.
    fn revoke(&self, consumer: &BaseConsumer<Self>, revoked: &TopicPartitionList) {
        let partitions: HashSet<(String, i32)> = revoked
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let dropped: HashSet<(String, i32, i64)> = self
            .queue
            .remove_where(|t| partitions.contains(&(t.topic.clone(), t.partition)))
            .into_iter()
            .map(|d| (d.token.topic.clone(), d.token.partition, d.token.offset))
            .collect();
        let handling = || -> usize {
            let trackers = self.trackers.lock();
            partitions
                .iter()
                .filter_map(|p| trackers.get(p).map(|t| (p, t)))
                .map(|((topic, partition), t)| {
                    t.pending
                        .iter()
                        .filter(|o| !dropped.contains(&(topic.clone(), *partition, **o)))
                        .count()
                })
                .sum()
        };
        // A blocking wait inside librdkafka's callback. On a multi-thread
        // runtime `block_in_place` first hands this worker's queued tasks
        // (the handlers we wait for may be among them) to another thread;
        // on a current-thread runtime the wait can only time out.
        let wait = || {
            let deadline = std::time::Instant::now() + self.revoke_wait;
            let mut left = handling();
            while left > 0 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
                left = handling();
            }
            left
        };
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let left = if multi_thread {
            tokio::task::block_in_place(wait)
        } else {
            wait()
        };
        if left > 0 {
            tracing::warn!(group = %self.group, handlers = left, wait = ?self.revoke_wait, "handlers of revoked partitions still running; their records go to the new owner too");
        }
        let mine: HashMap<(String, i32), Tracker> = {
            let mut trackers = self.trackers.lock();
            partitions
                .iter()
                .filter_map(|p| trackers.remove(p).map(|t| (p.clone(), t)))
                .collect()
        };
        let tpl = commit_list(&mine);
        if tpl.count() > 0 {
            if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
                tracing::warn!(group = %self.group, error = %e, "commit before rebalance failed; those records will be redelivered");
            }
        }
        if !dropped.is_empty() {
            tracing::debug!(group = %self.group, dropped = dropped.len(), "dropped records of revoked partitions not yet started");
        }
    }

    /// After partitions are assigned: starts a tracker for each at the
    /// group's committed offset, so that a first record past it shows as a gap.
    fn assign(&self, consumer: &BaseConsumer<Self>, assigned: &TopicPartitionList) {
        let committed = consumer
            .committed_offsets(assigned.clone(), Duration::from_secs(5))
            .ok();
        let mut trackers = self.trackers.lock();
        for e in assigned.elements() {
            let offset = committed
                .as_ref()
                .and_then(|c| c.find_partition(e.topic(), e.partition()))
                .and_then(|p| match p.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            trackers.insert(
                (e.topic().to_owned(), e.partition()),
                Tracker::assigned(offset),
            );
        }
    }
}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(revoked) = rebalance {
            self.revoke(consumer, revoked);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.assign(consumer, tpl);
            if let Some(parking) = &self.parking {
                // Its partitions may come from a member that parked some.
                parking.invalidate();
            }
            // Joined, with partitions or as a standby (more members than
            // partitions): either way the group knows this member now.
            self.assigned.notify_one();
        }
    }
}

/// The `client.id` prefix that carries a member's filter: the broker
/// lists each group member's client id (DescribeGroups), which is how a
/// joining member in another process learns the group's filter.
const FILTER_CLIENT_ID: &str = "eventsource-filter-";

/// The client id of a member with `filter` (its canonical form, in hex).
fn filter_client_id(filter: &str) -> String {
    let hex: String = filter.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{FILTER_CLIENT_ID}{hex}")
}

/// The filter a member's client id carries, if it is one of ours.
fn filter_of_client_id(client_id: &str) -> Option<String> {
    let hex = client_id.strip_prefix(FILTER_CLIENT_ID)?;
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// Refuses to join `group_id` with `filter` when a live member of the
/// group uses another filter ([`Error::GroupFilterConflict`]).
async fn check_group_filter(
    client: &Arc<Client>,
    group_id: &str,
    group: &str,
    filter: &str,
) -> Result<()> {
    let producer = client.producer.clone();
    let (id, mine) = (group_id.to_owned(), filter.to_owned());
    // The filters of the group's live members, other than `filter`.
    let existing = tokio::task::spawn_blocking(move || {
        let listed = producer
            .client()
            .fetch_group_list(Some(&id), Duration::from_secs(10))?;
        Ok::<_, rdkafka::error::KafkaError>(
            listed
                .groups()
                .iter()
                .filter(|g| g.name() == id)
                .flat_map(|g| g.members())
                .filter_map(|m| filter_of_client_id(m.client_id()))
                .find(|other| *other != mine),
        )
    })
    .await
    .map_err(|e| Error::backend(BACKEND, format!("describing group `{group}`"), e))?;
    filter_check(group, filter, existing)
}

/// What the group's listing says of joining `group` with `filter`: a
/// conflict with another live member's filter is refused; a broker that
/// does not answer DescribeGroups (some Kafka-compatible brokers) only
/// loses the check across processes — the guide says it applies "where
/// the broker answers it" — so it is a warning, and the member joins.
fn filter_check(
    group: &str,
    filter: &str,
    listed: std::result::Result<Option<String>, rdkafka::error::KafkaError>,
) -> Result<()> {
    match listed {
        Ok(Some(existing)) => Err(Error::group_filter_conflict(group, &existing, filter)),
        Ok(None) => Ok(()),
        Err(e) => {
            tracing::warn!(group, error = %e,
                "the broker did not describe the consumer group, so the filters of members in \
                 other processes are not checked; joining without that check");
            Ok(())
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

/// One subscription's consumer in its Kafka group: the poll loop, the
/// offset trackers and the workers.
pub(crate) struct GroupConsumer {
    client: Arc<Client>,
    subscription: Subscription,
    consumer: Arc<OwnedConsumer>,
    trackers: Trackers,
    queue: Arc<KeyedQueue<Token>>,
    parking: Option<Arc<Parking>>,
    slots: Arc<Semaphore>,
    /// Offset gaps found (records the broker skipped).
    gaps: std::sync::atomic::AtomicU64,
    tasks: MemberTasks,
}

impl GroupConsumer {
    /// Creates the group's topics, joins the group and waits until it is
    /// assigned partitions, so that what is published next is seen.
    pub(crate) async fn start(
        client: Arc<Client>,
        subscription: Subscription,
        stop: CancellationToken,
    ) -> Result<Arc<Self>> {
        let config = &client.config;
        let group = subscription.group().to_owned();
        let topics = [
            config.events_topic(),
            config.replay_topic(&group),
            config.dlq_topic(&group),
            config.dlq_done_topic(&group),
        ];
        client.ensure_topics(&topics).await?;
        let trackers: Trackers = Arc::default();
        let assigned = Arc::new(Notify::new());
        let queue = Arc::new(KeyedQueue::new(config.prefetch));
        let parking = subscription.parks_aggregates().then(|| {
            let dlq = Arc::new(crate::dlq::KafkaDeadLetterQueue {
                client: Arc::clone(&client),
            });
            Parking::new(group.clone(), dlq)
        });
        let context = MemberContext {
            parking: parking.clone(),
            group: group.clone(),
            trackers: Arc::clone(&trackers),
            queue: Arc::clone(&queue),
            assigned: Arc::clone(&assigned),
            revoke_wait: config.session_timeout / 2,
        };
        let filter = subscription.filter().canonical();
        check_group_filter(&client, &config.group_id(&group), &group, &filter).await?;
        let consumer: StreamConsumer<MemberContext> = client_config(config)
            .set("client.id", filter_client_id(&filter))
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
                (config.session_timeout.as_millis() / 20)
                    .clamp(100, 1_000)
                    .to_string(),
            )
            .set("enable.partition.eof", "false")
            .set(
                "fetch.wait.max.ms",
                config.fetch_wait_max.as_millis().to_string(),
            )
            .create_with_context(context)
            .map_err(|e| kafka_err(format!("creating a consumer for group `{group}`"), e))?;
        consumer
            .subscribe(&[&topics[0], &topics[1]])
            .map_err(|e| kafka_err(format!("subscribing group `{group}` to `{}`", topics[0]), e))?;
        let member = Arc::new(GroupConsumer {
            queue,
            parking,
            gaps: std::sync::atomic::AtomicU64::new(0),
            slots: Arc::new(Semaphore::new(config.prefetch)),
            tasks: MemberTasks::new(stop),
            consumer: Arc::new(OwnedConsumer(Some(consumer))),
            trackers,
            client,
            subscription,
        });
        let waiting = assigned.notified();
        member.tasks.helper(Arc::clone(&member).poll_loop());
        let n = member.subscription.concurrency();
        member.tasks.spawn_workers(
            BACKEND,
            member.client.config.events_topic(),
            &member,
            n,
            |m| {
                (
                    &*m.queue,
                    &m.subscription,
                    &m.client.stats,
                    m.parking.as_deref(),
                )
            },
        );
        let timeout = member.client.config.assignment_timeout;
        if tokio::time::timeout(timeout, waiting).await.is_err() {
            member.stop(None).await;
            return Err(Error::Timeout {
                operation: format!("kafka: joining group `{group}`"),
                after: timeout,
            });
        }
        Ok(member)
    }

    pub(crate) fn group(&self) -> &str {
        self.subscription.group()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.queue.in_flight()
    }

    /// Offset gaps found so far.
    pub(crate) fn offset_gaps(&self) -> u64 {
        self.gaps.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Polls records while there are free slots, and commits on a timer.
    async fn poll_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.client.config.commit_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let slot = tokio::select! {
                () = self.tasks.token().cancelled() => return,
                _ = tick.tick() => { self.commit(CommitMode::Async); continue; }
                slot = Arc::clone(&self.slots).acquire_owned() => match slot { Ok(s) => s, Err(_) => return },
            };
            tokio::select! {
                () = self.tasks.token().cancelled() => return,
                _ = tick.tick() => self.commit(CommitMode::Async),
                received = self.consumer.recv() => match received {
                    Ok(message) => self.accept(&message, slot).await,
                    Err(e) => {
                        tracing::warn!(group = self.group(), error = %e, "kafka consumer error");
                        tokio::select! {
                            () = self.tasks.token().cancelled() => return,
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
        let read = match self.trackers.lock().get_mut(&(topic.clone(), partition)) {
            Some(tracker) => tracker.seen(offset),
            None => {
                // Fetched before its partition was revoked, returned after:
                // the partition's new owner reads it from the commit.
                tracing::debug!(group = self.group(), %topic, partition, offset, "record of a revoked partition dropped");
                return;
            }
        };
        match read {
            Read::Next => {}
            Read::Again => {
                tracing::debug!(group = self.group(), %topic, partition, offset, "record read twice in one assignment dropped");
                return;
            }
            Read::After { gap_from } => {
                self.gaps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(
                    group = self.group(),
                    %topic,
                    partition,
                    expected = gap_from,
                    got = offset,
                    "kafka records skipped: the broker returned a later offset than the one expected; \
                     records in between were never delivered to this group"
                );
            }
        }
        let key = message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        let headers = wire::headers_as_text(message.headers());
        let decoded = wire::decode(&headers, message.payload());
        let source = || format!("{topic}[{partition}]@{offset}");
        match triage(BACKEND, &self.subscription, decoded, source) {
            Intake::Handle(envelope) => {
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
            Intake::Skip => self.done(&topic, partition, offset),
            Intake::DeadLetter(failure) => {
                let payload = message.payload().map(<[u8]>::to_vec).unwrap_or_default();
                if self
                    .dead_letter(&key, headers, payload, &failure, false)
                    .await
                {
                    self.client.stats.dead_lettered(self.subscription.group());
                    self.done(&topic, partition, offset);
                }
            }
        }
    }

    fn done(&self, topic: &str, partition: i32, offset: i64) {
        if let Some(t) = self.trackers.lock().get_mut(&(topic.to_owned(), partition)) {
            t.pending.remove(&offset);
        }
    }

    fn commit(&self, mode: CommitMode) {
        let tpl = commit_list(&self.trackers.lock());
        if tpl.count() == 0 {
            return;
        }
        if let Err(e) = self.consumer.commit(&tpl, mode) {
            tracing::debug!(group = self.group(), error = %e, "kafka commit failed; retried at the next interval");
        }
    }

    /// Produces a dead letter (acknowledged); `true` on success. A letter
    /// the broker refuses as too large is written reduced
    /// ([`reduced_letter`]): the partition moves on.
    async fn dead_letter(
        &self,
        key: &str,
        headers: BTreeMap<String, String>,
        payload: Vec<u8>,
        failure: &Failure,
        decoded: bool,
    ) -> bool {
        let config = &self.client.config;
        let record = dead_letter_record(config, key, &headers, &payload, failure, decoded);
        let mut written = self.client.produce(std::slice::from_ref(&record)).await;
        if written.as_ref().is_err_and(is_too_large) {
            tracing::warn!(group = self.group(), source = %failure.source, "the dead letter is too large for the broker; writing it reduced");
            let reduced = reduced_letter(config, key, &headers, &payload, failure);
            written = self.client.produce(std::slice::from_ref(&reduced)).await;
        }
        match written {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "could not dead-letter; the record stays uncommitted and is redelivered after a restart");
                false
            }
        }
    }
}

/// How long dropping a member's consumer waits for it to close (leave
/// the group) before going on without it.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// A member's Kafka consumer, closed on a thread of its own when dropped.
///
/// Closing runs the revoke callback, and librdkafka requests made from it
/// (the rebalance protocol, the unassign) wait for its main thread without
/// a timeout; seen one run in four or five of the conformance suite on the
/// test broker, they are never answered while the consumer closes, and a
/// consumer dropped in place hung `shutdown` forever. Dropped here, the
/// close gets [`CLOSE_WAIT`]; one that does not finish is left to its
/// thread (the group drops the member when its session times out).
pub(crate) struct OwnedConsumer(Option<StreamConsumer<MemberContext>>);

impl std::ops::Deref for OwnedConsumer {
    type Target = StreamConsumer<MemberContext>;

    fn deref(&self) -> &Self::Target {
        self.0
            .as_ref()
            .expect("the consumer is taken only when dropped")
    }
}

impl Drop for OwnedConsumer {
    fn drop(&mut self) {
        let Some(consumer) = self.0.take() else {
            return;
        };
        let (closed, wait) = std::sync::mpsc::channel::<()>();
        let close = move || {
            drop(consumer);
            let _ = closed.send(());
        };
        match std::thread::Builder::new()
            .name("eventsource-kafka-close".to_owned())
            .spawn(close)
        {
            Ok(_) => {
                if wait.recv_timeout(CLOSE_WAIT).is_err() {
                    tracing::warn!(
                        wait = ?CLOSE_WAIT,
                        "the kafka consumer did not close in time; it leaves its group when its session times out"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "no thread to close the kafka consumer on; it is closed in place");
            }
        }
    }
}

#[async_trait]
impl Member for GroupConsumer {
    /// Stops polling, waits for the workers (until `deadline`, if any),
    /// commits what finished and leaves the group. Returns how many
    /// workers were aborted.
    async fn stop(&self, deadline: Option<tokio::time::Instant>) -> usize {
        let abandoned = self.tasks.stop(deadline).await;
        let consumer = Arc::clone(&self.consumer);
        let tpl = commit_list(&self.trackers.lock());
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
impl Settle<Token> for GroupConsumer {
    async fn settle(&self, delivery: Delivery<Token>, outcome: Outcome) {
        let Delivery {
            envelope, token, ..
        } = delivery;
        if let Outcome::DeadLetter(failure) = outcome {
            let failure = failure.from_source(format!(
                "{}[{}]@{}",
                token.topic, token.partition, token.offset
            ));
            let (headers, payload) = wire::encode(&envelope, &self.client.config.source);
            let headers = wire::headers_as_text(Some(&headers));
            if !self
                .dead_letter(&token.key, headers, payload, &failure, true)
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

    /// A broker that cannot describe the group (tansu with sqlite
    /// storage answers DescribeGroups with an error) does not keep a
    /// member out; a conflicting filter still does.
    #[test]
    fn an_unanswered_describe_groups_is_a_warning_not_a_refusal() {
        use rdkafka::error::{KafkaError, RDKafkaErrorCode};
        let down = Err(KafkaError::GroupListFetch(
            RDKafkaErrorCode::BrokerTransportFailure,
        ));
        assert!(filter_check("g", "all", down).is_ok());
        assert!(filter_check("g", "all", Ok(None)).is_ok());
        let conflict = filter_check("g", "all", Ok(Some("Order.*".into())));
        assert!(
            matches!(conflict, Err(Error::GroupFilterConflict { .. })),
            "{conflict:?}"
        );
    }

    use super::*;

    #[test]
    fn a_client_id_carries_the_filter() {
        let filter = "patterns [#.Created, Order.*]";
        let id = filter_client_id(filter);
        assert!(
            id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "{id}"
        );
        assert_eq!(filter_of_client_id(&id).as_deref(), Some(filter));
        assert_eq!(filter_of_client_id("rdkafka"), None);
        assert_eq!(filter_of_client_id("eventsource-filter-zz"), None);
    }

    #[test]
    fn a_record_past_the_expected_offset_is_a_gap_and_one_before_it_a_repeat() {
        let mut t = Tracker::assigned(Some(5));
        assert_eq!(t.seen(5), Read::Next);
        assert_eq!(t.seen(6), Read::Next);
        assert_eq!(
            t.seen(9),
            Read::After { gap_from: 7 },
            "7 and 8 were skipped"
        );
        assert_eq!(t.seen(10), Read::Next);
        assert_eq!(t.seen(6), Read::Again, "6 was read already");
        assert_eq!(t.committable(), 5, "reading 6 again changed nothing");
        let mut reset = Tracker::assigned(Some(50));
        assert_eq!(
            reset.seen(0),
            Read::Next,
            "a reset below the commit (a recreated topic) is read, not skipped"
        );
        let mut fresh = Tracker::assigned(None);
        assert_eq!(
            fresh.seen(40),
            Read::Next,
            "no committed offset: nothing expected yet"
        );
    }

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
