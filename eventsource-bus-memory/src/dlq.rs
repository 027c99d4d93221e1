//! The in-memory dead-letter queue.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use eventsource_core::{DeadLetter, DeadLetterQuery, DeadLetterQueue, Error, Result};

use eventsource_core::driver::Delivery;

use crate::client::Client;

/// The [`DeadLetterQueue`] handed out by [`MemoryBus::dead_letters`](eventsource_core::EventBus::dead_letters).
pub(crate) struct MemoryDeadLetterQueue {
    pub(crate) inner: Weak<Client>,
}

impl MemoryDeadLetterQueue {
    fn inner(&self) -> Result<Arc<Client>> {
        self.inner.upgrade().ok_or(Error::ShutDown("memory bus"))
    }
}

#[async_trait]
impl DeadLetterQueue for MemoryDeadLetterQueue {
    async fn list(&self, query: &DeadLetterQuery) -> Result<Vec<DeadLetter>> {
        Ok(self.inner()?.dead_letters.list(query))
    }

    async fn get(&self, id: &str) -> Result<Option<DeadLetter>> {
        let inner = self.inner()?;
        let key: Option<u64> = id.parse().ok();
        Ok(key.and_then(|k| inner.dead_letters.lock().get(&k).cloned()))
    }

    async fn replay(&self, id: &str) -> Result<()> {
        let inner = self.inner()?;
        let letter = inner
            .dead_letters
            .remove(id)
            .ok_or_else(|| Error::not_found(format!("memory bus: dead letter `{id}`")))?;
        let (group, envelope) = match (inner.group(letter.group()), letter.replayed_envelope()) {
            (Some(group), Some(envelope)) => (group, envelope),
            (None, _) => {
                let group = letter.group().to_owned();
                inner.dead_letters.restore(letter);
                return Err(Error::not_found(format!(
                    "memory bus: consumer group `{group}`"
                )));
            }
            (_, None) => {
                inner.dead_letters.restore(letter);
                return Err(Error::config(format!(
                    "memory bus: dead letter `{id}` holds no decodable event to replay"
                )));
            }
        };
        group.queue.push_now(Delivery::new(Arc::new(envelope), ()));
        inner.stats.replayed(&group.name);
        Ok(())
    }

    async fn delete(&self, id: &str) -> Result<bool> {
        Ok(self.inner()?.dead_letters.remove(id).is_some())
    }
}
