//! The conformance suite against the real Redis.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use eventsource_core::testkit::BusFactory;
use eventsource_core::EventBus;

struct Redis;

#[async_trait]
impl BusFactory for Redis {
    async fn bus(&self) -> Arc<dyn EventBus> {
        Arc::new(common::connect(common::config(&common::redis_url())).await)
    }
}

eventsource_core::conformance_suite!(Redis);
