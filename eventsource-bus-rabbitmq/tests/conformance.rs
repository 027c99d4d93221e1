//! The conformance suite against the real RabbitMQ.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use eventsource_core::testkit::BusFactory;
use eventsource_core::EventBus;

struct Rabbit;

#[async_trait]
impl BusFactory for Rabbit {
    async fn bus(&self) -> Arc<dyn EventBus> {
        Arc::new(common::connect(common::config()).await)
    }
}

eventsource_core::conformance_suite!(Rabbit);
