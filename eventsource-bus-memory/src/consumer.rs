//! The worker loop: take a delivery, run the handler with retries, ack,
//! dead-letter or put back.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use chrono::Utc;
use eventsource_core::{DeadLetter, Subscription};
use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::bus::Inner;
use crate::group::{Delivery, Group};

/// Runs one worker of one member until `stop` is cancelled. A handler
/// already running when `stop` fires finishes first.
pub(crate) async fn run_worker(
    inner: Arc<Inner>,
    group: Arc<Group>,
    subscription: Subscription,
    stop: CancellationToken,
) {
    loop {
        let delivery = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            d = group.take() => d,
        };
        let mut next = Some(delivery);
        while let Some(delivery) = next.take() {
            let aggregate_id = delivery.envelope.aggregate_id.clone();
            match handle(&inner, &group, &subscription, delivery, &stop).await {
                Outcome::Done => next = group.finish(&aggregate_id),
                Outcome::Interrupted(d) => {
                    group.requeue(d);
                    return;
                }
            }
            if stop.is_cancelled() {
                if let Some(d) = next.take() {
                    group.requeue(d);
                }
                return;
            }
        }
    }
}

enum Outcome {
    /// Handled or dead-lettered: the delivery is finished.
    Done,
    /// Shutdown came during a retry backoff: put it back for redelivery.
    Interrupted(Delivery),
}

async fn handle(
    inner: &Inner,
    group: &Group,
    subscription: &Subscription,
    mut delivery: Delivery,
    stop: &CancellationToken,
) -> Outcome {
    let envelope = Arc::clone(&delivery.envelope);
    let span = tracing::info_span!(
        "eventsource.handle",
        backend = "memory",
        group = %group.name,
        event_id = %envelope.event_id,
        event_type = %envelope.event_type,
        aggregate_id = %envelope.aggregate_id,
    );
    async {
        let retry = subscription.retry();
        loop {
            delivery.attempts += 1;
            let result = AssertUnwindSafe(subscription.handler().handle(&envelope))
                .catch_unwind()
                .await;
            let (error, permanent) = match result {
                Ok(Ok(())) => {
                    inner.stats.handled();
                    return Outcome::Done;
                }
                Ok(Err(e)) => (e.to_string(), e.is_permanent()),
                Err(panic) => (format!("handler panicked: {}", panic_message(&*panic)), false),
            };
            inner.stats.failed_attempt();
            let now = Utc::now();
            let first_failed_at = *delivery.first_failed_at.get_or_insert(now);
            if permanent || !retry.should_retry(delivery.attempts) {
                tracing::warn!(attempts = delivery.attempts, %error, "dead-lettering event");
                inner.dead_letters.insert(DeadLetter {
                    id: String::new(),
                    group: group.name.clone(),
                    source: format!("memory:{}", group.name),
                    envelope: Some((*envelope).clone()),
                    raw: None,
                    error,
                    attempts: delivery.attempts,
                    first_failed_at,
                    last_failed_at: now,
                });
                inner.stats.dead_lettered();
                return Outcome::Done;
            }
            let delay = retry.delay_before(delivery.attempts + 1);
            tracing::debug!(attempt = delivery.attempts, ?delay, %error, "handler failed, retrying");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stop.cancelled() => return Outcome::Interrupted(delivery),
            }
        }
    }
    .instrument(span)
    .await
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
