//! `#[derive(DomainEvent)]` on enums and structs, with renames and a
//! schema version, round-tripping through an envelope.

use eventsource_core::{DomainEvent, EventEnvelope};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
#[event(aggregate = "Account", version = 3)]
#[serde(tag = "type")]
enum AccountEvent {
    Opened {
        holder: String,
    },
    #[event(rename = "FundsDeposited")]
    Deposited(Amount),
    Closed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Amount {
    cents: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
#[event(aggregate = "User")]
struct Registered {
    email: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
#[event(aggregate = "User", rename = "NameChanged", version = 2)]
struct Renamed {
    name: String,
}

#[test]
fn an_enum_takes_its_event_types_from_its_variants() {
    let opened = AccountEvent::Opened {
        holder: "ada".into(),
    };
    let deposited = AccountEvent::Deposited(Amount { cents: 5 });
    let closed = AccountEvent::Closed;
    assert_eq!(opened.event_type(), "Opened");
    assert_eq!(deposited.event_type(), "FundsDeposited");
    assert_eq!(closed.event_type(), "Closed");
    assert_eq!(AccountEvent::AGGREGATE_TYPE, "Account");
    for e in [&opened, &deposited, &closed] {
        assert_eq!(e.schema_version(), 3);
    }
    let env = EventEnvelope::new("a-1", 1, &deposited).expect("encode");
    assert_eq!(env.routing_key(), "Account.FundsDeposited");
    assert_eq!(env.schema_version, 3);
    assert_eq!(env.decode::<AccountEvent>().expect("decode"), deposited);
}

#[test]
fn a_struct_is_one_event_type() {
    let r = Registered {
        email: "a@b".into(),
    };
    assert_eq!(
        (
            r.event_type(),
            Registered::AGGREGATE_TYPE,
            r.schema_version()
        ),
        ("Registered", "User", 1)
    );
    let n = Renamed { name: "x".into() };
    assert_eq!(
        (n.event_type(), Renamed::AGGREGATE_TYPE, n.schema_version()),
        ("NameChanged", "User", 2)
    );
}
