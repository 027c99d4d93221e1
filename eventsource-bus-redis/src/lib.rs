//! # eventsource-bus-redis
//!
//! An [`EventBus`](eventsource_core::EventBus) on Redis Streams: `XADD`
//! (pipelined) to publish, one Redis consumer group per subscription
//! group, `XREADGROUP` in batches, `XACK` after the handler succeeds,
//! retries in place that keep an aggregate's order, a dead-letter stream
//! per group written atomically with the ack, replay to the failing group
//! only, and automatic takeover (`XAUTOCLAIM`) of what a dead member left.
//!
//! Layout: [`RedisBus`] and publishing in `bus.rs`, the consumer loop in
//! `consumer.rs`, partition counts and leases (partitioned mode) in
//! `partitions.rs`, dead letters in `dlq.rs`, the entry format (CloudEvents
//! attribute names) in `wire.rs`, [`RedisBusConfig`] in `config.rs`.

mod bus;
mod client;
mod config;
mod consumer;
mod dlq;
mod membership;
mod partitions;
mod watch;
mod wire;

pub use bus::RedisBus;
pub use config::RedisBusConfig;
