//! What becomes of a settled message: acked, or dead-lettered then acked.

use async_trait::async_trait;
use eventsource_core::driver::{Letter, Settle};
use eventsource_core::Failure;

use super::{GroupConsumer, Token};
use crate::dlq::{write_dead_letter, Raw};

/// An empty body on a message's reply subject acks it.
const ACK: &[u8] = b"";

#[async_trait]
impl Settle<Token> for GroupConsumer {
    type Raw = Raw;

    fn source(&self, token: &Token) -> String {
        format!("{}/{}", self.stream_name(token.origin), token.seq)
    }

    async fn ack(&self, token: Token) {
        self.answer(&token.reply, ACK).await;
        self.release(token.origin, token.seq);
    }

    /// Writes the letter (waiting for its PubAck), then acks the message.
    /// When the write fails the message is released unacked: the server
    /// delivers it again after `ack_wait`. Written but not acked (the
    /// member died between the two), it comes again and, failing again,
    /// is written once: the letter's `Nats-Msg-Id` is its source.
    async fn dead_letter(
        &self,
        token: Token,
        letter: Letter<Self::Raw>,
        failure: &Failure,
    ) -> bool {
        let source = self.source(&token);
        match write_dead_letter(&self.client, &source, &letter, failure).await {
            Ok(()) => {
                self.answer(&token.reply, ACK).await;
                self.release(token.origin, token.seq);
                true
            }
            Err(e) => {
                tracing::error!(group = self.group(), error = %e, "could not dead-letter; the message is delivered again after ack_wait");
                self.release(token.origin, token.seq);
                false
            }
        }
    }
}
