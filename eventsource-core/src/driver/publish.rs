//! The publish pipeline every backend runs: refuse once the bus is closed,
//! stamp the caller's trace context, open the `eventsource.publish` span,
//! send with a retry of transient failures inside one deadline, and count.
//!
//! The backend supplies only the send: an XADD pipeline, confirmed AMQP
//! publishes, a batch of Kafka produces, a push into in-process groups.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use super::{Counters, Member, Members};
use crate::{Error, EventEnvelope, Result};

/// How one send attempt failed.
#[derive(Debug)]
pub enum SendError {
    /// The broker was unreachable or dropped the connection: worth another
    /// try while the deadline allows.
    Transient(Error),
    /// Anything else: returned at once.
    Fatal(Error),
}

/// Where a publish goes and how long it may take: what the pipeline puts
/// in its span and in a [`Error::Timeout`].
#[derive(Debug, Clone)]
pub struct PublishTarget<'a> {
    backend: &'static str,
    destination: Cow<'a, str>,
    broker: Cow<'a, str>,
    timeout: Option<Duration>,
    first_backoff: Duration,
    max_backoff: Duration,
}

impl<'a> PublishTarget<'a> {
    /// A publish by `backend` to `destination` (stream, exchange, topic)
    /// on `broker` (already redacted), given up after `timeout`.
    pub fn new(
        backend: &'static str,
        destination: impl Into<Cow<'a, str>>,
        broker: impl Into<Cow<'a, str>>,
        timeout: Duration,
    ) -> Self {
        PublishTarget {
            backend,
            destination: destination.into(),
            broker: broker.into(),
            timeout: Some(timeout),
            first_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
        }
    }

    /// No deadline of the pipeline's own: the send bounds itself (the
    /// memory bus's bounded groups name the group that is full).
    #[must_use]
    pub fn self_bounded(mut self) -> Self {
        self.timeout = None;
        self
    }

    /// The wait before the first retry of a transient failure, doubled up
    /// to `max` (default 50 ms to 1 s).
    #[must_use]
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.first_backoff = first;
        self.max_backoff = max.max(first);
        self
    }

    /// Runs `send` until it succeeds, fails with [`SendError::Fatal`], or
    /// the timeout passes: then [`Error::Timeout`], whatever the client
    /// library's own timeouts, so a broker that hangs never holds the
    /// caller past it. `what` says what was sent (`"3 event(s)"`).
    pub async fn send<F, Fut>(&self, what: &str, mut send: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<(), SendError>>,
    {
        let deadline = self.timeout.map(|t| tokio::time::Instant::now() + t);
        let mut delay = self.first_backoff;
        loop {
            let sent = match deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, send()).await {
                    Ok(sent) => sent,
                    Err(_) => return Err(self.timed_out(what)),
                },
                None => send().await,
            };
            let retry_fits = deadline.is_none_or(|d| tokio::time::Instant::now() + delay < d);
            match sent {
                Ok(()) => return Ok(()),
                Err(SendError::Transient(e)) if retry_fits => {
                    tracing::warn!(backend = self.backend, destination = %self.destination, error = %e, ?delay, "publish failed, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.max_backoff);
                }
                Err(SendError::Transient(e) | SendError::Fatal(e)) => return Err(e),
            }
        }
    }

    /// The [`Error::Timeout`] of a publish of `what` to this target (for a
    /// client library that reports its own timeout).
    pub fn timed_out(&self, what: &str) -> Error {
        Error::Timeout {
            operation: format!(
                "{}: publishing {what} to `{}` on {} (no acknowledgement from the broker)",
                self.backend, self.destination, self.broker
            ),
            after: self.timeout.unwrap_or_default(),
        }
    }
}

