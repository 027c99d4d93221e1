//! What becomes of a handled entry: acked, or dead-lettered (atomically
//! with its ack) and released.

use async_trait::async_trait;
use eventsource_core::driver::{Delivery, Outcome, Settle};

use super::{GroupConsumer, Token};
use crate::dlq::{write_dead_letter, LetterBody};

#[async_trait]
impl Settle<Token> for GroupConsumer {
    async fn settle(&self, delivery: Delivery<Token>, outcome: Outcome) -> bool {
        let Delivery {
            envelope, token, ..
        } = delivery;
        match outcome {
            Outcome::DeadLetter(failure) => {
                let failure = failure.from_source(format!("{}/{}", token.stream, token.id));
                let body = LetterBody::Event((*envelope).clone());
                let written = write_dead_letter(
                    &self.client,
                    &token.stream,
                    &token.id,
                    &body,
                    &failure,
                    self.fence(&token.stream),
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
                        tracing::error!(error = %e, "could not dead-letter; the entry stays pending and will be redelivered");
                        false
                    }
                }
            }
            _ => {
                self.ack(&token.stream, &token.id);
                true
            }
        }
    }

    fn settle_now(
        &self,
        delivery: Delivery<Token>,
        outcome: Outcome,
    ) -> Option<(Delivery<Token>, Outcome)> {
        if outcome != Outcome::Handled {
            return Some((delivery, outcome));
        }
        // Acks are queued for the acker's next batch: nothing to wait for.
        self.ack(&delivery.token.stream, &delivery.token.id);
        None
    }
}
