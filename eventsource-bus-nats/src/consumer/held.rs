//! The messages a member holds unacked: recorded as pulled, kept from
//! redelivery every `progress_interval` (`+WIP`, which restarts their
//! `ack_wait`), released when settled, and handed back (`-NAK`, delivered
//! again at once, to any member) when the member leaves without finishing
//! them.

use bytes_of::{NAK, PROGRESS};

use super::{GroupConsumer, Origin};
use crate::membership;

/// The bodies JetStream reads on a message's reply subject.
mod bytes_of {
    pub(super) const PROGRESS: &[u8] = b"+WIP";
    pub(super) const NAK: &[u8] = b"-NAK";
}

impl GroupConsumer {
    pub(super) fn hold(&self, reply: &str, origin: Origin, seq: u64) {
        self.held.lock().insert(reply.to_owned(), (origin, seq));
    }

    pub(super) fn release(&self, reply: &str) {
        self.held.lock().remove(reply);
    }

    /// Sends `body` on `reply` (an ack, a progress or a NAK).
    pub(super) async fn answer(&self, reply: &str, body: &'static [u8]) -> bool {
        let sent = self
            .client
            .nats
            .publish(reply.to_owned(), body.into())
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
    pub(super) async fn hand_back(&self) {
        let mut held: Vec<(String, (Origin, u64))> = self.held.lock().drain().collect();
        held.sort_by_key(|(_, at)| *at);
        for (reply, _) in &held {
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
            let held: Vec<String> = self.held.lock().keys().cloned().collect();
            for reply in &held {
                self.answer(reply, PROGRESS).await;
            }
        }
    }
}
