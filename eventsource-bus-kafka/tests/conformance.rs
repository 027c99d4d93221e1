//! The conformance suite against a real Kafka-compatible broker (tansu).

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use eventsource_core::testkit::BusFactory;
use eventsource_core::EventBus;

struct Kafka;

#[async_trait]
impl BusFactory for Kafka {
    async fn bus(&self) -> Arc<dyn EventBus> {
        Arc::new(common::connect(common::config(&common::kafka_url())).await)
    }

    fn patience(&self) -> std::time::Duration {
        std::time::Duration::from_secs(30)
    }

    fn quiet(&self) -> std::time::Duration {
        std::time::Duration::from_millis(1000)
    }
}

eventsource_core::conformance_suite!(Kafka);
