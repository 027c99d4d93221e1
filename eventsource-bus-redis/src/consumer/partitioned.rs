//! Partitioned mode: each member reads the partitions it holds the lease
//! of, its share among the group's live members; a partition changes
//! owner only once what was read from it is acked, and its new owner
//! drains what is pending in it before reading new entries.

use crate::client::Conn;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use eventsource_core::driver::assigned_partitions;
use tokio::sync::OwnedSemaphorePermit;

use super::GroupConsumer;
use crate::partitions::{self, Lease};

/// Where a member stands with a partition it holds the lease of
/// (partitioned mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Part {
    /// Just taken: claiming what the group left pending in it (a previous
    /// owner's entries), from this XAUTOCLAIM cursor, before reading new ones.
    Draining(String),
    /// Read with the other partitions.
    Reading,
    /// Meant for another member: no longer read; the lease goes once
    /// every entry read from it is acked.
    Releasing,
}

impl GroupConsumer {
    /// Partitioned mode, leaving: gives up every partition (after
    /// [`hand_back`](Self::hand_back), so the next owner finds all this
    /// member left pending).
    pub(super) async fn release_partitions(&self) {
        let owned: Vec<u32> = std::mem::take(&mut *self.owned.lock())
            .into_keys()
            .collect();
        let mut conn = self.client.conn.clone();
        let lease = self.lease();
        for p in owned {
            if let Err(e) = lease.release(&mut conn, p).await {
                tracing::warn!(group = self.group(), partition = p, error = %e, "could not release a partition; it frees itself after claim_min_idle");
            }
        }
    }

