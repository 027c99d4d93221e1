//! The reader: XREADGROUP while there are free prefetch slots, the
//! periodic takeover and rebalance rounds, and the leave's unblocking of a
//! blocked read.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventsource_core::driver::{dead_letter, triage, Delivery, Intake, Letter, Settle};
use tokio::sync::OwnedSemaphorePermit;

use super::partitioned::Part;
use super::{GroupConsumer, Token};
use crate::client::{is_transient, Conn, BACKEND};
use crate::wire;

/// Sets its flag when dropped: on every way out of the reader.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

impl GroupConsumer {
    /// Reads new entries while there are free prefetch slots.
    pub(super) async fn read_loop(self: Arc<Self>, mut conn: Conn) {
        let _ended = SetOnDrop(&self.reader_ended);
        let config = &self.client.config;
        let block_ms = config.block.as_millis().to_string();
        let mut backoff = Duration::from_millis(100);
        // When the reader's client id was last asked for: again after any
        // error (the connection may have been replaced) and every second.
        let mut id_asked: Option<tokio::time::Instant> = None;
        let mut last_claim = tokio::time::Instant::now();
        // The last take-over filled every slot it had: more may be waiting.
        let mut abandoned_left = false;
        let mut active = !self.ownership.single_active();
        let mut lease_checked = tokio::time::Instant::now();
        // With single_active_consumer, right after taking the lease: the
        // XAUTOCLAIM cursor of each stream over the group's pending entries.
        let mut draining: Option<[String; 2]> = None;
        // Partitioned: how often to look at the group's members.
        let rebalance_every = config.block.min(config.claim_interval);
        let mut last_rebalance: Option<tokio::time::Instant> = None;
        // The last read found nothing; the replay stream yielded entries
        // when last read; when it was last read.
        let (mut idle, mut replay_busy) = (true, true);
        let mut replay_read = tokio::time::Instant::now();
        loop {
            if self.ownership.partitions().is_some()
                && last_rebalance.is_none_or(|t| t.elapsed() >= rebalance_every)
            {
                last_rebalance = Some(tokio::time::Instant::now());
                let _settled = self.rebalance(&mut conn).await;
            }
            if self.ownership.single_active()
                && (!active || lease_checked.elapsed() >= config.claim_interval)
            {
                lease_checked = tokio::time::Instant::now();
                let was_active = active;
                active = self.hold_lease(&mut conn).await;
                if !active {
                    tokio::select! {
                        () = self.core.token().cancelled() => return,
                        () = tokio::time::sleep(config.claim_interval) => {}
                    }
                    continue;
                }
                if !was_active {
                    tracing::info!(group = self.group(), consumer = %self.consumer, "this member is now the group's active reader");
                    self.took_over();
                    // Take over everything the previous holder left, in
                    // stream order, before reading anything new.
                    draining = Some(["0-0".to_owned(), "0-0".to_owned()]);
                }
            }
            let Some(mut slots) = self.core.fetch_slots().await else {
                return;
            };
            if let Some(cursors) = draining.as_mut() {
                if self.take_over_all(&mut conn, cursors, &mut slots).await {
                    tracing::info!(
                        group = self.group(),
                        "took over every entry the previous active member left"
                    );
                    draining = None;
                }
                // Read new entries only once nothing older is left.
                continue;
            }
            if self.ownership.partitions().is_some() {
                self.drain_taken(&mut conn, &mut slots).await;
                if slots.is_empty() {
                    continue;
                }
            }
            let streams = self.readable();
            // Every claim_interval — and at once again while the last
            // round filled every free slot: entries handed back by members
            // that left (or a dead member's) may still be waiting, and a
            // member with room takes them now rather than `prefetch` per
            // interval.
            if abandoned_left || last_claim.elapsed() >= config.claim_interval {
                last_claim = tokio::time::Instant::now();
                let offered = slots.len();
                self.take_over(&mut conn, &streams, &mut slots).await;
                abandoned_left = offered > 0 && slots.is_empty();
                if slots.is_empty() {
                    continue;
                }
            }
            if id_asked.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                id_asked = Some(tokio::time::Instant::now());
                let id: redis::RedisResult<i64> =
                    redis::cmd("CLIENT").arg("ID").query_async(&mut conn).await;
                self.reader_id.store(id.unwrap_or(-1), Ordering::Release);
            }
            // A leave cancels, then unblocks: past this check it finds
            // the XREADGROUP blocked and ends it.
            if self.core.token().is_cancelled() {
                return;
            }
            // COUNT applies per stream: split the free slots between the
            // streams read. The replay stream (last) is empty but while an
            // operator replays: under load it is read only every `block`
            // (or while it yields entries), so that it does not take half
            // of each read's slots from the event stream.
            let with_replay =
                replay_busy || idle || streams.len() == 1 || replay_read.elapsed() >= config.block;
            let read = if with_replay {
                replay_read = tokio::time::Instant::now();
                &streams[..]
            } else {
                &streams[..streams.len() - 1]
            };
            let count = slots.len().div_ceil(read.len()).max(1);
            let mut xread = redis::cmd("XREADGROUP");
            xread
                .arg("GROUP")
                .arg(self.group())
                .arg(&self.consumer)
                .arg("COUNT")
                .arg(count)
                .arg("BLOCK")
                .arg(&block_ms)
                .arg("STREAMS");
            for stream in read {
                xread.arg(&**stream);
            }
            for _ in read {
                xread.arg(">");
            }
            // Not cancelled midway: an XREADGROUP whose reply were dropped
            // would leave entries pending until another member claims them.
            let reply: redis::RedisResult<redis::Value> = xread.query_async(&mut conn).await;
            match reply {
                Ok(reply) => {
                    backoff = Duration::from_millis(100);
                    let keys = wire::read_reply(reply);
                    idle = keys.iter().all(|(_, entries)| entries.is_empty());
                    if with_replay {
                        replay_busy = keys
                            .iter()
                            .any(|(key, entries)| **key == *self.replay && !entries.is_empty());
                    }
                    for (key, entries) in keys {
                        let Some(stream) = streams.iter().find(|s| ***s == *key).cloned() else {
                            continue;
                        };
                        for entry in entries {
                            let slot = match slots.pop() {
                                Some(slot) => slot,
                                // Rounded up per stream: wait for a slot for
                                // the extra ones — or, stopping, hold them
                                // unstarted so the leave hands them back.
                                None => tokio::select! {
                                    slot = Arc::clone(self.core.slots()).acquire_owned() => match slot {
                                        Ok(slot) => slot,
                                        Err(_) => return,
                                    },
                                    () = self.core.token().cancelled() => {
                                        self.hold(&stream, &entry.id);
                                        continue;
                                    }
                                },
                            };
                            self.accept(&stream, entry, slot).await;
                        }
                    }
                }
                Err(e) if e.code() == Some("NOGROUP") => {
                    // The server lost the group (restarted without persistence):
                    // recreate it from the start of whatever the stream holds now.
                    tracing::warn!(
                        group = self.group(),
                        "redis consumer group missing, recreating it"
                    );
                    for stream in self.events.iter().chain([&self.replay]) {
                        if let Err(e) = self.create_group(stream, "0").await {
                            tracing::warn!(error = %e, "recreating redis consumer group failed");
                        }
                    }
                }
                Err(e) => {
                    id_asked = None;
                    if !is_transient(&e) {
                        tracing::error!(group = self.group(), error = %e, "XREADGROUP failed");
                    } else {
                        tracing::warn!(group = self.group(), error = %e, ?backoff, "redis unreachable, reader backing off");
                    }
                    tokio::select! {
                        () = self.core.token().cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// The streams to read now: the event stream and the replay stream, or
    /// in partitioned mode the partitions this member reads and the replay
    /// stream.
    pub(super) fn readable(&self) -> Vec<Arc<str>> {
        let mut streams: Vec<Arc<str>> = if self.ownership.partitions().is_some() {
            self.owned
                .lock()
                .iter()
                .filter(|(_, part)| **part == Part::Reading)
                .map(|(p, _)| Arc::clone(&self.events[*p as usize]))
                .collect()
        } else {
            self.events.clone()
        };
        streams.push(Arc::clone(&self.replay));
        streams
    }

    /// Queues an entry for the workers, or acks it at once when the filter
    /// does not select it, or dead-letters it when it does not decode.
    pub(super) async fn accept(
        &self,
        stream: &Arc<str>,
        entry: wire::Entry,
        slot: OwnedSemaphorePermit,
    ) {
        if !self.hold(stream, &entry.id) {
            return; // Already ours (claimed and read in the same round).
        }
        let fields = entry.fields;
        let token = Token {
            stream: Arc::clone(stream),
            id: entry.id,
            _slot: slot,
        };
        let source = || self.source(&token);
        match triage(
            BACKEND,
            self.core.subscription(),
            wire::decode_entry(&fields),
            source,
        ) {
            Intake::Handle(envelope) => self
                .core
                .queue()
                .push_now(Delivery::new(Arc::new(envelope), token)),
            Intake::Skip => self.ack_later(&token.stream, &token.id),
            Intake::DeadLetter(failure) => {
                let raw = Letter::Raw(fields.into_iter().collect());
                dead_letter(self, self.core.counters(), token, raw, failure).await;
            }
        }
    }

    /// Until the reader returns, ends its blocked XREADGROUP with `CLIENT
    /// UNBLOCK` (as if its BLOCK had run out: it reads nothing, so no entry
    /// is left pending by it). Repeated, as the reader may be between two
    /// commands when the first is sent; given up after `block`, which the
    /// reader then waits out.
    pub(super) async fn unblock_reader(&self) {
        let mut conn = self.client.conn.clone();
        let give_up = tokio::time::Instant::now() + self.client.config.block;
        while !self.reader_ended.load(Ordering::Acquire) && tokio::time::Instant::now() < give_up {
            let id = self.reader_id.load(Ordering::Acquire);
            if id >= 0 {
                let _: redis::RedisResult<i64> = redis::cmd("CLIENT")
                    .arg("UNBLOCK")
                    .arg(id)
                    .query_async(&mut conn)
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
