//! The attempt loop (retries, backoff, panics) and the worker loop that
//! takes deliveries from the queue, attempts them and settles them.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::FutureExt;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::{Counters, Delivery, KeyedQueue, Parking, Settle};
use crate::{
    DeadLetter, EventEnvelope, Failure, FailureKind, LetterBody, Subscription, REPLAYED_FROM,
};

/// What [`attempt`] made of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The handler succeeded: ack it.
    Handled,
    /// Attempts are used up or the failure is permanent: dead-letter it,
    /// then ack it. The failure's `source` is empty: the backend's
    /// [`Settle`] fills it in ([`Failure::from_source`]).
    DeadLetter(Failure),
    /// `stop` fired during a retry backoff: leave it unacked for redelivery.
    Interrupted,
}

/// What one attempt made of a delivery: an outcome, or another attempt
/// after a backoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Settled: handled, or to be dead-lettered (or interrupted).
    Done(Outcome),
    /// It failed and is retried after this backoff. A worker does not
    /// wait it out: it [`defer`](super::KeyedQueue::defer)s the delivery
    /// (its aggregate stays locked, so order holds) and goes on with
    /// other aggregates.
    RetryAfter(Duration),
}

/// Runs the subscription's handler on `delivery` once. Panics count as
/// failures. Updates `delivery.attempts` and `first_failed_at`; a
/// failure that is permanent, or the last attempt's, is
/// [`Outcome::DeadLetter`], any other a [`Step::RetryAfter`] the policy's
/// backoff.
pub async fn attempt_once<T>(
    subscription: &Subscription,
    delivery: &mut Delivery<T>,
    counters: &Counters,
) -> Step {
    let retry = subscription.retry();
    delivery.attempts += 1;
    // The handle span (current here) shows the attempt it ended on.
    tracing::Span::current().record("attempt", delivery.attempts);
    let timer = counters.start_call();
    let result = AssertUnwindSafe(subscription.handler().handle(&delivery.envelope))
        .catch_unwind()
        .await;
    counters.handler_call(subscription.group(), timer, matches!(result, Ok(Ok(()))));
    let (error, kind) = match result {
        Ok(Ok(())) => return Step::Done(Outcome::Handled),
        Ok(Err(e)) if e.is_newer_version() => (e.to_string(), Some(FailureKind::NewerVersion)),
        Ok(Err(e)) => (
            e.to_string(),
            e.is_permanent().then_some(FailureKind::Permanent),
        ),
        Err(panic) => (
            format!("handler panicked: {}", panic_message(&*panic)),
            None,
        ),
    };
    let now = Utc::now();
    delivery.first_failed_at.get_or_insert(now);
    if kind.is_some() || !retry.should_retry(delivery.attempts) {
        if kind == Some(FailureKind::NewerVersion) {
            tracing::info!(
                group = subscription.group(),
                event_id = %delivery.envelope.event_id,
                %error,
                "parking an event of a newer schema version until a member that knows it takes it"
            );
        } else {
            tracing::warn!(
                group = subscription.group(),
                event_id = %delivery.envelope.event_id,
                attempts = delivery.attempts,
                %error,
                "dead-lettering event"
            );
        }
        return Step::Done(Outcome::DeadLetter(Failure {
            error,
            kind: kind.unwrap_or(FailureKind::Exhausted),
            attempts: delivery.attempts,
            first_failed_at: delivery.first_failed_at.unwrap_or(now),
            last_failed_at: now,
            group: subscription.group().to_owned(),
            source: String::new(),
            handler: Some(subscription.handler().name().to_owned()),
        }));
    }
    let delay: Duration = retry.delay_before(delivery.attempts + 1);
    tracing::debug!(attempt = delivery.attempts, ?delay, %error, "handler failed, retrying");
    Step::RetryAfter(delay)
}

/// Runs the subscription's handler on `delivery` until it succeeds, the
/// failure is permanent, the attempts run out, or `stop` fires during a
/// backoff, sleeping through each backoff ([`attempt_once`] in a loop).
/// For work that must finish in place (releasing a parked aggregate's
/// letters in order); the worker loop defers its retries instead. A
/// handler already running when `stop` fires is let finish.
pub async fn attempt<T>(
    subscription: &Subscription,
    delivery: &mut Delivery<T>,
    stop: &CancellationToken,
    counters: &Counters,
) -> Outcome {
    loop {
        match attempt_once(subscription, delivery, counters).await {
            Step::Done(outcome) => return outcome,
            Step::RetryAfter(delay) => {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => return Outcome::Interrupted,
                }
            }
        }
    }
}

