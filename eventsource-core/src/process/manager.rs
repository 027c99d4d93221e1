//! The process manager trait.

use crate::{EventEnvelope, HandlerError};

use super::Effects;

/// A long-running workflow across aggregates (a saga).
///
/// ```
/// use std::time::Duration;
/// use eventsource_core::process::{timeout_name, Effects, ProcessManager};
/// use eventsource_core::{EventEnvelope, HandlerError};
///
/// #[derive(Default)]
/// struct Checkout { paid: bool }
///
/// struct CheckoutSaga;
///
/// impl ProcessManager for CheckoutSaga {
///     type State = Checkout;
///     const NAME: &'static str = "checkout";
///
///     fn starts(&self, input: &EventEnvelope) -> bool {
///         input.event_type == "OrderPlaced"
///     }
///
///     fn handle(
///         &self,
///         state: &mut Checkout,
///         input: &EventEnvelope,
///         effects: &mut Effects,
///     ) -> Result<(), HandlerError> {
///         match (input.event_type.as_str(), timeout_name(input)) {
///             ("OrderPlaced", _) => effects.schedule("payment", Duration::from_secs(30)),
///             ("PaymentCharged", _) => {
///                 state.paid = true;
///                 effects.cancel("payment");
///                 effects.complete();
///             }
///             (_, Some("payment")) if !state.paid => effects.complete(),
///             _ => {}
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait ProcessManager: Send + Sync + 'static {
    /// The state of one instance; a new instance starts at `Default`.
    type State: Default + Send + Sync;

    /// The process's name: its streams are `NAME-<instance>`, its timeouts
    /// are filed under it. Stable across releases.
    const NAME: &'static str;

    /// Whether `input` starts an instance when its instance has no steps
    /// yet. An event of an instance that has not started (and is not
    /// started by it) is ignored.
    fn starts(&self, input: &EventEnvelope) -> bool;

    /// The instance `input` belongs to, or `None` to ignore it: by default
    /// its correlation id. A timeout is routed to the instance that
    /// scheduled it without asking.
    fn correlate(&self, input: &EventEnvelope) -> Option<String> {
        input.correlation_id.clone()
    }

    /// Evolves `state` by `input` and records in `effects` what follows.
    ///
    /// Loading an instance calls it again for every recorded input, with
    /// the effects thrown away: the state must depend on the inputs only
    /// (no clock, no randomness). An error leaves the instance as it was:
    /// a transient one is retried, a permanent one dead-letters the input.
    fn handle(
        &self,
        state: &mut Self::State,
        input: &EventEnvelope,
        effects: &mut Effects,
    ) -> Result<(), HandlerError>;
}
