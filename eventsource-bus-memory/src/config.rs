//! Configuration of the in-memory bus.

use std::time::Duration;

use eventsource_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// How the in-memory bus buffers events.
///
/// ```
/// use std::time::Duration;
/// use eventsource_bus_memory::MemoryBusConfig;
///
/// let config = MemoryBusConfig::builder()
///     .group_capacity(1_000)
///     .publish_timeout(Duration::from_secs(5))
///     .build()?;
/// assert_eq!(config.group_capacity, 1_000);
/// # Ok::<(), eventsource_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryBusConfig {
    /// How many events one consumer group may hold undelivered. When a
    /// group is full, `publish` waits for room: events are never dropped.
    pub group_capacity: usize,
    /// How long `publish` waits for room before it fails with
    /// [`Error::Timeout`] naming the full group.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
}

impl Default for MemoryBusConfig {
    fn default() -> Self {
        MemoryBusConfig {
            group_capacity: 10_000,
            publish_timeout: Duration::from_secs(30),
        }
    }
}

impl MemoryBusConfig {
    /// Starts from the defaults.
    pub fn builder() -> MemoryBusConfigBuilder {
        MemoryBusConfigBuilder(Self::default())
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if self.group_capacity == 0 {
            return Err(Error::config(
                "memory bus: group_capacity must be at least 1",
            ));
        }
        if self.publish_timeout.is_zero() {
            return Err(Error::config(
                "memory bus: publish_timeout must be more than zero",
            ));
        }
        Ok(())
    }
}

/// Builds a validated [`MemoryBusConfig`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MemoryBusConfigBuilder(MemoryBusConfig);

impl MemoryBusConfigBuilder {
    /// See [`MemoryBusConfig::group_capacity`].
    pub fn group_capacity(mut self, capacity: usize) -> Self {
        self.0.group_capacity = capacity;
        self
    }

    /// See [`MemoryBusConfig::publish_timeout`].
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.0.publish_timeout = timeout;
        self
    }

    /// Validates and returns the config.
    pub fn build(self) -> Result<MemoryBusConfig> {
        self.0.validate()?;
        Ok(self.0)
    }
}
