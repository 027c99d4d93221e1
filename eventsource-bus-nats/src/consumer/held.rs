//! The messages a member holds unacked: recorded as pulled, kept from
//! redelivery every `progress_interval` (`+WIP`, which restarts their
//! `ack_wait`), released when settled, and handed back (`-NAK`, delivered
//! again at once, to any member) when the member leaves without finishing
//! them.

use async_nats::Subject;
use bytes_of::{NAK, PROGRESS};
use futures::StreamExt;

use super::{GroupConsumer, Origin};
use crate::membership;

/// The bodies JetStream reads on a message's reply subject.
mod bytes_of {
    pub(super) const PROGRESS: &[u8] = b"+WIP";
    pub(super) const NAK: &[u8] = b"-NAK";
}

impl GroupConsumer {
    /// Records a message pulled and not yet settled. (A message the
    /// server delivered again while still held replaces its older reply
    /// subject: the newer delivery is the one to answer.)
    pub(super) fn hold(&self, reply: &Subject, origin: Origin, seq: u64) {
        self.held.lock().insert((origin, seq), reply.clone());
    }

    /// Forgets a settled message.
    pub(super) fn release(&self, origin: Origin, seq: u64) {
        self.held.lock().remove(&(origin, seq));
        self.finished
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Sends `body` on `reply` (an ack, a progress or a NAK).
    pub(super) async fn answer(&self, reply: &Subject, body: &'static [u8]) -> bool {
        let sent = self
            .client
            .nats
            .publish(reply.clone(), bytes::Bytes::from_static(body))
            .await;
        if let Err(e) = &sent {
            tracing::warn!(group = self.group(), error = %e, "could not answer a message; it is delivered again after ack_wait");
        }
        sent.is_ok()
    }

    /// Hands back the messages this member holds but will not finish (read
    /// ahead and never started, or cut off at shutdown): a NAK each, in
    /// stream order, so the server delivers them again at once, in the
    /// order they were published.
    ///
    /// The server queues NAKed messages for redelivery in the order the
    /// NAKs come, behind any it queued before. So where order across
    /// members counts, this member first takes what an earlier leaver
    /// handed back and nobody pulled yet (it comes before the lane's new
    /// messages): with it in the same sorted hand-back, the queue is in
    /// stream order again.
    pub(super) async fn hand_back(&self) {
        if self.ownership.ordered() {
            self.take_handed_back().await;
        }
        // In (origin, sequence) order: the map's own.
        let held = std::mem::take(&mut *self.held.lock());
        for reply in held.values() {
            self.answer(reply, NAK).await;
        }
        if !held.is_empty() {
            // The NAKs go out before the member's connection is left alone.
            let _ = self.client.nats.flush().await;
            tracing::debug!(
                group = self.group(),
                messages = held.len(),
                "handed unfinished messages back to the group"
            );
        }
    }

    /// Pulls, without waiting, from each lane this member holds until a
    /// pull brings nothing or a message delivered for the first time (the
    /// server hands out what waits for redelivery before new messages, so
    /// then none waits any more), holding everything it brings.
    async fn take_handed_back(&self) {
        /// Bounds the pulls (a lane of a million handed-back messages is
        /// handed back unsorted beyond this, as before).
        const AT_MOST: usize = 10_000;
        let lanes: Vec<u32> = self.owned.lock().keys().copied().collect();
        for lane in lanes {
            let mut taken = 0;
            let mut fresh = false;
            while !fresh && taken < AT_MOST {
                let batch = self.lanes[lane as usize]
                    .fetch()
                    .max_messages(256)
                    .messages()
                    .await;
                let mut batch = match batch {
                    Ok(batch) => batch,
                    Err(e) => {
                        tracing::warn!(group = self.group(), lane, error = %e, "could not collect handed-back messages before leaving; they may come again out of order");
                        break;
                    }
                };
                let before = taken;
                while let Some(Ok(message)) = batch.next().await {
                    let (Some(reply), Ok(info)) = (message.reply.clone(), message.info()) else {
                        continue;
                    };
                    fresh |= info.delivered == 1;
                    self.hold(&reply, Origin::Events(lane), info.stream_sequence);
                    taken += 1;
                }
                if taken == before {
                    break;
                }
            }
        }
    }

    /// Every `progress_interval`: renews this member in its group's
    /// register, and restarts the `ack_wait` of every message it holds, so
    /// that the server gives others only a dead member's messages.
    pub(super) async fn progress_loop(self: std::sync::Arc<Self>) {
        let every = self.client.config.progress_interval;
        let filter = self.core.subscription().filter().canonical();
        loop {
            tokio::select! {
                () = self.core.token().cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            self.renew_leases().await;
            if let Err(e) = membership::join(
                &self.client,
                &self.register,
                self.group(),
                &self.member,
                &filter,
                true,
            )
            .await
            {
                tracing::error!(group = self.group(), error = %e, "could not renew this member in its group's register");
            }
            let held: Vec<Subject> = self.held.lock().values().cloned().collect();
            for reply in &held {
                self.answer(reply, PROGRESS).await;
            }
        }
    }
}
