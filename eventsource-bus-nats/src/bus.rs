//! The NATS JetStream [`EventBus`].

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_trait::async_trait;
use eventsource_core::driver::{publish, stamp, Members, PublishTarget, SendError};
use eventsource_core::{
    BusStats, DeadLetterQueue, EventBus, EventEnvelope, EventFilter, EventWatch, GroupStats,
    Result, ShutdownReport, Subscription, SubscriptionHandle,
};
use futures::TryStreamExt;

use crate::client::{nats_err, Client, BACKEND};
use crate::config::unescape;
use crate::consumer::GroupConsumer;
use crate::dlq::NatsDeadLetterQueue;
use crate::{membership, wire, NatsBusConfig};

/// An [`EventBus`] on NATS JetStream.
///
/// Every event is published to one subject, `{namespace}.events`, stored
/// in one stream (file storage), so the events of an aggregate keep their
/// order; a publish returns once the stream acknowledged every event
/// (PubAck), and the event id is the `Nats-Msg-Id`, so a publish retried
/// after a lost acknowledgement is stored once. Each [`Subscription`] is a
/// member of its group's durable pull consumer: it pulls up to `prefetch`
/// messages, handles those of different aggregates concurrently and those
/// of one aggregate in order, acks what its handler finished, retries in
/// place per the retry policy, and moves what keeps failing to the group's
/// dead-letter stream. What a dead member left unacked goes to another
/// member after [`NatsBusConfig::ack_wait`].
///
/// Ordering holds per member: with several members in one group, events
/// of one aggregate may be handled by different members, as on Redis
/// without partitions (`docs/adr/0012-nats-jetstream.md`).
///
/// ```no_run
/// use std::sync::Arc;
/// use eventsource_bus_nats::{NatsBus, NatsBusConfig};
/// use eventsource_core::EventBus;
///
/// # async fn run() -> eventsource_core::Result<()> {
/// let bus: Arc<dyn EventBus> =
///     Arc::new(NatsBus::connect(NatsBusConfig::new("nats://127.0.0.1:4222").validated()?).await?);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct NatsBus {
    client: Arc<Client>,
    members: Arc<Members<GroupConsumer>>,
}

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus")
            .field("config", &self.client.config)
            .finish_non_exhaustive()
    }
}

impl NatsBus {
    /// Connects, checks JetStream answers and makes the events stream; bad
    /// configuration or an unreachable server fails here, not at the first
    /// publish.
    pub async fn connect(config: NatsBusConfig) -> Result<Self> {
        let client = Client::connect(config).await?;
        Ok(NatsBus {
            client: Arc::new(client),
            members: Members::new("nats bus"),
        })
    }

    /// The configuration this bus runs with.
    pub fn config(&self) -> &NatsBusConfig {
        &self.client.config
    }

    /// The consumer `group` has on `stream`, if any.
    async fn consumer_info(&self, stream: &str, group: &str) -> Result<Option<consumer::Info>> {
        let Some(stream) = self.client.stream(stream).await? else {
            return Ok(None);
        };
        let name = self.client.config.consumer_name(group);
        match stream.consumer_info(&name).await {
            Ok(info) => Ok(Some(info)),
            Err(e) if e.to_string().contains("consumer not found") => Ok(None),
            Err(e) => Err(nats_err(format!("reading consumer `{name}`"), e)),
        }
    }
}

/// Whether a publish failure is worth another try within `publish_timeout`:
/// no PubAck in time, the connection down, no stream answering (a server
/// restarting), or the client's limit of unacknowledged publishes.
fn send_error(e: PublishError, what: impl FnOnce() -> String) -> SendError {
    let transient = matches!(
        e.kind(),
        PublishErrorKind::TimedOut
            | PublishErrorKind::BrokenPipe
            | PublishErrorKind::StreamNotFound
            | PublishErrorKind::MaxAckPending
    );
    let e = nats_err(what(), e);
    if transient {
        SendError::Transient(e)
    } else {
        SendError::Fatal(e)
    }
}