/// One worker's loop, which every backend runs `concurrency` times per
/// member (see [`MemberCore::spawn_workers`](super::MemberCore::spawn_workers)):
/// take a delivery, [`attempt_once`] it, count it, [`Settle`] it, then take
/// the same aggregate's next delivery if one is waiting. A failure to be
/// retried is deferred in the queue for its backoff ([`Step::RetryAfter`]):
/// its aggregate waits, the worker does not. Returns when
/// `stop` fires; a handler already running finishes first, and what was
/// taken but not finished goes back to the queue.
///
/// A panic outside the handler (handler panics are caught by [`attempt`])
/// does not end the worker: it frees the aggregate it was working on,
/// counts a restart in [`BusStats::worker_restarts`](crate::BusStats::worker_restarts),
/// logs an error, and goes on, so the other aggregates keep flowing. The
/// message it held is not acked, and is delivered again.
pub struct Worker<'a, T, S: ?Sized> {
    /// The backend's name, for spans and logs.
    pub backend: &'static str,
    /// What the member consumes (stream, queue, topic), for spans.
    pub destination: &'a str,
    /// Where deliveries come from.
    pub queue: &'a KeyedQueue<T>,
    /// The handler, its retry policy and group.
    pub subscription: &'a Subscription,
    /// Cancelled when the member stops.
    pub stop: &'a CancellationToken,
    /// Where outcomes are counted.
    pub counters: &'a Counters,
    /// The backend's ack and dead letter.
    pub settle: &'a S,
    /// The group's parked aggregates, when the subscription parks them
    /// ([`park_aggregate_on_failure`](crate::SubscriptionBuilder::park_aggregate_on_failure)).
    pub parking: Option<&'a Parking>,
}

impl<T: Send, S: Settle<T> + ?Sized> Worker<'_, T, S> {
    /// Runs until `stop` fires (see the type's documentation).
    pub async fn run(self) {
        loop {
            let holding: Mutex<Option<Arc<EventEnvelope>>> = Mutex::new(None);
            let run = AssertUnwindSafe(self.work(&holding)).catch_unwind().await;
            let Err(panic) = run else { return };
            self.counters.worker_restarted();
            let held = holding.lock().take();
            let key = held.as_ref().map(|e| e.aggregate_id.as_str());
            tracing::error!(
                backend = self.backend,
                group = self.subscription.group(),
                aggregate_id = key.unwrap_or("-"),
                panic = %panic_message(&*panic),
                "worker panicked outside the handler; restarting it (the message it held is delivered again)"
            );
            if let Some(key) = key {
                // Free the aggregate; its next delivery, if one waits, goes back first.
                if let Some(next) = self.queue.finish(key) {
                    self.queue.requeue(next);
                }
            }
            if self.stop.is_cancelled() {
                return;
            }
        }
    }

    async fn work(&self, holding: &Mutex<Option<Arc<EventEnvelope>>>) {
        let Worker {
            backend,
            destination,
            queue,
            subscription,
            stop,
            counters,
            settle,
            parking,
        } = *self;
        loop {
            let mut next = tokio::select! {
                biased;
                () = stop.cancelled() => return,
                d = queue.take() => Some(d),
            };
            while let Some(mut delivery) = next.take() {
                *holding.lock() = Some(Arc::clone(&delivery.envelope));
                // OpenTelemetry messaging conventions (a consumer span named
                // "process {destination}"), beside the names used before.
                let span = tracing::info_span!(
                    "eventsource.handle",
                    otel.name = %format_args!("process {destination}"),
                    otel.kind = "consumer",
                    messaging.system = backend,
                    messaging.operation.type = "process",
                    messaging.operation.name = "handle",
                    messaging.destination.name = destination,
                    messaging.consumer.group.name = subscription.group(),
                    messaging.message.id = %delivery.envelope.event_id,
                    messaging.message.conversation_id = delivery.envelope.correlation_id.as_deref(),
                    backend,
                    group = subscription.group(),
                    event_id = %delivery.envelope.event_id,
                    event_type = %delivery.envelope.event_type,
                    aggregate_id = %delivery.envelope.aggregate_id,
                    attempt = tracing::field::Empty,
                );
                crate::trace::set_parent(&span, &delivery.envelope);
                counters.in_flight(subscription.group(), 1);
                let step = tracing::Instrument::instrument(self.decide(&mut delivery), span).await;
                counters.in_flight(subscription.group(), -1);
                let outcome = match step {
                    Step::Done(outcome) => outcome,
                    Step::RetryAfter(delay) => {
                        // Its aggregate stays locked until it is due and
                        // handed out again; this worker goes on meanwhile.
                        *holding.lock() = None;
                        queue.defer(delivery, tokio::time::Instant::now() + delay);
                        continue;
                    }
                };
                counters.record(subscription.group(), &delivery, &outcome);
                if outcome == Outcome::Interrupted {
                    queue.requeue(delivery);
                    return;
                }
                let envelope = Arc::clone(&delivery.envelope);
                let letter = match &outcome {
                    Outcome::DeadLetter(f) => Some(f.kind),
                    _ => None,
                };
                let written = super::settle(settle, counters, delivery, outcome).await;
                let parks = written && letter.is_some_and(|kind| kind != FailureKind::Parked);
                if let (Some(parking), true) = (parking, parks) {
                    // Its letter is on the broker now: its next events wait behind it.
                    parking.set(&envelope.aggregate_id, true);
                }
                *holding.lock() = None;
                next = queue.finish(&envelope.aggregate_id);
                if stop.is_cancelled() {
                    if let Some(d) = next.take() {
                        queue.requeue(d);
                    }
                    return;
                }
            }
        }
    }
}

