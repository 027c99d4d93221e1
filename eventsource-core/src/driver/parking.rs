//! Order-preserving dead letters: which aggregates of a group wait behind
//! a dead letter, known from the group's dead-letter queue.
//!
//! The dead-letter queue is the parked store: an aggregate is parked in a
//! group while the group's DLQ holds a letter of it. The [`Parking`] of a
//! member is that set as the member knows it, loaded from the DLQ when the
//! member starts and again whenever the backend says the member took new
//! partitions ([`Parking::invalidate`]), and kept up to date by the
//! member's own workers, which are the only ones writing letters of the
//! aggregates in their partitions.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::dlq::letters_of;
use crate::{DeadLetter, DeadLetterQuery, DeadLetterQueue, Result, Subscription};

#[derive(Default)]
struct State {
    parked: HashSet<String>,
    /// Bumped by [`Parking::invalidate`].
    generation: u64,
    /// The generation the set was last loaded at (`None`: never).
    loaded: Option<u64>,
    /// While a load runs: the changes made meanwhile, applied over it.
    changes: Option<Vec<(String, bool)>>,
    /// Heads of kind `NewerVersion` found by the last load, not yet
    /// looked at by [`Parking::release_newer`].
    newer_heads: Vec<DeadLetter>,
    /// Newer-version letters this member sent back already.
    released_newer: HashSet<String>,
}

impl State {
    fn stale(&self) -> bool {
        self.loaded != Some(self.generation)
    }
}

/// The aggregates a member's group has parked (see
/// [`park_aggregate_on_failure`](crate::SubscriptionBuilder::park_aggregate_on_failure)),
/// for the [`Worker`](super::Worker)s of one member (or, on a bus whose
/// members share one queue in-process, of the whole group).
pub struct Parking {
    group: String,
    dlq: Arc<dyn DeadLetterQueue>,
    state: Mutex<State>,
    loading: tokio::sync::Mutex<()>,
    /// Unreadable letters already logged.
    unreadable_seen: Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for Parking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock();
        f.debug_struct("Parking")
            .field("group", &self.group)
            .field("parked", &state.parked.len())
            .field("stale", &state.stale())
            .finish_non_exhaustive()
    }
}

impl Parking {
    /// Parking for `group`, whose letters are in `dlq`; loaded from it
    /// before the first delivery is looked at.
    pub fn new(group: impl Into<String>, dlq: Arc<dyn DeadLetterQueue>) -> Arc<Self> {
        Arc::new(Parking {
            group: group.into(),
            dlq,
            state: Mutex::new(State::default()),
            loading: tokio::sync::Mutex::new(()),
            unreadable_seen: Mutex::new(std::collections::HashSet::new()),
        })
    }

    /// The member took partitions another member held: what it knows of
    /// them may be old, so the set is loaded again before the next
    /// delivery. Backends call it when they gain a partition (after the
    /// old owner's fence: its letters are on the broker by then).
    pub fn invalidate(&self) {
        self.state.lock().generation += 1;
    }

    /// Whether `aggregate_id` is parked.
    pub(crate) fn is_parked(&self, aggregate_id: &str) -> bool {
        self.state.lock().parked.contains(aggregate_id)
    }

    /// Marks `aggregate_id` parked (`true`) or released.
    pub(crate) fn set(&self, aggregate_id: &str, parked: bool) {
        let mut state = self.state.lock();
        if parked {
            state.parked.insert(aggregate_id.to_owned());
        } else {
            state.parked.remove(aggregate_id);
        }
        if let Some(changes) = state.changes.as_mut() {
            changes.push((aggregate_id.to_owned(), parked));
        }
    }

    /// The group's letters of `aggregate_id`, in release order.
    pub(crate) async fn letters_of(&self, aggregate_id: &str) -> Result<Vec<DeadLetter>> {
        let all = self.dlq.list(&DeadLetterQuery::group(&self.group)).await?;
        Ok(letters_of(all, &self.group, aggregate_id))
    }

    /// Deletes released letters (one read of the DLQ where a backend
    /// scans it to delete).
    pub(crate) async fn delete(&self, ids: &[String]) -> Result<usize> {
        self.dlq.delete_many(ids).await
    }

    /// Loads the set if it is stale, retrying while the DLQ cannot be
    /// read (see [`retrying`](Self::retrying)): no delivery is looked at
    /// before the member knows whether its aggregate is parked. `false` if
    /// `stop` fired first.
    pub(crate) async fn ready(&self, stop: &CancellationToken) -> bool {
        self.retrying(stop, "know which aggregates are parked", || self.load())
            .await
            .is_some()
    }

    /// Runs `read` (a read of the DLQ) until it succeeds, waiting 100 ms
    /// doubling to 5 s between tries; `None` if `stop` fired first.
    pub(crate) async fn retrying<R, F, Fut>(
        &self,
        stop: &CancellationToken,
        why: &str,
        read: F,
    ) -> Option<R>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<R>>,
    {
        retrying(&self.group, stop, why, read).await
    }

