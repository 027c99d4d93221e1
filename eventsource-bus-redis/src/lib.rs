//! # eventsource-bus-redis
//!
//! An [`EventBus`](eventsource_core::EventBus) on Redis Streams: `XADD`
//! (pipelined) to publish, one Redis consumer group per subscription
//! group, `XREADGROUP` in batches, `XACK` after the handler succeeds,
//! retries in place that keep an aggregate's order, a dead-letter stream
//! per group written atomically with the ack, replay to the failing group
//! only, and automatic takeover (`XAUTOCLAIM`) of what a dead member left.
//!
//! Layout: [`RedisBus`] and publishing in `bus.rs`; the connection and
//! its helpers in `client.rs`; the cluster seed URL and the
//! namespace hash tag in `cluster.rs`; [`RedisBusConfig`] in `config.rs`; one
//! member of a group in `consumer/` (a file per concept: `reader.rs`,
//! `held.rs`, `takeover.rs`, `acker.rs`, `settle.rs`, and the ownership
//! modes in `ownership.rs`, `single_active.rs`, `partitioned.rs`); the
//! group register in `membership.rs`; the persistence settings checked
//! at connect in `durability.rs`; partition counts and leases in
//! `partitions.rs`; dead letters in `dlq.rs`; events delivered again to
//! one group in `redeliver.rs`; `watch` in `watch.rs`; the
//! entry format (CloudEvents attribute names) in `wire.rs`.

mod bus;
mod client;
mod cluster;
mod config;
mod consumer;
mod dlq;
mod durability;
mod membership;
mod partitions;
mod redeliver;
mod watch;
mod wire;

pub use bus::RedisBus;
pub use config::RedisBusConfig;
