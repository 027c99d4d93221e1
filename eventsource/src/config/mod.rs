//! Configuration: the bus ([`BusConfig`]), and an application's whole
//! configuration in one file or the environment ([`Config`]).

mod app;
mod bus;
mod env;

pub use app::{Config, GroupConfig};
pub use bus::{connect_bus, connect_url, BusConfig};

/// A deserialization error of `what`, naming the field the wrong value
/// is in (`groups.billing.concurrency`) when it is inside one.
fn located(
    what: &str,
    e: serde_path_to_error::Error<serde_json::Error>,
) -> eventsource_core::Error {
    let field = e.path().to_string();
    let e = e.into_inner();
    if field == "." {
        eventsource_core::Error::config(format!("{what}: {e}"))
    } else {
        eventsource_core::Error::config(format!("{what}: `{field}`: {e}"))
    }
}
