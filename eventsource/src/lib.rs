//! # eventsource
//!
//! The facade of the eventsource framework: everything of
//! [`eventsource_core`] re-exported, plus [`BusConfig`] and
//! [`connect_bus`] to pick the backend by configuration, each behind a
//! cargo feature (`memory` by default; `redis`, `rabbitmq`, `kafka`,
//! `full`). The `eventsource` binary is the operator's CLI for dead
//! letters: list, show, replay, purge.
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

mod config;

pub use config::{connect_bus, connect_url, BusConfig};
pub use eventsource_core::*;

/// The README's snippets, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// The guide's snippets, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/guide.md")]
pub struct GuideDoctests;
