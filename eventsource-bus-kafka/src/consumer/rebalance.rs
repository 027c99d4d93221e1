//! The rebalance callbacks: revoked partitions are handed over cleanly
//! (unstarted records dropped, handlers waited for, the oldest unfinished
//! offset committed), and `subscribe` learns when the member has joined.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventsource_core::driver::MemberCore;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::Notify;

use super::offsets::{commit_list, Tracker, Trackers};
use super::Token;

/// Hands revoked partitions over cleanly, and tells `subscribe` when the
/// member has joined (with partitions, or none: a standby).
pub(crate) struct MemberContext {
    pub(super) group: String,
    pub(super) trackers: Trackers,
    /// The member's core: its queue, and the group's parked aggregates
    /// (reloaded after each assignment) when the subscription parks them.
    pub(super) core: Arc<MemberCore<Token>>,
    pub(super) assigned: Arc<Notify>,
    /// How long a revoke waits for handlers of revoked partitions.
    pub(super) revoke_wait: Duration,
    /// Set by `stop` once it has committed the member's final offsets:
    /// the callbacks the close runs after it commit nothing and fetch
    /// nothing (see [`Self::revoke`]).
    pub(super) left: AtomicBool,
}

impl ClientContext for MemberContext {}

impl MemberContext {
    /// Before partitions go to another member: drops their records not
    /// yet started (the new owner reads them again from the commit), waits
    /// up to `revoke_wait` for those being handled, then commits the
    /// oldest unfinished offset of each. The new owner starts only after
    /// this returns, so no aggregate runs on two members at once unless a
    /// handler outlasts the wait.
    fn revoke(&self, consumer: &BaseConsumer<Self>, revoked: &TopicPartitionList) {
        let partitions: HashSet<(String, i32)> = revoked
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let dropped: HashSet<(String, i32, i64)> = self
            .core
            .queue()
            .remove_where(|t| partitions.contains(&(t.topic.clone(), t.partition)))
            .into_iter()
            .map(|d| (d.token.topic.clone(), d.token.partition, d.token.offset))
            .collect();
        let handling = || -> usize {
            let trackers = self.trackers.lock();
            partitions
                .iter()
                .filter_map(|p| trackers.get(p).map(|t| (p, t)))
                .map(|((topic, partition), t)| {
                    t.pending
                        .iter()
                        .filter(|o| !dropped.contains(&(topic.clone(), *partition, **o)))
                        .count()
                })
                .sum()
        };
        // A blocking wait inside librdkafka's callback. On a multi-thread
        // runtime `block_in_place` first hands this worker's queued tasks
        // (the handlers we wait for may be among them) to another thread;
        // on a current-thread runtime the wait can only time out.
        let wait = || {
            let deadline = std::time::Instant::now() + self.revoke_wait;
            let mut left = handling();
            while left > 0 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
                left = handling();
            }
            left
        };
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let left = if multi_thread {
            tokio::task::block_in_place(wait)
        } else {
            wait()
        };
        if left > 0 {
            tracing::warn!(group = %self.group, handlers = left, wait = ?self.revoke_wait, "handlers of revoked partitions still running; their records go to the new owner too");
        }
        let mine: HashMap<(String, i32), Tracker> = {
            let mut trackers = self.trackers.lock();
            partitions
                .iter()
                .filter_map(|p| trackers.remove(p).map(|t| (p.clone(), t)))
                .collect()
        };
        // After `stop`, the final offsets are committed already, and the
        // revoke runs inside the close: a commit sent then may reach
        // librdkafka after its group reached its terminal state, which
        // it asserts cannot happen and aborts the process
        // (`rd_kafka_cgrp_terminated: assert:
        // !rd_kafka_assignment_in_progress`, seen once in CI).
        if self.left.load(Ordering::Acquire) {
            return;
        }
        let tpl = commit_list(&mine);
        if tpl.count() > 0 {
            if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
                tracing::warn!(group = %self.group, error = %e, "commit before rebalance failed; those records will be redelivered");
            }
        }
        if !dropped.is_empty() {
            tracing::debug!(group = %self.group, dropped = dropped.len(), "dropped records of revoked partitions not yet started");
        }
    }

    /// After partitions are assigned: starts a tracker for each at the
    /// group's committed offset, so that a first record past it shows as a gap.
    fn assign(&self, consumer: &BaseConsumer<Self>, assigned: &TopicPartitionList) {
        let committed = consumer
            .committed_offsets(assigned.clone(), Duration::from_secs(5))
            .ok();
        let mut trackers = self.trackers.lock();
        for e in assigned.elements() {
            let offset = committed
                .as_ref()
                .and_then(|c| c.find_partition(e.topic(), e.partition()))
                .and_then(|p| match p.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            trackers.insert(
                (e.topic().to_owned(), e.partition()),
                Tracker::assigned(offset),
            );
        }
    }
}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(revoked) = rebalance {
            self.revoke(consumer, revoked);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            if self.left.load(Ordering::Acquire) {
                // An assignment served by the close: nothing will read it.
                return;
            }
            self.assign(consumer, tpl);
            if let Some(parking) = self.core.parking() {
                // Its partitions may come from a member that parked some.
                parking.invalidate();
            }
            // Joined, with partitions or as a standby (more members than
            // partitions): either way the group knows this member now.
            self.assigned.notify_one();
        }
    }
}
