//! The conformance suite against the real NATS server: with the defaults
//! (work spread over a group's members, order within a member), with
//! `partitions` (work spread, order across the group), and the membership
//! cases with `single_active_consumer` (order across the group, one
//! member at a time).

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventsource_bus_nats::NatsBusConfig;
use eventsource_core::EventBus;
use eventsource_testkit::{peers_of, BusFactory, Features};

/// Buses on the real server; `single_active` and `partitions` pick the mode.
struct Nats {
    single_active: bool,
    partitions: Option<u32>,
}

impl Nats {
    /// The test config, with the default `ack_wait` (30 s): a clean leave
    /// must hand over at once, not when a dead member's messages would.
    fn config(&self) -> NatsBusConfig {
        let mut config = common::config(&common::nats_url());
        config.ack_wait = Duration::from_secs(30);
        config.single_active_consumer = self.single_active;
        config.partitions = self.partitions;
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
        let ordered = self.single_active || self.partitions.is_some();
        Features::default()
            .ordered_across_members(ordered)
            .spreads_work(!self.single_active)
            .parks_aggregates(ordered)
    }
}

eventsource_testkit::conformance_suite!(Nats {
    single_active: false,
    partitions: None,
});

/// The whole suite again with partitioned groups.
mod partitioned {
    use super::Nats;
    eventsource_testkit::conformance_suite!(Nats {
        single_active: false,
        partitions: Some(16),
    });
}

/// The membership cases again with one active member per group.
mod single_active_consumer {
    use super::Nats;
    eventsource_testkit::membership_suite!(Nats {
        single_active: true,
        partitions: None,
    });
}
