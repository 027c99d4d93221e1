//! Shared by the RabbitMQ integration tests: a config on the real broker
//! with a namespace of its own per bus.

#![allow(dead_code)]

use std::time::Duration;

use eventsource_bus_rabbitmq::{RabbitBus, RabbitBusConfig};

/// `AMQP_URL`, or the local broker the test script starts.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// A config with a fresh namespace whose queues expire when unused.
///
/// `connect_timeout` is 30 s, not the default 10 s: the membership cases
/// open ten buses and their consumers while the rest of the suite runs
/// beside them, and on a loaded 2-core machine one handshake once took
/// longer than 10 s (a clean-clone CI run failed on it, with nothing lost).
pub fn config() -> RabbitBusConfig {
    RabbitBusConfig::new(amqp_url())
        .namespace(format!("es-test-{}", uuid::Uuid::now_v7().simple()))
        .queue_expires(Duration::from_secs(120))
        .connect_timeout(Duration::from_secs(30))
        .validated()
        .expect("valid test config")
}

/// Connects, failing the test with how to start RabbitMQ if it is down.
pub async fn connect(config: RabbitBusConfig) -> RabbitBus {
    match RabbitBus::connect(config.clone()).await {
        Ok(bus) => bus,
        Err(e) => panic!(
            "RabbitMQ is not reachable at {} ({e}). Start it with ./scripts/test.sh, or \
             `rabbitmq-server -detached`, or set AMQP_URL.",
            config.redacted_url()
        ),
    }
}
