//! The member core: what one member of a consumer group holds the same way
//! on every broker — its subscription, the keyed queue with its prefetch
//! slots, the group's parking, and its tasks with the workers that run
//! handlers. A backend's member owns one and adds its reader and its
//! [`Settle`].

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{Counters, KeyedQueue, MemberTasks, Parking, Settle, Worker};
use crate::{DeadLetterQueue, Subscription};

/// A backend's member of a consumer group, as its workers see it: its
/// [`MemberCore`] and how it settles. With it,
/// [`MemberCore::spawn_workers`] starts the workers; nothing else is
/// projected out of the member.
pub trait BrokerMember<T: Send + 'static>: Settle<T> + Sized + 'static {
    /// The member's core.
    fn core(&self) -> &MemberCore<T>;
}

/// The shared part of a member: see the [`driver`](crate::driver) module documentation.
pub struct MemberCore<T> {
    /// The bus's counters, where its outcomes are counted.
    counters: Arc<Counters>,
    subscription: Subscription,
    queue: KeyedQueue<T>,
    /// One per message fetched and not yet settled: a reader takes a slot
    /// before it fetches, and the slot goes back when the token holding it
    /// is dropped.
    slots: Arc<Semaphore>,
    /// How many slots there are.
    prefetch: usize,
    parking: Option<Arc<Parking>>,
    /// The group's dead-letter queue.
    dlq: Arc<dyn DeadLetterQueue>,
    tasks: MemberTasks,
}

impl<T> std::fmt::Debug for MemberCore<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberCore")
            .field("backend", &self.counters.backend())
            .field("group", &self.subscription.group())
            .field("queued", &self.queue.queued())
            .field("in_flight", &self.queue.in_flight())
            .field("free_slots", &self.slots.available_permits())
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> MemberCore<T> {
    /// A core for `subscription` holding up to `prefetch` unsettled
    /// messages, counting its outcomes in the bus's `counters`; `stop` (from [`Members::stop_token`](super::Members::stop_token))
    /// stops its tasks; `dlq` is the group's dead-letter queue (for
    /// parking, and for the newer-version letters the
    /// member sends back when it starts).
    pub fn new(
        counters: Arc<Counters>,
        subscription: Subscription,
        prefetch: usize,
        stop: CancellationToken,
        dlq: impl FnOnce() -> Arc<dyn DeadLetterQueue>,
    ) -> Self {
        let dlq = dlq();
        let parking = subscription
            .parks_aggregates()
            .then(|| Parking::new(subscription.group(), Arc::clone(&dlq)));
        MemberCore {
            counters,
            queue: KeyedQueue::new(prefetch),
            slots: Arc::new(Semaphore::new(prefetch)),
            prefetch,
            parking,
            dlq,
            tasks: MemberTasks::new(stop),
            subscription,
        }
    }

    /// Starts the member's `concurrency` [`Worker`]s, consuming
    /// `destination` (stream, queue, topic: for spans), and a helper that
    /// sends back the group's newer-version letters the member knows
    /// ([`release_known_at_start`](super::release_known_at_start)).
    pub fn spawn_workers<M: BrokerMember<T>>(member: &Arc<M>, destination: &str) {
        let core = member.core();
        let helper = Arc::clone(member);
        core.tasks.helper(async move {
            let core = helper.core();
            super::release_known_at_start(
                &core.subscription,
                &core.dlq,
                core.parking.as_deref(),
                core.tasks.token(),
            )
            .await;
        });
        for _ in 0..core.subscription.concurrency() {
            let member = Arc::clone(member);
            let destination = destination.to_owned();
            core.tasks.worker(async move {
                let core = member.core();
                Worker {
                    backend: core.counters.backend(),
                    destination: &destination,
                    queue: &core.queue,
                    subscription: &core.subscription,
                    stop: core.tasks.token(),
                    counters: &core.counters,
                    settle: &*member,
                    parking: core.parking.as_deref(),
                }
                .run()
                .await;
            });
        }
    }
}

impl<T> MemberCore<T> {
    /// The member's subscription.
    pub fn subscription(&self) -> &Subscription {
        &self.subscription
    }

    /// The bus's counters, where the member's outcomes are counted.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Its consumer group.
    pub fn group(&self) -> &str {
        self.subscription.group()
    }

    /// Where the reader puts what it fetched, for the workers.
    pub fn queue(&self) -> &KeyedQueue<T> {
        &self.queue
    }

    /// The group's parked aggregates, when the subscription parks them.
    pub fn parking(&self) -> Option<&Arc<Parking>> {
        self.parking.as_ref()
    }

    /// The member's tasks (its reader and helpers are spawned here).
    pub fn tasks(&self) -> &MemberTasks {
        &self.tasks
    }

    /// Cancelled when the member stops or the bus shuts down.
    pub fn token(&self) -> &CancellationToken {
        self.tasks.token()
    }

    /// The prefetch slots.
    pub fn slots(&self) -> &Arc<Semaphore> {
        &self.slots
    }

    /// The free slots for the reader's next fetch: at least one, and while
    /// the workers still have a [`backlog`](KeyedQueue::backlog), at least
    /// half the prefetch — so a reader fetches in batches of about half its
    /// prefetch while the workers go through the other half, instead of
    /// one fetch (one round trip) per settled message. Fetches as soon as
    /// the backlog runs dry, so no worker waits for a fuller fetch.
    /// `None` once the member stops.
    pub async fn fetch_slots(&self) -> Option<Vec<OwnedSemaphorePermit>> {
        let token = self.tasks.token();
        let first = tokio::select! {
            () = token.cancelled() => return None,
            slot = Arc::clone(&self.slots).acquire_owned() => slot.ok()?,
        };
        let mut slots = vec![first];
        let enough = self.prefetch.div_ceil(2);
        loop {
            while let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() {
                slots.push(slot);
            }
            if slots.len() >= enough {
                return Some(slots);
            }
            let dry = self.queue.ran_dry();
            tokio::pin!(dry);
            dry.as_mut().enable();
            if self.queue.backlog() == 0 {
                return Some(slots);
            }
            // The rest in one wait, not a wake-up per settled message.
            let rest = u32::try_from(enough - slots.len()).unwrap_or(u32::MAX);
            tokio::select! {
                () = token.cancelled() => return None,
                () = dry => return Some(slots),
                rest = Arc::clone(&self.slots).acquire_many_owned(rest) => {
                    let mut rest = rest.ok()?;
                    while rest.num_permits() > 1 {
                        slots.extend(rest.split(1));
                    }
                    slots.push(rest);
                }
            }
        }
    }

    /// A free prefetch slot, if there is one now.
    pub fn try_slot(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.slots).try_acquire_owned().ok()
    }

    /// Handlers running now.
    pub fn in_flight(&self) -> usize {
        self.queue.in_flight()
    }
}
