//! # eventsource
//!
//! The facade of the eventsource framework: the application author's API
//! of [`eventsource_core`] re-exported by name (events, aggregates,
//! repositories, the bus and store traits, subscriptions, dead letters,
//! errors), plus [`BusConfig`] and [`connect_bus`] to pick the backend by
//! configuration, each behind a cargo feature (`memory` by default;
//! `redis`, `rabbitmq`, `kafka`, `nats`, `full`) and reachable as a module
//! ([`redis`], ...) for its own configuration. The building blocks for
//! backend authors (`eventsource_core::driver`, `eventsource_core::wire`)
//! are not re-exported. The `eventsource` command (crate `eventsource-cli`)
//! is the operator's: groups, dead letters (list, show, replay, purge) and
//! a web console.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> eventsource::Result<()> {
//! // The URL would come from the environment or a config file.
//! let bus = eventsource::connect_url("memory://").await?;
//! assert_eq!(bus.backend(), "memory");
//! # Ok(())
//! # }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

// Built without any backend, no `BusConfig` exists, and the code that
// handles one is unreachable (by design: it still compiles).
#[cfg_attr(
    not(any(
        feature = "memory",
        feature = "redis",
        feature = "rabbitmq",
        feature = "kafka",
        feature = "nats"
    )),
    allow(unreachable_code, unused_mut, unused_variables, dead_code)
)]
mod config;

pub use config::{connect_bus, connect_url, BusConfig, Config, GroupConfig};

// Events, aggregates and repositories.
// `DomainEvent` is the trait and its derive macro; the derive names the
// trait as `::eventsource::DomainEvent`, so no `crate = "…"` is needed.
pub use eventsource_core::__private::DomainEvent;
pub use eventsource_core::{
    Aggregate, AggregateRoot, CommandError, EventEnvelope, Repository, SaveContext,
};
/// `#[derive(DomainEvent)]`: see [`DomainEvent`](trait@DomainEvent).
pub use eventsource_macros::DomainEventThroughFacade as DomainEvent;
/// Stops long-running tasks (the outbox relay, catch-up projections) at
/// shutdown; from `tokio-util`, re-exported so an application needs no
/// dependency of its own for it.
pub use tokio_util::sync::CancellationToken;
// The event store.
pub use eventsource_core::{
    AppendResult, EventStore, ExpectedVersion, InMemoryEventStore, RecordedEvent,
};
// The bus, subscriptions and handlers.
pub use eventsource_core::{
    async_trait, handler_fn, handler_for, Backoff, BusStats, EventBus, EventFilter, EventHandler,
    EventWatch, FnHandler, GroupStats, HandlerError, HandlerResult, RetryPolicy, ShutdownReport,
    Subscription, SubscriptionBuilder, SubscriptionHandle, TypedHandler,
};
// Dead letters.
pub use eventsource_core::{
    DeadLetter, DeadLetterQuery, DeadLetterQueue, Failure, FailureKind, LetterBody,
    ParkedAggregate, REPLAYED_FOR, REPLAYED_FROM,
};
// Errors.
pub use eventsource_core::{BoxError, Error, Result};
// What connecting does when the broker does not keep what it acknowledges.
pub use eventsource_core::{Durability, DurabilityRisk};

/// Helpers for tools built on the bus (the `eventsource` CLI, a backend):
/// a name checked as the bus checks group and namespace names, URLs and
/// text with their secrets masked, an aggregate's stream name. Not part
/// of what an application needs, so not at the crate's root.
pub mod helpers {
    pub use eventsource_core::{redact_text, redact_url, stream_name, validate_name};
}
// Schema evolution and tracing.
/// What the derive's code names (not part of the API).
#[doc(hidden)]
pub use eventsource_core::__private;
pub use eventsource_core::{manifest, metrics, personal, process, schema, trace, upcast};

/// The SQL event store (features `sqlite`, `postgres`): SQLite (the
/// embedded default) and PostgreSQL on sqlx, with the outbox, the inbox,
/// snapshots and catch-up projections. [`Config::connect_store`] opens
/// the store a configuration names.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub mod store {
    pub use eventsource_store::*;
}
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use eventsource_store::{OutboxRelay, SqlEventStore, StoreConfig};

/// Given/when/then tests of aggregates (feature `testing`, for
/// `[dev-dependencies]`): a history, a command, and the events it must
/// decide or the error it must be rejected with — no store, no bus.
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing {
    pub use eventsource_testkit::{AggregateOutcome, AggregateTest};
}

/// The in-process bus (feature `memory`).
#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub mod memory {
    pub use eventsource_bus_memory::*;
}

/// The Redis Streams bus (feature `redis`).
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis {
    pub use eventsource_bus_redis::*;
}

/// The RabbitMQ bus (feature `rabbitmq`).
#[cfg(feature = "rabbitmq")]
#[cfg_attr(docsrs, doc(cfg(feature = "rabbitmq")))]
pub mod rabbitmq {
    pub use eventsource_bus_rabbitmq::*;
}

/// The Kafka bus (feature `kafka`).
#[cfg(feature = "kafka")]
#[cfg_attr(docsrs, doc(cfg(feature = "kafka")))]
pub mod kafka {
    pub use eventsource_bus_kafka::*;
}

/// The NATS JetStream bus (feature `nats`).
#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub mod nats {
    pub use eventsource_bus_nats::*;
}

/// The README's snippets, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// The guide's snippets, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/guide.md")]
pub struct GuideDoctests;
