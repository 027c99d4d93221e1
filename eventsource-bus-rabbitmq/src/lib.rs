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
//! Layout: [`RabbitBus`] and the confirmed publisher in `bus.rs`, the
//! consumer loop in `consumer.rs`, the exchange and queues in
//! `topology.rs`, dead letters in `dlq.rs`, the message format in
//! `wire.rs`, [`RabbitBusConfig`] in `config.rs`.

mod bus;
mod client;
mod config;
mod consumer;
mod dlq;
mod topology;
mod watch;
mod wire;

pub use bus::RabbitBus;
pub use config::{ExchangeType, RabbitBusConfig};