#[async_trait]
impl EventBus for NatsBus {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn publish(&self, events: &[EventEnvelope]) -> Result<()> {
        let config = &self.client.config;
        let stream = config.events_stream();
        let subject = config.events_subject();
        let redacted = config.redacted_url();
        let target = PublishTarget::new(BACKEND, &stream, &redacted, config.publish_timeout);
        let events = stamp(events);
        let encoded: Vec<_> = events
            .iter()
            .map(|e| {
                let (headers, body) = wire::encode(e, &config.source);
                (headers, bytes::Bytes::from(body))
            })
            .collect();
        let (encoded, subject, js) = (&encoded, &subject, &self.client.publisher);
        publish(
            &self.members,
            &self.client.stats,
            &target,
            &events,
            |events| async move {
                let what = || format!("publishing {} events to `{subject}`", events.len());
                // Sent back to back; then every PubAck awaited.
                let mut acks = Vec::with_capacity(encoded.len());
                for (headers, body) in encoded {
                    let message = PublishMessage::build()
                        .payload(body.clone())
                        .headers(headers.clone());
                    let ack = js
                        .send_publish(subject.clone(), message)
                        .await
                        .map_err(|e| send_error(e, what))?;
                    acks.push(ack);
                }
                for ack in acks {
                    ack.await.map_err(|e| send_error(e, what))?;
                }
                Ok(())
            },
        )
        .await
    }

    async fn subscribe(&self, subscription: Subscription) -> Result<SubscriptionHandle> {
        self.members.check_open()?;
        self.members.check_filter(&subscription)?;
        let stop = self.members.stop_token();
        let member =
            GroupConsumer::start(Arc::clone(&self.client), subscription.clone(), stop).await?;
        Ok(self.members.register(&subscription, member))
    }

    async fn watch(&self, filter: EventFilter) -> Result<EventWatch> {
        self.members.check_open()?;
        crate::watch::watch(&self.client, filter, self.members.stop_token()).await
    }

    fn dead_letters(&self) -> Arc<dyn DeadLetterQueue> {
        Arc::new(NatsDeadLetterQueue {
            client: Arc::clone(&self.client),
        })
    }

    async fn stats(&self) -> Result<BusStats> {
        let mut stats = self.client.stats.snapshot();
        let name = self.client.config.events_stream();
        let Some(mut stream) = self.client.stream(&name).await? else {
            return Ok(stats);
        };
        let what = || format!("reading stream `{name}`");
        let messages = stream
            .info()
            .await
            .map_err(|e| nats_err(what(), e))?
            .state
            .messages;
        stats.streams.insert(name.clone(), messages);
        // The groups are the durable consumers (a watch's are ephemeral).
        let consumers: Vec<consumer::Info> = stream
            .consumers()
            .try_collect()
            .await
            .map_err(|e| nats_err(what(), e))?;
        for info in consumers {
            let Some(group) = info.config.durable_name.as_deref().and_then(unescape) else {
                continue;
            };
            if let Some(group_stats) = self.group_stats(&group).await? {
                stats.groups.insert(group, group_stats);
            }
        }
        Ok(stats)
    }

    async fn group_stats(&self, group: &str) -> Result<Option<GroupStats>> {
        let config = &self.client.config;
        let Some(events) = self.consumer_info(&config.events_stream(), group).await? else {
            return Ok(None);
        };
        let replay = self
            .consumer_info(&config.replay_stream(group), group)
            .await?;
        let pending = events.num_pending + replay.as_ref().map_or(0, |r| r.num_pending);
        let in_flight = events.num_ack_pending + replay.as_ref().map_or(0, |r| r.num_ack_pending);
        let register = membership::register(&self.client).await?;
        let members = membership::members(&self.client, &register, group)
            .await?
            .len();
        let dead_letters = match self.client.stream(&config.dlq_stream(group)).await? {
            Some(mut dlq) => {
                dlq.info()
                    .await
                    .map_err(|e| {
                        nats_err(format!("reading stream `{}`", config.dlq_stream(group)), e)
                    })?
                    .state
                    .messages
            }
            None => 0,
        };
        Ok(Some(
            GroupStats::new(members, pending, in_flight as u64).with_dead_letters(dead_letters),
        ))
    }

    async fn shutdown(&self, timeout: Duration) -> Result<ShutdownReport> {
        Ok(self.members.shutdown(timeout).await)
    }
}
