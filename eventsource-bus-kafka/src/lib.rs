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
//! Layout: [`KafkaBus`], topics and the producer in `bus.rs`; the
//! producer, admin client and their helpers in `client.rs`;
//! [`KafkaBusConfig`] in `config.rs`; one member of a group in
//! `consumer/` (a file per concept: `reader.rs`, `offsets.rs`,
//! `rebalance.rs`, `settle.rs`, `close.rs`); the group's filter check
//! across processes in `membership.rs`; the topic settings checked at
//! connect in `durability.rs`; dead letters in `dlq/` (the
//! letter's record in `letter.rs`, reading topics back in `read.rs`); a
//! group's backlog in `lag.rs`; events delivered again to one group in
//! `redeliver.rs`; `watch` in `watch.rs`; the record format
//! in `wire.rs`.

mod bus;
mod client;
mod config;
mod consumer;
mod dlq;
mod durability;
mod lag;
mod membership;
mod redeliver;
mod watch;
mod wire;

pub use bus::KafkaBus;
pub use config::{Compression, KafkaBusConfig};
