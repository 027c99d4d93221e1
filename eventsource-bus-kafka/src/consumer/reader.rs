//! The poll loop: records in while there are free prefetch slots, each
//! checked against its partition's tracker, then handed to the workers,
//! skipped, or dead-lettered; and the periodic commit.

use std::sync::Arc;
use std::time::Duration;

use eventsource_core::driver::{dead_letter, triage, Delivery, Intake, Letter, Settle};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use tokio::sync::OwnedSemaphorePermit;

use super::offsets::{commit_list, Read};
use super::{GroupConsumer, Token};
use crate::client::BACKEND;
use crate::wire;

impl GroupConsumer {
    /// Polls records while there are free slots, and commits on a timer.
    pub(super) async fn poll_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.client.config.commit_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let slot = tokio::select! {
                () = self.core.token().cancelled() => return,
                _ = tick.tick() => { self.commit(CommitMode::Async); continue; }
                slot = Arc::clone(self.core.slots()).acquire_owned() => match slot { Ok(s) => s, Err(_) => return },
            };
            tokio::select! {
                () = self.core.token().cancelled() => return,
                _ = tick.tick() => self.commit(CommitMode::Async),
                received = self.consumer.recv() => match received {
                    Ok(message) => self.accept(&message, slot).await,
                    Err(e) => {
                        tracing::warn!(group = self.group(), error = %e, "kafka consumer error");
                        tokio::select! {
                            () = self.core.token().cancelled() => return,
                            () = tokio::time::sleep(Duration::from_millis(200)) => {}
                        }
                    }
                },
            }
        }
    }

    pub(super) async fn accept(&self, message: &BorrowedMessage<'_>, slot: OwnedSemaphorePermit) {
        let (topic, partition, offset) = (
            message.topic().to_owned(),
            message.partition(),
            message.offset(),
        );
        let read = match self.trackers.lock().get_mut(&(topic.clone(), partition)) {
            Some(tracker) => tracker.seen(offset),
            None => {
                // Fetched before its partition was revoked, returned after:
                // the partition's new owner reads it from the commit.
                tracing::debug!(group = self.group(), %topic, partition, offset, "record of a revoked partition dropped");
                return;
            }
        };
        match read {
            Read::Next => {}
            Read::Again => {
                tracing::debug!(group = self.group(), %topic, partition, offset, "record read twice in one assignment dropped");
                return;
            }
            Read::After { gap_from } => {
                self.gaps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(
                    group = self.group(),
                    %topic,
                    partition,
                    expected = gap_from,
                    got = offset,
                    "kafka records skipped: the broker returned a later offset than the one expected; \
                     records in between were never delivered to this group"
                );
            }
        }
        let key = message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        let headers = wire::headers_as_text(message.headers());
        let decoded = wire::decode(&headers, message.payload());
        let token = Token {
            topic,
            partition,
            offset,
            key,
            _slot: slot,
        };
        let source = || self.source(&token);
        match triage(BACKEND, self.core.subscription(), decoded, source) {
            Intake::Handle(envelope) => self
                .core
                .queue()
                .push_now(Delivery::new(Arc::new(envelope), token)),
            Intake::Skip => self.ack(token).await,
            Intake::DeadLetter(failure) => {
                let payload = message.payload().map(<[u8]>::to_vec).unwrap_or_default();
                let raw = Letter::Raw((headers, payload));
                dead_letter(self, self.core.counters(), token, raw, failure).await;
            }
        }
    }

    pub(super) fn done(&self, topic: &str, partition: i32, offset: i64) {
        if let Some(t) = self.trackers.lock().get_mut(&(topic.to_owned(), partition)) {
            t.pending.remove(&offset);
        }
    }

    pub(super) fn commit(&self, mode: CommitMode) {
        let tpl = commit_list(&self.trackers.lock());
        if tpl.count() == 0 {
            return;
        }
        if let Err(e) = self.consumer.commit(&tpl, mode) {
            tracing::debug!(group = self.group(), error = %e, "kafka commit failed; retried at the next interval");
        }
    }
}