impl<T: Send, S: Settle<T> + ?Sized> Worker<'_, T, S> {
    /// What to do with `delivery`: [`attempt_once`] it, or, when the group
    /// parks aggregates and its aggregate is parked, park it too — unless
    /// it is that aggregate's oldest letter coming back from a replay,
    /// which is attempted and, once handled, releases the rest.
    async fn decide(&self, delivery: &mut Delivery<T>) -> Step {
        match self.parking {
            None => attempt_once(self.subscription, delivery, self.counters).await,
            Some(parking) => self.decide_parked(parking, delivery).await,
        }
    }

    /// [`decide`](Self::decide) for a group that parks aggregates.
    async fn decide_parked(&self, parking: &Parking, delivery: &mut Delivery<T>) -> Step {
        let Worker {
            subscription,
            stop,
            counters,
            ..
        } = *self;
        if !parking.ready(stop).await {
            return Step::Done(Outcome::Interrupted);
        }
        // Taken partitions over: heads this member knows go back now.
        parking.release_newer(subscription).await;
        let envelope = Arc::clone(&delivery.envelope);
        let key = envelope.aggregate_id.as_str();
        if !parking.is_parked(key) {
            return attempt_once(subscription, delivery, counters).await;
        }
        let parked = || {
            Step::Done(Outcome::DeadLetter(Failure::parked(
                subscription.group(),
                &envelope,
            )))
        };
        if !envelope.metadata.contains_key(REPLAYED_FROM) {
            return parked();
        }
        let Some(letters) = parking
            .retrying(stop, "release a parked aggregate", || {
                parking.letters_of(key)
            })
            .await
        else {
            return Step::Done(Outcome::Interrupted);
        };
        // Its own letter, if a backend removes it only after the replay.
        let rest: Vec<DeadLetter> = letters
            .into_iter()
            .filter(|l| l.envelope().map(|e| e.event_id) != Some(envelope.event_id))
            .collect();
        let older = rest.iter().any(|l| {
            l.envelope()
                .is_some_and(|e| e.aggregate_version < envelope.aggregate_version)
        });
        if older {
            // Not the oldest: it waits behind that one, as before.
            return parked();
        }
        // The head of a parked aggregate is retried in place: what is
        // released behind it must follow it at once, in order.
        let outcome = attempt(subscription, delivery, stop, counters).await;
        if outcome == Outcome::Handled {
            self.release(parking, key, rest).await;
        }
        Step::Done(outcome)
    }

    /// Handles `letters` (an aggregate's parked letters, in order) one
    /// after another, deleting the handled ones in batches of
    /// [`RELEASE_BATCH`] (one DLQ read per batch where a backend scans to
    /// delete, rather than one per letter); the aggregate is released when
    /// all are. One that fails again, or a stop, ends the release there:
    /// what was handled is deleted, the rest stay parked behind it. A
    /// crash before a batch is deleted leaves its letters to be handled
    /// again on the next replay — at least once, in order.
    async fn release(&self, parking: &Parking, key: &str, letters: Vec<DeadLetter>) {
        let (subscription, stop, counters) = (self.subscription, self.stop, self.counters);
        let count = letters.len();
        let mut handled: Vec<String> = Vec::new();
        let mut released = true;
        for letter in letters {
            let LetterBody::Envelope(envelope) = letter.body else {
                continue;
            };
            let mut delivery = Delivery::new(Arc::new(envelope), ());
            let outcome = attempt(subscription, &mut delivery, stop, counters).await;
            counters.record(subscription.group(), &delivery, &outcome);
            match outcome {
                Outcome::Handled => handled.push(letter.id),
                Outcome::DeadLetter(failure) => {
                    tracing::warn!(group = subscription.group(), aggregate_id = key, letter = %letter.id, error = %failure.error,
                        "a released event failed again; its aggregate stays parked behind that letter");
                    released = false;
                    break;
                }
                Outcome::Interrupted => {
                    released = false;
                    break;
                }
            }
            if handled.len() >= RELEASE_BATCH
                && !delete_released(parking, key, subscription, &mut handled).await
            {
                return;
            }
        }
        if !delete_released(parking, key, subscription, &mut handled).await || !released {
            return;
        }
        parking.set(key, false);
        tracing::info!(
            group = subscription.group(),
            aggregate_id = key,
            released = count,
            "parked aggregate released"
        );
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// How many released letters a release deletes at once.
const RELEASE_BATCH: usize = 64;

/// Deletes the released letters `handled` (and empties it); `false` if
/// they could not be deleted, which ends the release: the aggregate stays
/// parked behind them, and they are handled again on the next replay.
async fn delete_released(
    parking: &Parking,
    key: &str,
    subscription: &Subscription,
    handled: &mut Vec<String>,
) -> bool {
    if handled.is_empty() {
        return true;
    }
    match parking.delete(handled).await {
        Ok(_) => {
            handled.clear();
            true
        }
        Err(e) => {
            tracing::warn!(group = subscription.group(), aggregate_id = key, letters = handled.len(), error = %e,
                "released events were handled but their letters could not be deleted; the aggregate stays parked behind them");
            false
        }
    }
}
