//! What a reader does with each message it fetched, before any worker
//! sees it: queue it, skip it, or dead-letter it at once.

use crate::{EventEnvelope, Failure, Subscription};

/// The verdict on one fetched message.
#[derive(Debug)]
pub enum Intake {
    /// The subscription wants it: queue it for the workers.
    Handle(EventEnvelope),
    /// The subscription's filter does not select it (a broker without
    /// server-side filtering delivered it), or it is a replay for another
    /// group ([`REPLAYED_FOR`](crate::REPLAYED_FOR)): ack it, nothing to do.
    Skip,
    /// It does not decode into an event: dead-letter it without running a
    /// handler (a poison message never blocks its aggregate or partition).
    DeadLetter(Failure),
}

/// Triage of a message `decoded` (or not, with the reason) from `source`
/// (the backend's notation: `stream/entry`, `queue (routing key)`,
/// `topic[partition]@offset`; only built when it is needed).
pub fn triage(
    backend: &'static str,
    subscription: &Subscription,
    decoded: Result<EventEnvelope, String>,
    source: impl FnOnce() -> String,
) -> Intake {
    match decoded {
        Ok(envelope) if replayed_for_another(&envelope, subscription.group()) => Intake::Skip,
        Ok(envelope) if subscription.filter().matches(&envelope) => Intake::Handle(envelope),
        Ok(_) => Intake::Skip,
        Err(reason) => {
            let source = source();
            tracing::warn!(backend, group = subscription.group(), %source, %reason, "undecodable message, dead-lettering it");
            Intake::DeadLetter(Failure::undecodable(subscription.group(), source, reason))
        }
    }
}

/// Whether `envelope` is a replay meant for a group other than `group`.
pub fn replayed_for_another(envelope: &EventEnvelope, group: &str) -> bool {
    envelope
        .metadata
        .get(crate::REPLAYED_FOR)
        .is_some_and(|g| g != group)
}
