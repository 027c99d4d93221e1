//! The conformance suite against the real Redis: with the defaults (work
//! spread over a group's members, order within a member), with
//! `partitions` (work spread, order across the group), and the membership
//! cases with `single_active_consumer` (order across the group, one
//! member at a time); and the conformance and membership suites once more
//! on a Redis Cluster (3 masters, a replica each), unpartitioned and
//! partitioned.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventsource_bus_redis::RedisBusConfig;
use eventsource_core::EventBus;
use eventsource_testkit::{peers_of, BusFactory, Features};

/// Buses on the real server; `single_active` and `partitions` pick the mode.
struct Redis {
    single_active: bool,
    partitions: Option<u32>,
    cluster: bool,
}

impl Redis {
    /// The test config, with the default `claim_min_idle` (30 s): a clean
    /// leave must hand over at once, not when a dead member's entries would.
    fn config(&self) -> RedisBusConfig {
        let url = if self.cluster {
            common::redis_cluster_url()
        } else {
            common::redis_url()
        };
        let mut config = common::config(&url);
        config.claim_min_idle = Duration::from_secs(30);
        config.single_active_consumer = self.single_active;
        config.partitions = self.partitions;
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
        let ordered = self.single_active || self.partitions.is_some();
        Features::default()
            .ordered_across_members(ordered)
            .spreads_work(!self.single_active)
            .parks_aggregates(ordered)
    }
}

eventsource_testkit::conformance_suite!(Redis {
    single_active: false,
    partitions: None,
    cluster: false,
});

/// The whole suite again with partitioned groups.
mod partitioned {
    use super::Redis;
    eventsource_testkit::conformance_suite!(Redis {
        single_active: false,
        partitions: Some(16),
        cluster: false,
    });
}

/// The membership cases again with one active member per group.
mod single_active_consumer {
    use super::Redis;
    eventsource_testkit::membership_suite!(Redis {
        single_active: true,
        partitions: None,
        cluster: false,
    });
}

/// The whole suite on a Redis Cluster: every key of a namespace carries
/// its hash tag, so each script and transaction stays in one slot.
mod cluster {
    use super::Redis;
    eventsource_testkit::conformance_suite!(Redis {
        single_active: false,
        partitions: None,
        cluster: true,
    });

    /// Partitioned groups on the cluster.
    mod partitioned {
        use super::super::Redis;
        eventsource_testkit::conformance_suite!(Redis {
            single_active: false,
            partitions: Some(16),
            cluster: true,
        });
    }

    /// One active member per group on the cluster.
    mod single_active_consumer {
        use super::super::Redis;
        eventsource_testkit::membership_suite!(Redis {
            single_active: true,
            partitions: None,
            cluster: true,
        });
    }
}
