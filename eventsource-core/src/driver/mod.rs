//! The layer for backend authors: everything a bus does the same way on
//! every broker, so a backend writes only what its broker does differently.
//!
//! # How a backend fits together
//!
//! ```text
//!  publish ──► publish::publish ──► backend send (XADD, basic.publish, produce)
//!
//!  broker ──► reader (backend) ──► intake::triage ──► KeyedQueue ──► Worker × concurrency
//!                                      │  Skip: Settle::ack              │ attempt (retries, backoff,
//!                                      │  DeadLetter: Letter::Raw        │   panics, span)
//!                                      ▼                                 ▼
//!                              driver::dead_letter ◄──────────── driver::settle: ack, or
//!                              (Settle::dead_letter,              Letter::Event
//!                               counted once written)
//! ```
//!
//! A broker backend's member owns a [`MemberCore`] — its subscription, the
//! keyed queue with its prefetch slots, the group's [`Parking`], its tasks
//! — and implements [`BrokerMember`] and [`Settle`]; the core spawns its
//! workers. What the backend writes is the reader and the settle.
//!
//! - **Reader** (the backend's own loop: XREADGROUP and XAUTOCLAIM, a lapin
//!   consumer stream, a Kafka poll with rebalances). It fetches, holds a
//!   prefetch slot per message, decodes, and asks [`triage`] what to do:
//!   [`Intake::Handle`] goes into the [`KeyedQueue`] as a [`Delivery`]
//!   carrying the backend's token (entry id, delivery tag, offset);
//!   [`Intake::Skip`] is acked; [`Intake::DeadLetter`] goes through
//!   [`dead_letter`] at once, as a [`Letter::Raw`] with its
//!   [`Failure`](crate::Failure).
//! - **[`KeyedQueue`]** hands out at most one delivery per aggregate at a
//!   time, in arrival order per aggregate; the worker that finishes an
//!   aggregate gets its next delivery, so order holds without a race.
//! - **Workers** ([`Worker`], `concurrency` per member) take a
//!   delivery, [`attempt_once`] it under the subscription's
//!   [`RetryPolicy`](crate::RetryPolicy) inside an `eventsource.handle`
//!   span, count it in [`Counters`], and [`settle`] it through the
//!   backend's [`Settle`]: ack on [`Outcome::Handled`], dead-letter then
//!   ack on [`Outcome::DeadLetter`]. Every dead letter, undecodable ones
//!   included, passes [`dead_letter`], which counts it only once the
//!   backend wrote it. A failure to retry is deferred in the queue
//!   for its backoff ([`KeyedQueue::defer`]): its aggregate waits, the
//!   worker goes on with others. A deferred delivery still unacked at a
//!   stop is redelivered.
//! - **[`Members`]** is the bus's bookkeeping: open or shut down, which
//!   members run with which filter (one filter per group), and stopping
//!   them all within a deadline ([`join_tasks`]).
//! - **Publishing** goes through [`publish()`]: the closed check, the
//!   trace stamp, the span, one deadline with retries of transient
//!   failures ([`PublishTarget`]), the count.
//! - **The durability check** at connect: the backend reads the broker
//!   settings that would lose acknowledged publishes and hands what it
//!   found to [`enforce_durability`], which refuses, warns or lets go as
//!   the config's [`Durability`](crate::Durability) says.
//!
//! What stays in the backend is what differs for real reasons: how
//! messages are fetched, leased and taken over (Redis), reconnected
//! (RabbitMQ), or rebalanced (Kafka), and how a dead letter is stored.

mod core;
mod counters;
mod durability;
mod intake;
mod member;
mod newer;
mod parking;
pub mod publish;
mod queue;
mod setters;
mod settle;
mod worker;

pub use crate::partition::assigned_partitions;
pub use core::{BrokerMember, MemberCore};
pub use counters::Counters;
pub use durability::enforce as enforce_durability;
pub use intake::{triage, Intake};
pub use member::{join_tasks, Member, MemberTasks, Members};
pub use parking::{refuse_parking, release_known_at_start, Parking};
pub use publish::{publish, stamp, stamp_shared, PublishTarget, SendError, Stamped};
pub use queue::{Delivery, KeyedQueue};
pub use settle::{dead_letter, settle, Letter, Settle};
pub use worker::{attempt, attempt_once, Outcome, Step, Worker};

#[cfg(test)]
mod tests;
