//! The Redis Streams [`EventBus`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventsource_core::driver::{publish, stamp, Members, PublishTarget, SendError};
use eventsource_core::{
    BusStats, DeadLetterQueue, EventBus, EventEnvelope, EventFilter, EventWatch, Result,
    ShutdownReport, Subscription, SubscriptionHandle,
};
use redis::streams::StreamInfoGroupsReply;

use crate::client::{is_transient, redis_err, Client, BACKEND};
use crate::consumer::GroupConsumer;
use crate::dlq::RedisDeadLetterQueue;
use crate::{partitions, wire, RedisBusConfig};

/// An [`EventBus`] on Redis Streams.
///
/// Every event is `XADD`ed to one stream, `{namespace}:events`, so the
/// events of an aggregate keep their order. Each [`Subscription`] is a
/// consumer of the Redis consumer group named after its group; it reads
/// with `XREADGROUP`, handles events of different aggregates concurrently
/// and those of one aggregate in order, `XACK`s what its handler finished,
/// retries in place per the retry policy, and moves what keeps failing to
/// the group's dead-letter stream in the same transaction as the ack.
/// Entries a dead member left unacked are taken over by a live member
/// (`XAUTOCLAIM`) once idle for [`RedisBusConfig::claim_min_idle`].
///
/// Ordering holds per member: with several members in one group, events
/// of one aggregate may be handled by different members (see
/// `docs/adr/0002-redis-streams.md`) — or across the whole group with
/// [`RedisBusConfig::partitions`]: one stream per partition, each read by
/// one member at a time, the members splitting the partitions
/// (`docs/adr/0010-partitioned-groups.md`).
///
/// ```no_run
/// use std::sync::Arc;
/// use eventsource_bus_redis::{RedisBus, RedisBusConfig};
/// use eventsource_core::EventBus;
///
/// # async fn run() -> eventsource_core::Result<()> {
/// let bus: Arc<dyn EventBus> =
///     Arc::new(RedisBus::connect(RedisBusConfig::new("redis://127.0.0.1:6379").validated()?).await?);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisBus {
    client: Arc<Client>,
    members: Arc<Members<GroupConsumer>>,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("config", &self.client.config)
            .finish_non_exhaustive()
    }
}

impl RedisBus {
    /// Connects and checks the server answers; bad configuration or an
    /// unreachable server fails here, not at the first publish.
    pub async fn connect(config: RedisBusConfig) -> Result<Self> {
        let client = Client::connect(config).await?;
        crate::durability::check(&mut client.conn.clone(), &client.config).await?;
        partitions::check_count(&mut client.conn.clone(), &client.config).await?;
        Ok(RedisBus {
            client: Arc::new(client),
            members: Members::new("redis bus"),
        })
    }

    /// The configuration this bus runs with.
    pub fn config(&self) -> &RedisBusConfig {
        &self.client.config
    }
}

/// The longest a publish waits for replicas (`WAIT`): under the shared
/// connection's response timeout (5 s, `client.rs`).
const MAX_REPLICA_WAIT: Duration = Duration::from_secs(4);

