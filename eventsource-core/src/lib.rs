//! # eventsource-core
//!
//! The contract of the eventsource framework: typed [`DomainEvent`]s wrapped
//! in [`EventEnvelope`]s, [`Aggregate`]s saved through a [`Repository`] into
//! an [`EventStore`] and published to an [`EventBus`], where
//! [`Subscription`]s in consumer groups handle them with a [`RetryPolicy`]
//! and a [`DeadLetterQueue`] for what keeps failing.
//!
//! Backends live in their own crates (`eventsource-bus-memory`,
//! `eventsource-bus-redis`, ...); this crate knows no broker. The
//! conformance suite every backend runs is the `eventsource-testkit` crate.
//!
//! ```
//! use std::sync::Arc;
//! use eventsource_core::{handler_fn, EventBus, EventFilter, Subscription};
//!
//! async fn wire(bus: Arc<dyn EventBus>) -> eventsource_core::Result<()> {
//!     let sub = Subscription::builder("inventory")
//!         .filter(EventFilter::pattern("Order.*")?)
//!         .handler(handler_fn(|event| async move {
//!             println!("reserving stock for {}", event.aggregate_id);
//!             Ok(())
//!         }))
//!         .build()?;
//!     let _handle = bus.subscribe(sub).await?;
//!     Ok(())
//! }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

mod aggregate;
pub mod bounds;
mod bus;
mod dlq;
pub mod driver;
mod durability;
mod envelope;
mod error;
mod event;
mod failure;
mod filter;
mod handler;
pub mod manifest;
pub mod metrics;
mod partition;
pub mod personal;
pub mod process;
mod redeliver;
mod repository;
mod retry;
pub mod schema;
mod store;
mod subscription;
pub mod trace;
pub mod upcast;
mod watch;
pub mod wire;

pub use aggregate::Aggregate;
/// The attribute for implementing [`EventHandler`] (and the other async
/// traits) on your own types, re-exported so a struct handler needs no
/// extra dependency.
pub use async_trait::async_trait;
pub use bus::{BusStats, EventBus, GroupStats, ShutdownReport};
pub use dlq::{
    BulkReplay, DeadLetter, DeadLetterQuery, DeadLetterQueue, LetterBody, ParkedAggregate,
    REPLAYED_FOR, REPLAYED_FROM,
};
pub use durability::{Durability, DurabilityRisk};
pub use envelope::{stream_name, EventEnvelope};
pub use error::{
    is_secret_parameter, redact_text, redact_url, BoxError, CommandError, Error, Result,
};
pub use event::DomainEvent;
/// `#[derive(DomainEvent)]`: see [`DomainEvent`](trait@DomainEvent).
#[cfg(feature = "derive")]
pub use eventsource_macros::DomainEvent;
pub use redeliver::{copy_for, reprocessing, REPLAY_ID, REPROCESS};

/// The `DomainEvent` trait alone (without the derive of the same name),
/// for the facade, which re-exports a derive of its own.
#[doc(hidden)]
pub mod __private {
    pub use crate::event::DomainEvent;

    /// The JSON of `T::default()`: a personal field's replacement.
    pub fn default_json<T: Default + serde::Serialize>() -> serde_json::Value {
        serde_json::to_value(T::default()).unwrap_or(serde_json::Value::Null)
    }

    /// A JSON string: a personal field's `replacement = "…"`.
    pub fn string_json(text: &str) -> serde_json::Value {
        serde_json::Value::String(text.to_owned())
    }
}
pub use failure::{Failure, FailureKind};
pub use filter::EventFilter;
pub use handler::{
    handler_fn, handler_for, EventHandler, FnHandler, HandlerError, HandlerResult, TypedHandler,
};
pub use partition::partition_of;
pub use repository::{AggregateRoot, Repository, SaveContext};
pub use retry::{Backoff, RetryPolicy};
pub use store::{
    check_batch, AppendResult, EventStore, ExpectedVersion, InMemoryEventStore, RecordedEvent,
};
pub use subscription::{validate_name, Subscription, SubscriptionBuilder, SubscriptionHandle};
pub use watch::{EventWatch, WatchFeed};
