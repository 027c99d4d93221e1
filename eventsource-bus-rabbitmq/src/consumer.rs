//! One member of a consumer group: its own connection consuming the
//! group's queue (basic.qos = prefetch), the workers, and reconnection;
//! in partitioned mode, its rank in the group and a channel per partition
//! it owns.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventsource_core::driver::{
    refuse_parking, triage, Delivery, Intake, KeyedQueue, Member, MemberTasks, Outcome, Parking,
    Settle,
};
use eventsource_core::{Failure, Result, Subscription};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::Acker;
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::dlq::{dead_letter_message, LetterBody};
use crate::topology::{
    amqp_err, declare_group, join_group, members_of, short, take_rank, Session, BACKEND,
};
use crate::wire;

/// What a worker needs to settle a message.
pub(crate) struct Token {
    acker: Acker,
    routing_key: String,
    /// Partitioned mode: the partition it came from, counted outstanding
    /// until the token is dropped (settled, or dropped unacked when the
    /// partition is released).
    partition: Option<Outstanding>,
}

/// One message of a partition not yet settled; dropping it counts it off.
struct Outstanding {
    partition: u32,
    count: Arc<AtomicUsize>,
}

impl Outstanding {
    fn new(partition: u32, count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Outstanding {
            partition,
            count: Arc::clone(count),
        }
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A partition this member consumes (partitioned mode): its own channel,
/// so that closing it gives back exactly what this member had not acked
/// from it, and lets the queue's next consumer in.
struct Owned {
    channel: lapin::Channel,
    /// Messages of it queued or being handled here.
    outstanding: Arc<AtomicUsize>,
    /// Meant for another member: what arrives is left unacked, and the
    /// channel closes once nothing is outstanding.
    releasing: bool,
}

/// How many times a join is tried again when the group's register queue
/// is deleted under it (each time, the last other member left just then).
const JOIN_RACES: u32 = 5;

/// One subscription's consumer of its group's queue: its consume loop
/// (reconnecting) and its workers.
pub(crate) struct GroupConsumer {
    client: Arc<Client>,
    subscription: Subscription,
    queue: KeyedQueue<Token>,
    /// The consuming connection; kept open after `stop` until the workers
    /// have acked, then closed (unacked messages go back to the queue).
    session: tokio::sync::Mutex<Option<Session>>,
    tasks: MemberTasks,
    /// Partitioned mode: the partitions this member consumes.
    owned: parking_lot::Mutex<BTreeMap<u32, Owned>>,
    /// The group's parked aggregates, when the subscription parks them.
    parking: Option<Arc<Parking>>,
    /// Consumers let go of at `stop`, kept (not cancelled) until the
    /// connection is closed: see [`GroupConsumer::hold_until_closed`].
    held: parking_lot::Mutex<Vec<lapin::Consumer>>,
}

impl GroupConsumer {
    /// Declares the group's topology (so a bad filter or an unreachable
    /// broker fails here) and starts consuming.
    pub(crate) async fn start(
        client: Arc<Client>,
        subscription: Subscription,
        stop: CancellationToken,
    ) -> Result<Arc<Self>> {
        let config = &client.config;
        refuse_parking(
            BACKEND,
            &subscription,
            config.partitions.is_some() || config.single_active_consumer,
        )?;
        let parking = subscription.parks_aggregates().then(|| {
            let dlq = Arc::new(crate::dlq::RabbitDeadLetterQueue {
                client: Arc::clone(&client),
            });
            Parking::new(subscription.group(), dlq)
        });
        let session = Self::open(&client, &subscription).await?;
        let member = Arc::new(GroupConsumer {
            parking,
            queue: KeyedQueue::new(usize::from(client.config.prefetch)),
            session: tokio::sync::Mutex::new(None),
            tasks: MemberTasks::new(stop),
            owned: parking_lot::Mutex::new(BTreeMap::new()),
            held: parking_lot::Mutex::new(Vec::new()),
            client,
            subscription,
        });
        if member.client.config.partitions.is_some() {
            member
                .tasks
                .helper(Arc::clone(&member).partition_loop(session));
        } else {
            member
                .tasks
                .helper(Arc::clone(&member).consume_loop(session));
        }
        let n = member.subscription.concurrency();
        member.tasks.spawn_workers(
            BACKEND,
            member.client.config.queue(member.subscription.group()),
            &member,
            n,
            |m| {
                (
                    &m.queue,
                    &m.subscription,
                    &m.client.stats,
                    m.parking.as_deref(),
                )
            },
        );
        Ok(member)
    }

    /// Where a message came from, for its dead letter: the group's queue
    /// and the routing key it arrived with.
    fn source(&self, routing_key: &str) -> String {
        format!("{} ({routing_key})", self.client.config.queue(self.group()))
    }

    pub(crate) fn group(&self) -> &str {
        self.subscription.group()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.queue.in_flight()
    }

    async fn open(client: &Client, subscription: &Subscription) -> Result<Session> {
        // The register queue is auto-delete: the group's last other member
        // leaving between its declaration and our consume deletes it, and
        // the consume fails NOT_FOUND (closing the channel). A rolling
        // deploy hits this; a new session declares it again.
        let mut races = 0;
        let session = loop {
            let mut session = Session::open(&client.config, false).await?;
            match join_group(
                &session.channel,
                &client.config,
                subscription.group(),
                subscription.filter(),
            )
            .await
            {
                Ok(presence) => {
                    session.presence = Some(presence);
                    break session;
                }
                Err(e) if races < JOIN_RACES && e.to_string().contains("NOT_FOUND") => {
                    races += 1;
                    tracing::debug!(group = subscription.group(), error = %e,
                        "the group's register went away as we joined (its last member left); joining again");
                    session.close().await;
                }
                Err(e) => return Err(e),
            }
        };
        declare_group(
            &session.channel,
            &client.config,
            subscription.group(),
            subscription.filter(),
        )
        .await?;
        session
            .channel
            .basic_qos(client.config.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| amqp_err("setting prefetch (basic.qos)", e))?;
        Ok(session)
    }

    /// Consumes until stopped; on a lost connection, reconnects with
    /// backoff, declares the topology again and resumes.
    async fn consume_loop(self: Arc<Self>, first: Session) {
        let mut next_session = Some(first);
        let mut backoff = Duration::from_millis(200);
        loop {
            let session = match next_session.take() {
                Some(s) => s,
                None => match self.reconnect(&mut backoff).await {
                    Some(s) => s,
                    None => return, // stopped
                },
            };
            let channel = session.channel.clone();
            if let Some(old) = self.session.lock().await.replace(session) {
                old.close().await;
            }
            match self.consume(&channel).await {
                Ok(()) => return, // stopped
                Err(e) => {
                    tracing::warn!(group = self.group(), error = %e, "rabbitmq consumer lost its channel");
                    // What the dead channel delivered goes back to the queue on
                    // the broker; the local copies must not be handled twice.
                    let dropped = self.queue.drain().len();
                    if dropped > 0 {
                        tracing::debug!(dropped, "dropped local copies of requeued messages");
                    }
                }
            }
        }
    }

    async fn consume(&self, channel: &lapin::Channel) -> Result<()> {
        let queue = self.client.config.queue(self.group());
        let mut consumer = channel
            .basic_consume(
                short("queue", &queue)?,
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| amqp_err(format!("consuming `{queue}`"), e))?;
        let mut fresh = true;
        loop {
            tokio::select! {
                () = self.tasks.token().cancelled() => {
                    self.hold_until_closed(consumer);
                    return Ok(());
                }
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        if std::mem::take(&mut fresh) {
                            // Active now: the previous active member has gone.
                            self.took_over();
                        }
                        self.accept(delivery, None).await;
                    }
                    Some(Err(e)) => return Err(amqp_err(format!("consuming `{queue}`"), e)),
                    None => return Err(eventsource_core::Error::backend(BACKEND, format!("consuming `{queue}`"), "the broker cancelled the consumer")),
                },
            }
        }
    }

