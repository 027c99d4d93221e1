//! The `EventStore` trait and an in-memory implementation.

use std::collections::{HashMap, HashSet};
use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;

use crate::{Error, EventEnvelope, Result};

/// What the caller expects a stream's version to be before an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have exactly this version.
    Exact(u64),
}

impl ExpectedVersion {
    /// Checks `actual` (0 for a missing stream) against the expectation.
    pub fn check(self, stream: &str, actual: u64) -> Result<()> {
        let ok = match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exact(v) => v == actual,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::Concurrency {
                stream: stream.to_owned(),
                expected: self.to_string(),
                actual,
            })
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// Checks a batch about to be appended to `stream` at version `current`:
/// no event id twice, and versions `current + 1, current + 2, …`. Store
/// implementations call it inside their append transaction.
pub fn check_batch(stream: &str, current: u64, events: &[EventEnvelope]) -> Result<()> {
    let mut ids = HashSet::new();
    for (i, e) in events.iter().enumerate() {
        if !ids.insert(e.event_id) {
            return Err(Error::DuplicateEvent {
                stream: stream.to_owned(),
                event_id: e.event_id.to_string(),
            });
        }
        let want = current + 1 + i as u64;
        if e.aggregate_version != want {
            return Err(Error::Concurrency {
                stream: stream.to_owned(),
                expected: format!("event {} to carry version {want}", e.event_id),
                actual: e.aggregate_version,
            });
        }
    }
    Ok(())
}

/// An event as stored, with its global position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Position in the store's global order (starts at 1, increases).
    pub position: u64,
    /// The stream it belongs to.
    pub stream: String,
    /// The event.
    pub envelope: EventEnvelope,
}

/// The outcome of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResult {
    /// The stream's version after the append.
    pub version: u64,
    /// The global position of the last appended event (0 if none).
    pub last_position: u64,
}

/// Stores event streams with optimistic concurrency.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends `events` to `stream` atomically: all or none. Fails with
    /// [`Error::Concurrency`] when `expected` does not hold and with
    /// [`Error::DuplicateEvent`] when an event id is already stored.
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventEnvelope],
    ) -> Result<AppendResult>;

    /// The events of `stream` with `aggregate_version >= from_version`, in order.
    async fn read_stream(&self, stream: &str, from_version: u64) -> Result<Vec<EventEnvelope>>;

    /// Up to `limit` events of all streams with `position > after_position`,
    /// in global order.
    async fn read_all(&self, after_position: u64, limit: usize) -> Result<Vec<RecordedEvent>>;
}

/// An event store in memory, for tests and embedded use. Nothing survives
/// the process.
#[derive(Debug, Default)]
pub struct InMemoryEventStore {
    inner: RwLock<MemoryStoreState>,
}

#[derive(Debug, Default)]
struct MemoryStoreState {
    log: Vec<RecordedEvent>,
    streams: HashMap<String, Vec<usize>>,
    ids: HashSet<uuid::Uuid>,
}

impl InMemoryEventStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl EventStore for InMemoryEventStore {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventEnvelope],
    ) -> Result<AppendResult> {
        let mut state = self.inner.write().await;
        let current = state
            .streams
            .get(stream)
            .and_then(|idx| idx.last())
            .map_or(0, |&i| state.log[i].envelope.aggregate_version);
        expected.check(stream, current)?;
        if let Some(e) = events.iter().find(|e| state.ids.contains(&e.event_id)) {
            return Err(Error::DuplicateEvent {
                stream: stream.to_owned(),
                event_id: e.event_id.to_string(),
            });
        }
        check_batch(stream, current, events)?;
        for e in events {
            let position = state.log.len() as u64 + 1;
            state.ids.insert(e.event_id);
            let index = state.log.len();
            state.log.push(RecordedEvent {
                position,
                stream: stream.to_owned(),
                envelope: e.clone(),
            });
            state
                .streams
                .entry(stream.to_owned())
                .or_default()
                .push(index);
        }
        Ok(AppendResult {
            version: current + events.len() as u64,
            last_position: state.log.len() as u64,
        })
    }

    async fn read_stream(&self, stream: &str, from_version: u64) -> Result<Vec<EventEnvelope>> {
        let state = self.inner.read().await;
        Ok(state
            .streams
            .get(stream)
            .map(|idx| {
                idx.iter()
                    .map(|&i| &state.log[i].envelope)
                    .filter(|e| e.aggregate_version >= from_version)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn read_all(&self, after_position: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        let state = self.inner.read().await;
        let start = usize::try_from(after_position)
            .unwrap_or(usize::MAX)
            .min(state.log.len());
        Ok(state.log[start..].iter().take(limit).cloned().collect())
    }
}
