//! The worker loop: take a delivery, run the handler with retries, then
//! finish it, dead-letter it or put it back.

use std::sync::Arc;

use eventsource_core::dispatch::{attempt, Delivery, Outcome};
use eventsource_core::{DeadLetter, Subscription};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::bus::Inner;
use crate::group::Group;

/// Runs one worker of one member until `stop` is cancelled. A handler
/// already running when `stop` fires finishes first.
pub(crate) async fn run_worker(
    inner: Arc<Inner>,
    group: Arc<Group>,
    subscription: Subscription,
    stop: CancellationToken,
) {
    loop {
        let mut next = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            d = group.queue.take() => Some(d),
        };
        while let Some(mut delivery) = next.take() {
            let span = tracing::info_span!(
                "eventsource.handle",
                backend = "memory",
                group = %group.name,
                event_id = %delivery.envelope.event_id,
                event_type = %delivery.envelope.event_type,
                aggregate_id = %delivery.envelope.aggregate_id,
            );
            let outcome = attempt(&subscription, &mut delivery, &stop)
                .instrument(span)
                .await;
            inner.stats.record(&delivery, &outcome);
            match outcome {
                Outcome::Handled => {}
                Outcome::DeadLetter {
                    error,
                    last_failed_at,
                } => {
                    inner
                        .dead_letters
                        .insert(dead_letter(&group, &delivery, error, last_failed_at))
                }
                Outcome::Interrupted => {
                    group.queue.requeue(delivery);
                    return;
                }
            }
            next = group.queue.finish(&delivery.envelope.aggregate_id);
            if stop.is_cancelled() {
                if let Some(d) = next.take() {
                    group.queue.requeue(d);
                }
                return;
            }
        }
    }
}

fn dead_letter(
    group: &Group,
    delivery: &Delivery<()>,
    error: String,
    last_failed_at: chrono::DateTime<chrono::Utc>,
) -> DeadLetter {
    DeadLetter {
        id: String::new(),
        group: group.name.clone(),
        source: format!("memory:{}", group.name),
        envelope: Some((*delivery.envelope).clone()),
        raw: None,
        error,
        attempts: delivery.attempts,
        first_failed_at: delivery.first_failed_at.unwrap_or(last_failed_at),
        last_failed_at,
    }
}
