//! # eventsource-store
//!
//! [`EventStore`](eventsource_core::EventStore)s on sqlx: SQLite as the
//! embedded default, PostgreSQL for production, one implementation
//! ([`SqlEventStore`]) chosen by URL, with embedded migrations.
//!
//! - a transactional outbox: with [`StoreConfig::outbox`] every appended
//!   event gets an outbox row in the same transaction, and an
//!   [`OutboxRelay`] publishes them to any bus, in order, marking them
//!   sent — so a crash or a bus outage between append and publish loses
//!   nothing;
//! - snapshots ([`SnapshotRepository`]): a policy of every N events, load =
//!   snapshot + tail, invalidated by a schema version;
//! - catch-up reading for projections ([`CatchUpRunner`]): `read_all` from
//!   a stored checkpoint, then follow live (polling, or woken by a bus:
//!   [`CatchUpRunner::follow`]), checkpointing after each batch;
//! - data subjects' keys for forgetting a person ([`SqlKeyStore`], see
//!   `eventsource_core::personal`);
//! - an idempotent inbox ([`Inbox`]): each event handled at most once per
//!   consumer group, recorded in the transaction of the handler's writes;
//! - targeted replay ([`TargetedReplay`]): stored events delivered again
//!   to one consumer group, selected by position, time, aggregate and
//!   event type, at a bounded rate, resumable after a crash;
//! - process managers ([`ProcessRunner`]): each input handled once per
//!   instance, its step, outgoing events and timeouts committed together,
//!   its commands applied once; durable timeouts fired by a
//!   [`TimeoutScheduler`] (see `eventsource_core::process`).
//!
//! Layout: `store.rs`, `outbox.rs`, `inbox.rs`, `keys.rs`, `snapshot.rs`, `catchup.rs`,
//! `replay.rs`, `process.rs`, `timeouts.rs`,
//! `schema.rs` (migrations), `config.rs`, `durability.rs` (the database
//! settings checked at connect).

#![cfg_attr(docsrs, feature(doc_cfg))]

mod catchup;
mod config;
mod durability;
mod inbox;
mod keys;
mod outbox;
mod process;
mod replay;
mod schema;
mod snapshot;
mod store;
mod timeouts;

pub use catchup::{CatchUpRunner, Checkpoints, OpenedProjection, ProjectionHandler};
pub use config::{Dialect, StoreConfig};
pub use inbox::{Inbox, InboxHandler, InboxedHandler};
pub use keys::SqlKeyStore;
pub use outbox::{OutboxRelay, OutboxRelayConfig, RelayStats};
pub use process::{ProcessRunner, STEP_EVENT_TYPE};
pub use replay::{ReplayOptions, ReplaySelection, ReplayStatus, TargetedReplay};
pub use snapshot::{SnapshotPolicy, SnapshotRepository};
/// The sqlx the store runs on, for [`InboxHandler`]s' queries.
pub use sqlx;
pub use store::SqlEventStore;
pub use timeouts::{ScheduledTimeout, TimeoutScheduler};
