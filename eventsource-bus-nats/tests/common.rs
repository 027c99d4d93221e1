//! Shared by the NATS integration tests: a config on the real server with
//! a namespace of its own per bus.

#![allow(dead_code)]

use std::time::Duration;

use eventsource_bus_nats::{NatsBus, NatsBusConfig};

/// `NATS_URL`, or the local server the test script starts.
pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A config with a fresh namespace and short timings.
pub fn config(url: &str) -> NatsBusConfig {
    let namespace = format!("es-test-{}", uuid::Uuid::now_v7().simple());
    NatsBusConfig::new(url)
        .namespace(namespace)
        .block(Duration::from_millis(200))
        .progress_interval(Duration::from_millis(200))
        .ack_wait(Duration::from_millis(1500))
        .validated()
        .expect("valid test config")
}

/// Connects, failing the test with how to start NATS if it is down.
pub async fn connect(config: NatsBusConfig) -> NatsBus {
    match NatsBus::connect(config.clone()).await {
        Ok(bus) => bus,
        Err(e) => panic!(
            "NATS with JetStream is not reachable at {} ({e}). Start it with \
             ./scripts/test.sh, or `nats-server -js -p 4222 &`, or set NATS_URL.",
            config.redacted_url()
        ),
    }
}
