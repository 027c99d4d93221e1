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

    /// A watch a backend feeds through `events`; `stop` is cancelled when
    /// the watch is dropped, to end the backend's reading.
    pub fn new(events: mpsc::Receiver<Result<EventEnvelope>>, stop: CancellationToken) -> Self {
        EventWatch {
            events,
            _stop: stop.drop_guard(),
        }
    }

    /// The next event, an error reading (the watch goes on after one, where
    /// the backend can), or `None` once the bus is shut down.
    pub async fn next(&mut self) -> Option<Result<EventEnvelope>> {
        self.events.recv().await
    }
}
