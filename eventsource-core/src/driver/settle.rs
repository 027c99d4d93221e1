//! Where a handled delivery goes: the backend's ack, or its dead letter —
//! one door for every dead letter, the undecodable ones included, counted
//! once the letter is on the broker.

use std::sync::Arc;

use super::{Counters, Delivery, Outcome};
use crate::{EventEnvelope, Failure};

/// What a dead letter carries: the event, or the message as it came off
/// the wire when it did not decode (`R` is the backend's raw form: Redis's
/// fields, RabbitMQ's properties and body, Kafka's headers and payload).
#[derive(Debug, Clone)]
pub enum Letter<R> {
    /// A decoded event whose handling failed for good (or that was parked).
    Event(Arc<EventEnvelope>),
    /// A message that did not decode into an event.
    Raw(R),
}

/// What a backend does with a delivery once [`attempt`](super::attempt) is
/// done with it: ack it ([`Outcome::Handled`]), or dead-letter and ack it
/// ([`Outcome::DeadLetter`]). [`Outcome::Interrupted`] never reaches it.
///
/// A backend writes the ack and the dead letter; what is common — the
/// letter's [`source`](Settle::source), counting only what was written —
/// is [`settle`] and [`dead_letter`], which every path goes through.
#[async_trait::async_trait]
pub trait Settle<T>: Send + Sync {
    /// The backend's form of a message that did not decode.
    type Raw: Send + 'static;

    /// Where the message of `token` came from, in the backend's notation
    /// (`stream/entry`, `queue (routing key)`, `topic[partition]@offset`),
    /// for its dead letter's [`Failure::source`].
    fn source(&self, token: &T) -> String;

    /// Acks the message of `token`: handled, or not for this subscription.
    async fn ack(&self, token: T);

    /// Acks at once when that waits for nothing (an ack the memory bus has
    /// no use for, one Redis batches for later), sparing
    /// [`ack`](Self::ack)'s boxed future on every event; gives the token
    /// back, for `ack`, otherwise — which the default always does.
    fn ack_now(&self, token: T) -> Option<T> {
        Some(token)
    }

    /// Writes `letter` to the group's dead-letter queue with `failure`,
    /// then acks the message of `token`; returns whether the letter was
    /// written. One that could not be written leaves the message to come
    /// again (given back, or left pending), never acked.
    async fn dead_letter(&self, token: T, letter: Letter<Self::Raw>, failure: &Failure) -> bool;
}

/// Settles `delivery` with `outcome` through `settle`: acks it, or
/// dead-letters it through [`dead_letter`] with its source filled in.
/// Returns whether its dead letter was written (`true` for an ack).
pub async fn settle<T, S>(
    settle: &S,
    counters: &Counters,
    delivery: Delivery<T>,
    outcome: Outcome,
) -> bool
where
    S: Settle<T> + ?Sized,
{
    let Delivery {
        envelope, token, ..
    } = delivery;
    match outcome {
        Outcome::DeadLetter(failure) => {
            let failure = failure.from_source(settle.source(&token));
            dead_letter(settle, counters, token, Letter::Event(envelope), failure).await
        }
        Outcome::Handled => {
            if let Some(token) = settle.ack_now(token) {
                settle.ack(token).await;
            }
            true
        }
        // Never acked: it is delivered again.
        Outcome::Interrupted => false,
    }
}

/// The one door for dead letters: writes `letter` through `settle` and,
/// once it is written, counts it in [`Counters`] (a dead letter, or a
/// parked event). A
/// backend's reader sends undecodable messages here too
/// ([`Letter::Raw`]); `failure` already names its source.
pub async fn dead_letter<T, S>(
    settle: &S,
    counters: &Counters,
    token: T,
    letter: Letter<S::Raw>,
    failure: Failure,
) -> bool
where
    S: Settle<T> + ?Sized,
{
    let written = settle.dead_letter(token, letter, &failure).await;
    if written {
        counters.letter_written(&failure.group, failure.kind);
    }
    written
}