    /// Whether deliveries of partition `p` from the channel counted by
    /// `outstanding` are still taken: the partition is not being released
    /// and that channel is its current one here (not one lost with an
    /// earlier connection).
    fn takes_from(
        &self,
        owned: &BTreeMap<u32, Owned>,
        p: u32,
        outstanding: &Arc<AtomicUsize>,
    ) -> bool {
        owned
            .get(&p)
            .is_some_and(|o| !o.releasing && Arc::ptr_eq(&o.outstanding, outstanding))
    }

    /// Queues a delivery for the workers, or acks it at once when the
    /// filter does not select it, or dead-letters it when it does not
    /// decode. `partition`: where it came from, in partitioned mode, and
    /// the count of that channel's outstanding messages.
    async fn accept(
        &self,
        delivery: lapin::message::Delivery,
        partition: Option<(u32, &Arc<AtomicUsize>)>,
    ) {
        let routing_key = delivery.routing_key.as_str().to_owned();
        let decoded = wire::decode(&delivery.properties, &delivery.data);
        let source = || self.source(&routing_key);
        match triage(BACKEND, &self.subscription, decoded, source) {
            Intake::Handle(envelope) => {
                let token = |partition| Token {
                    acker: delivery.acker,
                    routing_key,
                    partition,
                };
                let envelope = Arc::new(envelope);
                let Some((p, outstanding)) = partition else {
                    self.queue.push_now(Delivery::new(envelope, token(None)));
                    return;
                };
                // Checked and queued under the partitions' lock: a release
                // that starts meanwhile would drop what is queued of the
                // partition but miss this one, which a worker would then
                // handle (and ack) ahead of the earlier ones handed back.
                let owned = self.owned.lock();
                if self.takes_from(&owned, p, outstanding) {
                    let counted = Outstanding::new(p, outstanding);
                    self.queue
                        .push_now(Delivery::new(envelope, token(Some(counted))));
                }
            }
            Intake::Skip => {
                let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            }
            Intake::DeadLetter(failure) => {
                let body = LetterBody::Raw {
                    properties: delivery.properties.clone(),
                    body: delivery.data.clone(),
                };
                if self.dead_letter(&body, &failure).await {
                    self.client.stats.dead_lettered(self.subscription.group());
                    let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                } else {
                    requeue(&delivery.acker).await;
                }
            }
        }
    }

