//! Subscriptions: a consumer group, a filter, a handler and a retry policy.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::{Error, EventFilter, EventHandler, Result, RetryPolicy};

/// What a backend needs to deliver events to a handler.
///
/// Every subscription with the same `group` on a bus forms one consumer
/// group: each event reaches one member of the group (competing
/// consumers), and every group gets its own copy (fan-out). Build it with
/// [`Subscription::builder`].
///
/// ```
/// use eventsource_core::{handler_fn, EventFilter, RetryPolicy, Subscription};
/// use std::time::Duration;
///
/// let sub = Subscription::builder("billing")
///     .filter(EventFilter::pattern("Order.*")?)
///     .retry(RetryPolicy::fixed(3, Duration::from_millis(50))?)
///     .concurrency(8)
///     .handler(handler_fn(|_event| async { Ok(()) }))
///     .build()?;
/// assert_eq!(sub.group(), "billing");
/// # Ok::<(), eventsource_core::Error>(())
/// ```
#[derive(Clone)]
pub struct Subscription {
    group: String,
    filter: EventFilter,
    handler: Arc<dyn EventHandler>,
    retry: RetryPolicy,
    concurrency: usize,
    park: bool,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("group", &self.group)
            .field("filter", &self.filter)
            .field("retry", &self.retry)
            .field("concurrency", &self.concurrency)
            .field("park_aggregate_on_failure", &self.park)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// Starts a subscription for consumer group `group`.
    pub fn builder(group: impl Into<String>) -> SubscriptionBuilder {
        SubscriptionBuilder {
            group: group.into(),
            filter: EventFilter::all(),
            handler: None,
            retry: RetryPolicy::default(),
            concurrency: 1,
            park: false,
        }
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Which events are delivered.
    pub fn filter(&self) -> &EventFilter {
        &self.filter
    }

    /// The handler.
    pub fn handler(&self) -> &Arc<dyn EventHandler> {
        &self.handler
    }

    /// The retry policy.
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// How many events this member handles at once (different aggregates
    /// only: events of one aggregate are always handled one after another).
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Whether an aggregate's later events wait behind its dead letter
    /// (see [`SubscriptionBuilder::park_aggregate_on_failure`]).
    pub fn parks_aggregates(&self) -> bool {
        self.park
    }
}

/// Builds a [`Subscription`]; validated by [`build`](Self::build).
#[must_use]
pub struct SubscriptionBuilder {
    group: String,
    filter: EventFilter,
    handler: Option<Arc<dyn EventHandler>>,
    retry: RetryPolicy,
    concurrency: usize,
    park: bool,
}

impl SubscriptionBuilder {
    /// Which events to receive (default: all).
    pub fn filter(mut self, filter: EventFilter) -> Self {
        self.filter = filter;
        self
    }

    /// The handler to run for each event.
    pub fn handler(mut self, handler: impl EventHandler) -> Self {
        self.handler = Some(Arc::new(handler));
        self
    }

    /// A handler already behind an `Arc` (shared between subscriptions).
    pub fn shared_handler(mut self, handler: Arc<dyn EventHandler>) -> Self {
        self.handler = Some(handler);
        self
    }

    /// The retry policy (default: [`RetryPolicy::default`]).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// How many events of different aggregates to handle at once (default 1).
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Keeps an aggregate's order through failures (default `false`).
    ///
    /// When an event of aggregate X is dead-lettered in this group, X's
    /// later events are not handled: each is written to the group's
    /// dead-letter queue as a letter of kind
    /// [`Parked`](crate::FailureKind::Parked), behind the failed one, so
    /// they are kept on the broker, not in memory. Replaying X's oldest
    /// letter (after fixing the bug) handles it and then X's parked
    /// letters, in order, before X's next new event;
    /// [`DeadLetterQueue::discard`](crate::DeadLetterQueue::discard) skips
    /// it and releases the rest. Other aggregates and other groups go on
    /// as before. [`DeadLetterQueue::parked`](crate::DeadLetterQueue::parked)
    /// lists the parked aggregates.
    ///
    /// Every member of the group must set it alike. Backends where a
    /// group's members share an aggregate's events only with partitioned
    /// groups (Redis, RabbitMQ) refuse it at `subscribe` without
    /// `partitions` (or one active consumer per group).
    pub fn park_aggregate_on_failure(mut self, park: bool) -> Self {
        self.park = park;
        self
    }

    /// Validates and builds the subscription.
    pub fn build(self) -> Result<Subscription> {
        validate_name("consumer group", &self.group)?;
        self.filter.validate()?;
        if self.concurrency == 0 || self.concurrency > 10_000 {
            return Err(Error::config(format!(
                "subscription `{}`: concurrency must be between 1 and 10000, got {}",
                self.group, self.concurrency
            )));
        }
        let handler = self.handler.ok_or_else(|| {
            Error::config(format!("subscription `{}` has no handler", self.group))
        })?;
        Ok(Subscription {
            group: self.group,
            filter: self.filter,
            handler,
            retry: self.retry,
            concurrency: self.concurrency,
            park: self.park,
        })
    }
}

/// Checks a name that backends use inside stream, queue and topic names:
/// 1 to 200 characters of ASCII letters, digits, `-`, `_` and `.`.
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!(
            "{what} `{name}` is invalid: use 1 to 200 ASCII letters, digits, `-`, `_` or `.`"
        )))
    }
}

type StopFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A running subscription. [`unsubscribe`](Self::unsubscribe) stops it;
/// dropping the handle leaves it running until the bus shuts down.
pub struct SubscriptionHandle {
    group: String,
    stop: Option<Box<dyn FnOnce() -> StopFuture + Send>>,
}

impl fmt::Debug for SubscriptionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionHandle")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl SubscriptionHandle {
    /// A handle whose `unsubscribe` runs `stop` (for backend authors).
    /// `stop` must stop fetching, let in-flight handlers finish and return.
    pub fn new<F, Fut>(group: impl Into<String>, stop: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        SubscriptionHandle {
            group: group.into(),
            stop: Some(Box::new(move || Box::pin(stop()))),
        }
    }

    /// The consumer group of this subscription.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Stops fetching, waits for in-flight handlers to finish and leaves the
    /// group. Undelivered events stay with the group for its other members.
    pub async fn unsubscribe(mut self) {
        if let Some(stop) = self.stop.take() {
            stop().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler_fn;

    #[test]
    fn builder_validates() {
        let ok = || handler_fn(|_e| async { Ok(()) });
        assert!(Subscription::builder("a b").handler(ok()).build().is_err());
        assert!(Subscription::builder("").handler(ok()).build().is_err());
        assert!(Subscription::builder("g").build().is_err());
        assert!(Subscription::builder("g")
            .concurrency(0)
            .handler(ok())
            .build()
            .is_err());
        let s = Subscription::builder("g.1_x-y")
            .handler(ok())
            .build()
            .expect("valid");
        assert_eq!(s.concurrency(), 1);
        assert_eq!(s.filter(), &EventFilter::all());
    }
}
