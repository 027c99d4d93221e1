//! The conformance suite against the real Redis: once with the defaults
//! (work spread over a group's members, order within a member), once with
//! `single_active_consumer` (order across the group).

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventsource_bus_redis::RedisBusConfig;
use eventsource_core::EventBus;
use eventsource_testkit::{peers_of, BusFactory, Features};

/// Buses on the real server; `single_active` picks the mode.
struct Redis {
    single_active: bool,
}

impl Redis {
    /// The test config, with the default `claim_min_idle` (30 s): a clean
    /// leave must hand over at once, not when a dead member's entries would.
    fn config(&self) -> RedisBusConfig {
        let mut config = common::config(&common::redis_url());
        config.claim_min_idle = Duration::from_secs(30);
        config.single_active_consumer = self.single_active;
        config.validate().expect("valid test config");
        config
    }
}

#[async_trait]
impl BusFactory for Redis {
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
        Features {
            ordered_across_members: self.single_active,
            spreads_work: !self.single_active,
            ..Features::default()
        }
    }
}

eventsource_testkit::conformance_suite!(Redis {
    single_active: false
});

/// The membership cases again with one active member per group.
mod single_active_consumer {
    use super::Redis;
    eventsource_testkit::membership_suite!(Redis {
        single_active: true
    });
}