    /// Partitioned mode: renews the lease of every partition held; drops
    /// (stops reading) one whose lease was lost, which happens only when
    /// this member stalled past `claim_min_idle` and another took it over.
    pub(super) async fn renew_partitions(&self, conn: &mut Conn) {
        let owned: Vec<u32> = self.owned.lock().keys().copied().collect();
        let lease = self.lease();
        for p in owned {
            match lease.renew(conn, p).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(group = self.group(), partition = p, "lost the lease of a partition (stalled past claim_min_idle?); its new owner handles what this member did not ack");
                    self.owned.lock().remove(&p);
                    // Not this member's to refresh any more: a refresh
                    // (XCLAIM to itself) would take them from the new owner.
                    self.held.lock().remove(&self.events[p as usize]);
                    self.left_pending.store(true, Ordering::Release);
                }
                Err(e) => {
                    tracing::warn!(group = self.group(), partition = p, error = %e, "could not renew a partition's lease")
                }
            }
        }
    }

    /// The partition `stream` is, in partitioned mode.
    pub(super) fn partition(&self, stream: &str) -> Option<u32> {
        self.ownership.partitions()?;
        self.events
            .iter()
            .position(|s| **s == *stream)
            .map(|p| p as u32)
    }

    /// The lease a dead letter from `stream` needs, in partitioned mode.
    pub(super) fn fence(&self, stream: &str) -> crate::dlq::Fence<'_> {
        self.partition(stream).map(|p| {
            (
                self.client.config.partition_lease_key(self.group(), p),
                self.consumer.as_str(),
            )
        })
    }

    pub(super) fn lease(&self) -> Lease<'_> {
        Lease {
            config: &self.client.config,
            group: self.group(),
            owner: &self.consumer,
        }
    }

    /// Partitioned mode: compares the partitions this member holds with
    /// its share among the group's live members; starts releasing the
    /// ones it should not hold (their lease goes once what was read from
    /// them is acked), and takes the free ones it should.
    /// Returns whether this member holds exactly its share afterwards.
    pub(super) async fn rebalance(&self, conn: &mut Conn) -> bool {
        let config = &self.client.config;
        let Some(n) = self.ownership.partitions() else {
            return true;
        };
        let members = match partitions::live_members(conn, config, self.group()).await {
            Ok(members) => members,
            Err(e) => {
                tracing::warn!(group = self.group(), error = %e, "could not read the group's members; partitions stay as they are");
                return false;
            }
        };
        let wanted = assigned_partitions(&members, &self.consumer, n);
        let drained: Vec<u32> = {
            let held = self.held.lock();
            let mut owned = self.owned.lock();
            for (p, part) in owned.iter_mut() {
                match (wanted.contains(p), &*part) {
                    (false, Part::Releasing) | (true, Part::Reading | Part::Draining(_)) => {}
                    (false, _) => {
                        tracing::debug!(
                            group = self.group(),
                            partition = p,
                            "releasing a partition to another member"
                        );
                        *part = Part::Releasing;
                    }
                    (true, Part::Releasing) => *part = Part::Reading,
                }
            }
            owned
                .iter()
                .filter(|(p, part)| {
                    **part == Part::Releasing
                        && held
                            .get(&self.events[**p as usize])
                            .is_none_or(HashSet::is_empty)
                })
                .map(|(p, _)| *p)
                .collect()
        };
        let lease = self.lease();
        for p in drained {
            if let Err(e) = lease.release(conn, p).await {
                tracing::warn!(group = self.group(), partition = p, error = %e, "could not release a partition; it frees itself after claim_min_idle");
            }
            self.owned.lock().remove(&p);
            tracing::debug!(group = self.group(), partition = p, "released a partition");
        }
        for p in wanted.iter().copied() {
            if self.owned.lock().contains_key(&p) {
                continue;
            }
            match lease.take(conn, p).await {
                Ok(true) => {
                    tracing::debug!(group = self.group(), partition = p, "took a partition");
                    self.took_over();
                    self.owned
                        .lock()
                        .insert(p, Part::Draining("0-0".to_owned()));
                }
                // Its owner has not let go yet: next round.
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(group = self.group(), partition = p, error = %e, "could not take a partition")
                }
            }
        }
        self.owned.lock().keys().copied().eq(wanted)
    }

    /// Partitioned mode, joining: rebalances until this member holds its
    /// share, as long as the holders keep letting go — it stops waiting
    /// once three of the holders' rebalance rounds in a row brought it no
    /// new partition, or after `claim_min_idle`. A holder lets go of a
    /// partition only once what it read from it is acked, so one busy in
    /// a long handler (or a crashed one, whose lease lapses only after
    /// `claim_min_idle`) does not hold `subscribe` up: it once waited up to
    /// `claim_min_idle`, 30 s by default, for any of them. The reader goes
    /// on rebalancing and takes the rest as they come free.
    pub(super) async fn take_share(&self, conn: &mut Conn) {
        let config = &self.client.config;
        let round = config.block.min(config.claim_interval);
        let deadline = tokio::time::Instant::now() + config.claim_min_idle;
        let every = round / 2;
        let (mut held, mut progress_at) = (0, tokio::time::Instant::now());
        while !self.rebalance(conn).await {
            let now = tokio::time::Instant::now();
            let holds = self.owned.lock().len();
            if holds > held {
                (held, progress_at) = (holds, now);
            }
            if now >= deadline || now.duration_since(progress_at) >= round * 3 {
                tracing::info!(group = self.group(), consumer = %self.consumer, partitions = holds, "joined without its whole share of partitions yet; it takes the rest as their holders let go");
                return;
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Partitioned mode: claims what the group left pending in the
    /// partitions just taken (whatever its idle time: the lease says the
    /// previous owner is gone), in stream order, as many as `slots`
    /// allows; a partition is read once nothing older is left in it.
    pub(super) async fn drain_taken(&self, conn: &mut Conn, slots: &mut Vec<OwnedSemaphorePermit>) {
        let taken: Vec<(u32, String)> = self
            .owned
            .lock()
            .iter()
            .filter_map(|(p, part)| match part {
                Part::Draining(cursor) => Some((*p, cursor.clone())),
                _ => None,
            })
            .collect();
        for (p, mut cursor) in taken {
            let stream = Arc::clone(&self.events[p as usize]);
            let done = self.drain(conn, &stream, &mut cursor, slots).await;
            if let Some(part) = self.owned.lock().get_mut(&p) {
                if matches!(part, Part::Draining(_)) {
                    *part = if done {
                        Part::Reading
                    } else {
                        Part::Draining(cursor)
                    };
                }
            }
        }
    }
}
