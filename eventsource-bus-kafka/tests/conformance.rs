//! The conformance suite against a real Kafka-compatible broker (tansu).

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use eventsource_core::EventBus;
use eventsource_testkit::{peers_of, BusFactory, Features, GroupStart};

struct Kafka;

/// The test config with as many partitions as the groups' cases have
/// aggregates (16), so that ten members can share the work.
fn config() -> eventsource_bus_kafka::KafkaBusConfig {
    let mut config = common::config(&common::kafka_url());
    config.partitions = 16;
    config
}

#[async_trait]
impl BusFactory for Kafka {
    async fn bus(&self) -> Arc<dyn EventBus> {
        Arc::new(common::connect(config()).await)
    }

    async fn peers(&self, n: usize) -> Vec<Arc<dyn EventBus>> {
        let config = config();
        peers_of(n, || async {
            Arc::new(common::connect(config.clone()).await) as Arc<dyn EventBus>
        })
        .await
    }

    /// A partition has one owner in a group at a time, and an aggregate's
    /// events share a partition: order holds across members. Members in
    /// other processes learn a group's filter from DescribeGroups (member
    /// client ids), which tansu 0.6 answers with no members: on it, the
    /// filter is checked per bus only. tansu's coordinator also completes
    /// a rebalance as soon as the leader rejoins (followers learn of it at
    /// their next heartbeat), so a partition can briefly have two owners:
    /// no rebalance barrier. `tests/kafka_specific.rs` checks the bus's own
    /// hand-over (revoke) where tansu keeps the barrier: one member joining
    /// another.
    fn features(&self) -> Features {
        Features::default()
            .ordered_across_members(true)
            .group_filter_on_broker(false)
            .rebalance_barrier(false)
            .new_group_starts_at(GroupStart::Earliest)
            .parks_aggregates(true)
    }

    /// A rebalance waits for the session of the members that left.
    fn handover(&self) -> std::time::Duration {
        std::time::Duration::from_secs(20)
    }

    fn patience(&self) -> std::time::Duration {
        std::time::Duration::from_secs(30)
    }

    fn quiet(&self) -> std::time::Duration {
        std::time::Duration::from_millis(1000)
    }
}

eventsource_testkit::conformance_suite!(Kafka);
