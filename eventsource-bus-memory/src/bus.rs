//! The in-memory [`EventBus`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventsource_core::driver::{
    publish, release_known_at_start, stamp, stamp_shared, Counters, MemberTasks, Members,
    PublishTarget, SendError,
};
use eventsource_core::{
    BusStats, DeadLetterQueue, Error, EventBus, EventEnvelope, EventFilter, EventWatch, Result,
    ShutdownReport, Subscription, SubscriptionHandle,
};
use parking_lot::Mutex;

use crate::client::{Client, DeadLetters};
use crate::consumer::{run_member_worker, GroupConsumer};
use crate::dlq::MemoryDeadLetterQueue;
use crate::group::Group;
use crate::MemoryBusConfig;

/// An in-process event bus with the full delivery contract: consumer
/// groups, per-aggregate order, retries, a dead-letter queue and draining
/// shutdown. Nothing survives the process.
///
/// Consumer groups live as long as the bus: when every member of a group
/// has unsubscribed, matching events still queue for it (up to
/// [`MemoryBusConfig::group_capacity`]) and are delivered when a member
/// subscribes again.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use eventsource_bus_memory::MemoryBus;
/// use eventsource_core::{handler_fn, EventBus, Subscription};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> eventsource_core::Result<()> {
/// let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
/// let handle = bus
///     .subscribe(
///         Subscription::builder("audit")
///             .handler(handler_fn(|e| async move { println!("{}", e.routing_key()); Ok(()) }))
///             .build()?,
///     )
///     .await?;
/// handle.unsubscribe().await;
/// bus.shutdown(Duration::from_secs(1)).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryBus {
    client: Arc<Client>,
    members: Arc<Members<GroupConsumer>>,
}

impl std::fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBus")
            .field("config", &self.client.config)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBus {
    /// A bus with the default configuration.
    pub fn new() -> Self {
        Self::build(MemoryBusConfig::default())
    }

    /// The events published last, oldest first, as many as
    /// [`MemoryBusConfig::event_log`] keeps (none without it).
    pub fn event_log(&self) -> Vec<EventEnvelope> {
        self.client
            .log
            .lock()
            .iter()
            .map(|e| EventEnvelope::clone(e))
            .collect()
    }

    /// A bus with `config`, validated.
    pub fn with_config(config: MemoryBusConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self::build(config))
    }

    fn build(config: MemoryBusConfig) -> Self {
        MemoryBus {
            client: Arc::new(Client {
                config,
                groups: Mutex::new(HashMap::new()),
                dead_letters: DeadLetters::default(),
                stats: Counters::new("memory"),
                log: Mutex::default(),
                watchers: Mutex::default(),
            }),
            members: Members::new("memory bus"),
        }
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn publish(&self, events: &[EventEnvelope]) -> Result<()> {
        // Stamped while borrowed, so each event is copied once: into its
        // `Arc` (publish_shared then finds every trace context in place).
        let shared: Vec<Arc<EventEnvelope>> = stamp(events).iter().cloned().map(Arc::new).collect();
        self.publish_shared(&shared).await
    }

    async fn publish_shared(&self, events: &[Arc<EventEnvelope>]) -> Result<()> {
        let client = &self.client;
        // Bounded groups time out on their own, naming the group that is full.
        let target =
            PublishTarget::new("memory", "groups", "this process", Duration::ZERO).self_bounded();
        publish(
            &self.members,
            &client.stats,
            &target,
            &stamp_shared(events),
            |events| async move {
                let groups: Vec<Arc<Group>> = client.groups.lock().values().cloned().collect();
                for group in &groups {
                    group
                        .push(events, client.config.publish_timeout)
                        .await
                        .map_err(SendError::Fatal)?;
                }
                client.log(events);
                client.feed_watchers(events);
                Ok(())
            },
        )
        .await
    }

    async fn subscribe(&self, subscription: Subscription) -> Result<SubscriptionHandle> {
        self.members.check_open()?;
        let group = {
            let mut groups = self.client.groups.lock();
            let group = groups
                .entry(subscription.group().to_owned())
                .or_insert_with(|| {
                    Arc::new(Group::new(
                        subscription.group().to_owned(),
                        subscription.filter().clone(),
                        self.client.config.group_capacity,
                        self.dead_letters(),
                    ))
                })
                .clone();
            let (existing, requested) =
                (group.filter.canonical(), subscription.filter().canonical());
            if existing != requested {
                return Err(Error::group_filter_conflict(
                    &group.name,
                    &existing,
                    &requested,
                ));
            }
            group
        };
        group.join();
        let tasks = MemberTasks::new(self.members.stop_token());
        let (start, dlq, parking, stop) = (
            subscription.clone(),
            self.dead_letters(),
            Arc::clone(&group.parking),
            tasks.token().clone(),
        );
        tasks.helper(async move {
            let parking = start.parks_aggregates().then_some(&*parking);
            release_known_at_start(&start, &dlq, parking, &stop).await;
        });
        for _ in 0..subscription.concurrency() {
            tasks.worker(run_member_worker(
                Arc::clone(&self.client),
                Arc::clone(&group),
                subscription.clone(),
                tasks.token().clone(),
            ));
        }
        let member = GroupConsumer { group, tasks };
        Ok(self.members.register(&subscription, Arc::new(member)))
    }

    async fn watch(&self, filter: EventFilter) -> Result<EventWatch> {
        self.members.check_open()?;
        let (feed, watch) = EventWatch::channel("memory", self.members.stop_token());
        self.client.watchers.lock().push((filter, feed));
        Ok(watch)
    }

    async fn redeliver(&self, group: &str, events: &[EventEnvelope]) -> Result<()> {
        self.members.check_open()?;
        crate::redeliver::redeliver(&self.client, group, events)
    }

    fn dead_letters(&self) -> Arc<dyn DeadLetterQueue> {
        Arc::new(MemoryDeadLetterQueue {
            inner: Arc::downgrade(&self.client),
        })
    }

    async fn stats(&self) -> Result<BusStats> {
        let mut stats = self.client.stats.snapshot();
        stats.groups = self
            .client
            .groups
            .lock()
            .values()
            .map(|g| {
                (
                    g.name.clone(),
                    g.stats(self.client.dead_letters.count_for(&g.name)),
                )
            })
            .collect();
        Ok(stats)
    }

    async fn shutdown(&self, timeout: Duration) -> Result<ShutdownReport> {
        let report = self.members.shutdown(timeout).await;
        // Open watches end: their feeds go.
        self.client.watchers.lock().clear();
        Ok(report)
    }
}
