//! Personal data: what the derive declares, sealing at save, opening at
//! load and in handlers, and forgetting (in-process: the key store and the
//! event store in memory; the SQL key store and the brokers are tested in
//! `eventsource-store` and the facade).

use std::sync::Arc;

use eventsource_core::personal::{
    InMemoryKeyStore, KeyStore, OpenedHandler, PersonalField, Shredder, PERSONAL_HEADER,
};
use eventsource_core::{
    handler_fn, Aggregate, DomainEvent, Error, EventEnvelope, EventHandler, EventStore,
    InMemoryEventStore, Repository,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
#[event(aggregate = "Customer")]
#[serde(tag = "type")]
enum CustomerEvent {
    Registered {
        #[data_subject]
        customer: String,
        #[personal_data]
        email: String,
        #[personal_data(replacement = "(forgotten)")]
        name: String,
        plan: String,
    },
    Moved {
        #[data_subject]
        customer: String,
        #[personal_data]
        address: Address,
    },
    Upgraded {
        plan: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Address {
    street: String,
    city: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Customer {
    email: String,
    name: String,
    plan: String,
    city: String,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[derive(Debug, Clone)]
enum Command {
    Register { email: String, name: String },
    Move(Address),
}

impl Aggregate for Customer {
    type Event = CustomerEvent;
    type Command = (String, Command);
    type Error = Never;
    fn apply(&mut self, e: &CustomerEvent) {
        match e {
            CustomerEvent::Registered {
                email, name, plan, ..
            } => {
                self.email.clone_from(email);
                self.name.clone_from(name);
                self.plan.clone_from(plan);
            }
            CustomerEvent::Moved { address, .. } => self.city.clone_from(&address.city),
            CustomerEvent::Upgraded { plan } => self.plan.clone_from(plan),
        }
    }
    fn handle(&self, (customer, c): (String, Command)) -> Result<Vec<CustomerEvent>, Never> {
        Ok(vec![match c {
            Command::Register { email, name } => CustomerEvent::Registered {
                customer,
                email,
                name,
                plan: "free".into(),
            },
            Command::Move(address) => CustomerEvent::Moved { customer, address },
        }])
    }
}

fn register(id: &str, email: &str) -> (String, Command) {
    (
        id.to_owned(),
        Command::Register {
            email: email.into(),
            name: format!("Name of {id}"),
        },
    )
}

#[test]
fn the_derive_declares_subject_pointers_and_replacements() {
    let e = CustomerEvent::Registered {
        customer: "c-1".into(),
        email: "a@example.com".into(),
        name: "Ada".into(),
        plan: "free".into(),
    };
    let declared = e.personal_data().expect("declared");
    assert_eq!(declared.subject, "c-1");
    assert_eq!(
        declared.fields,
        vec![
            PersonalField::new("/email", json!("")),
            PersonalField::new("/name", json!("(forgotten)")),
        ]
    );
    let moved = CustomerEvent::Moved {
        customer: "c-1".into(),
        address: Address::default(),
    };
    assert_eq!(
        moved.personal_data().expect("declared").fields,
        vec![PersonalField::new(
            "/address",
            json!({"street": "", "city": ""})
        )]
    );
    assert!(CustomerEvent::Upgraded { plan: "pro".into() }
        .personal_data()
        .is_none());
}

#[derive(Debug, Serialize, Deserialize, DomainEvent)]
#[event(aggregate = "User")]
#[serde(rename_all = "camelCase")]
struct ProfileChanged {
    #[data_subject]
    user_id: u64,
    #[personal_data]
    phone_number: Option<String>,
    #[personal_data]
    #[serde(rename = "e/mail")]
    email: String,
}

#[derive(Debug, Serialize, Deserialize, DomainEvent)]
#[event(aggregate = "User")]
#[serde(rename_all = "snake_case", rename_all_fields = "camelCase")]
enum ExternallyTagged {
    PhoneAdded {
        #[data_subject]
        user_id: String,
        #[personal_data]
        phone_number: String,
    },
}

#[derive(Debug, Serialize, Deserialize, DomainEvent)]
#[event(aggregate = "User")]
#[serde(tag = "t", content = "c")]
enum AdjacentlyTagged {
    Named {
        #[data_subject]
        user: String,
        #[personal_data]
        name: String,
    },
}

#[test]
fn pointers_follow_serde_names_and_representations() {
    let e = ProfileChanged {
        user_id: 7,
        phone_number: Some("555".into()),
        email: "x".into(),
    };
    let d = e.personal_data().expect("declared");
    assert_eq!(d.subject, "7");
    let pointers: Vec<_> = d.fields.iter().map(|f| f.pointer.as_str()).collect();
    assert_eq!(pointers, ["/phoneNumber", "/e~1mail"]);
    assert_eq!(d.fields[0].replacement, json!(null));
    let payload = serde_json::to_value(&e).expect("json");
    for p in pointers {
        assert!(payload.pointer(p).is_some(), "{p} in {payload}");
    }

    let e = ExternallyTagged::PhoneAdded {
        user_id: "u".into(),
        phone_number: "555".into(),
    };
    let d = e.personal_data().expect("declared");
    assert_eq!(d.fields[0].pointer, "/phone_added/phoneNumber");
    assert!(serde_json::to_value(&e)
        .expect("json")
        .pointer(&d.fields[0].pointer)
        .is_some());

    let e = AdjacentlyTagged::Named {
        user: "u".into(),
        name: "Ada".into(),
    };
    let d = e.personal_data().expect("declared");
    assert_eq!(d.fields[0].pointer, "/c/name");
    assert!(serde_json::to_value(&e)
        .expect("json")
        .pointer("/c/name")
        .is_some());
}

fn setup() -> (
    Arc<InMemoryEventStore>,
    Arc<InMemoryKeyStore>,
    Arc<Shredder>,
    Repository<Customer>,
) {
    let store = Arc::new(InMemoryEventStore::new());
    let keys = Arc::new(InMemoryKeyStore::new());
    let shredder = Arc::new(Shredder::new(keys.clone()));
    let repo = Repository::<Customer>::new(store.clone()).with_shredder(shredder.clone());
    (store, keys, shredder, repo)
}

#[tokio::test]
async fn saved_events_hold_ciphertext_and_load_in_the_clear() {
    let (store, _keys, _shredder, repo) = setup();
    repo.execute("c-1", register("c-1", "canary-1@example.com"))
        .await
        .expect("register");
    let stored = store.read_stream("Customer-c-1", 1).await.expect("read");
    let raw = serde_json::to_string(&stored).expect("json");
    assert!(!raw.contains("canary-1"), "plaintext stored: {raw}");
    assert!(!raw.contains("Name of c-1"), "plaintext stored: {raw}");
    assert!(raw.contains("free"), "other fields stay readable");
    assert!(stored[0].metadata.contains_key(PERSONAL_HEADER));

    let loaded = repo.load("c-1").await.expect("load");
    assert_eq!(loaded.state().email, "canary-1@example.com");
    assert_eq!(loaded.state().name, "Name of c-1");
    assert!(loaded.subjects().contains("c-1"));
}

#[tokio::test]
async fn one_aggregate_with_events_of_two_subjects_opens_each_with_its_own_key() {
    // A load keeps the last header and key between events: each change
    // of header or subject must be seen, forgotten or not.
    let (_store, _keys, shredder, repo) = setup();
    let moved = |subject: &str, city: &str| {
        (
            subject.to_owned(),
            Command::Move(Address {
                street: format!("1 {city} Row"),
                city: city.into(),
            }),
        )
    };
    repo.execute("shared", register("a", "canary-a@example.com"))
        .await
        .expect("a registers");
    // Another header, the same subject.
    repo.execute("shared", moved("a", "A-town"))
        .await
        .expect("a moves");
    // Another subject.
    repo.execute("shared", register("b", "canary-b@example.com"))
        .await
        .expect("b registers");
    // Back to the first subject.
    repo.execute("shared", moved("a", "A2-town"))
        .await
        .expect("a moves again");

    let loaded = repo.load("shared").await.expect("load");
    assert_eq!(loaded.state().email, "canary-b@example.com");
    assert_eq!(loaded.state().name, "Name of b");
    assert_eq!(loaded.state().city, "A2-town");
    assert_eq!(
        loaded.subjects().iter().collect::<Vec<_>>(),
        ["a", "b"],
        "both subjects, each once"
    );

    shredder.forget("b", None).await.expect("forget b");
    let loaded = repo.load("shared").await.expect("load after forgetting b");
    assert_eq!(loaded.state().email, "", "b's data is replaced");
    assert_eq!(loaded.state().name, "(forgotten)");
    assert_eq!(
        loaded.state().city,
        "A2-town",
        "a's data after b's still opens"
    );
}

#[tokio::test]
async fn forgetting_one_subject_replaces_its_data_everywhere_and_spares_others() {
    let (store, keys, shredder, repo) = setup();
    repo.execute("s", register("s", "canary-s@example.com"))
        .await
        .expect("s");
    repo.execute(
        "s",
        (
            "s".into(),
            Command::Move(Address {
                street: "1 Canary Row".into(),
                city: "Canaryville".into(),
            }),
        ),
    )
    .await
    .expect("move");
    repo.execute("t", register("t", "canary-t@example.com"))
        .await
        .expect("t");
    let sealed = store.read_stream("Customer-s", 1).await.expect("read");

    shredder.forget("s", None).await.expect("forget");
    let s = repo
        .load("s")
        .await
        .expect("a forgotten aggregate still loads");
    assert_eq!(s.state().email, "");
    assert_eq!(s.state().name, "(forgotten)");
    assert_eq!(s.state().city, "");
    assert_eq!(s.state().plan, "free", "what is not personal stays");
    let t = repo.load("t").await.expect("t loads");
    assert_eq!(t.state().email, "canary-t@example.com");

    // A copy held elsewhere (a dead letter, a broker message) opens with
    // the replacements too.
    let opened = shredder.open(&sealed[1]).await.expect("open");
    assert_eq!(opened.payload["address"], json!({"street": "", "city": ""}));
    assert!(!opened.metadata.contains_key(PERSONAL_HEADER));

    // New events of a forgotten subject store the replacements, not the data.
    let mut again = repo.load("s").await.expect("load");
    again
        .execute(register("s", "canary-again@example.com"))
        .expect("decide");
    repo.save(&mut again).await.expect("save after forget");
    let raw = serde_json::to_string(&store.read_stream("Customer-s", 3).await.expect("read"))
        .expect("json");
    assert!(!raw.contains("canary-again"), "{raw}");
    assert!(keys.get("s").await.expect("get").is_none());
}

#[tokio::test]
async fn a_repository_without_a_shredder_refuses_to_store_personal_data() {
    let store = Arc::new(InMemoryEventStore::new());
    let repo = Repository::<Customer>::new(store.clone());
    let err = repo
        .execute("c", register("c", "canary@example.com"))
        .await
        .expect_err("must refuse");
    assert!(err.to_string().contains("declares personal data"), "{err}");
    assert!(store
        .read_stream("Customer-c", 1)
        .await
        .expect("read")
        .is_empty());

    // …and to load sealed events it cannot open.
    let (store, _, _, sealing) = setup();
    sealing
        .execute("c", register("c", "canary@example.com"))
        .await
        .expect("sealed");
    let plain = Repository::<Customer>::new(store);
    let err = plain.load("c").await.expect_err("cannot open");
    assert!(matches!(err, Error::PersonalData { .. }), "{err}");
}

#[tokio::test]
async fn a_handler_sees_opened_events_and_a_changed_ciphertext_fails_permanently() {
    let (store, _, shredder, repo) = setup();
    repo.execute("c", register("c", "canary@example.com"))
        .await
        .expect("save");
    let mut sealed: EventEnvelope =
        store.read_stream("Customer-c", 1).await.expect("read")[0].clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let handler = OpenedHandler::new(
        shredder.clone(),
        handler_fn(move |e: EventEnvelope| {
            let tx = tx.clone();
            async move {
                tx.send(e.payload["email"].clone()).expect("send");
                Ok(())
            }
        }),
    );
    handler.handle(&sealed).await.expect("handled");
    assert_eq!(rx.recv().await, Some(json!("canary@example.com")));

    // Moving another field's ciphertext into `email` does not open.
    let name = sealed.payload["name"].clone();
    sealed.payload["email"] = name;
    let err = handler.handle(&sealed).await.expect_err("must fail");
    assert!(err.is_permanent(), "{err}");
    assert!(err.to_string().contains("/email"), "{err}");
    assert!(rx.try_recv().is_err(), "the handler never saw it");
}

/// A whole payload declared personal (`#[personal_data]` on the struct).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, DomainEvent)]
#[event(aggregate = "Chart")]
#[personal_data]
struct Diagnosed {
    #[data_subject]
    patient: String,
    condition: String,
    notes: Vec<String>,
}

#[tokio::test]
async fn a_whole_payload_is_sealed_opened_and_forgotten() {
    let event = Diagnosed {
        patient: "p-1".into(),
        condition: "canary-condition".into(),
        notes: vec!["canary-note".into()],
    };
    let declared = event.personal_data().expect("declared");
    assert_eq!(declared.subject, "p-1");
    assert_eq!(
        declared.fields,
        vec![PersonalField::new(
            "",
            serde_json::to_value(Diagnosed::default()).expect("json")
        )]
    );
    let keys = Arc::new(InMemoryKeyStore::new());
    let shredder = Shredder::new(keys.clone());
    let mut envelope = EventEnvelope::new("p-1", 1, &event).expect("envelope");
    shredder.seal(&mut envelope, &declared).await.expect("seal");
    let raw = serde_json::to_string(&envelope).expect("json");
    // The header names the fields (in the replacement), never their data.
    assert!(!raw.contains("canary"), "{raw}");
    assert!(
        envelope.payload.is_string(),
        "the payload is one ciphertext"
    );

    let opened = shredder.open(&envelope).await.expect("open");
    assert_eq!(opened.decode::<Diagnosed>().expect("decode"), event);

    shredder.forget("p-1", None).await.expect("forget");
    let forgotten = shredder
        .open(&envelope)
        .await
        .expect("opens after forgetting");
    assert_eq!(
        forgotten.decode::<Diagnosed>().expect("decode"),
        Diagnosed::default()
    );
    assert!(keys.get("p-1").await.expect("get").is_none());
}