#[async_trait]
impl EventBus for RedisBus {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn publish(&self, events: &[EventEnvelope]) -> Result<()> {
        let config = &self.client.config;
        let stream = config.events_stream();
        let redacted = config.redacted_url();
        let target = PublishTarget::new(BACKEND, &stream, &redacted, config.publish_timeout);
        let events = stamp(events);
        let mut pipe = redis::pipe();
        for event in events.iter() {
            let cmd = pipe.cmd("XADD").arg(config.stream_of(&event.aggregate_id));
            if let Some(max) = config.max_len {
                cmd.arg("MAXLEN").arg("~").arg(max);
            }
            cmd.arg("*");
            for (k, v) in wire::encode(event, &config.source) {
                cmd.arg(k).arg(v);
            }
        }
        // In the same pipeline, so it reaches the master that took the
        // entries (on a cluster too: WAIT names no key) and counts them.
        // Its wait stays inside the connection's response timeout: a reply
        // later than that reads as a dropped connection, and the retry
        // would add the events again.
        let replicas = config.replica_acks;
        if replicas > 0 {
            let wait = config.publish_timeout.min(MAX_REPLICA_WAIT);
            pipe.cmd("WAIT").arg(replicas).arg(wait.as_millis() as u64);
        }
        let (pipe, stream) = (&pipe, &stream);
        publish(
            &self.members,
            &self.client.stats,
            &target,
            &events,
            |events| {
                let mut conn = self.client.conn.clone();
                async move {
                    let replies = pipe
                        .query_async::<Vec<redis::Value>>(&mut conn)
                        .await
                        .map_err(|e| {
                            let transient = is_transient(&e);
                            let e =
                                redis_err(format!("XADD {} events to `{stream}`", events.len()), e);
                            if transient {
                                SendError::Transient(e)
                            } else {
                                SendError::Fatal(e)
                            }
                        })?;
                    match replies.last() {
                        Some(redis::Value::Int(acked))
                            if replicas > 0 && *acked < replicas as i64 =>
                        {
                            Err(SendError::Fatal(eventsource_core::Error::backend(
                                BACKEND,
                                format!(
                                    "WAIT {replicas}: {acked} of {replicas} replicas acknowledged \
                                     {} events within {:?}; the master has them, a failover now \
                                     may lose them (publishing again may duplicate them)",
                                    events.len(),
                                    config.publish_timeout.min(MAX_REPLICA_WAIT)
                                ),
                                std::io::Error::other("too few replica acknowledgements"),
                            )))
                        }
                        _ => Ok(()),
                    }
                }
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
        Arc::new(RedisDeadLetterQueue {
            client: Arc::clone(&self.client),
        })
    }

    async fn stats(&self) -> Result<BusStats> {
        let mut stats = self.client.stats.snapshot();
        let config = &self.client.config;
        let mut conn = self.client.conn.clone();
        // Per stream (one, or one per partition), summed per group.
        for stream in config.event_streams() {
            let exists: bool = redis::cmd("EXISTS")
                .arg(&stream)
                .query_async(&mut conn)
                .await
                .map_err(|e| redis_err(format!("EXISTS `{stream}`"), e))?;
            if !exists {
                continue;
            }
            let length: u64 = redis::cmd("XLEN")
                .arg(&stream)
                .query_async(&mut conn)
                .await
                .map_err(|e| redis_err(format!("XLEN `{stream}`"), e))?;
            stats.streams.insert(stream.clone(), length);
            let info: StreamInfoGroupsReply = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(&stream)
                .query_async(&mut conn)
                .await
                .map_err(|e| redis_err(format!("XINFO GROUPS `{stream}`"), e))?;
            for g in info.groups {
                let group = stats.groups.entry(g.name.clone()).or_default();
                group.members = group.members.max(g.consumers);
                group.pending += g.lag.unwrap_or(0) as u64;
                group.in_flight += g.pending as u64;
            }
        }
        for (name, group) in &mut stats.groups {
            let dlq = config.dlq_stream(name);
            group.dead_letters = redis::cmd("XLEN")
                .arg(&dlq)
                .query_async(&mut conn)
                .await
                .map_err(|e| redis_err(format!("XLEN `{dlq}`"), e))?;
            if config.partitions.is_some() {
                // A member reads only its partitions' streams: count the
                // group's live members from its register instead.
                let live = partitions::live_members(&mut conn, config, name)
                    .await
                    .map_err(|e| redis_err(format!("reading group `{name}`'s members"), e))?;
                group.members = live.len();
            }
        }
        Ok(stats)
    }

    async fn shutdown(&self, timeout: Duration) -> Result<ShutdownReport> {
        Ok(self.members.shutdown(timeout).await)
    }
}
