//! [`EventWatch`]: new events as they are published, seen from outside
//! every consumer group (`eventsource tail`, debugging, dashboards).

use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::{EventEnvelope, Result};

/// Events published after [`EventBus::watch`](crate::EventBus::watch)
/// returned, that its filter selects, in the order the broker holds them.
///
/// Watching joins no consumer group and leaves nothing behind on the
/// broker: it takes no event from any group and acknowledges nothing.
/// Delivery is best effort — a watcher that falls more than its buffer
/// behind misses events (the bus logs it); use a consumer group for work
/// that must see every event. Dropping the watch stops it.
#[derive(Debug)]
pub struct EventWatch {
    events: mpsc::Receiver<Result<EventEnvelope>>,
    _stop: DropGuard,
}

impl EventWatch {
    /// How many events a watch holds for a slow reader before it misses some.
    pub const BUFFER: usize = 1024;

    /// A watch and the [`WatchFeed`] a backend feeds it through; `stop` is
    /// cancelled when the watch is dropped, to end the backend's reading.
    pub fn channel(backend: &'static str, stop: CancellationToken) -> (WatchFeed, EventWatch) {
        let (tx, events) = mpsc::channel(Self::BUFFER);
        let watch = EventWatch {
            events,
            _stop: stop.drop_guard(),
        };
        (WatchFeed { backend, tx }, watch)
    }

    /// The next event, an error reading (the watch goes on after one, where
    /// the backend can), or `None` once the bus is shut down.
    pub async fn next(&mut self) -> Option<Result<EventEnvelope>> {
        self.events.recv().await
    }
}

/// The backend's end of an [`EventWatch`].
#[derive(Debug, Clone)]
pub struct WatchFeed {
    backend: &'static str,
    tx: mpsc::Sender<Result<EventEnvelope>>,
}

impl WatchFeed {
    /// Hands `item` to the watch without waiting: when the reader is a full
    /// buffer behind, the item is missed and logged. Returns `false` once
    /// the watch is dropped (stop reading). A replay for a group
    /// ([`REPLAYED_FOR`](crate::REPLAYED_FOR)) is not a new event: it is
    /// not shown.
    pub fn offer(&self, item: Result<EventEnvelope>) -> bool {
        if matches!(&item, Ok(e) if e.metadata.contains_key(crate::REPLAYED_FOR)) {
            return !self.tx.is_closed();
        }
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
            Err(mpsc::error::TrySendError::Full(missed)) => {
                let what = match &missed {
                    Ok(e) => e.event_id.to_string(),
                    Err(e) => e.to_string(),
                };
                tracing::warn!(backend = self.backend, missed = %what, "a watch is a full buffer behind; it misses this");
                true
            }
        }
    }

    /// Resolves when the watch is dropped.
    pub async fn closed(&self) {
        self.tx.closed().await;
    }

    /// Whether the watch is dropped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(v: u64) -> EventEnvelope {
        EventEnvelope::from_json("Order", "o-1", v, "Placed", serde_json::json!({}))
    }

    #[tokio::test]
    async fn a_full_watch_misses_events_and_a_dropped_one_stops_its_feed() {
        let stop = CancellationToken::new();
        let (feed, mut watch) = EventWatch::channel("test", stop.clone());
        for v in 1..=EventWatch::BUFFER as u64 + 5 {
            assert!(feed.offer(Ok(event(v))), "open while the watch lives");
        }
        let first = watch.next().await.expect("open").expect("an event");
        assert_eq!(first.aggregate_version, 1, "in order, the overflow missed");
        drop(watch);
        assert!(
            stop.is_cancelled(),
            "dropping the watch stops the backend's reading"
        );
        assert!(!feed.offer(Ok(event(0))) && feed.is_closed());
    }
}
