//! The reader: pull requests on the lanes this member reads, as many
//! messages as there are free prefetch slots, with the group's replay
//! consumer read aside, and the ownership rounds (rebalance, the group's
//! lease) between them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use eventsource_core::driver::{dead_letter, triage, Delivery, Intake, Letter, Settle};
use futures::stream::{self, BoxStream, SelectAll};
use futures::StreamExt;
use tokio::sync::OwnedSemaphorePermit;

use super::ownership::{Ownership, Part};
use super::{GroupConsumer, Origin, Token};
use crate::client::BACKEND;
use crate::wire;

/// What an outstanding pull yields: a message of a lane, then its end.
enum Pulled {
    Message(u32, Box<Result<jetstream::Message, async_nats::Error>>),
    End(u32),
}

/// An outstanding pull: the slots it reserved and has not filled, and
/// whether it delivered anything yet.
struct Reserved {
    slots: Vec<OwnedSemaphorePermit>,
    delivered: bool,
}

impl GroupConsumer {
    /// Pulls while there are free prefetch slots. One pull request per lane
    /// read is out at a time; it waits up to `block` and delivers messages
    /// as they come, each into a slot it reserved. The replay consumer is
    /// asked (without waiting) every `block`, and at once again while it
    /// yields messages, so it takes no slots from the events under load
    /// while an operator is not replaying.
    pub(super) async fn read_loop(self: Arc<Self>) {
        let _ended = self.reader_ended.clone().drop_guard();
        let config = &self.client.config;
        let round_every = config.block.min(config.progress_interval);
        let mut pulls: SelectAll<BoxStream<'static, Pulled>> = SelectAll::new();
        // The slots each outstanding pull reserved, by lane.
        let mut reserved: HashMap<u32, Reserved> = HashMap::new();
        // Lanes whose last pull delivered nothing: they get one slot next.
        let mut quiet: HashSet<u32> = HashSet::new();
        let mut last_round: Option<tokio::time::Instant> = None;
        let (mut replay_busy, mut replay_read) = (true, None::<tokio::time::Instant>);
        let mut backoff = Duration::from_millis(100);
        // Where the next share of slots starts: lanes take turns, so that
        // with fewer slots than lanes none waits for good.
        let mut turn = 0u32;
        while !self.core.token().is_cancelled() {
            if last_round.is_none_or(|t| t.elapsed() >= round_every) {
                last_round = Some(tokio::time::Instant::now());
                self.ownership_round(&reserved.keys().copied().collect())
                    .await;
            }
            let mut idle: Vec<u32> = self
                .readable()
                .into_iter()
                .filter(|l| !reserved.contains_key(l))
                .collect();
            let first = idle.iter().position(|l| *l >= turn).unwrap_or(0);
            idle.rotate_left(first);
            let replay_due = self.reads_replay()
                && (replay_busy || replay_read.is_none_or(|t| t.elapsed() >= config.block));
            if idle.is_empty() && !replay_due {
                tokio::select! {
                    () = self.core.token().cancelled() => break,
                    item = pulls.next(), if !pulls.is_empty() => {
                        self.on_pulled(item, &mut reserved, &mut quiet).await;
                    }
                    () = tokio::time::sleep(round_every) => {}
                }
                continue;
            }
            // Slots for the idle lanes: at least one, about half the
            // prefetch while the workers have a backlog.
            let mut slots = tokio::select! {
                slots = self.core.fetch_slots() => match slots {
                    Some(slots) => slots,
                    None => break,
                },
                item = pulls.next(), if !pulls.is_empty() => {
                    self.on_pulled(item, &mut reserved, &mut quiet).await;
                    continue;
                }
                () = tokio::time::sleep(round_every) => continue,
            };
            if replay_due {
                replay_read = Some(tokio::time::Instant::now());
                let before = slots.len();
                match self.replay.fetch().max_messages(before).messages().await {
                    Ok(batch) => {
                        let mut batch = batch;
                        while let Some(m) = batch.next().await {
                            self.take(Origin::Replay, m, slots.pop()).await;
                        }
                        replay_busy = slots.len() < before;
                    }
                    Err(e) => {
                        replay_busy = false;
                        tracing::warn!(group = self.group(), error = %e, "could not pull from the group's replay stream");
                    }
                }
            }
            let mut failed = false;
            let given = shares(&idle, &quiet, slots.len());
            if let Some((last, _)) = given.last() {
                turn = last + 1;
            }
            for (lane, share) in given {
                let batch = self.lanes[lane as usize]
                    .batch()
                    .max_messages(share)
                    .expires(config.block)
                    .messages()
                    .await;
                match batch {
                    Ok(batch) => {
                        reserved.insert(
                            lane,
                            Reserved {
                                slots: slots.split_off(slots.len() - share),
                                delivered: false,
                            },
                        );
                        pulls.push(
                            batch
                                .map(move |m| Pulled::Message(lane, Box::new(m)))
                                .chain(stream::once(async move { Pulled::End(lane) }))
                                .boxed(),
                        );
                    }
                    Err(e) => {
                        failed = true;
                        tracing::warn!(group = self.group(), lane, error = %e, ?backoff, "nats pull failed, reader backing off");
                    }
                }
            }
            // Slots no lane took go back.
            drop(slots);
            if failed {
                tokio::select! {
                    () = self.core.token().cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            } else {
                backoff = Duration::from_millis(100);
            }
        }
        // Stopping: what the pulls still out deliver is held, to be handed
        // back with the rest in stream order; they end within `block`.
        while let Some(item) = pulls.next().await {
            self.on_pulled(Some(item), &mut reserved, &mut quiet).await;
        }
    }

    /// The lanes to pull from now.
    fn readable(&self) -> Vec<u32> {
        let now = tokio::time::Instant::now();
        self.owned
            .lock()
            .iter()
            .filter(|(_, o)| match o.part {
                Part::Reading => true,
                Part::Draining(until) => until <= now,
                Part::Releasing => false,
            })
            .map(|(lane, _)| *lane)
            .collect()
    }

    /// Whether this member reads the group's replay stream: it always
    /// does but as a standby of a single active group.
    fn reads_replay(&self) -> bool {
        self.ownership != Ownership::SingleActive || !self.owned.lock().is_empty()
    }

    /// Between pulls: rebalances the partitions, or checks the group's
    /// lease. (A drained lane is read once its instant passed: `readable`.)
    async fn ownership_round(&self, pulling: &HashSet<u32>) {
        match self.ownership {
            Ownership::Partitioned(_) => {
                self.rebalance(pulling).await;
            }
            Ownership::SingleActive => {
                self.hold_group_lease().await;
            }
            Ownership::Shared => {}
        }
    }

    /// One item of the outstanding pulls.
    async fn on_pulled(
        &self,
        item: Option<Pulled>,
        reserved: &mut HashMap<u32, Reserved>,
        quiet: &mut HashSet<u32>,
    ) {
        match item {
            Some(Pulled::Message(lane, message)) => {
                quiet.remove(&lane);
                let slot = reserved.get_mut(&lane).and_then(|r| {
                    r.delivered = true;
                    r.slots.pop()
                });
                // A lane this member lost meanwhile: its new owner gets it.
                let slot = slot.filter(|_| self.owned.lock().contains_key(&lane));
                self.take(Origin::Events(lane), *message, slot).await;
            }
            // Nothing came: next time it gets one slot. (The slots it did
            // not fill go back as `reserved` drops them.)
            Some(Pulled::End(lane)) if reserved.remove(&lane).is_some_and(|r| !r.delivered) => {
                quiet.insert(lane);
            }
            Some(Pulled::End(_)) => {}
            None => {}
        }
    }

    /// Takes one pulled message into `slot`. Without a slot it is not
    /// this member's to handle: stopping, it is held unstarted, for the
    /// leave to hand back in stream order with the rest (a NAK now would
    /// put it ahead of older ones still held); from a lane this member
    /// lost, it is left alone, and comes again to the lane's new owner
    /// after `ack_wait`, in order with what this member held.
    async fn take(
        &self,
        origin: Origin,
        message: Result<jetstream::Message, async_nats::Error>,
        slot: Option<OwnedSemaphorePermit>,
    ) {
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(group = self.group(), error = %e, "a nats pull request ended with an error");
                return;
            }
        };
        let Some(reply) = message.reply.clone() else {
            return;
        };
        let seq = message.info().map_or(0, |i| i.stream_sequence);
        match slot {
            _ if self.core.token().is_cancelled() => self.hold(&reply, origin, seq),
            Some(slot) => self.accept(origin, message, reply, seq, slot).await,
            None => {}
        }
    }

    /// Queues a message for the workers, or acks it at once when the
    /// filter does not select it, or dead-letters it when it does not decode.
    async fn accept(
        &self,
        origin: Origin,
        message: jetstream::Message,
        reply: async_nats::Subject,
        seq: u64,
        slot: OwnedSemaphorePermit,
    ) {
        self.hold(&reply, origin, seq);
        let token = Token {
            origin,
            reply,
            seq,
            _slot: slot,
        };
        let source = || self.source(&token);
        match triage(
            BACKEND,
            self.core.subscription(),
            wire::decode(&message.payload),
            source,
        ) {
            Intake::Handle(envelope) => self
                .core
                .queue()
                .push_now(Delivery::new(Arc::new(envelope), token)),
            Intake::Skip => self.ack(token).await,
            Intake::DeadLetter(failure) => {
                let raw = (
                    wire::headers_as_text(message.headers.as_ref()),
                    message.payload.to_vec(),
                );
                dead_letter(self, self.core.counters(), token, Letter::Raw(raw), failure).await;
            }
        }
    }
}

