//! Shared by the Redis integration tests: a config on the real server with
//! a namespace of its own per bus.

#![allow(dead_code)]

use std::time::Duration;

use eventsource_bus_redis::{RedisBus, RedisBusConfig};

/// `REDIS_URL`, or the local server the test script starts.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
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
        Err(e) => panic!(
            "Redis is not reachable at {} ({e}). Start it with ./scripts/test.sh, or \
             `redis-server --daemonize yes --port 6379`, or set REDIS_URL.",
            config.redacted_url()
        ),
    }
}
