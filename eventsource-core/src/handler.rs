//! Event handlers: the code a subscription runs for each event.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{BoxError, DomainEvent, Error, EventEnvelope};

/// Why a handler failed, and whether retrying can help.
///
/// Any error converts into it with `?`. A [`Error::Decode`] converts into a
/// *permanent* failure, so an event whose payload cannot be decoded goes to
/// the dead-letter queue at once instead of being retried.
pub struct HandlerError {
    source: BoxError,
    permanent: bool,
}

impl HandlerError {
    /// A failure that may go away on retry (the default).
    pub fn transient(source: impl Into<BoxError>) -> Self {
        HandlerError {
            source: source.into(),
            permanent: false,
        }
    }

    /// A failure that retrying cannot fix: dead-letter it now.
    pub fn permanent(source: impl Into<BoxError>) -> Self {
        HandlerError {
            source: source.into(),
            permanent: true,
        }
    }

    /// Whether this failure skips the remaining retries.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// Whether the handler met an event of a schema version newer than it
    /// knows ([`Error::NewerVersion`], from [`EventEnvelope::decode`]): the
    /// group parks it instead of dead-lettering it as a failure.
    pub fn is_newer_version(&self) -> bool {
        matches!(
            self.source.downcast_ref::<Error>(),
            Some(Error::NewerVersion { .. })
        )
    }

    /// The underlying error.
    pub fn source(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }
}

impl<E: Into<BoxError>> From<E> for HandlerError {
    fn from(e: E) -> Self {
        let source: BoxError = e.into();
        let permanent = matches!(
            source.downcast_ref::<Error>(),
            Some(Error::Decode { .. } | Error::PersonalData { .. } | Error::NewerVersion { .. })
        );
        HandlerError { source, permanent }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("source", &self.source)
            .field("permanent", &self.permanent)
            .finish()
    }
}

/// What a handler returns.
pub type HandlerResult = Result<(), HandlerError>;

/// Handles events delivered to a subscription.
///
/// Implement it on a struct for handlers with state (with the re-exported
/// [`async_trait`](crate::async_trait) attribute), or use [`handler_fn`] /
/// [`handler_for`] for a closure.
///
/// ```
/// use eventsource_core::{async_trait, EventEnvelope, EventHandler, HandlerResult};
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// struct Counter {
///     seen: AtomicU64,
/// }
///
/// #[async_trait]
/// impl EventHandler for Counter {
///     async fn handle(&self, _event: &EventEnvelope) -> HandlerResult {
///         self.seen.fetch_add(1, Ordering::Relaxed);
///         Ok(())
///     }
/// }
/// # let _: &dyn EventHandler = &Counter { seen: AtomicU64::new(0) };
/// ```
/// A handler that returns `Err` or panics has not handled the
/// event: it is retried per the subscription's [`RetryPolicy`](crate::RetryPolicy),
/// then dead-lettered.
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// Handles one event.
    async fn handle(&self, event: &EventEnvelope) -> HandlerResult;

    /// The handler's name in dead letters ([`Failure::handler`](crate::Failure::handler)):
    /// its type name unless overridden.
    fn name(&self) -> &str {
        std::any::type_name::<Self>()
    }

    /// The newest schema version of `aggregate_type.event_type` this
    /// handler can decode, if it knows (default `None`: it does not say).
    /// A member whose handler knows a version replays, when it starts,
    /// the group's dead letters of kind
    /// [`NewerVersion`](crate::FailureKind::NewerVersion) up to it: after
    /// a rolling deploy, what the old consumers parked is handled without
    /// an operator. [`handler_for`]'s handler answers from its event type.
    fn known_version(&self, aggregate_type: &str, event_type: &str) -> Option<u32> {
        let _ = (aggregate_type, event_type);
        None
    }
}

/// A handler made from an async closure; see [`handler_fn`].
pub struct FnHandler<F>(F);

#[async_trait]
impl<F, Fut> EventHandler for FnHandler<F>
where
    F: Fn(EventEnvelope) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    async fn handle(&self, event: &EventEnvelope) -> HandlerResult {
        (self.0)(event.clone()).await
    }
}

