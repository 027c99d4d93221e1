//! `eventsource subjects show` and `eventsource forget` (#29) on a SQLite
//! store and the real Redis: the operator sees where a person's data is,
//! is asked to confirm, forgets, and the bus hears of it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{redis_bus, redis_url, run};
use eventsource::personal::{Shredder, SUBJECT_FORGOTTEN};
use eventsource::store::{SqlEventStore, SqlKeyStore, StoreConfig};
use eventsource::{Aggregate, DomainEvent, EventFilter, Repository};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, DomainEvent)]
#[event(aggregate = "Account")]
struct Registered {
    #[data_subject]
    user: String,
    #[personal_data]
    email: String,
}

#[derive(Default)]
struct Account {
    email: String,
}

impl Aggregate for Account {
    type Event = Registered;
    type Command = (String, String);
    type Error = std::convert::Infallible;
    fn apply(&mut self, e: &Registered) {
        self.email.clone_from(&e.email);
    }
    fn handle(&self, (user, email): (String, String)) -> Result<Vec<Registered>, Self::Error> {
        Ok(vec![Registered { user, email }])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_finds_and_forgets_a_person() {
    let path = std::env::temp_dir().join(format!("es-cli-{}.db", uuid::Uuid::now_v7().simple()));
    let store_url = format!("sqlite://{}", path.display());
    let store = SqlEventStore::connect(StoreConfig::new(&store_url).validated().expect("config"))
        .await
        .expect("store");
    let shredder = Arc::new(Shredder::new(Arc::new(SqlKeyStore::new(&store))));
    let repo = Repository::<Account>::new(Arc::new(store.clone())).with_shredder(shredder);
    for (account, user) in [("a-1", "user-42"), ("a-2", "user-42"), ("a-3", "user-7")] {
        for n in 0..3 {
            repo.execute(account, (user.into(), format!("{user}-{n}@example.com")))
                .await
                .expect("save");
        }
    }

    let (code, out, err) = run(&[
        "--store", &store_url, "--json", "subjects", "show", "user-42",
    ]);
    assert_eq!(code, 0, "{err}");
    let shown: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(shown["status"], "remembered", "{shown}");
    assert_eq!(
        shown["streams"],
        serde_json::json!([
            {"stream": "Account-a-1", "events": 3},
            {"stream": "Account-a-2", "events": 3}
        ])
    );

    // Without --yes: what it would do, exit 2, nothing forgotten.
    let (code, _, err) = run(&["--store", &store_url, "forget", "user-42"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("6 stored event(s) in 2 stream(s)"), "{err}");
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(
        repo.load("a-1").await.expect("load").state().email,
        "user-42-2@example.com"
    );

    let (namespace, bus) = redis_bus("es-cli-forget").await;
    let mut watch = bus
        .watch(EventFilter::pattern("DataSubject.*").expect("filter"))
        .await
        .expect("watch");
    let (code, out, err) = run(&[
        "--store",
        &store_url,
        "--bus",
        &redis_url(),
        "--namespace",
        &namespace,
        "forget",
        "user-42",
        "--yes",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("forgot `user-42`"), "{out}");
    let announced = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("SubjectForgotten within 10 s")
        .expect("watch open")
        .expect("event");
    assert_eq!(announced.event_type, SUBJECT_FORGOTTEN);
    assert_eq!(announced.aggregate_id, "user-42");

    // A fresh shredder (the CLI was another process) reads the replacement.
    let fresh = Arc::new(Shredder::new(Arc::new(SqlKeyStore::new(&store))));
    let repo = Repository::<Account>::new(Arc::new(store.clone())).with_shredder(fresh);
    assert_eq!(repo.load("a-1").await.expect("load").state().email, "");
    assert_eq!(
        repo.load("a-3").await.expect("load").state().email,
        "user-7-2@example.com"
    );
    let (code, out, _) = run(&["--store", &store_url, "subjects", "show", "user-42"]);
    assert_eq!(code, 0);
    assert!(out.contains("forgotten at"), "{out}");

    let (code, _, err) = run(&["forget", "user-42", "--yes"]);
    assert_eq!(code, 2, "no store given is a usage error: {err}");
    assert!(err.contains("--store"), "{err}");
    let _ = bus.shutdown(Duration::from_secs(5)).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}
