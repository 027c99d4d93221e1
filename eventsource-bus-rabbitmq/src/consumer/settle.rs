//! What becomes of a handled message: acked, or dead-lettered and then
//! acked; given back to the queue when its dead letter cannot be written.

use async_trait::async_trait;
use eventsource_core::driver::{Delivery, Outcome, Settle};
use eventsource_core::Failure;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::Acker;

use super::{GroupConsumer, Token};
use crate::dlq::{dead_letter_message, LetterBody};

#[async_trait]
impl Settle<Token> for GroupConsumer {
    async fn settle(&self, delivery: Delivery<Token>, outcome: Outcome) -> bool {
        let Delivery {
            envelope, token, ..
        } = delivery;
        if let Outcome::DeadLetter(failure) = outcome {
            let failure = failure.from_source(self.source(&token.routing_key));
            let body = LetterBody::Event((*envelope).clone());
            if !self.dead_letter(&body, &failure).await {
                requeue(&token.acker).await;
                return false;
            }
        }
        if let Err(e) = token.acker.ack(BasicAckOptions::default()).await {
            // The channel is gone: the broker redelivers the message.
            tracing::warn!(group = self.group(), error = %e, "ack failed; the message will be redelivered");
        }
        true
    }
}

impl GroupConsumer {
    /// Publishes a dead letter to the group's DLQ (confirmed); `true` on success.
    pub(super) async fn dead_letter(&self, body: &LetterBody, failure: &Failure) -> bool {
        let config = &self.client.config;
        let (dlq, redacted) = (config.dlq(self.group()), config.redacted_url());
        let message = dead_letter_message(config, body, failure, &dlq);
        let target = self.client.target(&dlq, &redacted);
        match self
            .client
            .publish_confirmed(&target, std::slice::from_ref(&message))
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "could not dead-letter; the message goes back to the queue");
                false
            }
        }
    }
}

/// Gives a message back to the queue (after a dead letter could not be written).
pub(super) async fn requeue(acker: &Acker) {
    let _ = acker
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await;
}