/// Turns an async closure taking an owned envelope into an [`EventHandler`].
///
/// ```
/// use eventsource_core::{handler_fn, EventHandler};
/// let handler = handler_fn(|event| async move {
///     println!("got {}", event.event_type);
///     Ok(())
/// });
/// # let _: &dyn EventHandler = &handler;
/// ```
pub fn handler_fn<F, Fut>(f: F) -> FnHandler<F>
where
    F: Fn(EventEnvelope) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    FnHandler(f)
}

/// A handler that decodes each event into `E` first; see [`handler_for`].
pub struct TypedHandler<E, F> {
    f: F,
    _event: PhantomData<fn() -> E>,
}

#[async_trait]
impl<E, F, Fut> EventHandler for TypedHandler<E, F>
where
    E: DomainEvent + Send + 'static,
    F: Fn(E, EventEnvelope) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    async fn handle(&self, event: &EventEnvelope) -> HandlerResult {
        // Undecodable: a permanent failure, so the DLQ at once.
        let decoded: E = event.decode()?;
        (self.f)(decoded, event.clone()).await
    }

    fn known_version(&self, aggregate_type: &str, event_type: &str) -> Option<u32> {
        let types = E::event_types();
        (aggregate_type == E::AGGREGATE_TYPE && (types.is_empty() || types.contains(&event_type)))
            .then_some(E::SCHEMA_VERSION)
    }
}

/// Turns an async closure taking the decoded event (and its envelope, for
/// ids and metadata) into an [`EventHandler`]. An event that does not
/// decode as `E` goes to the dead-letter queue at once, without a retry.
///
/// ```
/// use eventsource_core::{handler_for, DomainEvent, EventHandler};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Registered { email: String }
/// impl DomainEvent for Registered {
///     fn event_type(&self) -> &str { "Registered" }
///     const AGGREGATE_TYPE: &'static str = "User";
/// }
///
/// let handler = handler_for(|user: Registered, meta| async move {
///     println!("welcome {} ({})", user.email, meta.aggregate_id);
///     Ok(())
/// });
/// # let _: &dyn EventHandler = &handler;
/// ```
pub fn handler_for<E, F, Fut>(f: F) -> TypedHandler<E, F>
where
    E: DomainEvent + Send + 'static,
    F: Fn(E, EventEnvelope) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    TypedHandler {
        f,
        _event: PhantomData,
    }
}

#[async_trait]
impl<H: EventHandler + ?Sized> EventHandler for Arc<H> {
    async fn handle(&self, event: &EventEnvelope) -> HandlerResult {
        (**self).handle(event).await
    }

    fn name(&self) -> &str {
        (**self).name()
    }

    fn known_version(&self, aggregate_type: &str, event_type: &str) -> Option<u32> {
        (**self).known_version(aggregate_type, event_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize)]
    struct Opened {
        n: u64,
    }
    impl DomainEvent for Opened {
        fn event_type(&self) -> &str {
            "Opened"
        }
        const AGGREGATE_TYPE: &'static str = "Box";
    }

    #[derive(Debug, Serialize, Deserialize)]
    struct Closed;
    impl DomainEvent for Closed {
        fn event_type(&self) -> &str {
            "Closed"
        }
        const AGGREGATE_TYPE: &'static str = "Box";
    }

    #[tokio::test]
    async fn a_typed_handler_gets_the_decoded_event_and_refuses_others_for_good() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let handler = handler_for(move |e: Opened, meta: EventEnvelope| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((e.n, meta.aggregate_id));
                Ok(())
            }
        });
        let opened = EventEnvelope::new("box-1", 1, &Opened { n: 7 }).expect("encode");
        handler.handle(&opened).await.expect("decodes");
        assert_eq!(rx.recv().await, Some((7, "box-1".to_owned())));
        let closed = EventEnvelope::new("box-1", 2, &Closed).expect("encode");
        let err = handler.handle(&closed).await.expect_err("not an Opened");
        assert!(
            err.is_permanent(),
            "undecodable goes to the DLQ at once: {err}"
        );
        assert!(rx.try_recv().is_err(), "the closure never ran");
    }

    #[test]
    fn decode_errors_are_permanent_others_transient() {
        let decode = Error::Decode {
            event_id: "x".into(),
            event_type: "T".into(),
            target: "X",
            reason: "bad".into(),
        };
        assert!(HandlerError::from(decode).is_permanent());
        assert!(!HandlerError::from("boom").is_permanent());
        assert!(HandlerError::permanent("no").is_permanent());
        assert_eq!(HandlerError::transient("flaky").to_string(), "flaky");
    }
}
