//! # eventsource-bus-kafka
//!
//! An [`EventBus`](eventsource_core::EventBus) on Kafka with rdkafka:
//! topics named from a prefix and created through the admin API, the
//! aggregate id as the key (one aggregate, one partition), an idempotent
//! producer with `acks=all`, CloudEvents binary mode (`ce_` headers),
//! consumer groups with manual commits that never pass an unhandled
//! record, retries in place that keep an aggregate's order, and a
//! dead-letter topic per group that can be listed, replayed (to that
//! group's replay topic only) and purged.
//!
//! Layout: [`KafkaBus`], topics and the producer in `bus.rs`, the consumer
//! loop and offset tracking in `consumer.rs`, dead letters in `dlq.rs`,
//! the record format in `wire.rs`, [`KafkaBusConfig`] in `config.rs`.

mod bus;
mod client;
mod config;
mod consumer;
mod dlq;
mod lag;
mod watch;
mod wire;

pub use bus::KafkaBus;
pub use config::{Compression, KafkaBusConfig};
