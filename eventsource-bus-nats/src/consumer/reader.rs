//! The reader: pull requests on the lanes this member reads, as many
//! messages as there are free prefetch slots, each lane's on its standing
//! inbox (`pull.rs`), with the group's replay consumer read aside, and the
//! ownership rounds (rebalance, the group's lease) between them.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::Message;
use eventsource_core::driver::{dead_letter, triage, Delivery, Intake, Letter, Settle};
use futures::stream::{self, BoxStream, SelectAll};
use futures::{FutureExt, StreamExt};
use tokio::sync::OwnedSemaphorePermit;

use super::ownership::{Ownership, Part};
use super::pull::{stream_sequence, Inbound, LanePull, AT_MOST};
use super::read_ahead::ReadAhead;
use super::{GroupConsumer, Origin, Token};
use crate::client::BACKEND;
use crate::wire;

/// What the lanes' inboxes yield: a lane's message, or `None` when its
/// inbox closed (the lane subscribes again at its next pull).
type Inboxes = SelectAll<BoxStream<'static, (u32, Option<Message>)>>;

impl GroupConsumer {
    /// Pulls while there are free prefetch slots, as far ahead of the
    /// workers as their pace calls for (`ReadAhead`), in requests of at
    /// most `AT_MOST` while the handlers are slow (`LanePull`,
    /// `ReadAhead::request_at_most`); a request waits up to
    /// `block` and delivers messages as they come, each into a slot it
    /// reserved. The replay consumer is asked (without waiting) every
    /// `block`, and at once again while it yields messages, so it takes no
    /// slots from the events under load while an operator is not
    /// replaying.
    pub(super) async fn read_loop(self: Arc<Self>) {
        let _ended = self.reader_ended.clone().drop_guard();
        let config = &self.client.config;
        let round_every = config.block.min(config.progress_interval);
        let mut inboxes: Inboxes = SelectAll::new();
        // Each lane's requests, from its first pull on.
        let mut lanes: HashMap<u32, LanePull> = HashMap::new();
        let mut last_round: Option<tokio::time::Instant> = None;
        let (mut replay_busy, mut replay_read) = (true, None::<tokio::time::Instant>);
        let mut backoff = Duration::from_millis(100);
        // Where the next share of slots starts: lanes take turns, so that
        // with fewer slots than lanes none waits for good.
        let mut turn = 0u32;
        let mut ahead = ReadAhead::new(AT_MOST, config.prefetch, tokio::time::Instant::now());
        while !self.core.token().is_cancelled() {
            if last_round.is_none_or(|t| t.elapsed() >= round_every) {
                last_round = Some(tokio::time::Instant::now());
                self.ownership_round(&pulling(&lanes)).await;
            }
            let now = tokio::time::Instant::now();
            for pull in lanes.values_mut() {
                pull.expire(now);
            }
            // Enabled before the backlog is looked at, so that the
            // workers running dry in between is not missed.
            let dry = self.core.queue().ran_dry();
            tokio::pin!(dry);
            dry.as_mut().enable();
            let mut hungry: Vec<u32> = self
                .readable()
                .into_iter()
                .filter(|l| lanes.get(l).is_none_or(LanePull::may_ask))
                .collect();
            // Read far enough ahead already (`ReadAhead::worth_asking`):
            // what arrives, or the workers running dry, makes room.
            let room = self.room(&mut ahead, &lanes);
            let held_back = !hungry.is_empty() && !ahead.worth_asking(room);
            if held_back {
                hungry.clear();
            }
            let first = hungry.iter().position(|l| *l >= turn).unwrap_or(0);
            hungry.rotate_left(first);
            let replay_due = self.reads_replay()
                && (replay_busy || replay_read.is_none_or(|t| t.elapsed() >= config.block));
            if hungry.is_empty() && !replay_due {
                tokio::select! {
                    () = self.core.token().cancelled() => break,
                    item = inboxes.next(), if !inboxes.is_empty() => {
                        self.on_burst(item, &mut lanes, &mut inboxes).await;
                    }
                    () = &mut dry, if held_back => {}
                    () = tokio::time::sleep(round_every) => {}
                }
                continue;
            }
            // Slots for the hungry lanes: at least one, about half the
            // prefetch while the workers have a backlog.
            let mut slots = tokio::select! {
                slots = self.core.fetch_slots() => match slots {
                    Some(slots) => slots,
                    None => break,
                },
                item = inboxes.next(), if !inboxes.is_empty() => {
                    self.on_burst(item, &mut lanes, &mut inboxes).await;
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
                            match m {
                                Ok(m) => self.take(Origin::Replay, m.message, slots.pop()).await,
                                Err(e) => {
                                    tracing::warn!(group = self.group(), error = %e, "a pull from the group's replay stream ended with an error");
                                }
                            }
                        }
                        replay_busy = slots.len() < before;
                    }
                    Err(e) => {
                        replay_busy = false;
                        tracing::warn!(group = self.group(), error = %e, "could not pull from the group's replay stream");
                    }
                }
            }
            // No further ahead than the workers' pace calls for.
            slots.truncate(self.room(&mut ahead, &lanes));
            let mut failed = false;
            let quiet = |l: u32| lanes.get(&l).is_some_and(LanePull::quiet);
            let given = shares(&hungry, quiet, slots.len());
            if let Some((last, _)) = given.last() {
                turn = last + 1;
            }
            for (lane, share) in given {
                let share = share.min(ahead.request_at_most());
                let asked = slots.split_off(slots.len() - share);
                if let Err(e) = self.request(lane, asked, &mut lanes, &mut inboxes).await {
                    failed = true;
                    tracing::warn!(group = self.group(), lane, error = %e, ?backoff, "nats pull failed, reader backing off");
                }
            }
            // Slots no lane took (or beyond a request's most) go back.
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
        // Stopping: what the requests still out deliver is held, to be
        // handed back with the rest in stream order; they end within
        // `block` (or, unheard, its grace).
        while let Some(ends) = lanes.values().filter_map(LanePull::ends).max() {
            tokio::select! {
                item = inboxes.next() => match item {
                    Some(_) => self.on_inbound(item, &mut lanes).await,
                    None => break,
                },
                () = tokio::time::sleep_until(ends) => {
                    for pull in lanes.values_mut() {
                        pull.expire(ends);
                    }
                }
            }
        }
    }

    /// How many more messages this member may ask for now: its read-ahead
    /// depth less what it has asked for and not received, and what waits
    /// for its workers.
    fn room(&self, ahead: &mut ReadAhead, lanes: &HashMap<u32, LanePull>) -> usize {
        let owed: usize = lanes.values().map(LanePull::owed).sum();
        let finished = self.finished.load(Ordering::Relaxed);
        let depth = ahead.depth(finished, tokio::time::Instant::now());
        depth.saturating_sub(owed + self.core.queue().backlog())
    }

    /// Sends `lane` a pull request for one message per slot, subscribing
    /// its inbox first if it has none.
    async fn request(
        &self,
        lane: u32,
        slots: Vec<OwnedSemaphorePermit>,
        lanes: &mut HashMap<u32, LanePull>,
        inboxes: &mut Inboxes,
    ) -> Result<(), async_nats::Error> {
        let nats = &self.client.nats;
        let pull = match lanes.entry(lane) {
            Entry::Occupied(pull) => pull.into_mut(),
            Entry::Vacant(vacant) => {
                let inbox: async_nats::Subject = nats.new_inbox().into();
                let subscriber = nats.subscribe(inbox.clone()).await?;
                inboxes.push(
                    subscriber
                        .map(move |m| (lane, Some(m)))
                        .chain(stream::once(async move { (lane, None) }))
                        .boxed(),
                );
                let info = self.lanes[lane as usize].cached_info();
                vacant.insert(LanePull::new(&info.stream_name, &info.name, inbox))
            }
        };
        pull.request(nats, slots, self.client.config.block).await?;
        Ok(())
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

    /// One item of the lanes' inboxes, then those already there behind
    /// it (up to a request's most), without going round the loop for
    /// each: a burst's messages are taken at the cost of one look at the
    /// lanes, one timer and one count of the room, not one per message.
    async fn on_burst(
        &self,
        first: Option<(u32, Option<Message>)>,
        lanes: &mut HashMap<u32, LanePull>,
        inboxes: &mut Inboxes,
    ) {
        self.on_inbound(first, lanes).await;
        for _ in 1..AT_MOST {
            // What is there already, without waiting (the loop's
            // `select!` polls the inboxes again before it sleeps).
            match inboxes.next().now_or_never() {
                Some(Some(item)) => self.on_inbound(Some(item), lanes).await,
                Some(None) | None => break,
            }
        }
    }

    /// One item of the lanes' inboxes.
    async fn on_inbound(
        &self,
        item: Option<(u32, Option<Message>)>,
        lanes: &mut HashMap<u32, LanePull>,
    ) {
        let Some((lane, message)) = item else {
            return;
        };
        let Some(message) = message else {
            // Its inbox closed: the slots it held go back; the next pull
            // subscribes again.
            lanes.remove(&lane);
            return;
        };
        let Some(pull) = lanes.get_mut(&lane) else {
            return;
        };
        match pull.on(message) {
            Inbound::Message(message, slot) => {
                // A lane this member lost meanwhile: its new owner gets it.
                let slot = if self.owned.lock().contains_key(&lane) {
                    slot.or_else(|| self.core.try_slot())
                } else {
                    None
                };
                self.take(Origin::Events(lane), message, slot).await;
            }
            Inbound::Ended | Inbound::Nothing => {}
        }
    }

    /// Takes one pulled message into `slot`. Without a slot it is not
    /// this member's to handle: stopping, it is held unstarted, for the
    /// leave to hand back in stream order with the rest (a NAK now would
    /// put it ahead of older ones still held); from a lane this member
    /// lost, it is left alone, and comes again to the lane's new owner
    /// after `ack_wait`, in order with what this member held.
    async fn take(&self, origin: Origin, message: Message, slot: Option<OwnedSemaphorePermit>) {
        let Some(reply) = message.reply.clone() else {
            return;
        };
        let seq = stream_sequence(&reply).unwrap_or(0);
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
        message: Message,
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

/// The lanes with a request out.
fn pulling(lanes: &HashMap<u32, LanePull>) -> HashSet<u32> {
    lanes
        .iter()
        .filter(|(_, pull)| pull.pulling())
        .map(|(lane, _)| *lane)
        .collect()
}

/// How `slots` free slots go to the `hungry` lanes: a `quiet` lane (its
/// last request brought nothing) one, the others an even share of the rest; a
/// lane gets none when there are fewer slots than lanes (it waits for the
/// next round). Every share is at least 1.
fn shares(hungry: &[u32], quiet: impl Fn(u32) -> bool, slots: usize) -> Vec<(u32, usize)> {
    let mut out = Vec::new();
    let mut left = slots;
    let (quiet_lanes, busy): (Vec<u32>, Vec<u32>) = hungry.iter().partition(|l| quiet(**l));
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

    #[test]
    fn busy_lanes_share_the_slots_and_quiet_ones_get_one() {
        let none = |_| false;
        assert_eq!(shares(&[0], none, 16), [(0, 16)]);
        assert_eq!(shares(&[0, 1, 2], none, 8), [(0, 3), (1, 3), (2, 2)]);
        assert_eq!(shares(&[0, 1, 2], none, 2), [(0, 1), (1, 1)]);
        let quiet = |l| [1, 2].contains(&l);
        assert_eq!(shares(&[0, 1, 2], quiet, 10), [(1, 1), (2, 1), (0, 8)]);
        assert_eq!(shares(&[1, 2], quiet, 1), [(1, 1)]);
        // Fewer slots than busy lanes: quiet lanes wait.
        assert_eq!(shares(&[0, 1, 3], |l| l == 3, 2), [(0, 1), (1, 1)]);
        let total: usize = shares(&[0, 1, 2, 3], quiet, 7).iter().map(|(_, n)| n).sum();
        assert_eq!(total, 7);
    }
}
