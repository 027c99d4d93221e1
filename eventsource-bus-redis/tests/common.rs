//! Shared by the Redis integration tests: a config on the real server with
//! a namespace of its own per bus.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use tokio::process::{Child, Command};

use eventsource_bus_redis::{RedisBus, RedisBusConfig};

/// `REDIS_URL`, or the local server the test script starts.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// `REDIS_CLUSTER_URL`, or the private cluster `scripts/services.sh`
/// starts (`ensure_redis_cluster`: masters on 7101-7103, a replica each
/// on 7104-7106).
pub fn redis_cluster_url() -> String {
    std::env::var("REDIS_CLUSTER_URL").unwrap_or_else(|_| {
        "redis+cluster://127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103".to_owned()
    })
}

/// A config with a fresh namespace and short claim timings.
pub fn config(url: &str) -> RedisBusConfig {
    let namespace = format!("es-test-{}", uuid::Uuid::now_v7().simple());
    RedisBusConfig::new(url)
        .namespace(namespace)
        .block(Duration::from_millis(200))
        .claim_interval(Duration::from_millis(200))
        .claim_min_idle(Duration::from_millis(1500))
        .validated()
        .expect("valid test config")
}

/// Connects, failing the test with how to start Redis if it is down.
pub async fn connect(config: RedisBusConfig) -> RedisBus {
    match RedisBus::connect(config.clone()).await {
        Ok(bus) => bus,
        Err(e) if config.is_cluster() => panic!(
            "the Redis Cluster is not reachable at {} ({e}). Start it with ./scripts/test.sh, \
             or `source scripts/services.sh; ensure_redis_cluster`, or set REDIS_CLUSTER_URL.",
            config.redacted_url()
        ),
        Err(e) => panic!(
            "Redis is not reachable at {} ({e}). Start it with ./scripts/test.sh, or \
             `redis-server --daemonize yes --port 6379`, or set REDIS_URL.",
            config.redacted_url()
        ),
    }
}

/// A private `redis-server` on `port` storing in `dir` (append-only file,
/// fsync always, no RDB snapshots), with `extra` arguments after those
/// (the last of a setting wins); killed when dropped.
pub async fn start_redis(port: u16, dir: &Path, extra: &[&str]) -> Child {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .args(["--enable-debug-command", "local"])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run redis-server ({e}); install it with `apt-get install redis-server` or run ./scripts/test.sh"));
    eventsource_testkit::wait_until_listening(port, Duration::from_secs(10), "redis-server").await;
    child
}

/// The address (`redis://host:port`) of the cluster master that holds
/// `key`: the seed answers `MOVED slot host:port` unless it holds the key.
pub async fn master_of(seed: &str, key: &str) -> String {
    let mut conn = redis::Client::open(seed)
        .expect("seed url")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the Redis Cluster is not reachable at {seed} ({e}); start it with \
                 `source scripts/services.sh; ensure_redis_cluster`"
            )
        });
    match redis::cmd("EXISTS")
        .arg(key)
        .query_async::<i64>(&mut conn)
        .await
    {
        Ok(_) => seed.to_owned(),
        Err(e) => {
            let (addr, _slot) = e.redirect_node().expect("a MOVED redirection");
            format!("redis://{addr}")
        }
    }
}
