//! The shop's orders, the payment service's payments, and the requests
//! the checkout saga sends them.

use eventsource::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// Charges above this many cents are declined; 0 cents gets no answer
/// (a payment provider that never replies: the saga's timeout cancels).
pub const DECLINE_ABOVE: u64 = 100_000;

/// An order's events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
#[event(aggregate = "Order")]
#[serde(tag = "type")]
pub enum OrderEvent {
    Placed { amount: u64 },
    Shipped,
    Cancelled { reason: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum OrderCommand {
    Place { amount: u64 },
    Ship,
    Cancel { reason: String },
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

#[derive(Debug, Default)]
pub struct Order {
    open: bool,
}

impl Aggregate for Order {
    type Event = OrderEvent;
    type Command = OrderCommand;
    type Error = Refused;

    fn apply(&mut self, event: &OrderEvent) {
        self.open = matches!(event, OrderEvent::Placed { .. });
    }

    fn handle(&self, command: OrderCommand) -> Result<Vec<OrderEvent>, Refused> {
        match command {
            OrderCommand::Place { amount } => Ok(vec![OrderEvent::Placed { amount }]),
            _ if !self.open => Err(Refused("the order is not open".into())),
            OrderCommand::Ship => Ok(vec![OrderEvent::Shipped]),
            OrderCommand::Cancel { reason } => Ok(vec![OrderEvent::Cancelled { reason }]),
        }
    }
}

/// A payment's events (one payment per order, under the order's id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
#[event(aggregate = "Payment")]
#[serde(tag = "type")]
pub enum PaymentEvent {
    Charged { amount: u64 },
    Declined,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Charge {
    pub amount: u64,
}

#[derive(Debug, Default)]
pub struct Payment;

impl Aggregate for Payment {
    type Event = PaymentEvent;
    type Command = Charge;
    type Error = Refused;

    fn apply(&mut self, _: &PaymentEvent) {}

    fn handle(&self, Charge { amount }: Charge) -> Result<Vec<PaymentEvent>, Refused> {
        Ok(match amount {
            0 => Vec::new(),
            a if a > DECLINE_ABOVE => vec![PaymentEvent::Declined],
            a => vec![PaymentEvent::Charged { amount: a }],
        })
    }
}

/// What the saga asks of the other services (published through its
/// outbox, one aggregate per checkout).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
#[event(aggregate = "Checkout")]
#[serde(tag = "type")]
// The variants are the event types on the wire (`Checkout.ShipRequested`).
#[allow(clippy::enum_variant_names)]
pub enum Request {
    ChargeRequested { order: String, amount: u64 },
    ShipRequested { order: String },
    CancelRequested { order: String, reason: String },
}
