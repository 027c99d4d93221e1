//! What a backend gives the suite: buses, and what it promises.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventsource_core::EventBus;

/// Makes buses for the conformance suite.
#[async_trait]
pub trait BusFactory: Send + Sync + 'static {
    /// A fresh bus that shares nothing with buses made before (its own
    /// stream, queue or topic namespace).
    async fn bus(&self) -> Arc<dyn EventBus>;

    /// How long to wait for an expected delivery before failing.
    fn patience(&self) -> Duration {
        Duration::from_secs(15)
    }

    /// How long to watch for a delivery that must not happen.
    fn quiet(&self) -> Duration {
        Duration::from_millis(400)
    }

    /// What this backend promises beyond the common contract.
    fn features(&self) -> Features {
        Features::default()
    }

    /// `n` buses on one fresh namespace, as `n` processes of one service
    /// would each hold: members subscribed through different peers compete
    /// in the same groups. The default is one bus shared `n` times (an
    /// in-process bus has no other way to share a group).
    async fn peers(&self, n: usize) -> Vec<Arc<dyn EventBus>> {
        let bus = self.bus().await;
        vec![bus; n.max(1)]
    }

    /// How long a group may take to hand a leaving member's unfinished
    /// events to the members that stay (or to the next one to join).
    fn handover(&self) -> Duration {
        Duration::from_secs(10)
    }
}

/// `n` buses from `connect`, each its own connection: what a broker
/// backend's [`BusFactory::peers`] returns, given a config on one fresh
/// namespace.
pub async fn peers_of<F, Fut>(n: usize, mut connect: F) -> Vec<Arc<dyn EventBus>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<dyn EventBus>>,
{
    let mut buses = Vec::with_capacity(n);
    for _ in 0..n {
        buses.push(connect().await);
    }
    buses
}

/// What a backend promises beyond the common contract, stated in code so
/// that one case asserts the right thing on each (as Watermill's universal
/// tests declare `GuaranteedOrder` or `Persistent`).
///
/// Start from [`Features::default`] (a broker backend) and change what
/// differs with the setters of the same names; fields may be added (it is
/// `#[non_exhaustive]`), each with a default that keeps today's cases.
///
/// ```
/// use eventsource_testkit::{Features, GroupStart};
///
/// let kafka = Features::default()
///     .ordered_across_members(true)
///     .new_group_starts_at(GroupStart::Earliest);
/// assert!(kafka.spreads_work);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Features {
    /// An aggregate's events are handled in order, one at a time, across
    /// all members of a group, not only within one member.
    pub ordered_across_members: bool,
    /// The members of a group share the work (`false` when one member is
    /// active and the others stand by).
    pub spreads_work: bool,
    /// What a group has not finished outlives the bus value that read it
    /// (a broker keeps it): another peer's member picks it up after that
    /// bus shuts down. `false` for an in-process bus.
    pub durable: bool,
    /// A second filter in a group is refused on every peer (the broker
    /// keeps the group's filter), not only on the bus that has a member.
    pub group_filter_on_broker: bool,
    /// The broker moves a partition (or a message) to a new member only
    /// after the old one gave it up, as Kafka's rebalance protocol does.
    /// `false` for a broker whose coordinator completes a rebalance before
    /// every member rejoined (tansu 0.6): during membership changes a
    /// partition then briefly has two owners, so some events are handled
    /// twice, possibly at the same time, though still first handled in order.
    pub rebalance_barrier: bool,
    /// Where a group that never existed starts reading.
    pub new_group_starts_at: GroupStart,
    /// A subscription may park an aggregate behind its dead letter
    /// (`park_aggregate_on_failure`); `false` where the mode refuses it.
    pub parks_aggregates: bool,
}

/// Where a new consumer group starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupStart {
    /// With the events published after it subscribed (a Redis group made
    /// at `$`, a RabbitMQ queue declared at subscribe, a memory group).
    NewEvents,
    /// With the earliest event the broker still holds (Kafka's
    /// `auto.offset.reset=earliest`).
    Earliest,
}

impl Default for Features {
    /// A broker backend: work spread over members, order within a member only.
    fn default() -> Self {
        Features {
            ordered_across_members: false,
            spreads_work: true,
            durable: true,
            group_filter_on_broker: true,
            rebalance_barrier: true,
            new_group_starts_at: GroupStart::NewEvents,
            parks_aggregates: false,
        }
    }
}

/// Writes `Features`' setters, one per field.
macro_rules! feature_setters {
    ($($name:ident: $ty:ty),* $(,)?) => {
        impl Features {
            $(
                #[doc = concat!("Sets `", stringify!($name), "` (see the field).")]
                #[must_use]
                pub fn $name(mut self, value: $ty) -> Self {
                    self.$name = value;
                    self
                }
            )*
        }
    };
}

feature_setters!(
    ordered_across_members: bool,
    spreads_work: bool,
    durable: bool,
    group_filter_on_broker: bool,
    rebalance_barrier: bool,
    new_group_starts_at: GroupStart,
    parks_aggregates: bool,
);
