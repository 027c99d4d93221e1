//! The connection every part of a Redis bus shares, and the helpers they
//! all use (the bottom of the crate: it imports only the config and the
//! cluster URL).

use std::sync::Arc;
use std::time::Duration;

use eventsource_core::driver::Counters;
use eventsource_core::{Error, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::{cluster, RedisBusConfig};

/// A connection to one server (a manager that reconnects) or to a Redis
/// Cluster (which follows slots as they move and fails over to replicas).
/// Every part of the bus talks through it, so each works on both.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    /// Sends a command that names no key (`CONFIG GET`) to the server that
    /// holds `key`: on a cluster, the master of `key`'s slot (a plain
    /// query would reach a random node).
    pub(crate) async fn query_at<T: redis::FromRedisValue>(
        &mut self,
        cmd: &Cmd,
        key: &str,
    ) -> redis::RedisResult<T> {
        match self {
            Conn::Single(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = Route::with_key(key, SlotAddr::Master);
                let value = c
                    .route_command(
                        cmd.clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await?;
                redis::from_redis_value(value).map_err(Into::into)
            }
        }
    }
}

/// What connections are made from: one server's URL, or a cluster's seeds.
enum Target {
    Single(redis::Client),
    Cluster(Box<ClusterClient>),
}

pub(crate) const BACKEND: &str = "redis";

/// The server connection and counters behind a [`RedisBus`](crate::RedisBus).
pub(crate) struct Client {
    pub(crate) config: RedisBusConfig,
    target: Target,
    /// Shared by publishes, acks and dead-lettering (multiplexed).
    pub(crate) conn: Conn,
    pub(crate) stats: Arc<Counters>,
}

/// Maps a Redis error into the core error, saying what was being done.
pub(crate) fn redis_err(context: impl Into<String>, e: redis::RedisError) -> Error {
    Error::backend(BACKEND, context, e)
}

/// Whether an error means the connection is down, or the server is still
/// loading its data after a restart (`LOADING`): worth retrying (a
/// publish does so within its `publish_timeout`).
pub(crate) fn is_transient(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
}

impl Client {
    pub(crate) async fn connect(config: RedisBusConfig) -> Result<Self> {
        config.validate()?;
        let target = if cluster::is_cluster_url(&config.url) {
            let seeds = cluster::parse(&config.url).map_err(Error::config)?;
            let mut builder = redis::cluster::ClusterClientBuilder::new(seeds.nodes)
                .connection_timeout(Duration::from_secs(5))
                .retries(6);
            if let Some(user) = seeds.username {
                builder = builder.username(user);
            }
            if let Some(password) = seeds.password {
                builder = builder.password(password);
            }
            Target::Cluster(Box::new(builder.build().map_err(|e| {
                redis_err(format!("opening {}", config.redacted_url()), e)
            })?))
        } else {
            let client = redis::Client::open(config.url.as_str())
                .map_err(|e| redis_err(format!("opening {}", config.redacted_url()), e))?;
            // One plain attempt first: a refusal that no retry mends (a
            // wrong password, a database index the server does not have)
            // fails at once, where the manager would retry it for seconds.
            if let Ok(Err(e)) = tokio::time::timeout(
                Duration::from_secs(5),
                client.get_multiplexed_async_connection(),
            )
            .await
            {
                if !is_transient(&e) {
                    return Err(redis_err(
                        format!("connecting to {}", config.redacted_url()),
                        e,
                    ));
                }
            }
            Target::Single(client)
        };
        let mut conn = connect(&target, &config, Duration::from_secs(5)).await?;
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
        Ok(Client {
            config,
            target,
            conn,
            stats: Arc::new(Counters::new(BACKEND)),
        })
    }

    /// A connection of its own that reconnects with backoff;
    /// `response_timeout` must exceed any blocking command sent on it.
    pub(crate) async fn connection(&self, response_timeout: Duration) -> Result<Conn> {
        connect(&self.target, &self.config, response_timeout).await
    }
}

async fn connect(
    target: &Target,
    config: &RedisBusConfig,
    response_timeout: Duration,
) -> Result<Conn> {
    let hint = |e| {
        redis_err(
            format!(
                "connecting to {} (is Redis running? start it with `redis-server --daemonize yes`)",
                config.redacted_url()
            ),
            e,
        )
    };
    match target {
        Target::Single(client) => {
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(5)))
                .set_response_timeout(Some(response_timeout))
                .set_number_of_retries(6)
                .set_max_delay(Duration::from_secs(2));
            ConnectionManager::new_with_config(client.clone(), manager_config)
                .await
                .map(Conn::Single)
                .map_err(hint)
        }
        Target::Cluster(client) => client
            .get_async_connection_with_config(
                ClusterConfig::new()
                    .set_connection_timeout(Duration::from_secs(5))
                    .set_response_timeout(response_timeout),
            )
            .await
            .map(Conn::Cluster)
            .map_err(hint),
    }
}

#[cfg(test)]
mod tests {
    use super::is_transient;

    /// A publish right after a restart met `LOADING` and failed at once.
    #[test]
    fn a_loading_server_is_transient_a_wrong_type_is_not() {
        let loading = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading),
            "Redis is loading the dataset in memory",
        ));
        assert!(is_transient(&loading));
        let wrong = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
            "WRONGTYPE",
        ));
        assert!(!is_transient(&wrong));
    }
}
