//! The NATS JetStream [`EventBus`].

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer;
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::Stream;
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
use crate::{membership, partitions, wire, NatsBusConfig};

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
/// without partitions (`docs/adr/0013-nats-jetstream.md`).
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
        crate::durability::check(&client).await?;
        partitions::check_count(&client).await?;
        Ok(NatsBus {
            client: Arc::new(client),
            members: Members::new("nats bus"),
        })
    }

    /// The configuration this bus runs with.
    pub fn config(&self) -> &NatsBusConfig {
        &self.client.config
    }

    /// The consumer `name` on `stream`, if any.
    async fn consumer_info(stream: &Stream, name: &str) -> Result<Option<consumer::Info>> {
        match stream.consumer_info(name).await {
            Ok(info) => Ok(Some(info)),
            Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => Ok(None),
            Err(e) => Err(nats_err(format!("reading consumer `{name}`"), e)),
        }
    }
}

/// The group a durable consumer of the events stream belongs to: `{G}`,
/// or `{G}-p{p}` for a partition (an escaped group has no `-`).
fn group_of(durable: &str) -> Option<String> {
    let group = match durable.rsplit_once("-p") {
        Some((group, p)) if p.parse::<u32>().is_ok() => group,
        _ => durable,
    };
    unescape(group)
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
        let subject = &config.events_subject();
        let redacted = config.redacted_url();
        let target = PublishTarget::new(BACKEND, &stream, &redacted, config.publish_timeout);
        let events = stamp(events);
        // Without partitions every event goes to one subject: made once,
        // and shared by each message (a `Subject` clone is a count).
        let shared = config
            .partitions
            .is_none()
            .then(|| async_nats::Subject::from(subject.as_str()));
        let encoded: Vec<_> = events
            .iter()
            .map(|e| {
                let to = match &shared {
                    Some(subject) => subject.clone(),
                    None => config.subject_of(&e.aggregate_id).into(),
                };
                (to, bytes::Bytes::from(wire::body(e, &config.source)))
            })
            .collect();
        let (encoded, js) = (&encoded, &self.client.publisher);
        publish(
            &self.members,
            &self.client.stats,
            &target,
            &events,
            |events| async move {
                let what = || format!("publishing {} events to `{subject}`", events.len());
                // Sent back to back; then every PubAck awaited. The
                // headers are built for each attempt, not built once and
                // copied (a copy of a `HeaderMap` and its drop cost more
                // than building it).
                let mut acks = Vec::with_capacity(encoded.len());
                for ((to, body), event) in encoded.iter().zip(events) {
                    let message = PublishMessage::build()
                        .payload(body.clone())
                        .headers(wire::headers(event));
                    let ack = js
                        .send_publish(to.clone(), message)
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

    async fn redeliver(&self, group: &str, events: &[EventEnvelope]) -> Result<()> {
        self.members.check_open()?;
        crate::redeliver::redeliver(&self.client, group, events).await
    }

    fn dead_letters(&self) -> Arc<dyn DeadLetterQueue> {
        Arc::new(NatsDeadLetterQueue {
            client: Arc::clone(&self.client),
        })
    }

    async fn stats(&self) -> Result<BusStats> {
        let mut stats = self.client.stats.snapshot();
        let name = self.client.config.events_stream();
        let Some(stream) = self.client.stream(&name).await? else {
            return Ok(stats);
        };
        let what = || format!("reading stream `{name}`");
        let messages = stream.cached_info().state.messages;
        stats.streams.insert(name.clone(), messages);
        // The groups are the durable consumers (a watch's are ephemeral).
        let consumers: Vec<consumer::Info> = stream
            .consumers()
            .try_collect()
            .await
            .map_err(|e| nats_err(what(), e))?;
        for info in consumers {
            let Some(group) = info.config.durable_name.as_deref().and_then(group_of) else {
                continue;
            };
            if stats.groups.contains_key(&group) {
                continue;
            }
            if let Some(group_stats) = self.group_stats(&group).await? {
                stats.groups.insert(group, group_stats);
            }
        }
        Ok(stats)
    }

    async fn group_stats(&self, group: &str) -> Result<Option<GroupStats>> {
        let config = &self.client.config;
        let names: Vec<String> = match config.partitions {
            None => vec![config.consumer_name(group)],
            Some(n) => (0..n)
                .map(|p| config.partition_consumer_name(group, p))
                .collect(),
        };
        let Some(events) = self.client.stream(&config.events_stream()).await? else {
            return Ok(None);
        };
        let (mut pending, mut in_flight, mut found) = (0, 0, false);
        for name in &names {
            if let Some(info) = Self::consumer_info(&events, name).await? {
                found = true;
                pending += info.num_pending;
                in_flight += info.num_ack_pending as u64;
            }
        }
        if !found {
            return Ok(None);
        }
        if let Some(replay) = self.client.stream(&config.replay_stream(group)).await? {
            if let Some(info) = Self::consumer_info(&replay, &config.consumer_name(group)).await? {
                pending += info.num_pending;
                in_flight += info.num_ack_pending as u64;
            }
        }
        // Read, never made here: a group exists only once a member made the register.
        let members = match self.client.stream(&config.members_stream()).await? {
            Some(register) => membership::members(&self.client, &register, group)
                .await?
                .len(),
            None => 0,
        };
        let dead_letters = match self.client.stream(&config.dlq_stream(group)).await? {
            Some(dlq) => dlq.cached_info().state.messages,
            None => 0,
        };
        Ok(Some(
            GroupStats::new(members, pending, in_flight).with_dead_letters(dead_letters),
        ))
    }

    async fn shutdown(&self, timeout: Duration) -> Result<ShutdownReport> {
        Ok(self.members.shutdown(timeout).await)
    }
}

#[cfg(test)]
mod tests {
    use super::group_of;

    #[test]
    fn a_durable_names_its_group() {
        assert_eq!(group_of("billing").as_deref(), Some("billing"));
        assert_eq!(group_of("billing_dv2-p15").as_deref(), Some("billing.v2"));
        assert_eq!(group_of("a_hpb").as_deref(), Some("a-pb"));
        assert_eq!(group_of("x-pz").as_deref(), None);
    }
}
