//! Rolling deploys: an event written at a schema version newer than a
//! member knows waits in its group's dead-letter queue, as a letter of
//! kind [`NewerVersion`](crate::FailureKind::NewerVersion) (and, where the
//! group parks aggregates, its aggregate's later events wait behind it),
//! until a member that knows the version sends it back to the group.
//!
//! A member does that when it starts (`release_known_at_start`, beside
//! [`Parking`](super::Parking)) and,
//! where the group parks aggregates, whenever it loads the parked set
//! again after taking partitions over ([`Parking`]'s newer heads): after
//! the upgraded consumers have replaced the old ones, what the old ones
//! parked is handled, in order, without an operator.

use crate::{DeadLetter, DeadLetterQueue, FailureKind, Subscription};

/// Whether `letter` is a newer-version letter `subscription`'s handler now
/// knows the version of.
fn known(subscription: &Subscription, letter: &DeadLetter) -> bool {
    if letter.failure.kind != FailureKind::NewerVersion || letter.group() != subscription.group() {
        return false;
    }
    let Some(envelope) = letter.envelope() else {
        return false;
    };
    subscription
        .handler()
        .known_version(&envelope.aggregate_type, &envelope.event_type)
        .is_some_and(|known| known >= envelope.schema_version)
}

/// The letters of `letters` that go back to the group: the newer-version
/// letters whose version `subscription`'s handler knows. Where the group
/// parks aggregates, `letters` are the heads of parked aggregates (the
/// group releases the rest behind a head, in order).
pub(crate) fn to_release(subscription: &Subscription, letters: Vec<DeadLetter>) -> Vec<DeadLetter> {
    letters
        .into_iter()
        .filter(|l| known(subscription, l))
        .collect()
}

