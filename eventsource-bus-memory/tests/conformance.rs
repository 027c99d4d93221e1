//! The conformance suite against the in-memory bus.

use std::sync::Arc;

use async_trait::async_trait;
use eventsource_bus_memory::MemoryBus;
use eventsource_core::EventBus;
use eventsource_testkit::{BusFactory, Features};

struct Memory;

#[async_trait]
impl BusFactory for Memory {
    async fn bus(&self) -> Arc<dyn EventBus> {
        Arc::new(MemoryBus::new())
    }

    /// A group's members share one keyed queue, so order holds across
    /// them; nothing outlives the bus.
    fn features(&self) -> Features {
        Features::default()
            .ordered_across_members(true)
            .spreads_work(true)
            .durable(false)
            .parks_aggregates(true)
    }
}

eventsource_testkit::conformance_suite!(Memory);
