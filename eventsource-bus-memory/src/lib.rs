//! # eventsource-bus-memory
//!
//! The in-process [`EventBus`](eventsource_core::EventBus) of eventsource:
//! the embedded default, and the reference the broker backends are checked
//! against. It keeps the whole delivery contract — consumer groups with
//! competing members and fan-out across groups, per-aggregate order with
//! concurrency across aggregates, retries per
//! [`RetryPolicy`](eventsource_core::RetryPolicy), a dead-letter queue that
//! can be listed, replayed and purged, bounded buffers that make `publish`
//! wait rather than drop, and a draining `shutdown`.
//!
//! Layout: [`MemoryBus`] in `bus.rs`; what every handle shares (groups,
//! dead letters, counters) in `client.rs`; [`MemoryBusConfig`] in
//! `config.rs`; the per-group queue in `group.rs`; what a worker does with
//! a finished delivery (the loop is the core's) in `consumer.rs`; dead
//! letters in `dlq.rs`; events delivered again to one group in
//! `redeliver.rs`.

mod bus;
mod client;
mod config;
mod consumer;
mod dlq;
mod group;
mod redeliver;

pub use bus::MemoryBus;
pub use config::MemoryBusConfig;