/// Replays `letters` to the group, logging each; a letter already gone
/// (another member replayed it first) is skipped. Returns the ids of
/// those that could not be replayed (they stay where they are).
pub(crate) async fn replay(
    subscription: &Subscription,
    dlq: &dyn DeadLetterQueue,
    letters: &[DeadLetter],
) -> Vec<String> {
    let mut failed = Vec::new();
    for letter in letters {
        match dlq.replay(&letter.id).await {
            Ok(()) => tracing::info!(
                group = subscription.group(),
                letter = %letter.id,
                aggregate_id = letter.aggregate_id().unwrap_or("-"),
                "this member knows the newer schema version of a parked event: sent it back to the group"
            ),
            Err(crate::Error::NotFound { .. }) => {}
            Err(e) => {
                tracing::warn!(
                    group = subscription.group(),
                    letter = %letter.id,
                    error = %e,
                    "cannot replay a newer-version letter this member knows; replay it with `eventsource dlq replay`"
                );
                failed.push(letter.id.clone());
            }
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use parking_lot::Mutex;
    use serde::{Deserialize, Serialize};
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::driver::{release_known_at_start, Parking};
    use crate::{handler_for, DeadLetterQuery, DomainEvent, EventEnvelope, Failure};

    #[derive(Serialize, Deserialize)]
    struct Priced {
        cents: u64,
    }
    impl DomainEvent for Priced {
        fn event_type(&self) -> &str {
            "Priced"
        }
        const AGGREGATE_TYPE: &'static str = "Item";
        const SCHEMA_VERSION: u32 = 2;
    }

    /// Letters in a vector; `replay` takes one out and records it.
    #[derive(Default)]
    struct Letters {
        letters: Mutex<Vec<DeadLetter>>,
        replayed: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl DeadLetterQueue for Letters {
        async fn list(&self, q: &DeadLetterQuery) -> crate::Result<Vec<DeadLetter>> {
            let all = self.letters.lock().clone();
            Ok(all
                .into_iter()
                .filter(|l| q.group.as_deref().is_none_or(|g| g == l.group()))
                .collect())
        }
        async fn get(&self, id: &str) -> crate::Result<Option<DeadLetter>> {
            Ok(self.letters.lock().iter().find(|l| l.id == id).cloned())
        }
        async fn replay(&self, id: &str) -> crate::Result<()> {
            self.letters.lock().retain(|l| l.id != id);
            self.replayed.lock().push(id.to_owned());
            Ok(())
        }
        async fn delete(&self, id: &str) -> crate::Result<bool> {
            let mut all = self.letters.lock();
            let before = all.len();
            all.retain(|l| l.id != id);
            Ok(all.len() < before)
        }
    }

    /// A letter of group `g`, aggregate `agg` at `version`, written at
    /// `schema`, of `kind`.
    fn letter(id: &str, agg: &str, version: u64, schema: u32, kind: FailureKind) -> DeadLetter {
        let mut envelope = EventEnvelope::new(agg, version, &Priced { cents: 1 }).expect("encode");
        envelope.schema_version = schema;
        let mut failure = Failure::parked("g", &envelope);
        failure.kind = kind;
        DeadLetter::event(id, envelope, failure)
    }

    fn subscription(parks: bool) -> Subscription {
        Subscription::builder("g")
            .park_aggregate_on_failure(parks)
            .handler(handler_for(|_: Priced, _| async { Ok(()) }))
            .build()
            .expect("valid")
    }

    /// The group's DLQ after a rolling deploy: `a` parked behind a v2
    /// event (known), `b` behind a v3 one (not known yet), `c` behind a
    /// failure, with a v2 event parked behind that.
    fn after_a_rolling_deploy() -> Arc<Letters> {
        let dlq = Arc::new(Letters::default());
        dlq.letters.lock().extend([
            letter("a4", "a", 4, 2, FailureKind::Parked),
            letter("a3", "a", 3, 2, FailureKind::NewerVersion),
            letter("b1", "b", 1, 3, FailureKind::NewerVersion),
            letter("c1", "c", 1, 1, FailureKind::Permanent),
            letter("c2", "c", 2, 2, FailureKind::Parked),
        ]);
        dlq
    }

    /// A parking member that knows v2 sends back `a`'s head only (the
    /// group releases `a4` behind it), once however often it loads; not
    /// `b`'s v3, not `c`'s failure.
    #[tokio::test]
    async fn a_parking_member_sends_back_the_heads_it_knows_once() {
        let dlq = after_a_rolling_deploy();
        let parking = Parking::new("g", Arc::clone(&dlq) as Arc<dyn DeadLetterQueue>);
        let (sub, stop) = (subscription(true), CancellationToken::new());
        let as_dyn = Arc::clone(&dlq) as Arc<dyn DeadLetterQueue>;
        release_known_at_start(&sub, &as_dyn, Some(&parking), &stop).await;
        assert_eq!(*dlq.replayed.lock(), ["a3"]);
        assert!(parking.is_parked("a"), "released when the head is handled");
        // The letter back in the DLQ (a backend that deletes after the
        // replay): a reload does not send it twice.
        dlq.letters
            .lock()
            .push(letter("a3", "a", 3, 2, FailureKind::NewerVersion));
        parking.invalidate();
        assert!(parking.ready(&stop).await);
        parking.release_newer(&sub).await;
        assert_eq!(*dlq.replayed.lock(), ["a3"], "once per member");
    }

    /// Without parking, every newer-version letter it knows goes back.
    #[tokio::test]
    async fn a_member_that_does_not_park_sends_back_each_known_letter() {
        let dlq = Arc::new(Letters::default());
        dlq.letters.lock().extend([
            letter("a3", "a", 3, 2, FailureKind::NewerVersion),
            letter("a4", "a", 4, 2, FailureKind::NewerVersion),
            letter("b1", "b", 1, 3, FailureKind::NewerVersion),
            letter("c1", "c", 1, 2, FailureKind::Exhausted),
        ]);
        let as_dyn = Arc::clone(&dlq) as Arc<dyn DeadLetterQueue>;
        let (sub, stop) = (subscription(false), CancellationToken::new());
        release_known_at_start(&sub, &as_dyn, None, &stop).await;
        assert_eq!(*dlq.replayed.lock(), ["a3", "a4"]);
    }

    /// A handler that does not say what it knows sends nothing back.
    #[tokio::test]
    async fn a_handler_that_does_not_say_sends_nothing_back() {
        let dlq = after_a_rolling_deploy();
        let as_dyn = Arc::clone(&dlq) as Arc<dyn DeadLetterQueue>;
        let sub = Subscription::builder("g")
            .handler(crate::handler_fn(|_| async { Ok(()) }))
            .build()
            .expect("valid");
        release_known_at_start(&sub, &as_dyn, None, &CancellationToken::new()).await;
        assert!(dlq.replayed.lock().is_empty());
    }
}
