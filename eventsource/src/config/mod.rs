//! Configuration: the bus ([`BusConfig`]), and an application's whole
//! configuration in one file or the environment ([`Config`]).

mod app;
mod bus;
mod env;

pub use app::{Config, GroupConfig};
pub use bus::{connect_bus, connect_url, BusConfig};
