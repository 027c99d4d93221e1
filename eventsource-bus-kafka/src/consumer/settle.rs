//! What becomes of a settled record: its offset is done, after its dead
//! letter is written when it failed for good or did not decode (reduced
//! when the whole letter is too large, so that the partition moves on).

use std::collections::BTreeMap;

use async_trait::async_trait;
use eventsource_core::driver::{Letter, Settle};
use eventsource_core::Failure;

use super::{GroupConsumer, Token};
use crate::client::is_too_large;
use crate::dlq::{dead_letter_record, reduced_letter};
use crate::wire;

/// A record that did not decode: its headers (as text) and payload.
pub(crate) type RawRecord = (BTreeMap<String, String>, Vec<u8>);

#[async_trait]
impl Settle<Token> for GroupConsumer {
    type Raw = RawRecord;

    fn source(&self, token: &Token) -> String {
        format!("{}[{}]@{}", token.topic, token.partition, token.offset)
    }

    async fn ack(&self, token: Token) {
        self.done(&token.topic, token.partition, token.offset);
    }

    fn ack_now(&self, token: Token) -> Option<Token> {
        // Marks the offset done for the next commit: nothing to wait for.
        self.done(&token.topic, token.partition, token.offset);
        None
    }

    async fn dead_letter(
        &self,
        token: Token,
        letter: Letter<RawRecord>,
        failure: &Failure,
    ) -> bool {
        let decoded = matches!(letter, Letter::Event(_));
        let (headers, payload) = match letter {
            Letter::Event(envelope) => {
                let (headers, payload) = wire::encode(&envelope, &self.client.config.source);
                (wire::headers_as_text(Some(&headers)), payload)
            }
            Letter::Raw(raw) => raw,
        };
        if !self
            .write_letter(&token.key, headers, payload, failure, decoded)
            .await
        {
            return false; // stays pending: never committed past
        }
        self.done(&token.topic, token.partition, token.offset);
        true
    }
}

impl GroupConsumer {
    /// Produces a dead letter (acknowledged); `true` on success. A letter
    /// the broker refuses as too large is written reduced
    /// ([`reduced_letter`]): the partition moves on.
    async fn write_letter(
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
