//! # eventsource-bus-rabbitmq
//!
//! An [`EventBus`](eventsource_core::EventBus) on RabbitMQ with lapin:
//! a topic exchange (direct and fanout selectable), routing key
//! `{aggregate_type}.{event_type}`, one durable queue per consumer group
//! bound with the subscription's patterns, persistent messages and
//! publisher confirms, CloudEvents binary content mode, prefetch and
//! per-aggregate order, retries that hold back only the failing aggregate
//! of the failing group, and a dead-letter queue per group that can be
//! listed, replayed (to that group's queue only) and purged.
//!
//! Layout: [`RabbitBus`] and publishing in `bus.rs`; connections,
//! sessions and the confirmed publisher in `client.rs`;
//! [`RabbitBusConfig`] in `config.rs`; one member of a group in
//! `consumer/` (a file per concept: `reader.rs`, `partitioned.rs`,
//! `settle.rs`); the group register and partition ranks in
//! `membership.rs`; the queues, bindings and the partition-count check in
//! `topology.rs`; a group's backlog in `lag.rs`; dead letters in
//! `dlq/` (the letter as a message in `letter.rs`); events delivered
//! again to one group in `redeliver.rs`; `watch` in
//! `watch.rs`; the message format in `wire.rs`.

mod bus;
mod client;
mod config;
mod consumer;
mod dlq;
mod lag;
mod membership;
mod redeliver;
mod topology;
mod watch;
mod wire;

pub use bus::RabbitBus;
pub use config::{ExchangeType, QueueType, RabbitBusConfig};
