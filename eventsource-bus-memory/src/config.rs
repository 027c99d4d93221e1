//! Configuration of the in-memory bus.

use std::time::Duration;

use eventsource_core::bounds::{self, HOUR, MILLISECOND};
use eventsource_core::Result;
use serde::{Deserialize, Serialize};

/// How the in-memory bus buffers events.
///
/// ```
/// use std::time::Duration;
/// use eventsource_bus_memory::MemoryBusConfig;
///
/// let config = MemoryBusConfig::new()
///     .group_capacity(1_000)
///     .publish_timeout(Duration::from_secs(5))
///     .validated()?;
/// assert_eq!(config.group_capacity, 1_000);
/// # Ok::<(), eventsource_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct MemoryBusConfig {
    /// How many events one consumer group may hold undelivered. When a
    /// group is full, `publish` waits for room: events are never dropped.
    pub group_capacity: usize,
    /// How long `publish` waits for room before it fails with
    /// [`Error::Timeout`](eventsource_core::Error::Timeout) naming the full group.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// Keep the last this many published events in an event log that
    /// [`MemoryBus::event_log`](crate::MemoryBus::event_log) lists, oldest
    /// first (none kept by default).
    pub event_log: Option<usize>,
}

impl Default for MemoryBusConfig {
    fn default() -> Self {
        MemoryBusConfig {
            group_capacity: 10_000,
            publish_timeout: Duration::from_secs(30),
            event_log: None,
        }
    }
}

impl MemoryBusConfig {
    /// Starts from the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        // Queues and the log are allocated in memory: a count no machine
        // holds is refused here, not met as an allocation failure.
        bounds::count(
            "memory bus: group_capacity",
            self.group_capacity,
            1,
            10_000_000,
        )?;
        if let Some(n) = self.event_log {
            bounds::count("memory bus: event_log", n, 1, 100_000_000)?;
        }
        bounds::duration(
            "memory bus: publish_timeout",
            self.publish_timeout,
            MILLISECOND,
            HOUR,
        )?;
        Ok(())
    }
}

eventsource_core::config_setters!(MemoryBusConfig {
    group_capacity: usize,
    publish_timeout: Duration,
} optional {
    event_log: usize,
});
