//! Where a handled delivery goes: the backend's ack or dead letter.

use super::{Delivery, Outcome};

/// What a backend does with a delivery once [`attempt`](super::attempt) is done with it:
/// ack it ([`Outcome::Handled`]), or dead-letter and ack it
/// ([`Outcome::DeadLetter`]). [`Outcome::Interrupted`] never reaches it.
#[async_trait::async_trait]
pub trait Settle<T>: Send + Sync {
    /// Acks or dead-letters `delivery`; returns whether its dead letter
    /// was written (`true` for an ack). A dead letter is counted, and its
    /// aggregate parked behind it, only once it is on the broker: one that
    /// could not be written leaves the delivery to come again.
    async fn settle(&self, delivery: Delivery<T>, outcome: Outcome) -> bool;

    /// Settles `delivery` at once when that waits for nothing (an ack the
    /// memory bus has no use for, one Redis batches for later), sparing
    /// [`settle`](Self::settle)'s boxed future on every event; gives the
    /// delivery back, for `settle`, otherwise — which the default always
    /// does.
    fn settle_now(
        &self,
        delivery: Delivery<T>,
        outcome: Outcome,
    ) -> Option<(Delivery<T>, Outcome)> {
        Some((delivery, outcome))
    }
}
