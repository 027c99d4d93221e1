//! One member of a consumer group, a file per concept: the member, its
//! start and its leave here; the poll loop (`reader.rs`); the offset
//! trackers that never commit past an unhandled record (`offsets.rs`);
//! the rebalance callbacks that hand partitions over (`rebalance.rs`);
//! what becomes of a handled record (`settle.rs`); and the consumer that
//! closes on a thread of its own (`close.rs`).

mod close;
mod offsets;
mod reader;
mod rebalance;
mod settle;

use std::sync::Arc;

use async_trait::async_trait;
use eventsource_core::driver::{KeyedQueue, Member, MemberTasks, Parking};
use eventsource_core::{Error, Result, Subscription};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::client::{client_config, kafka_err, Client, BACKEND};
use crate::membership::{check_group_filter, filter_client_id};
pub(crate) use close::OwnedConsumer;
use offsets::{commit_list, Trackers};
pub(crate) use rebalance::MemberContext;

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
