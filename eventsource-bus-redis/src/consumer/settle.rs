//! What becomes of a settled entry: acked (in the acker's next batch), or
//! dead-lettered atomically with its ack and released.

use std::collections::BTreeMap;

use async_trait::async_trait;
use eventsource_core::driver::{Letter, Settle};
use eventsource_core::Failure;

use super::{GroupConsumer, Token};
use crate::dlq::write_dead_letter;

#[async_trait]
impl Settle<Token> for GroupConsumer {
    /// An entry that did not decode: its fields, as text.
    type Raw = BTreeMap<String, String>;

    fn source(&self, token: &Token) -> String {
        format!("{}/{}", token.stream, token.id)
    }

    async fn ack(&self, token: Token) {
        self.ack_later(&token.stream, &token.id);
    }

    fn ack_now(&self, token: Token) -> Option<Token> {
        // Acks are queued for the acker's next batch: nothing to wait for.
        self.ack_later(&token.stream, &token.id);
        None
    }

    /// Writes the letter and acks the entry in one step. When this member
    /// lost the entry's partition meanwhile, nothing is written and the
    /// entry is left to the new owner; when the write fails, the entry is
    /// released: it stays pending, and is taken over (by this member or
    /// another) once idle for `claim_min_idle`.
    async fn dead_letter(
        &self,
        token: Token,
        letter: Letter<Self::Raw>,
        failure: &Failure,
    ) -> bool {
        let fence = self.fence(&token.stream);
        let written = write_dead_letter(
            &self.client,
            &token.stream,
            &token.id,
            &letter,
            failure,
            fence,
        )
        .await;
        match written {
            Ok(true) => {
                self.release(&token.stream, &token.id);
                true
            }
            Ok(false) => {
                self.forsake(&token.stream, &token.id);
                false
            }
            Err(e) => {
                tracing::error!(group = self.group(), error = %e, "could not dead-letter; the entry stays pending and is taken over once idle");
                self.release(&token.stream, &token.id);
                false
            }
        }
    }
}
