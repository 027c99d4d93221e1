//! Retry and dead-letter behaviour of a subscription, tested without a
//! bus and without waiting: the same attempt loop every bus runs, on a
//! clock that skips the backoffs.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use eventsource_core::driver::{attempt, Delivery, Outcome};
use eventsource_core::{EventEnvelope, Subscription};

/// What the retry loop made of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlingReport {
    /// How many times the handler ran.
    pub attempts: u32,
    /// The error the event would be dead-lettered with; `None` when a run
    /// succeeded.
    pub dead_letter: Option<String>,
}

/// Runs `subscription`'s handler on `event` through the attempt loop the
/// buses use — retries per its policy, panics counted as failures,
/// permanent errors (and undecodable events) straight to the dead-letter
/// queue — on a paused clock, so a backoff of an hour takes no time.
/// Deterministic: no broker, no sleeps. Call it from a plain `#[test]`
/// (it runs its own runtime).
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
/// use std::time::Duration;
/// use eventsource_testkit::{handle_with_retries, probe};
/// use eventsource_core::{handler_fn, HandlerError, RetryPolicy, Subscription};
///
/// let calls = Arc::new(AtomicU32::new(0));
/// let c = Arc::clone(&calls);
/// let subscription = Subscription::builder("billing")
///     .retry(RetryPolicy::fixed(5, Duration::from_secs(3600)).unwrap())
///     .handler(handler_fn(move |_e| {
///         let n = c.fetch_add(1, Ordering::SeqCst);
///         async move {
///             if n < 2 { Err(HandlerError::transient("flaky")) } else { Ok(()) }
///         }
///     }))
///     .build()
///     .unwrap();
/// let report = handle_with_retries(&subscription, probe("a", 1, 1));
/// assert_eq!(report.attempts, 3);
/// assert_eq!(report.dead_letter, None);
/// ```
pub fn handle_with_retries(subscription: &Subscription, event: EventEnvelope) -> HandlingReport {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async {
        let mut delivery = Delivery::new(Arc::new(event), ());
        let outcome = attempt(
            subscription,
            &mut delivery,
            &CancellationToken::new(),
            &eventsource_core::driver::Counters::default(),
        )
        .await;
        HandlingReport {
            attempts: delivery.attempts,
            dead_letter: match outcome {
                Outcome::DeadLetter(failure) => Some(failure.error),
                Outcome::Handled | Outcome::Interrupted => None,
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe;
    use eventsource_core::{handler_fn, HandlerError, RetryPolicy};
    use std::time::Duration;

    fn sub(
        policy: RetryPolicy,
        fail: impl Fn() -> HandlerError + Send + Sync + 'static,
    ) -> Subscription {
        let fail = Arc::new(fail);
        Subscription::builder("g")
            .retry(policy)
            .handler(handler_fn(move |_e| {
                let fail = Arc::clone(&fail);
                async move { Err(fail()) }
            }))
            .build()
            .expect("valid")
    }

    #[test]
    fn transient_failures_use_every_attempt_then_dead_letter_without_waiting() {
        let started = std::time::Instant::now();
        let policy =
            RetryPolicy::exponential(4, Duration::from_secs(60), Duration::from_secs(3600))
                .expect("valid");
        let report = handle_with_retries(
            &sub(policy, || HandlerError::transient("down")),
            probe("a", 1, 1),
        );
        assert_eq!(report.attempts, 4);
        assert_eq!(report.dead_letter.as_deref(), Some("down"));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "minutes of backoff skipped, took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_permanent_failure_dead_letters_at_once() {
        let policy = RetryPolicy::fixed(5, Duration::from_secs(1)).expect("valid");
        let report = handle_with_retries(
            &sub(policy, || HandlerError::permanent("bad data")),
            probe("a", 1, 1),
        );
        assert_eq!(report.attempts, 1);
        assert_eq!(report.dead_letter.as_deref(), Some("bad data"));
    }
}
