//! Where a handled delivery goes: the backend's ack or dead letter.

use super::{Delivery, Outcome};

/// What a backend does with a delivery once [`attempt`](super::attempt) is done with it:
/// ack it ([`Outcome::Handled`]), or dead-letter and ack it
/// ([`Outcome::DeadLetter`]). [`Outcome::Interrupted`] never reaches it.
#[async_trait::async_trait]
pub trait Settle<T>: Send + Sync {
    /// Acks or dead-letters `delivery`.
    async fn settle(&self, delivery: Delivery<T>, outcome: Outcome);
}
