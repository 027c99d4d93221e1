//! The in-memory [`EventBus`].

use eventsource_core::dispatch::lock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use eventsource_core::{
    BusStats, DeadLetterQueue, Error, EventBus, EventEnvelope, Result, ShutdownReport,
    Subscription, SubscriptionHandle,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::consumer::run_member_worker;
use crate::dlq::{DeadLetters, MemoryDeadLetterQueue};
use crate::group::Group;
use crate::MemoryBusConfig;
use eventsource_core::dispatch::{join_tasks, Counters, Member, Members};

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
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBus")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    config: MemoryBusConfig,
    groups: Mutex<HashMap<String, Arc<Group>>>,
    members: Arc<Members<MemoryMember>>,
    pub(crate) dead_letters: DeadLetters,
    pub(crate) stats: Counters,
}

/// One subscription: its group and its workers.
struct MemoryMember {
    group: Arc<Group>,
    stop: CancellationToken,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

#[async_trait]
impl Member for MemoryMember {
    async fn stop(&self, deadline: Option<tokio::time::Instant>) -> usize {
        self.stop.cancel();
        let workers: Vec<JoinHandle<()>> = lock(&self.workers).drain(..).collect();
        let abandoned = join_tasks(workers, 0, deadline).await;
        self.group.leave();
        abandoned
    }
}

impl Inner {
    pub(crate) fn group(&self, name: &str) -> Option<Arc<Group>> {
        lock(&self.groups).get(name).cloned()
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

    /// A bus with `config`, validated.
    pub fn with_config(config: MemoryBusConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self::build(config))
    }

    fn build(config: MemoryBusConfig) -> Self {
        MemoryBus {
            inner: Arc::new(Inner {
                config,
                groups: Mutex::new(HashMap::new()),
                members: Members::new("memory bus"),
                dead_letters: DeadLetters::default(),
                stats: Counters::default(),
            }),
        }
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn publish(&self, events: &[EventEnvelope]) -> Result<()> {
        self.inner.members.check_open()?;
        let span = tracing::info_span!(
            "eventsource.publish",
            backend = "memory",
            events = events.len()
        );
        async {
            let groups: Vec<Arc<Group>> = lock(&self.inner.groups).values().cloned().collect();
            for event in events {
                let mut event = event.clone();
                eventsource_core::trace::stamp(&mut event);
                let event = Arc::new(event);
                for group in groups.iter().filter(|g| g.filter.matches(&event)) {
                    group
                        .push(Arc::clone(&event), self.inner.config.publish_timeout)
                        .await?;
                }
                self.inner.stats.published(1);
            }
            Ok(())
        }
        .instrument(span)
        .await
    }

    async fn subscribe(&self, subscription: Subscription) -> Result<SubscriptionHandle> {
        self.inner.members.check_open()?;
        let group = {
            let mut groups = lock(&self.inner.groups);
            let group = groups
                .entry(subscription.group().to_owned())
                .or_insert_with(|| {
                    Arc::new(Group::new(
                        subscription.group().to_owned(),
                        subscription.filter().clone(),
                        self.inner.config.group_capacity,
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
        let stop = self.inner.members.stop_token();
        let workers = (0..subscription.concurrency())
            .map(|_| {
                tokio::spawn(run_member_worker(
                    Arc::clone(&self.inner),
                    Arc::clone(&group),
                    subscription.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        let member = MemoryMember {
            group,
            stop,
            workers: Mutex::new(workers),
        };
        Ok(self.inner.members.register(&subscription, Arc::new(member)))
    }

    fn dead_letters(&self) -> Arc<dyn DeadLetterQueue> {
        Arc::new(MemoryDeadLetterQueue {
            inner: Arc::downgrade(&self.inner),
        })
    }

    async fn stats(&self) -> Result<BusStats> {
        let mut stats = self.inner.stats.snapshot();
        stats.groups = lock(&self.inner.groups)
            .values()
            .map(|g| {
                (
                    g.name.clone(),
                    g.stats(self.inner.dead_letters.count_for(&g.name)),
                )
            })
            .collect();
        Ok(stats)
    }

    async fn shutdown(&self, timeout: Duration) -> Result<ShutdownReport> {
        Ok(self.inner.members.shutdown(timeout).await)
    }
}
