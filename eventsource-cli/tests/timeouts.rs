//! `eventsource timeouts list` (#28): the checkout saga of the testkit
//! schedules its payment timeout in a SQLite store; the operator lists it
//! pending, then (with --all) cancelled once the order is paid.

mod common;

use std::sync::Arc;

use common::run;
use eventsource::process::Commands;
use eventsource::store::{ProcessRunner, SqlEventStore, StoreConfig};
use eventsource::{EventEnvelope, EventHandler, EventStore, Repository, SaveContext};
use eventsource_testkit::checkout::{CheckoutSaga, Order, OrderCommand, PaymentEvent};

#[tokio::test]
async fn the_operator_lists_pending_and_cancelled_timeouts() {
    let path =
        std::env::temp_dir().join(format!("es-timeouts-{}.db", uuid::Uuid::now_v7().simple()));
    let url = format!("sqlite://{}", path.display());
    let store = SqlEventStore::connect(StoreConfig::new(&url).validated().expect("config"))
        .await
        .expect("store");
    let (code, out, err) = run(&["--store", &url, "timeouts", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no pending timeouts"), "{out}");

    let shared: Arc<dyn EventStore> = Arc::new(store.clone());
    let orders = Repository::<Order>::new(shared);
    let runner = ProcessRunner::new(
        store,
        CheckoutSaga,
        Commands::new().with(orders.clone()),
        "checkout",
    );
    let ctx = SaveContext {
        correlation_id: Some("o-1".into()),
        causation_id: Some("place-o-1".into()),
        metadata: Default::default(),
    };
    let placed = orders
        .execute_once("o-1", OrderCommand::Place { amount: 0 }, &ctx)
        .await
        .expect("place")
        .remove(0);
    // The charge goes to Payment, which this runner has no repository
    // for: the step (and its timeout) is recorded, the input fails.
    assert!(runner.handle(&placed).await.is_err());

    let (code, out, err) = run(&["--store", &url, "timeouts", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("checkout  instance o-1  timeout payment  group checkout")
            && out.contains("due in"),
        "{out}"
    );
    let (code, out, err) = run(&[
        "--store",
        &url,
        "--output",
        "json",
        "timeouts",
        "list",
        "--process",
        "checkout",
    ]);
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(listed[0]["instance"], "o-1", "{out}");
    assert_eq!(listed[0]["cancelled_at"], serde_json::Value::Null, "{out}");

    let charged = EventEnvelope::new("o-1", 1, &PaymentEvent::Charged { amount: 0 })
        .expect("envelope")
        .with_correlation_id("o-1");
    runner.handle(&charged).await.expect("charged");
    let (code, out, _) = run(&["--store", &url, "timeouts", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("no pending timeouts"), "{out}");
    let (code, out, _) = run(&["--store", &url, "timeouts", "list", "--all"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("timeout payment") && out.contains("cancelled"),
        "{out}"
    );
    let (_, out, _) = run(&["--store", &url, "timeouts", "list", "--process", "other"]);
    assert!(out.contains("no pending timeouts"), "{out}");
    let _ = std::fs::remove_file(path);
}
