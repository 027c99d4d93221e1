//! A checkout saga for process-manager tests and examples: an order is
//! placed, payment is charged (or declined, or never answers), and the
//! order is shipped or cancelled.
//!
//! - `Order` (events [`OrderEvent`]): `Place`, `Ship`, `Cancel`.
//! - `Payment` (events [`PaymentEvent`]): `Charge` decides `Charged` up to
//!   [`DECLINE_ABOVE`] cents, `Declined` above it, and nothing for 0 cents
//!   (a payment provider that never answers: the saga's timeout cancels).
//! - [`CheckoutSaga`]: started by `Placed`, correlated by the correlation id
//!   (the order id), it charges, waits [`PAYMENT_WAIT`] for the payment,
//!   ships and publishes [`CheckoutCompleted`], or cancels.

use std::time::Duration;

use eventsource_core::process::{timeout_name, Effects, ProcessManager};
use eventsource_core::{Aggregate, DomainEvent, EventEnvelope, HandlerError};
use serde::{Deserialize, Serialize};

/// Charges above this many cents are declined.
pub const DECLINE_ABOVE: u64 = 100_000;

/// How long the saga waits for the payment (the timeout `payment`).
pub const PAYMENT_WAIT: Duration = Duration::from_millis(1_500);

/// The order's events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
#[event(aggregate = "Order")]
#[serde(tag = "type")]
pub enum OrderEvent {
    /// Placed for `amount` cents.
    Placed {
        /// Cents.
        amount: u64,
    },
    /// Shipped.
    Shipped,
    /// Cancelled, with why.
    Cancelled {
        /// Why.
        reason: String,
    },
}

/// An order.
#[derive(Debug, Default)]
pub struct Order {
    /// Placed, not yet shipped or cancelled.
    pub open: bool,
    /// Shipped.
    pub shipped: bool,
    /// Cancelled.
    pub cancelled: bool,
}

/// What an order is told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OrderCommand {
    /// Place it for `amount` cents.
    Place {
        /// Cents.
        amount: u64,
    },
    /// Ship it.
    Ship,
    /// Cancel it.
    Cancel {
        /// Why.
        reason: String,
    },
}

/// Why an order refuses a command.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OrderError(pub String);

impl Aggregate for Order {
    type Event = OrderEvent;
    type Command = OrderCommand;
    type Error = OrderError;

    fn apply(&mut self, event: &OrderEvent) {
        match event {
            OrderEvent::Placed { .. } => self.open = true,
            OrderEvent::Shipped => {
                self.open = false;
                self.shipped = true;
            }
            OrderEvent::Cancelled { .. } => {
                self.open = false;
                self.cancelled = true;
            }
        }
    }

    fn handle(&self, command: OrderCommand) -> Result<Vec<OrderEvent>, OrderError> {
        match command {
            OrderCommand::Place { amount } => Ok(vec![OrderEvent::Placed { amount }]),
            _ if !self.open => Err(OrderError("the order is not open".into())),
            OrderCommand::Ship => Ok(vec![OrderEvent::Shipped]),
            OrderCommand::Cancel { reason } => Ok(vec![OrderEvent::Cancelled { reason }]),
        }
    }
}

/// The payment's events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
#[event(aggregate = "Payment")]
#[serde(tag = "type")]
pub enum PaymentEvent {
    /// Charged `amount` cents.
    Charged {
        /// Cents.
        amount: u64,
    },
    /// Declined.
    Declined,
}

/// A payment (one per order, with the order's id).
#[derive(Debug, Default)]
pub struct Payment {
    /// Cents charged in all.
    pub charged: u64,
}

/// Charge `amount` cents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Charge {
    /// Cents.
    pub amount: u64,
}

impl Aggregate for Payment {
    type Event = PaymentEvent;
    type Command = Charge;
    type Error = OrderError;

    fn apply(&mut self, event: &PaymentEvent) {
        if let PaymentEvent::Charged { amount } = event {
            self.charged += amount;
        }
    }

    fn handle(&self, Charge { amount }: Charge) -> Result<Vec<PaymentEvent>, OrderError> {
        Ok(match amount {
            0 => Vec::new(),
            a if a > DECLINE_ABOVE => vec![PaymentEvent::Declined],
            a => vec![PaymentEvent::Charged { amount: a }],
        })
    }
}

/// Published when an order ships.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
#[event(aggregate = "checkout")]
pub struct CheckoutCompleted {
    /// The order.
    pub order: String,
}

/// The saga's state.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Checkout {
    /// The order.
    pub order: String,
    /// Cents to charge.
    pub amount: u64,
    /// Where it stands: `charging`, `shipped`, `cancelled`.
    pub stage: &'static str,
}

/// Order placed → charge → ship; declined or no payment in time → cancel.
#[derive(Debug, Default, Clone, Copy)]
pub struct CheckoutSaga;

impl ProcessManager for CheckoutSaga {
    type State = Checkout;
    const NAME: &'static str = "checkout";

    fn starts(&self, input: &EventEnvelope) -> bool {
        input.aggregate_type == OrderEvent::AGGREGATE_TYPE && input.event_type == "Placed"
    }

    fn handle(
        &self,
        state: &mut Checkout,
        input: &EventEnvelope,
        effects: &mut Effects,
    ) -> Result<(), HandlerError> {
        if let Some(name) = timeout_name(input) {
            if name == "payment" && state.stage == "charging" {
                state.stage = "cancelled";
                effects.command::<Order>(
                    state.order.clone(),
                    OrderCommand::Cancel {
                        reason: "no payment in time".into(),
                    },
                );
                effects.complete();
            }
            return Ok(());
        }
        match input.aggregate_type.as_str() {
            t if t == OrderEvent::AGGREGATE_TYPE => {
                if let OrderEvent::Placed { amount } =
                    input.decode().map_err(HandlerError::permanent)?
                {
                    state.order = input.aggregate_id.clone();
                    state.amount = amount;
                    state.stage = "charging";
                    effects.command::<Payment>(input.aggregate_id.clone(), Charge { amount });
                    effects.schedule("payment", PAYMENT_WAIT);
                }
            }
            t if t == PaymentEvent::AGGREGATE_TYPE && state.stage == "charging" => {
                match input.decode().map_err(HandlerError::permanent)? {
                    PaymentEvent::Charged { .. } => {
                        state.stage = "shipped";
                        effects.cancel("payment");
                        effects.command::<Order>(state.order.clone(), OrderCommand::Ship);
                        effects.publish(&CheckoutCompleted {
                            order: state.order.clone(),
                        });
                    }
                    PaymentEvent::Declined => {
                        state.stage = "cancelled";
                        effects.command::<Order>(
                            state.order.clone(),
                            OrderCommand::Cancel {
                                reason: "payment declined".into(),
                            },
                        );
                    }
                }
                effects.complete();
            }
            _ => {}
        }
        Ok(())
    }
}