    /// Opens the member's session again (topology, register), with
    /// `backoff` between tries, until it succeeds — or `None` once the
    /// member stops.
    async fn reconnect(&self, backoff: &mut Duration) -> Option<Session> {
        loop {
            match Self::open(&self.client, &self.subscription).await {
                Ok(s) => {
                    tracing::info!(group = self.group(), "rabbitmq consumer reconnected");
                    *backoff = Duration::from_millis(200);
                    return Some(s);
                }
                Err(e) => {
                    tracing::warn!(group = self.group(), error = %e, ?backoff, "rabbitmq reconnect failed");
                    tokio::select! {
                        () = self.tasks.token().cancelled() => return None,
                        () = tokio::time::sleep(*backoff) => {}
                    }
                    *backoff = (*backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Partitioned mode: keeps this member's rank in its group and
    /// consumes the partitions it is assigned (`p % members == rank`),
    /// handing over the others; on a lost connection, starts again.
    async fn partition_loop(self: Arc<Self>, first: Session) {
        let tick = Duration::from_millis(250);
        let mut backoff = Duration::from_millis(200);
        *self.session.lock().await = Some(first);
        let mut rank: Option<u32> = None;
        loop {
            if !self
                .session
                .lock()
                .await
                .as_ref()
                .is_some_and(Session::is_usable)
            {
                // What the dead connection delivered goes back to the
                // queues on the broker; the local copies must not be
                // handled twice, and its rank went with it.
                self.owned.lock().clear();
                let dropped = self.queue.drain().len();
                tracing::warn!(
                    group = self.group(),
                    dropped,
                    "rabbitmq member lost its connection; reconnecting"
                );
                rank = None;
                let Some(s) = self.reconnect(&mut backoff).await else {
                    return; // stopped
                };
                if let Some(old) = self.session.lock().await.replace(s) {
                    old.close().await;
                }
            }
            if let Err(e) = self.rebalance(&mut rank).await {
                tracing::warn!(group = self.group(), error = %e, "rebalancing partitions failed; trying again");
            }
            tokio::select! {
                () = self.tasks.token().cancelled() => return,
                () = tokio::time::sleep(tick) => {}
            }
        }
    }

    /// One round of partitioned membership: take (or improve) a rank,
    /// count the group's members, release what is not this member's,
    /// consume what is.
    async fn rebalance(self: &Arc<Self>, rank: &mut Option<u32>) -> Result<()> {
        let config = &self.client.config;
        let Some(n) = config.partitions else {
            return Ok(());
        };
        let guard = self.session.lock().await;
        let Some(session) = guard.as_ref() else {
            return Ok(());
        };
        // This member counts itself even before the broker does.
        let members = members_of(session, config, self.group()).await?.max(1);
        // Ranks are dense once every member took the lowest free one; a
        // member whose rank is past the count moves down into a hole.
        let below = match *rank {
            Some(r) if r < members => None,
            Some(_) => Some(members),
            None => Some(u32::MAX),
        };
        if let Some(below) = below {
            if let Some(r) = take_rank(session, config, self.group(), below, *rank).await? {
                tracing::debug!(
                    group = self.group(),
                    rank = r,
                    members,
                    "took a rank in the group"
                );
                *rank = Some(r);
            }
        }
        let wanted: Vec<u32> = match *rank {
            Some(r) if r < members => (0..n).filter(|p| p % members == r).collect(),
            _ => Vec::new(),
        };
        // Release: stop taking from partitions meant for others; close
        // their channel once nothing of theirs is outstanding here.
        let mut closing = Vec::new();
        {
            let mut owned = self.owned.lock();
            for (p, part) in owned.iter_mut() {
                let keep = wanted.contains(p);
                if !keep && !part.releasing {
                    part.releasing = true;
                    // Not started: left unacked, so the broker gives them
                    // to the next owner first.
                    let p = *p;
                    drop(
                        self.queue.remove_where(|t| {
                            t.partition.as_ref().is_some_and(|o| o.partition == p)
                        }),
                    );
                }
                if part.releasing && part.outstanding.load(Ordering::Acquire) == 0 {
                    closing.push(*p);
                }
            }
        }
        for p in closing {
            let part = self.owned.lock().remove(&p);
            if let Some(part) = part {
                let _ = part.channel.close(200, "partition released".into()).await;
                tracing::debug!(group = self.group(), partition = p, "released a partition");
            }
        }
        // Take: consume the partitions meant for this member; the broker
        // makes the consumer active once the previous owner let go.
        for p in wanted {
            if self.owned.lock().contains_key(&p) {
                continue;
            }
            let queue = config.partition_queue(self.group(), p);
            let channel = session
                .connection
                .create_channel()
                .await
                .map_err(|e| amqp_err("opening a channel", e))?;
            channel
                .basic_qos(config.prefetch, BasicQosOptions::default())
                .await
                .map_err(|e| amqp_err("setting prefetch (basic.qos)", e))?;
            let consumer = channel
                .basic_consume(
                    short("queue", &queue)?,
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| amqp_err(format!("consuming `{queue}`"), e))?;
            let outstanding = Arc::new(AtomicUsize::new(0));
            self.owned.lock().insert(
                p,
                Owned {
                    channel,
                    outstanding: Arc::clone(&outstanding),
                    releasing: false,
                },
            );
            tracing::debug!(group = self.group(), partition = p, "consuming a partition");
            self.tasks
                .helper(Arc::clone(self).consume_partition(p, consumer, outstanding));
        }
        Ok(())
    }

    /// Takes one partition's deliveries until its channel closes; once the
    /// partition is being released, leaves them unacked.
    async fn consume_partition(
        self: Arc<Self>,
        p: u32,
        mut consumer: lapin::Consumer,
        outstanding: Arc<AtomicUsize>,
    ) {
        let mut fresh = true;
        loop {
            let next = tokio::select! {
                () = self.tasks.token().cancelled() => {
                    self.hold_until_closed(consumer);
                    return;
                }
                next = consumer.next() => next,
            };
            match next {
                Some(Ok(delivery)) => {
                    if std::mem::take(&mut fresh) {
                        // The first delivery comes once the broker made this
                        // member the queue's active consumer: the previous
                        // owner has closed its channel, its letters are in.
                        self.took_over();
                    }
                    if self.takes_from(&self.owned.lock(), p, &outstanding) {
                        self.accept(delivery, Some((p, &outstanding))).await;
                    }
                }
                Some(Err(_)) | None => return,
            }
        }
    }

    /// Keeps a consumer this member stops taking from until `stop` has
    /// closed the connection. Dropping a lapin consumer cancels it on the
    /// broker (`basic.cancel`), and a cancelled single active consumer
    /// hands its queue to the next member at once, ahead of the messages
    /// it still holds unacked: the next member would get an aggregate's
    /// later events before the earlier ones come back. Closing the
    /// channel instead puts the unacked messages back in their places
    /// first, then lets the next consumer in.
    fn hold_until_closed(&self, consumer: lapin::Consumer) {
        self.held.lock().push(consumer);
    }

    /// This member became the active consumer of a queue another member
    /// consumed: what it knows of parked aggregates is reloaded.
    fn took_over(&self) {
        if let Some(parking) = &self.parking {
            parking.invalidate();
        }
    }

    /// Publishes a dead letter to the group's DLQ (confirmed); `true` on success.
    async fn dead_letter(&self, body: &LetterBody, failure: &Failure) -> bool {
        let config = &self.client.config;
        let (dlq, redacted) = (config.dlq(self.group()), config.redacted_url());
        let message = dead_letter_message(config, body, failure, &dlq);
        let target = self.client.target(&dlq, &redacted);
        match self
            .client
            .publish_confirmed(&target, std::slice::from_ref(&message))
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "could not dead-letter; the message goes back to the queue");
                false
            }
        }
    }
}

/// Gives a message back to the queue (after a dead letter could not be written).
async fn requeue(acker: &Acker) {
    let _ = acker
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await;
}

#[async_trait]
impl Member for GroupConsumer {
    /// Stops consuming and waits for the workers (until `deadline`, if
    /// any, then aborts them); closes the connection. Returns how many
    /// workers were aborted.
    async fn stop(&self, deadline: Option<tokio::time::Instant>) -> usize {
        let abandoned = self.tasks.stop(deadline).await;
        if let Some(session) = self.session.lock().await.take() {
            session.close().await;
        }
        // Closed with the connection: dropping them cancels nothing now.
        self.held.lock().clear();
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
            let failure = failure.from_source(self.source(&token.routing_key));
            let body = LetterBody::Event((*envelope).clone());
            if !self.dead_letter(&body, &failure).await {
                requeue(&token.acker).await;
                return;
            }
        }
        if let Err(e) = token.acker.ack(BasicAckOptions::default()).await {
            // The channel is gone: the broker redelivers the message.
            tracing::warn!(group = self.group(), error = %e, "ack failed; the message will be redelivered");
        }
    }
}
