//! Process managers: long-running workflows that react to events from
//! several aggregates, send commands, publish messages and wait with
//! durable timeouts.
//!
//! A [`ProcessManager`] says which events start an instance, how each
//! event finds its instance ([`ProcessManager::correlate`], the
//! correlation id by default) and, in [`ProcessManager::handle`], how an
//! input changes the instance's state and which [`Effects`] follow:
//! commands to aggregates, events to publish, timeouts to schedule or
//! cancel, completion. The state is event-sourced: each handled input is
//! recorded as a step in the instance's own stream, and loading replays
//! the steps through `handle` (their effects discarded).
//!
//! Running one against a store and a bus (exactly-once effects, durable
//! timeouts) is the store crate's `ProcessRunner` and `TimeoutScheduler`;
//! [`ProcessFixture`] runs one in memory on a virtual clock for tests.
//! See `docs/adr/0018-process-managers.md`.

mod command;
mod effect;
mod fixture;
mod manager;
mod timeout;

pub use command::{command_id, CommandTarget, Commands};
pub use effect::{Effect, Effects};
pub use fixture::ProcessFixture;
pub use manager::ProcessManager;
pub use timeout::{timeout_envelope, timeout_name, TIMEOUT_EVENT_TYPE, TIMEOUT_HEADER};
