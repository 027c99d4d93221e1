//! The consume loop: the member's own connection consuming the group's
//! queue (basic.qos = prefetch), each delivery handed to the workers,
//! skipped or dead-lettered, and reconnection with backoff.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use eventsource_core::driver::{dead_letter, triage, Delivery, Intake, Letter, Settle};
use eventsource_core::Result;
use futures::StreamExt;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;

use super::partitioned::{Outstanding, Owned};
use super::{GroupConsumer, Token};
use crate::client::{amqp_err, short, Session, BACKEND};
use crate::dlq::RawMessage;
use crate::wire;

impl GroupConsumer {
    /// Consumes until stopped; on a lost connection, reconnects with
    /// backoff, declares the topology again and resumes.
    pub(super) async fn consume_loop(self: Arc<Self>, first: Session) {
        let mut next_session = Some(first);
        let mut backoff = Duration::from_millis(200);
        loop {
            let session = match next_session.take() {
                Some(s) => s,
                None => match self.reconnect(&mut backoff).await {
                    Some(s) => s,
                    None => return, // stopped
                },
            };
            let channel = session.channel.clone();
            if let Some(old) = self.session.lock().await.replace(session) {
                old.close().await;
            }
            match self.consume(&channel).await {
                Ok(()) => return, // stopped
                Err(e) => {
                    tracing::warn!(group = self.group(), error = %e, "rabbitmq consumer lost its channel");
                    // What the dead channel delivered goes back to the queue on
                    // the broker; the local copies must not be handled twice.
                    let dropped = self.core.queue().drain().len();
                    if dropped > 0 {
                        tracing::debug!(dropped, "dropped local copies of requeued messages");
                    }
                }
            }
        }
    }

    pub(super) async fn consume(&self, channel: &lapin::Channel) -> Result<()> {
        let queue = self.client.config.queue(self.group());
        // Bounded: a broker that never answers makes this a lost channel,
        // and the loop reconnects.
        let consume = channel.basic_consume(
            short("queue", &queue)?,
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        );
        let timeout = self.client.config.connect_timeout;
        let mut consumer = tokio::time::timeout(timeout, consume)
            .await
            .map_err(|_| eventsource_core::Error::Timeout {
                operation: format!("rabbitmq: consuming `{queue}`"),
                after: timeout,
            })?
            .map_err(|e| amqp_err(format!("consuming `{queue}`"), e))?;
        let mut fresh = true;
        loop {
            tokio::select! {
                () = self.core.token().cancelled() => {
                    self.hold_until_closed(consumer);
                    return Ok(());
                }
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        if std::mem::take(&mut fresh) {
                            // Active now: the previous active member has gone.
                            self.took_over();
                        }
                        self.accept(delivery, None).await;
                    }
                    Some(Err(e)) => return Err(amqp_err(format!("consuming `{queue}`"), e)),
                    None => return Err(eventsource_core::Error::backend(BACKEND, format!("consuming `{queue}`"), "the broker cancelled the consumer")),
                },
            }
        }
    }

    /// Whether deliveries of partition `p` from the channel counted by
    /// `outstanding` are still taken: the partition is not being released
    /// and that channel is its current one here (not one lost with an
    /// earlier connection).
    pub(super) fn takes_from(
        &self,
        owned: &BTreeMap<u32, Owned>,
        p: u32,
        outstanding: &Arc<AtomicUsize>,
    ) -> bool {
        owned
            .get(&p)
            .is_some_and(|o| !o.releasing && Arc::ptr_eq(&o.outstanding, outstanding))
    }

    /// Queues a delivery for the workers, or acks it at once when the
    /// filter does not select it, or dead-letters it when it does not
    /// decode. `partition`: where it came from, in partitioned mode, and
    /// the count of that channel's outstanding messages.
    pub(super) async fn accept(
        &self,
        delivery: lapin::message::Delivery,
        partition: Option<(u32, &Arc<AtomicUsize>)>,
    ) {
        let decoded = wire::decode(&delivery.properties, &delivery.data);
        let mut token = Token {
            acker: delivery.acker,
            routing_key: delivery.routing_key.as_str().to_owned(),
            partition: None,
        };
        let source = || self.source(&token);
        match triage(BACKEND, self.core.subscription(), decoded, source) {
            Intake::Handle(envelope) => {
                let envelope = Arc::new(envelope);
                let queue = self.core.queue();
                let Some((p, outstanding)) = partition else {
                    queue.push_now(Delivery::new(envelope, token));
                    return;
                };
                // Checked and queued under the partitions' lock: a release
                // that starts meanwhile would drop what is queued of the
                // partition but miss this one, which a worker would then
                // handle (and ack) ahead of the earlier ones handed back.
                let owned = self.owned.lock();
                if self.takes_from(&owned, p, outstanding) {
                    token.partition = Some(Outstanding::new(p, outstanding));
                    queue.push_now(Delivery::new(envelope, token));
                }
            }
            Intake::Skip => self.ack(token).await,
            Intake::DeadLetter(failure) => {
                let raw = Letter::Raw(RawMessage {
                    properties: delivery.properties,
                    body: delivery.data,
                });
                dead_letter(self, self.core.counters(), token, raw, failure).await;
            }
        }
    }

    /// Opens the member's session again (topology, register), with
    /// `backoff` between tries, until it succeeds — or `None` once the
    /// member stops.
    pub(super) async fn reconnect(&self, backoff: &mut Duration) -> Option<Session> {
        loop {
            match Self::open(&self.client, self.core.subscription()).await {
                Ok(s) => {
                    tracing::info!(group = self.group(), "rabbitmq consumer reconnected");
                    *backoff = Duration::from_millis(200);
                    return Some(s);
                }
                Err(e) => {
                    tracing::warn!(group = self.group(), error = %e, ?backoff, "rabbitmq reconnect failed");
                    tokio::select! {
                        () = self.core.token().cancelled() => return None,
                        () = tokio::time::sleep(*backoff) => {}
                    }
                    *backoff = (*backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
