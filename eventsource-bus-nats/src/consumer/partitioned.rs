//! Partitioned mode: each member pulls from the partitions it holds the
//! lease of, its share among the group's live members; a partition
//! changes owner only once what was pulled from it is settled, and its
//! new owner lets what a dead owner left come back first. Lease upkeep
//! common to both leased modes (renewal, release) is here too.

use std::collections::HashSet;

use super::ownership::{Owned, Ownership, Part};
use super::{GroupConsumer, Origin};
use crate::membership;
use eventsource_core::driver::assigned_partitions;

use crate::partitions::lease_subject;

impl GroupConsumer {
    /// The lease subject of `lane` (in a leased mode).
    fn lane_lease(&self, lane: u32) -> String {
        let p = matches!(self.ownership, Ownership::Partitioned(_)).then_some(lane);
        lease_subject(&self.client, self.group(), p)
    }

    /// Whether this member holds messages pulled from `lane`.
    pub(super) fn holds_from(&self, lane: u32) -> bool {
        self.held
            .lock()
            .keys()
            .any(|(origin, _)| *origin == Origin::Events(lane))
    }

    /// Renews the lease of every lane held (leased modes); drops one whose
    /// lease was lost — which happens only when this member stalled past
    /// `ack_wait` and another took it over — and stops extending the
    /// messages pulled from it, which the server gives the new owner.
    pub(super) async fn renew_leases(&self) {
        if self.ownership == Ownership::Shared {
            return;
        }
        let owned: Vec<(u32, Owned)> = self.owned.lock().iter().map(|(l, o)| (*l, *o)).collect();
        let lease = self.lease();
        for (lane, o) in owned {
            match lease.renew(&self.lane_lease(lane), o.lease).await {
                Ok(Some(seq)) => {
                    if let Some(o) = self.owned.lock().get_mut(&lane) {
                        o.lease = seq;
                    }
                }
                Ok(None) => {
                    tracing::warn!(group = self.group(), lane, "lost a lease (stalled past ack_wait?); its new owner handles what this member did not ack");
                    self.owned.lock().remove(&lane);
                    self.held
                        .lock()
                        .retain(|(origin, _), _| *origin != Origin::Events(lane));
                }
                Err(e) => {
                    tracing::warn!(group = self.group(), lane, error = %e, "could not renew a lease")
                }
            }
        }
    }

    /// Leaving: gives up every lease held (after the hand-back, so the next
    /// owner finds all this member left).
    pub(super) async fn release_all(&self) {
        if self.ownership == Ownership::Shared {
            return;
        }
        let owned: Vec<u32> = std::mem::take(&mut *self.owned.lock())
            .into_keys()
            .collect();
        let lease = self.lease();
        for lane in owned {
            if let Err(e) = lease.release(&self.lane_lease(lane)).await {
                tracing::warn!(group = self.group(), lane, error = %e, "could not release a lease; it lapses after ack_wait");
            }
        }
    }

    /// Partitioned mode: compares the partitions held with this member's
    /// share among the group's live members; starts releasing the ones it
    /// should not hold (their lease goes once nothing pulled from them is
    /// held and no pull on them is out: `pulling`), and takes the free ones
    /// it should. Returns whether it holds exactly its share afterwards.
    pub(super) async fn rebalance(&self, pulling: &HashSet<u32>) -> bool {
        let Ownership::Partitioned(n) = self.ownership else {
            return true;
        };
        let members = match membership::members(&self.client, &self.register, self.group()).await {
            Ok(members) => members.into_iter().map(|(m, _)| m).collect::<Vec<_>>(),
            Err(e) => {
                tracing::warn!(group = self.group(), error = %e, "could not read the group's members; partitions stay as they are");
                return false;
            }
        };
        let wanted = assigned_partitions(&members, &self.member, n);
        let done: Vec<u32> = {
            let mut owned = self.owned.lock();
            for (p, o) in owned.iter_mut() {
                match (wanted.contains(p), o.part) {
                    (false, Part::Releasing) | (true, Part::Reading | Part::Draining(_)) => {}
                    (false, _) => {
                        tracing::debug!(
                            group = self.group(),
                            partition = p,
                            "releasing a partition to another member"
                        );
                        o.part = Part::Releasing;
                    }
                    (true, Part::Releasing) => o.part = Part::Reading,
                }
            }
            owned
                .iter()
                .filter(|(p, o)| o.part == Part::Releasing && !pulling.contains(p))
                .map(|(p, _)| *p)
                .collect()
        };
        let lease = self.lease();
        for p in done {
            if self.holds_from(p) {
                continue;
            }
            if let Err(e) = lease.release(&self.lane_lease(p)).await {
                tracing::warn!(group = self.group(), partition = p, error = %e, "could not release a partition; it lapses after ack_wait");
            }
            self.owned.lock().remove(&p);
            tracing::debug!(group = self.group(), partition = p, "released a partition");
        }
        for p in wanted.iter().copied() {
            if self.owned.lock().contains_key(&p) {
                continue;
            }
            match lease.take(&self.lane_lease(p)).await {
                Ok(Some(seq)) => {
                    let part = self.first_part(p).await;
                    tracing::debug!(
                        group = self.group(),
                        partition = p,
                        ?part,
                        "took a partition"
                    );
                    self.took_over();
                    self.owned.lock().insert(p, Owned { part, lease: seq });
                }
                // Its owner has not let go yet: next round.
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(group = self.group(), partition = p, error = %e, "could not take a partition")
                }
            }
        }
        self.owned.lock().keys().copied().eq(wanted)
    }

    /// Partitioned mode, joining: rebalances until this member holds its
    /// share, as long as the holders keep letting go — it stops waiting
    /// once three rounds in a row brought it no new partition, or after
    /// `ack_wait`. The reader goes on rebalancing and takes the rest as
    /// they come free.
    pub(super) async fn take_share(&self) {
        let config = &self.client.config;
        let round = config.block.min(config.progress_interval);
        let deadline = tokio::time::Instant::now() + config.ack_wait;
        let (mut held, mut progress_at) = (0, tokio::time::Instant::now());
        while !self.rebalance(&HashSet::new()).await {
            let now = tokio::time::Instant::now();
            let holds = self.owned.lock().len();
            if holds > held {
                (held, progress_at) = (holds, now);
            }
            if now >= deadline || now.duration_since(progress_at) >= round * 3 {
                tracing::info!(group = self.group(), member = %self.member, partitions = holds, "joined without its whole share of partitions yet; it takes the rest as their holders let go");
                return;
            }
            tokio::time::sleep(round / 2).await;
        }
    }
}
