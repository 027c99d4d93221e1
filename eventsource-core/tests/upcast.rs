//! Events stored at schema version 1 load into an aggregate whose events
//! are at version 3, through registered upcasters.

use std::sync::Arc;

use eventsource_core::upcast::register_upcaster;
use eventsource_core::{
    Aggregate, DomainEvent, EventEnvelope, EventStore, ExpectedVersion, InMemoryEventStore,
    Repository,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The current (v3) shape: v1 had `owner`, v2 renamed it `holder`, v3
/// added `currency`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct WalletOpened {
    holder: String,
    currency: String,
}

impl DomainEvent for WalletOpened {
    fn event_type(&self) -> &str {
        "Opened"
    }
    const AGGREGATE_TYPE: &'static str = "Wallet";
    fn schema_version(&self) -> u32 {
        3
    }
}

#[derive(Default)]
struct Wallet {
    holder: String,
    currency: String,
}

impl Aggregate for Wallet {
    type Event = WalletOpened;
    type Command = ();
    type Error = std::io::Error;
    fn apply(&mut self, e: &WalletOpened) {
        self.holder.clone_from(&e.holder);
        self.currency.clone_from(&e.currency);
    }
    fn handle(&self, (): ()) -> Result<Vec<WalletOpened>, std::io::Error> {
        Ok(vec![])
    }
}

/// A v1 `Wallet.Opened` as an old service wrote it.
fn v1(id: &str) -> EventEnvelope {
    let mut e = EventEnvelope::new(
        id,
        1,
        &WalletOpened {
            holder: String::new(),
            currency: String::new(),
        },
    )
    .expect("encode");
    e.schema_version = 1;
    e.payload = json!({ "owner": "ada" });
    e
}

fn register() {
    register_upcaster("Wallet", "Opened", 1, |mut v| {
        let owner = v
            .get_mut("owner")
            .map(serde_json::Value::take)
            .ok_or("v1 without owner")?;
        v["holder"] = owner;
        Ok(v)
    });
    register_upcaster("Wallet", "Opened", 2, |mut v| {
        v["currency"] = json!("EUR");
        Ok(v)
    });
}

#[tokio::test]
async fn v1_events_in_the_store_load_into_a_v3_aggregate() {
    let store = Arc::new(InMemoryEventStore::new());
    let old = v1("w-1");
    store
        .append(&old.stream_name(), ExpectedVersion::NoStream, &[old])
        .await
        .expect("append v1");
    let repo = Repository::<Wallet>::new(store);
    let err = repo.load("w-1").await.err().map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(|e| e.contains("holder")),
        "without upcasters a v1 payload does not decode: {err:?}"
    );
    register();
    let wallet = repo.load("w-1").await.expect("load through the upcasters");
    assert_eq!(
        (
            wallet.state().holder.as_str(),
            wallet.state().currency.as_str()
        ),
        ("ada", "EUR")
    );
    assert_eq!(
        v1("w-2").decode::<WalletOpened>().expect("decode"),
        WalletOpened {
            holder: "ada".into(),
            currency: "EUR".into()
        }
    );
}

/// Upcasters passed as a value apply to `decode_with` only: a test (or a
/// second schema) gets its own steps without touching the process-wide
/// ones, which `decode` keeps using.
#[test]
fn upcasters_as_a_value_apply_where_they_are_passed() {
    use eventsource_core::upcast::Upcasters;
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct PurseOpened {
        holder: String,
    }
    impl DomainEvent for PurseOpened {
        fn event_type(&self) -> &str {
            "Opened"
        }
        const AGGREGATE_TYPE: &'static str = "Purse";
        fn schema_version(&self) -> u32 {
            2
        }
    }
    let mut old = EventEnvelope::new(
        "p-1",
        1,
        &PurseOpened {
            holder: String::new(),
        },
    )
    .expect("encode");
    old.schema_version = 1;
    old.payload = json!({ "owner": "ada" });
    let upcasters = Upcasters::new().with("Purse", "Opened", 1, |mut v| {
        let owner = v["owner"].take();
        v["holder"] = owner;
        Ok(v)
    });
    assert_eq!(
        old.decode_with::<PurseOpened>(&upcasters).expect("upcast"),
        PurseOpened {
            holder: "ada".into()
        }
    );
    assert!(
        old.decode::<PurseOpened>().is_err(),
        "the process-wide steps know nothing of Purse"
    );
    let none = Upcasters::new();
    assert!(none.is_empty());
    assert!(old.decode_with::<PurseOpened>(&none).is_err());
}
