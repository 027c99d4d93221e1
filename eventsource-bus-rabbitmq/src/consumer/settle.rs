//! What becomes of a settled message: acked, or dead-lettered and then
//! acked; given back to the queue when its dead letter cannot be written.

use async_trait::async_trait;
use eventsource_core::driver::{Letter, Settle};
use eventsource_core::Failure;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::Acker;

use super::{GroupConsumer, Token};
use crate::dlq::{dead_letter_message, LetterToWrite, RawMessage};

#[async_trait]
impl Settle<Token> for GroupConsumer {
    type Raw = RawMessage;

    /// The group's queue and the routing key the message arrived with.
    fn source(&self, token: &Token) -> String {
        let queue = self.client.config.queue(self.group());
        format!("{queue} ({})", token.routing_key)
    }

    async fn ack(&self, token: Token) {
        if let Err(e) = token.acker.ack(BasicAckOptions::default()).await {
            // The channel is gone: the broker redelivers the message.
            tracing::warn!(group = self.group(), error = %e, "ack failed; the message will be redelivered");
        }
    }

    async fn dead_letter(
        &self,
        token: Token,
        letter: Letter<RawMessage>,
        failure: &Failure,
    ) -> bool {
        if !self.write_letter(&letter, failure).await {
            requeue(&token.acker).await;
            return false;
        }
        Settle::ack(self, token).await;
        true
    }
}

impl GroupConsumer {
    /// Publishes a dead letter to the group's DLQ (confirmed); `true` on success.
    async fn write_letter(&self, body: &LetterToWrite, failure: &Failure) -> bool {
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
