//! # eventsource-bus-nats
//!
//! An [`EventBus`](eventsource_core::EventBus) on NATS JetStream: one
//! events stream (file storage) with publishes acknowledged by the stream
//! and deduplicated by event id, one durable pull consumer per
//! subscription group with explicit acks, retries in place that keep an
//! aggregate's order, a dead-letter stream per group, replay to the
//! failing group only (through its own replay stream), and redelivery of
//! what a dead member left once its `ack_wait` runs out.
//!
//! Layout: [`NatsBus`] and publishing in `bus.rs`; the connection and the
//! streams it makes in `client.rs`; [`NatsBusConfig`] in `config.rs`; one
//! member of a group in `consumer/` (a file per concept: `reader.rs`,
//! each lane's pull requests in `pull.rs`, how far it reads ahead in
//! `read_ahead.rs`, `held.rs`, `settle.rs`, and the ownership modes in
//! `ownership.rs`,
//! `single_active.rs`, `partitioned.rs`); the group register in
//! `membership.rs`; the partition count and the leases in
//! `partitions.rs`; the stream settings checked at connect in
//! `durability.rs`; dead letters in `dlq.rs`; events delivered again to
//! one group in `redeliver.rs`; `watch` in `watch.rs`; the
//! message format (CloudEvents, structured mode) in `wire.rs`.

mod bus;
mod client;
mod config;
mod consumer;
mod dlq;
mod durability;
mod membership;
mod partitions;
mod redeliver;
mod watch;
mod wire;

pub use bus::NatsBus;
pub use config::NatsBusConfig;
