//! What travels on the brokers, written and read the same way by every
//! backend: the event as CloudEvents attributes ([`cloudevents`]) and a
//! dead letter's [`Failure`](crate::Failure) as headers ([`dead_letter`]).

pub mod cloudevents;
pub mod dead_letter;
mod time;
