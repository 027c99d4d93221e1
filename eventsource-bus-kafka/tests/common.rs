//! Shared by the Kafka integration tests: a config on the Kafka-compatible
//! broker the test script starts (tansu), with topics of its own per bus.

#![allow(dead_code)]

use eventsource_bus_kafka::{KafkaBus, KafkaBusConfig};

/// `KAFKA_URL`, or the local broker the test script starts.
pub fn kafka_url() -> String {
    std::env::var("KAFKA_URL").unwrap_or_else(|_| "kafka://127.0.0.1:9092".to_owned())
}

/// A config with a fresh topic prefix, one record per produce batch (the
/// test broker skips records when a fetch starts inside a batch:
/// `tests/broker_fidelity.rs`).
pub fn config(url: &str) -> KafkaBusConfig {
    KafkaBusConfig::from_url(url)
        .expect("kafka url")
        .topic_prefix(format!("es-test-{}", uuid::Uuid::now_v7().simple()))
        .max_batch_records(1)
        .validated()
        .expect("valid test config")
}

/// Connects, failing the test with how to start the broker if it is down.
pub async fn connect(config: KafkaBusConfig) -> KafkaBus {
    match KafkaBus::connect(config.clone()).await {
        Ok(bus) => bus,
        Err(e) => panic!(
            "The Kafka broker is not reachable at {} ({e}). Start it with ./scripts/test.sh (which installs \
             and starts tansu), or `tansu broker --listener-url tcp://127.0.0.1:9092 ...`, or set KAFKA_URL.",
            config.redacted_servers()
        ),
    }
}
