//! A handler that sees events with their personal data opened.

use std::sync::Arc;

use async_trait::async_trait;

use super::Shredder;
use crate::{EventEnvelope, EventHandler, HandlerResult};

/// Wraps a handler so it receives each event opened by a [`Shredder`]
/// (personal fields decrypted, or replaced once forgotten). What the bus
/// keeps — retries, dead letters, replays — stays encrypted.
///
/// An event that does not open (a changed ciphertext) fails permanently
/// and goes to the dead-letter queue, still encrypted.
pub struct OpenedHandler<H> {
    shredder: Arc<Shredder>,
    inner: H,
}

impl<H: EventHandler> OpenedHandler<H> {
    /// `inner`, fed events opened by `shredder`.
    pub fn new(shredder: Arc<Shredder>, inner: H) -> Self {
        OpenedHandler { shredder, inner }
    }
}

#[async_trait]
impl<H: EventHandler> EventHandler for OpenedHandler<H> {
    async fn handle(&self, event: &EventEnvelope) -> HandlerResult {
        if !event.metadata.contains_key(super::PERSONAL_HEADER) {
            return self.inner.handle(event).await;
        }
        let opened = self.shredder.open(event).await?;
        self.inner.handle(&opened).await
    }

    fn name(&self) -> &str {
        self.inner.name()
    }
}
