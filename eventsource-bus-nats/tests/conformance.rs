//! The conformance suite against the real NATS server: work spread over a
//! group's members, order within a member.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventsource_bus_nats::NatsBusConfig;
use eventsource_core::EventBus;
use eventsource_testkit::{peers_of, BusFactory, Features};

/// Buses on the real server.
struct Nats;

impl Nats {
    /// The test config, with the default `ack_wait` (30 s): a clean leave
    /// must hand over at once, not when a dead member's messages would.
    fn config(&self) -> NatsBusConfig {
        let mut config = common::config(&common::nats_url());
        config.ack_wait = Duration::from_secs(30);
        config.validate().expect("valid test config");
        config
    }
}

#[async_trait]
impl BusFactory for Nats {
    async fn bus(&self) -> Arc<dyn EventBus> {
        Arc::new(common::connect(self.config()).await)
    }

    async fn peers(&self, n: usize) -> Vec<Arc<dyn EventBus>> {
        let config = self.config();
        peers_of(n, || async {
            Arc::new(common::connect(config.clone()).await) as Arc<dyn EventBus>
        })
        .await
    }

    fn features(&self) -> Features {
        Features::default()
    }
}

eventsource_testkit::conformance_suite!(Nats);
