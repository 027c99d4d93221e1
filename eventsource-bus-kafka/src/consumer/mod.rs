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
use eventsource_core::driver::{BrokerMember, Member, MemberCore};
use eventsource_core::{Error, Result, Subscription};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use crate::client::{client_config, kafka_err, Client};
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
    consumer: Arc<OwnedConsumer>,
    trackers: Trackers,
    /// Its queue, slots, parking and tasks; shared with the rebalance
    /// callbacks, which drop what a revoked partition left queued.
    core: Arc<MemberCore<Token>>,
    /// Offset gaps found (records the broker skipped).
    gaps: std::sync::atomic::AtomicU64,
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
        let filter = subscription.filter().canonical();
        let core = Arc::new(MemberCore::new(
            Arc::clone(&client.stats),
            subscription,
            config.prefetch,
            stop,
            || {
                Arc::new(crate::dlq::KafkaDeadLetterQueue {
                    client: Arc::clone(&client),
                })
            },
        ));
        let context = MemberContext {
            group: group.clone(),
            trackers: Arc::clone(&trackers),
            core: Arc::clone(&core),
            assigned: Arc::clone(&assigned),
            revoke_wait: config.session_timeout / 2,
            left: std::sync::atomic::AtomicBool::new(false),
        };
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
            core,
            gaps: std::sync::atomic::AtomicU64::new(0),
            consumer: Arc::new(OwnedConsumer(Some(consumer))),
            trackers,
            client,
        });
        let waiting = assigned.notified();
        member.core.tasks().helper(Arc::clone(&member).poll_loop());
        MemberCore::spawn_workers(&member, &topics[0]);
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
        self.core.group()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.core.in_flight()
    }

    /// Offset gaps found so far.
    pub(crate) fn offset_gaps(&self) -> u64 {
        self.gaps.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl BrokerMember<Token> for GroupConsumer {
    fn core(&self) -> &MemberCore<Token> {
        &self.core
    }
}

#[async_trait]
impl Member for GroupConsumer {
    /// Stops polling, waits for the workers (until `deadline`, if any),
    /// commits what finished and leaves the group. Returns how many
    /// workers were aborted.
    async fn stop(&self, deadline: Option<tokio::time::Instant>) -> usize {
        let abandoned = self.core.tasks().stop(deadline).await;
        let consumer = Arc::clone(&self.consumer);
        let tpl = commit_list(&self.trackers.lock());
        let _ = tokio::task::spawn_blocking(move || {
            if tpl.count() > 0 {
                if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
                    tracing::warn!(error = %e, "final kafka commit failed; finished records may be redelivered");
                }
            }
            // From here the rebalance callbacks (run by the unsubscribe
            // and the close) commit nothing more.
            consumer
                .context()
                .left
                .store(true, std::sync::atomic::Ordering::Release);
            consumer.unsubscribe();
        })
        .await;
        abandoned
    }
}
