//! The conformance suite against the real RabbitMQ: with the defaults
//! (work spread over a group's members, order within a member), with
//! `partitions` (work spread, order across the group), and the membership
//! cases with `single_active_consumer` (order across the group, one
//! member at a time).

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use eventsource_bus_rabbitmq::RabbitBusConfig;
use eventsource_core::EventBus;
use eventsource_testkit::{peers_of, BusFactory, Features};

/// Buses on the real broker; `single_active` and `partitions` pick the mode.
struct Rabbit {
    single_active: bool,
    partitions: Option<u32>,
}

impl Rabbit {
    fn config(&self) -> RabbitBusConfig {
        let mut config = common::config();
        config.single_active_consumer = self.single_active;
        config.partitions = self.partitions;
        config
    }
}

#[async_trait]
impl BusFactory for Rabbit {
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

eventsource_testkit::conformance_suite!(Rabbit {
    single_active: false,
    partitions: None,
});

/// The whole suite again with partitioned groups.
mod partitioned {
    use super::Rabbit;
    eventsource_testkit::conformance_suite!(Rabbit {
        single_active: false,
        partitions: Some(16),
    });
}

/// The membership cases again with one active consumer per group.
mod single_active_consumer {
    use super::Rabbit;
    eventsource_testkit::membership_suite!(Rabbit {
        single_active: true,
        partitions: None,
    });
}