/// Events ready to publish: each carries a trace context, the current
/// span's where it had none, so a handler's span becomes a child of the
/// span that published; and none carries a replay marker
/// ([`REPLAYED_FOR`](crate::REPLAYED_FOR), [`REPLAYED_FROM`](crate::REPLAYED_FROM)):
/// only a replay may mark an event for one group, and a replay does not
/// go through here. A handler that copies the metadata of the replayed
/// event it handles into its follow-up events would otherwise make every
/// other group skip them. Made by [`stamp`] (borrowed envelopes) or
/// [`stamp_shared`] (`Arc`s, for [`EventBus::publish_shared`](crate::EventBus::publish_shared));
/// [`publish()`] takes nothing else.
#[derive(Debug)]
pub struct Stamped<'e, E: Clone = EventEnvelope>(Cow<'e, [E]>);

impl<E: Clone> std::ops::Deref for Stamped<'_, E> {
    type Target = [E];

    fn deref(&self) -> &[E] {
        &self.0
    }
}

/// Stamps `events` (borrowed as they are when there is nothing to do:
/// no trace context to add, no replay marker to strip).
pub fn stamp(events: &[EventEnvelope]) -> Stamped<'_> {
    stamp_with(
        crate::trace::current_traceparent(),
        events,
        |e| e,
        |e, tp| {
            let mut e = e.clone();
            stamp_envelope(&mut e, tp);
            e
        },
    )
}

/// [`stamp`] for shared envelopes: an event that needs stamping is
/// copied once (the caller's `Arc` is not changed); the others are shared.
pub fn stamp_shared(events: &[Arc<EventEnvelope>]) -> Stamped<'_, Arc<EventEnvelope>> {
    stamp_shared_as(crate::trace::current_traceparent(), events)
}

fn stamp_shared_as(
    traceparent: Option<String>,
    events: &[Arc<EventEnvelope>],
) -> Stamped<'_, Arc<EventEnvelope>> {
    stamp_with(
        traceparent,
        events,
        |e| e,
        |e, tp| {
            if needs_stamp(e, tp) {
                let mut e = EventEnvelope::clone(e);
                stamp_envelope(&mut e, tp);
                Arc::new(e)
            } else {
                Arc::clone(e)
            }
        },
    )
}

fn stamp_with<'e, E: Clone>(
    traceparent: Option<String>,
    events: &'e [E],
    envelope: impl Fn(&E) -> &EventEnvelope,
    stamped: impl Fn(&E, Option<&str>) -> E,
) -> Stamped<'e, E> {
    let tp = traceparent.as_deref();
    if events.iter().any(|e| needs_stamp(envelope(e), tp)) {
        Stamped(Cow::Owned(events.iter().map(|e| stamped(e, tp)).collect()))
    } else {
        Stamped(Cow::Borrowed(events))
    }
}

/// Whether `e` lacks the trace context `tp` or carries a replay marker.
fn needs_stamp(e: &EventEnvelope, tp: Option<&str>) -> bool {
    (tp.is_some() && !e.metadata.contains_key(crate::trace::TRACEPARENT))
        || e.metadata.contains_key(crate::REPLAYED_FOR)
        || e.metadata.contains_key(crate::REPLAYED_FROM)
        || e.metadata.contains_key(crate::REPLAY_ID)
        || e.metadata.contains_key(crate::REPROCESS)
}

fn stamp_envelope(e: &mut EventEnvelope, tp: Option<&str>) {
    if let Some(tp) = tp {
        e.metadata
            .entry(crate::trace::TRACEPARENT.to_owned())
            .or_insert_with(|| tp.to_owned());
    }
    let forged = e.metadata.remove(crate::REPLAYED_FOR).is_some()
        | e.metadata.remove(crate::REPLAYED_FROM).is_some()
        | e.metadata.remove(crate::REPLAY_ID).is_some()
        | e.metadata.remove(crate::REPROCESS).is_some();
    if forged {
        tracing::debug!(event_id = %e.event_id, "replay marker removed from a published event's metadata (only a replay sets it)");
    }
}