/// How `slots` free slots go to the `idle` lanes: a quiet lane (its last
/// pull brought nothing) one, the others an even share of the rest; a
/// lane gets none when there are fewer slots than lanes (it waits for the
/// next round). Every share is at least 1.
fn shares(idle: &[u32], quiet: &HashSet<u32>, slots: usize) -> Vec<(u32, usize)> {
    let mut out = Vec::new();
    let mut left = slots;
    let (quiet_lanes, busy): (Vec<u32>, Vec<u32>) = idle.iter().partition(|l| quiet.contains(l));
    for lane in quiet_lanes.iter().copied() {
        if left == 0 || (!busy.is_empty() && left <= busy.len()) {
            break;
        }
        out.push((lane, 1));
        left -= 1;
    }
    if !busy.is_empty() && left > 0 {
        let each = left / busy.len();
        let mut extra = left % busy.len();
        for lane in busy {
            let share = each + usize::from(extra > 0);
            extra = extra.saturating_sub(1);
            if share == 0 {
                break;
            }
            out.push((lane, share));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::shares;
    use std::collections::HashSet;

    #[test]
    fn busy_lanes_share_the_slots_and_quiet_ones_get_one() {
        let none = HashSet::new();
        assert_eq!(shares(&[0], &none, 16), [(0, 16)]);
        assert_eq!(shares(&[0, 1, 2], &none, 8), [(0, 3), (1, 3), (2, 2)]);
        assert_eq!(shares(&[0, 1, 2], &none, 2), [(0, 1), (1, 1)]);
        let quiet: HashSet<u32> = [1, 2].into();
        assert_eq!(shares(&[0, 1, 2], &quiet, 10), [(1, 1), (2, 1), (0, 8)]);
        assert_eq!(shares(&[1, 2], &quiet, 1), [(1, 1)]);
        // Fewer slots than busy lanes: quiet lanes wait.
        assert_eq!(shares(&[0, 1, 3], &[3].into(), 2), [(0, 1), (1, 1)]);
        let total: usize = shares(&[0, 1, 2, 3], &quiet, 7)
            .iter()
            .map(|(_, n)| n)
            .sum();
        assert_eq!(total, 7);
    }
}
