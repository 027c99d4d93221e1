//! The checkout saga: order placed → charge → ship; declined, or no
//! payment within the wait → cancel.

use std::time::Duration;

use eventsource::process::{timeout_name, Effects, ProcessManager};
use eventsource::{DomainEvent, EventEnvelope, HandlerError};

use crate::domain::{OrderEvent, PaymentEvent, Request};

#[derive(Debug, Default)]
pub struct Checkout {
    order: String,
    charging: bool,
}

pub struct CheckoutSaga {
    /// How long to wait for the payment.
    pub payment_wait: Duration,
}

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
        if timeout_name(input) == Some("payment") && state.charging {
            state.charging = false;
            effects.publish(&Request::CancelRequested {
                order: state.order.clone(),
                reason: "no payment in time".into(),
            });
            effects.complete();
            return Ok(());
        }
        if input.aggregate_type == OrderEvent::AGGREGATE_TYPE {
            if let OrderEvent::Placed { amount } =
                input.decode().map_err(HandlerError::permanent)?
            {
                state.order = input.aggregate_id.clone();
                state.charging = true;
                effects.publish(&Request::ChargeRequested {
                    order: state.order.clone(),
                    amount,
                });
                effects.schedule("payment", self.payment_wait);
            }
        } else if input.aggregate_type == PaymentEvent::AGGREGATE_TYPE && state.charging {
            state.charging = false;
            effects.cancel("payment");
            effects.publish(&match input.decode().map_err(HandlerError::permanent)? {
                PaymentEvent::Charged { .. } => Request::ShipRequested {
                    order: state.order.clone(),
                },
                PaymentEvent::Declined => Request::CancelRequested {
                    order: state.order.clone(),
                    reason: "payment declined".into(),
                },
            });
            effects.complete();
        }
        Ok(())
    }
}
