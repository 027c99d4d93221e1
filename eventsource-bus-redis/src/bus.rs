//! The Redis Streams [`EventBus`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventsource_core::dispatch::{Counters, Members};
use eventsource_core::{
    BusStats, DeadLetterQueue, Error, EventBus, EventEnvelope, GroupStats, Result, ShutdownReport,
    Subscription, SubscriptionHandle,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::StreamInfoGroupsReply;
use tracing::Instrument;

use crate::consumer::Member;
use crate::dlq::RedisDeadLetterQueue;
use crate::{wire, RedisBusConfig};

pub(crate) const BACKEND: &str = "redis";

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
/// `docs/adr/0002-redis-streams.md`).
///
/// ```no_run
/// use std::sync::Arc;
/// use eventsource_bus_redis::{RedisBus, RedisBusConfig};
/// use eventsource_core::EventBus;
///
/// # async fn run() -> eventsource_core::Result<()> {
/// let bus: Arc<dyn EventBus> =
///     Arc::new(RedisBus::connect(RedisBusConfig::builder("redis://127.0.0.1:6379").build()?).await?);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisBus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) config: RedisBusConfig,
    pub(crate) client: redis::Client,
    /// Shared by publishes, acks and dead-lettering (multiplexed).
    pub(crate) conn: ConnectionManager,
    pub(crate) stats: Counters,
    pub(crate) members: Arc<Members<Member>>,
}

/// Maps a Redis error into the core error, saying what was being done.
pub(crate) fn redis_err(context: impl Into<String>, e: redis::RedisError) -> Error {
    Error::backend(BACKEND, context, e)
}

/// Whether an error means the connection is down (worth retrying).
pub(crate) fn is_transient(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

impl Inner {
    /// A connection manager that reconnects with backoff; `response_timeout`
    /// must exceed any blocking command sent on it.
    pub(crate) async fn connection(&self, response_timeout: Duration) -> Result<ConnectionManager> {
        connect_manager(&self.client, &self.config, response_timeout).await
    }
}

async fn connect_manager(
    client: &redis::Client,
    config: &RedisBusConfig,
    response_timeout: Duration,
) -> Result<ConnectionManager> {
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(6)
        .set_max_delay(Duration::from_secs(2));
    ConnectionManager::new_with_config(client.clone(), manager_config)
        .await
        .map_err(|e| {
            redis_err(
                format!(
                    "connecting to {} (is Redis running? start it with `redis-server --daemonize yes`)",
                    config.redacted_url()
                ),
                e,
            )
        })
}

impl RedisBus {
    /// Connects and checks the server answers; bad configuration or an
    /// unreachable server fails here, not at the first publish.
    pub async fn connect(config: RedisBusConfig) -> Result<Self> {
        config.validate()?;
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| redis_err(format!("opening {}", config.redacted_url()), e))?;
        let mut conn = connect_manager(&client, &config, Duration::from_secs(5)).await?;
        // A server just restarted answers LOADING until its data is back:
        // wait that out, with backoff, up to connect_timeout.
        let deadline = tokio::time::Instant::now() + config.connect_timeout;
        let mut delay = Duration::from_millis(50);
        loop {
            match redis::cmd("PING").query_async::<String>(&mut conn).await {
                Ok(_) => break,
                Err(e)
                    if e.kind()
                        == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
                        && tokio::time::Instant::now() + delay < deadline =>
                {
                    tracing::info!(url = %config.redacted_url(), ?delay, "redis is loading its data; waiting");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(redis_err(format!("PING {}", config.redacted_url()), e)),
            }
        }
        Ok(RedisBus {
            inner: Arc::new(Inner {
                config,
                client,
                conn,
                stats: Counters::default(),
                members: Members::new("redis bus"),
            }),
        })
    }

    /// The configuration this bus runs with.
    pub fn config(&self) -> &RedisBusConfig {
        &self.inner.config
    }
}

#[async_trait]
impl EventBus for RedisBus {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn publish(&self, events: &[EventEnvelope]) -> Result<()> {
        self.inner.members.check_open()?;
        if events.is_empty() {
            return Ok(());
        }
        let config = &self.inner.config;
        let stream = config.events_stream();
        let span = tracing::info_span!("eventsource.publish", backend = BACKEND, %stream, events = events.len());
        let mut pipe = redis::pipe();
        for event in events {
            let cmd = pipe.cmd("XADD").arg(&stream);
            if let Some(max) = config.max_len {
                cmd.arg("MAXLEN").arg("~").arg(max);
            }
            cmd.arg("*");
            for (k, v) in wire::encode(event, &config.source) {
                cmd.arg(k).arg(v);
            }
        }
        let deadline = tokio::time::Instant::now() + config.publish_timeout;
        let mut delay = Duration::from_millis(50);
        async {
            loop {
                let mut conn = self.inner.conn.clone();
                // Bounded by what is left of publish_timeout, whatever the
                // client's own timeouts: a server that hangs must not hold
                // the caller past it.
                let Ok(sent) =
                    tokio::time::timeout_at(deadline, pipe.query_async::<Vec<String>>(&mut conn))
                        .await
                else {
                    return Err(Error::Timeout {
                        operation: format!(
                            "redis: XADD {} event(s) to `{stream}` on {}",
                            events.len(),
                            config.redacted_url()
                        ),
                        after: config.publish_timeout,
                    });
                };
                match sent {
                    Ok(_) => {
                        self.inner.stats.published(events.len());
                        return Ok(());
                    }
                    Err(e)
                        if is_transient(&e) && tokio::time::Instant::now() + delay < deadline =>
                    {
                        tracing::warn!(error = %e, ?delay, "redis unreachable, retrying publish");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(1));
                    }
                    Err(e) => {
                        return Err(redis_err(
                            format!("XADD {} events to `{stream}`", events.len()),
                            e,
                        ))
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn subscribe(&self, subscription: Subscription) -> Result<SubscriptionHandle> {
        self.inner.members.check_open()?;
        self.inner.members.check_filter(&subscription)?;
        let member = Member::start(Arc::clone(&self.inner), subscription.clone()).await?;
        Ok(self.inner.members.register(&subscription, member))
    }

    fn dead_letters(&self) -> Arc<dyn DeadLetterQueue> {
        Arc::new(RedisDeadLetterQueue {
            inner: Arc::clone(&self.inner),
        })
    }

    async fn stats(&self) -> Result<BusStats> {
        let mut stats = self.inner.stats.snapshot();
        let config = &self.inner.config;
        let stream = config.events_stream();
        let mut conn = self.inner.conn.clone();
        let exists: bool = redis::cmd("EXISTS")
            .arg(&stream)
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_err(format!("EXISTS `{stream}`"), e))?;
        if exists {
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
                let dlq = config.dlq_stream(&g.name);
                let dead: u64 = redis::cmd("XLEN")
                    .arg(&dlq)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| redis_err(format!("XLEN `{dlq}`"), e))?;
                stats.groups.insert(
                    g.name.clone(),
                    GroupStats {
                        members: g.consumers,
                        pending: g.lag.unwrap_or(0) as u64,
                        in_flight: g.pending as u64,
                        dead_letters: dead,
                        offset_gaps: 0,
                    },
                );
            }
        }
        Ok(stats)
    }

    async fn shutdown(&self, timeout: Duration) -> Result<ShutdownReport> {
        Ok(self.inner.members.shutdown(timeout).await)
    }
}
