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
//! - an idempotent inbox ([`Inbox`]): each event handled at most once per
//!   consumer group, recorded in the transaction of the handler's writes.
//!
//! Layout: `store.rs`, `outbox.rs`, `inbox.rs`, `snapshot.rs`, `catchup.rs`,
//! `schema.rs` (migrations), `config.rs`.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod catchup;
mod config;
mod inbox;
mod outbox;
mod schema;
mod snapshot;
mod store;

pub use catchup::{CatchUpRunner, Checkpoints, ProjectionHandler};
pub use config::{Dialect, StoreConfig};
pub use inbox::{Inbox, InboxHandler, InboxedHandler};
pub use outbox::{OutboxRelay, OutboxRelayConfig, RelayStats};
pub use snapshot::{SnapshotPolicy, SnapshotRepository};
/// The sqlx the store runs on, for [`InboxHandler`]s' queries.
pub use sqlx;
pub use store::SqlEventStore;
