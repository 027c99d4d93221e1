//! The conformance suite against the in-memory bus.

use std::sync::Arc;

use async_trait::async_trait;
use eventsource_bus_memory::MemoryBus;
use eventsource_core::testkit::BusFactory;
use eventsource_core::EventBus;

struct Memory;

#[async_trait]
impl BusFactory for Memory {
    async fn bus(&self) -> Arc<dyn EventBus> {
        Arc::new(MemoryBus::new())
    }
}

eventsource_core::conformance_suite!(Memory);
