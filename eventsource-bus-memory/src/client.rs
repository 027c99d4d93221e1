//! What every handle onto a memory bus shares: its groups, its dead
//! letters and its counters (the bottom of the crate: it imports no other
//! module of it but the config and the groups).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use eventsource_core::driver::Counters;
use eventsource_core::{DeadLetter, DeadLetterQuery};
use parking_lot::{Mutex, MutexGuard};

use crate::group::Group;
use crate::MemoryBusConfig;

/// The state behind a [`MemoryBus`](crate::MemoryBus) and its dead-letter queue.
pub(crate) struct Client {
    pub(crate) config: MemoryBusConfig,
    pub(crate) groups: Mutex<HashMap<String, Arc<Group>>>,
    pub(crate) dead_letters: DeadLetters,
    pub(crate) stats: Counters,
    /// The last `config.event_log` events published, oldest first.
    pub(crate) log: Mutex<std::collections::VecDeque<Arc<eventsource_core::EventEnvelope>>>,
    /// Open [`EventWatch`](eventsource_core::EventWatch)es: filter and feed.
    pub(crate) watchers: Mutex<Vec<Watcher>>,
}

/// One watch's filter and its feed.
pub(crate) type Watcher = (eventsource_core::EventFilter, eventsource_core::WatchFeed);

impl Client {
    /// Hands `events` to every open watch whose filter selects them; a
    /// watch whose reader is a full buffer behind misses them.
    pub(crate) fn feed_watchers(&self, events: &[Arc<eventsource_core::EventEnvelope>]) {
        let mut watchers = self.watchers.lock();
        watchers.retain(|(_, feed)| !feed.is_closed());
        for (filter, feed) in watchers.iter() {
            for e in events.iter().filter(|e| filter.matches(e)) {
                feed.offer(Ok(eventsource_core::EventEnvelope::clone(e)));
            }
        }
    }

    /// Keeps `event` in the event log, if the bus keeps one.
    pub(crate) fn log(&self, events: &[Arc<eventsource_core::EventEnvelope>]) {
        if let Some(keep) = self.config.event_log {
            let mut log = self.log.lock();
            for event in events {
                if log.len() == keep {
                    log.pop_front();
                }
                log.push_back(Arc::clone(event));
            }
        }
    }

    pub(crate) fn group(&self, name: &str) -> Option<Arc<Group>> {
        self.groups.lock().get(name).cloned()
    }
}

/// Dead letters keyed by a sequence number, oldest first.
#[derive(Debug, Default)]
pub(crate) struct DeadLetters {
    letters: Mutex<BTreeMap<u64, DeadLetter>>,
    next_id: AtomicU64,
}

impl DeadLetters {
    pub(crate) fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, DeadLetter>> {
        self.letters.lock()
    }

    /// Stores a dead letter, giving it the next id.
    pub(crate) fn insert(&self, mut letter: DeadLetter) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        letter.id = id.to_string();
        self.lock().insert(id, letter);
    }

    pub(crate) fn count_for(&self, group: &str) -> u64 {
        self.lock().values().filter(|l| l.group() == group).count() as u64
    }

    pub(crate) fn list(&self, query: &DeadLetterQuery) -> Vec<DeadLetter> {
        self.lock()
            .values()
            .filter(|l| query.group.as_deref().is_none_or(|g| g == l.group()))
            .take(query.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }

    pub(crate) fn remove(&self, id: &str) -> Option<DeadLetter> {
        let key: u64 = id.parse().ok()?;
        self.lock().remove(&key)
    }

    pub(crate) fn restore(&self, letter: DeadLetter) {
        if let Ok(key) = letter.id.parse() {
            self.lock().insert(key, letter);
        }
    }
}
