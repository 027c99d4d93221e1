//! `eventsource schema check` (#31) on a SQLite store and the real Redis:
//! events of versions 1–3 and v1 dead letters pass against a manifest
//! with both upcasters, and fail, named with their counts, without the
//! v1→v2 step.

mod common;

use std::time::Duration;

use common::{redis_bus, redis_url, run};
use eventsource::manifest::SchemaManifest;
use eventsource::store::{SqlEventStore, StoreConfig};
use eventsource::upcast::Upcasters;
use eventsource::{
    handler_fn, DeadLetterQuery, DomainEvent, EventEnvelope, EventStore, ExpectedVersion,
    HandlerError, Subscription,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, DomainEvent)]
#[event(aggregate = "Account", version = 3)]
#[serde(tag = "type")]
enum AccountEvent {
    Opened { holder: String, currency: String },
    Closed,
}

fn opened(id: &str, version: u32) -> EventEnvelope {
    let mut e = EventEnvelope::from_json(
        "Account",
        id,
        1,
        "Opened",
        serde_json::json!({ "type": "Opened", "owner": "Ada" }),
    );
    e.schema_version = version;
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_events_and_letters_are_checked_against_the_manifest() {
    let dir = std::env::temp_dir();
    let id = uuid::Uuid::now_v7().simple();
    let db = dir.join(format!("es-cli-schema-{id}.db"));
    let store_url = format!("sqlite://{}", db.display());
    let store = SqlEventStore::connect(StoreConfig::new(&store_url).validated().expect("config"))
        .await
        .expect("store");
    // 4 events at v1, 3 at v2, 2 at v3.
    for (n, version) in [1, 1, 1, 1, 2, 2, 2, 3, 3].into_iter().enumerate() {
        let stream = format!("Account-a-{n}");
        store
            .append(
                &stream,
                ExpectedVersion::NoStream,
                &[opened(&format!("a-{n}"), version)],
            )
            .await
            .expect("append");
    }
    // Two v1 events dead-lettered by a group on Redis.
    let (namespace, bus) = redis_bus("es-cli-schema").await;
    let _billing = bus
        .subscribe(
            Subscription::builder("billing")
                .handler(handler_fn(|_| async {
                    Err(HandlerError::permanent("bug"))
                }))
                .build()
                .expect("valid"),
        )
        .await
        .expect("subscribe");
    bus.publish(&[opened("l-1", 1), opened("l-2", 1)])
        .await
        .expect("publish");
    let dlq = bus.dead_letters();
    eventsource_testkit::eventually("two dead letters", Duration::from_secs(15), || async {
        (dlq.list(&DeadLetterQuery::group("billing"))
            .await
            .expect("list")
            .len()
            == 2)
            .then_some(())
    })
    .await;

    let upcasters = Upcasters::new()
        .with("Account", "Opened", 1, Ok)
        .with("Account", "Opened", 2, Ok);
    let full = SchemaManifest::new()
        .event::<AccountEvent>()
        .expect("the derive lists the event types")
        .upcasters(&upcasters);
    let without_v1 = SchemaManifest::new()
        .event::<AccountEvent>()
        .expect("types")
        .upcasters(&Upcasters::new().with("Account", "Opened", 2, Ok));
    let (full_file, partial_file) = (
        dir.join(format!("es-schema-full-{id}.json")),
        dir.join(format!("es-schema-partial-{id}.json")),
    );
    std::fs::write(&full_file, full.to_json()).expect("write");
    std::fs::write(&partial_file, without_v1.to_json()).expect("write");
    let check = |manifest: &std::path::Path| {
        run(&[
            "--store",
            &store_url,
            "--bus",
            &redis_url(),
            "--namespace",
            &namespace,
            "schema",
            "check",
            "--manifest",
            &manifest.display().to_string(),
        ])
    };

    let (code, out, err) = check(&full_file);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("checked 9 stored event(s) and 2 letter(s); 0 without"),
        "{out}"
    );

    let (code, out, err) = check(&partial_file);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(
            "Account.Opened v1: 4 stored events: no upcaster from version 1 (current is 3)"
        ),
        "{out}"
    );
    assert!(
        out.contains("Account.Opened v1: 2 dead letters: no upcaster from version 1"),
        "{out}"
    );
    assert!(!out.contains("v2:"), "v2 and v3 have a path: {out}");
    assert!(
        err.contains("6 event(s) or letter(s) in 2 kind(s)"),
        "{err}"
    );

    let (code, _, err) = run(&[
        "--store",
        &store_url,
        "schema",
        "check",
        "--manifest",
        "/nonexistent.json",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot read the manifest"), "{err}");

    let _ = bus.shutdown(Duration::from_secs(5)).await;
    for f in [full_file, partial_file] {
        let _ = std::fs::remove_file(f);
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}
