//! The reader: pull requests for as many messages as there are free
//! prefetch slots, on the events stream's durable consumer, with the
//! group's replay consumer read aside.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use eventsource_core::driver::{dead_letter, triage, Delivery, Intake, Letter, Settle};
use futures::StreamExt;
use tokio::sync::OwnedSemaphorePermit;

use super::{GroupConsumer, Origin, Token};
use crate::client::BACKEND;
use crate::wire;

impl GroupConsumer {
    /// Pulls while there are free prefetch slots. A pull request waits
    /// up to `block` and delivers messages as they come; the replay
    /// consumer is asked (without waiting) every `block`, and at once
    /// again while it yields messages, so it takes no slots from the
    /// events under load while an operator is not replaying.
    pub(super) async fn read_loop(self: Arc<Self>) {
        let config = &self.client.config;
        let mut backoff = Duration::from_millis(100);
        let mut replay_busy = true;
        let mut replay_read: Option<tokio::time::Instant> = None;
        loop {
            let Some(mut slots) = self.core.fetch_slots().await else {
                return;
            };
            if replay_busy || replay_read.is_none_or(|t| t.elapsed() >= config.block) {
                replay_read = Some(tokio::time::Instant::now());
                let before = slots.len();
                match self
                    .replay
                    .fetch()
                    .max_messages(slots.len())
                    .messages()
                    .await
                {
                    Ok(batch) => {
                        self.take(Origin::Replay, batch, &mut slots).await;
                        replay_busy = slots.len() < before;
                    }
                    Err(e) => {
                        replay_busy = false;
                        tracing::warn!(group = self.group(), error = %e, "could not pull from the group's replay stream");
                    }
                }
                if slots.is_empty() {
                    continue;
                }
            }
            let pulled = self
                .events
                .batch()
                .max_messages(slots.len())
                .expires(config.block)
                .messages()
                .await;
            match pulled {
                Ok(batch) => {
                    backoff = Duration::from_millis(100);
                    self.take(Origin::Events, batch, &mut slots).await;
                }
                Err(e) => {
                    tracing::warn!(group = self.group(), error = %e, ?backoff, "nats pull failed, reader backing off");
                    tokio::select! {
                        () = self.core.token().cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            if self.core.token().is_cancelled() {
                return;
            }
        }
    }

    /// Takes what one pull request delivers, to its end: each message into
    /// a slot — or, once the member stops, handed back at once (the
    /// request may still deliver until it expires, and what it delivers is
    /// this member's until acked or NAKed).
    async fn take<S>(&self, origin: Origin, batch: S, slots: &mut Vec<OwnedSemaphorePermit>)
    where
        S: futures::Stream<Item = Result<jetstream::Message, async_nats::Error>> + Unpin,
    {
        let mut batch = batch;
        while let Some(message) = batch.next().await {
            let message = match message {
                Ok(message) => message,
                Err(e) => {
                    tracing::warn!(group = self.group(), error = %e, "a nats pull request ended with an error");
                    return;
                }
            };
            let Some(reply) = message.reply.as_ref().map(|r| r.to_string()) else {
                continue;
            };
            let seq = message.info().map_or(0, |i| i.stream_sequence);
            match slots.pop() {
                Some(slot) if !self.core.token().is_cancelled() => {
                    self.accept(origin, message, reply, seq, slot).await;
                }
                _ => {
                    self.answer(&reply, b"-NAK").await;
                }
            }
        }
    }

    /// Queues a message for the workers, or acks it at once when the
    /// filter does not select it, or dead-letters it when it does not decode.
    async fn accept(
        &self,
        origin: Origin,
        message: jetstream::Message,
        reply: String,
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
