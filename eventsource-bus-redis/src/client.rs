//! The connection every part of a Redis bus shares, and the helpers they
//! all use (the bottom of the crate: it imports only the config).

use std::sync::Arc;
use std::time::Duration;

use eventsource_core::driver::Counters;
use eventsource_core::{Error, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::RedisBusConfig;

pub(crate) const BACKEND: &str = "redis";

/// The server connection and counters behind a [`RedisBus`](crate::RedisBus).
pub(crate) struct Client {
    pub(crate) config: RedisBusConfig,
    pub(crate) redis: redis::Client,
    /// Shared by publishes, acks and dead-lettering (multiplexed).
    pub(crate) conn: ConnectionManager,
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
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| redis_err(format!("opening {}", config.redacted_url()), e))?;
        // One plain attempt first: a refusal that no retry mends (a wrong
        // password, a database index the server does not have) fails at
        // once, where the manager would retry it for seconds.
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
        Ok(Client {
            config,
            redis: client,
            conn,
            stats: Arc::new(Counters::new(BACKEND)),
        })
    }

    /// A connection manager that reconnects with backoff; `response_timeout`
    /// must exceed any blocking command sent on it.
    pub(crate) async fn connection(&self, response_timeout: Duration) -> Result<ConnectionManager> {
        connect_manager(&self.redis, &self.config, response_timeout).await
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
