//! `#[derive(DomainEvent)]` through the facade alone.

use eventsource::DomainEvent;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, DomainEvent)]
#[event(aggregate = "Cart")]
struct ItemAdded {
    sku: String,
}

#[test]
fn the_facade_derives_domain_events() {
    let e = ItemAdded { sku: "k".into() };
    assert_eq!(
        (e.event_type(), ItemAdded::AGGREGATE_TYPE),
        ("ItemAdded", "Cart")
    );
}
