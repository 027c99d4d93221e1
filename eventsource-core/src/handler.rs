//! Event handlers: the code a subscription runs for each event.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{BoxError, Error, EventEnvelope};

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

    /// The underlying error.
    pub fn source(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }
}

impl<E: Into<BoxError>> From<E> for HandlerError {
    fn from(e: E) -> Self {
        let source: BoxError = e.into();
        let permanent = matches!(source.downcast_ref::<Error>(), Some(Error::Decode { .. }));
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
/// Implement it on a struct for handlers with state, or use [`handler_fn`]
/// for a closure. A handler that returns `Err` or panics has not handled the
/// event: it is retried per the subscription's [`RetryPolicy`](crate::RetryPolicy),
/// then dead-lettered.
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// Handles one event.
    async fn handle(&self, event: &EventEnvelope) -> HandlerResult;
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

#[async_trait]
impl<H: EventHandler + ?Sized> EventHandler for Arc<H> {
    async fn handle(&self, event: &EventEnvelope) -> HandlerResult {
        (**self).handle(event).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
