//! What becomes of a handled record: its offset is done, after its dead
//! letter is written when it failed for good (reduced when the whole
//! letter is too large, so that the partition moves on).

use std::collections::BTreeMap;

use async_trait::async_trait;
use eventsource_core::driver::{Delivery, Outcome, Settle};
use eventsource_core::Failure;

use super::{GroupConsumer, Token};
use crate::client::is_too_large;
use crate::dlq::{dead_letter_record, reduced_letter};
use crate::wire;

#[async_trait]
impl Settle<Token> for GroupConsumer {
    async fn settle(&self, delivery: Delivery<Token>, outcome: Outcome) -> bool {
        let Delivery {
            envelope, token, ..
        } = delivery;
        if let Outcome::DeadLetter(failure) = outcome {
            let failure = failure.from_source(format!(
                "{}[{}]@{}",
                token.topic, token.partition, token.offset
            ));
            let (headers, payload) = wire::encode(&envelope, &self.client.config.source);
            let headers = wire::headers_as_text(Some(&headers));
            if !self
                .dead_letter(&token.key, headers, payload, &failure, true)
                .await
            {
                return false; // stays pending: never committed past
            }
        }
        self.done(&token.topic, token.partition, token.offset);
        true
    }
}

impl GroupConsumer {
    /// Produces a dead letter (acknowledged); `true` on success. A letter
    /// the broker refuses as too large is written reduced
    /// ([`reduced_letter`]): the partition moves on.
    pub(super) async fn dead_letter(
        &self,
        key: &str,
        headers: BTreeMap<String, String>,
        payload: Vec<u8>,
        failure: &Failure,
        decoded: bool,
    ) -> bool {
        let config = &self.client.config;
        let record = dead_letter_record(config, key, &headers, &payload, failure, decoded);
        let mut written = self.client.produce(std::slice::from_ref(&record)).await;
        if written.as_ref().is_err_and(is_too_large) {
            tracing::warn!(group = self.group(), source = %failure.source, "the dead letter is too large for the broker; writing it reduced");
            let reduced = reduced_letter(config, key, &headers, &payload, failure);
            written = self.client.produce(std::slice::from_ref(&reduced)).await;
        }
        match written {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "could not dead-letter; the record stays uncommitted and is redelivered after a restart");
                false
            }
        }
    }
}