/// The whole pipeline of [`EventBus::publish`](crate::EventBus::publish):
/// [`Error::ShutDown`] once `members` is shut down; nothing to do for no
/// events; otherwise `send` through [`PublishTarget::send`] inside an
/// `eventsource.publish` span, then the events counted as published.
///
/// ```ignore
/// publish(&members, &counters, &target, &stamp(events), |events| async move {
///     broker.send(encode(events)).await.map_err(classify)
/// })
/// .await
/// ```
pub async fn publish<'s, M, E, F, Fut>(
    members: &Members<M>,
    counters: &Counters,
    target: &PublishTarget<'_>,
    events: &'s Stamped<'_, E>,
    mut send: F,
) -> Result<()>
where
    M: Member,
    E: Clone,
    F: FnMut(&'s [E]) -> Fut,
    Fut: Future<Output = std::result::Result<(), SendError>>,
{
    members.check_open()?;
    if events.is_empty() {
        return Ok(());
    }
    // OpenTelemetry messaging conventions (a producer span named
    // "send {destination}"), beside the names used before.
    let span = tracing::info_span!(
        "eventsource.publish",
        otel.name = %format_args!("send {}", target.destination),
        otel.kind = "producer",
        messaging.system = target.backend,
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = %target.destination,
        messaging.batch.message_count = events.len(),
        backend = target.backend,
        destination = %target.destination,
        events = events.len(),
    );
    let what = format!("{} event(s)", events.len());
    let events: &'s [E] = events;
    let started = std::time::Instant::now();
    target.send(&what, || send(events)).instrument(span).await?;
    counters.published(events.len(), started.elapsed());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(timeout: Duration) -> PublishTarget<'static> {
        PublishTarget::new("test", "events", "broker:1", timeout)
            .backoff(Duration::from_millis(1), Duration::from_millis(2))
    }

    #[test]
    fn shared_events_are_shared_unless_they_need_a_trace_context() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Ping;
        impl crate::DomainEvent for Ping {
            fn event_type(&self) -> &str {
                "Ping"
            }
            const AGGREGATE_TYPE: &'static str = "Test";
        }
        let bare = Arc::new(EventEnvelope::new("a", 1, &Ping).expect("encode"));
        let mut traced = EventEnvelope::new("a", 2, &Ping).expect("encode");
        traced
            .metadata
            .insert(crate::trace::TRACEPARENT.into(), "00-theirs".into());
        let traced = Arc::new(traced);
        let events = [Arc::clone(&bare), Arc::clone(&traced)];

        let untraced = stamp_shared_as(None, &events);
        assert!(matches!(untraced.0, Cow::Borrowed(_)));

        let stamped = stamp_shared_as(Some("00-ours".into()), &events);
        assert_eq!(
            stamped[0].metadata.get(crate::trace::TRACEPARENT),
            Some(&"00-ours".to_owned()),
            "the bare event gets the current context"
        );
        assert!(
            !bare.metadata.contains_key(crate::trace::TRACEPARENT),
            "the caller's envelope is not changed"
        );
        assert!(
            Arc::ptr_eq(&stamped[1], &traced),
            "an event with a context of its own is shared, not copied"
        );
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_one_send_succeeds() {
        let mut tries = 0;
        target(Duration::from_secs(5))
            .send("1 event(s)", || {
                tries += 1;
                let fail = tries < 3;
                async move {
                    if fail {
                        Err(SendError::Transient(Error::Config("down".into())))
                    } else {
                        Ok(())
                    }
                }
            })
            .await
            .expect("the third try goes through");
        assert_eq!(tries, 3);
    }

    #[tokio::test]
    async fn a_fatal_failure_is_returned_at_once() {
        let mut tries = 0;
        let err = target(Duration::from_secs(5))
            .send("1 event(s)", || {
                tries += 1;
                async { Err(SendError::Fatal(Error::Config("bad".into()))) }
            })
            .await
            .expect_err("fatal");
        assert!(matches!(err, Error::Config(_)), "{err}");
        assert_eq!(tries, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_send_that_hangs_is_a_timeout_naming_the_destination() {
        let err = target(Duration::from_secs(2))
            .send("4 event(s)", std::future::pending)
            .await
            .expect_err("hangs");
        let Error::Timeout { operation, after } = &err else {
            panic!("not a timeout: {err}")
        };
        assert_eq!(*after, Duration::from_secs(2));
        assert!(
            operation.contains("4 event(s)") && operation.contains("`events`"),
            "{operation}"
        );
    }
}
