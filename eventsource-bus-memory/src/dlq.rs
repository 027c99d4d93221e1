//! The in-memory dead-letter queue.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use async_trait::async_trait;
use eventsource_core::{DeadLetter, DeadLetterQuery, DeadLetterQueue, Error, Result};

use crate::bus::Inner;
use eventsource_core::dispatch::Delivery;

/// Dead letters keyed by a sequence number, oldest first.
#[derive(Debug, Default)]
pub(crate) struct DeadLetters {
    letters: Mutex<BTreeMap<u64, DeadLetter>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl DeadLetters {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, DeadLetter>> {
        eventsource_core::dispatch::lock(&self.letters)
    }

    /// Stores a dead letter, giving it the next id.
    pub(crate) fn insert(&self, mut letter: DeadLetter) {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        letter.id = id.to_string();
        self.lock().insert(id, letter);
    }

    pub(crate) fn count_for(&self, group: &str) -> u64 {
        self.lock().values().filter(|l| l.group == group).count() as u64
    }

    fn list(&self, query: &DeadLetterQuery) -> Vec<DeadLetter> {
        self.lock()
            .values()
            .filter(|l| query.group.as_deref().is_none_or(|g| g == l.group))
            .take(query.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }

    fn remove(&self, id: &str) -> Option<DeadLetter> {
        let key: u64 = id.parse().ok()?;
        self.lock().remove(&key)
    }

    fn restore(&self, letter: DeadLetter) {
        if let Ok(key) = letter.id.parse() {
            self.lock().insert(key, letter);
        }
    }
}

/// The [`DeadLetterQueue`] handed out by [`MemoryBus::dead_letters`](eventsource_core::EventBus::dead_letters).
pub(crate) struct MemoryDeadLetterQueue {
    pub(crate) inner: Weak<Inner>,
}

impl MemoryDeadLetterQueue {
    fn inner(&self) -> Result<Arc<Inner>> {
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
        let (group, envelope) = match (inner.group(&letter.group), &letter.envelope) {
            (Some(group), Some(envelope)) => (group, envelope.clone()),
            (None, _) => {
                let group = letter.group.clone();
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
        inner.stats.replayed();
        Ok(())
    }

    async fn delete(&self, id: &str) -> Result<bool> {
        Ok(self.inner()?.dead_letters.remove(id).is_some())
    }
}