    /// Sends back to the group the newer-version heads the last load
    /// found whose version `subscription`'s handler knows (see
    /// [`newer`](super::newer)), each once per member.
    pub(crate) async fn release_newer(&self, subscription: &crate::Subscription) {
        let due: Vec<DeadLetter> = {
            let mut state = self.state.lock();
            if state.newer_heads.is_empty() {
                return;
            }
            let heads = std::mem::take(&mut state.newer_heads);
            let known = super::newer::to_release(subscription, heads);
            known
                .into_iter()
                .filter(|l| state.released_newer.insert(l.id.clone()))
                .collect()
        };
        let failed = super::newer::replay(subscription, &*self.dlq, &due).await;
        // Tried again at the next load.
        let mut state = self.state.lock();
        for id in failed {
            state.released_newer.remove(&id);
        }
    }

    async fn load(&self) -> Result<()> {
        if !self.state.lock().stale() {
            return Ok(());
        }
        let _one = self.loading.lock().await;
        let generation = {
            let mut state = self.state.lock();
            if !state.stale() {
                return Ok(());
            }
            state.changes = Some(Vec::new());
            state.generation
        };
        let listed = self.dlq.list(&DeadLetterQuery::group(&self.group)).await;
        let mut state = self.state.lock();
        let changes = state.changes.take().unwrap_or_default();
        let letters = listed?;
        for letter in letters
            .iter()
            .filter(|l| l.failure.kind == crate::FailureKind::Unreadable)
        {
            // Once per letter: it is met again at every load.
            if self.unreadable_seen.lock().insert(letter.id.clone()) {
                tracing::warn!(group = %self.group, letter = %letter.id, error = %letter.failure.error,
                    "an unreadable dead letter parks no aggregate; purge or delete it (eventsource dlq show/purge)");
            }
        }
        state.parked = letters
            .iter()
            .filter(|l| l.group() == self.group)
            .filter_map(|l| l.aggregate_id().map(str::to_owned))
            .collect();
        state.newer_heads = crate::dlq::by_aggregate(letters)
            .into_iter()
            .filter_map(|(_, list)| list.into_iter().next())
            .filter(|head| head.failure.kind == crate::FailureKind::NewerVersion)
            .collect();
        for (aggregate, parked) in changes {
            if parked {
                state.parked.insert(aggregate);
            } else {
                state.parked.remove(&aggregate);
            }
        }
        state.loaded = Some(generation);
        tracing::debug!(group = %self.group, parked = state.parked.len(), "parked aggregates loaded from the dead-letter queue");
        Ok(())
    }
}

/// What a member does when it starts: sends back the group's
/// newer-version letters its handler knows the version of (through
/// `parking`, which remembers what it sent, where the group parks
/// aggregates). Waits for the dead-letter queue while it cannot be read,
/// until `stop`.
pub async fn release_known_at_start(
    subscription: &Subscription,
    dlq: &Arc<dyn DeadLetterQueue>,
    parking: Option<&Parking>,
    stop: &CancellationToken,
) {
    if let Some(parking) = parking {
        // Loaded afresh: a parking shared by a group's members in one
        // process (the memory bus) may have been loaded by a member that
        // did not know the version.
        parking.invalidate();
        if parking.ready(stop).await {
            parking.release_newer(subscription).await;
        }
        return;
    }
    let group = subscription.group();
    let query = DeadLetterQuery::group(group);
    let Some(letters) = retrying(group, stop, "find newer-version letters", || {
        dlq.list(&query)
    })
    .await
    else {
        return;
    };
    let _failed = super::newer::replay(
        subscription,
        &**dlq,
        &super::newer::to_release(subscription, letters),
    )
    .await;
}

/// Runs `read` (a read of `group`'s DLQ) until it succeeds, waiting
/// 100 ms doubling to 5 s between tries and logging why it reads; `None`
/// if `stop` fired first.
pub(crate) async fn retrying<R, F, Fut>(
    group: &str,
    stop: &CancellationToken,
    why: &str,
    mut read: F,
) -> Option<R>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<R>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match read().await {
            Ok(r) => return Some(r),
            Err(e) => {
                tracing::warn!(%group, error = %e, ?delay, "cannot read the dead-letter queue to {why}; retrying");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return None,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Refuses `subscription` if it parks aggregates on a bus whose group
/// members can hold one aggregate at once (`one_owner` false: Redis or
/// RabbitMQ without `partitions` or `single_active_consumer`), with a
/// typed [`Error::Config`](crate::Error::Config) naming the option.
pub fn refuse_parking(
    backend: &str,
    subscription: &crate::Subscription,
    one_owner: bool,
) -> Result<()> {
    if one_owner || !subscription.parks_aggregates() {
        return Ok(());
    }
    Err(crate::Error::config(format!(
        "{backend}: subscription `{}` sets park_aggregate_on_failure, which needs partitions \
         (or single_active_consumer): without them two members can hold one aggregate",
        subscription.group()
    )))
}
