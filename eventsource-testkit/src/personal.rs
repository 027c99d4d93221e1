//! Forgetting a person on a bus (#29): events whose personal fields are
//! sealed travel, are dead-lettered, parked and replayed as ciphertext;
//! a raw read of everything the broker keeps finds no canary in the clear,
//! before or after the subject is forgotten; after forgetting, the
//! subject's dead letters replay with the replacement values while the
//! other subject's data still opens.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventsource_core::personal::{InMemoryKeyStore, OpenedHandler, Shredder, SUBJECT_FORGOTTEN};
use eventsource_core::{
    handler_fn, DeadLetterQuery, DomainEvent, EventBus, EventEnvelope, EventFilter, FailureKind,
    HandlerError, Subscription,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::fixtures::{fast_retry, subscribe};

/// Reads, raw, every byte the broker keeps for the bus under test (its
/// streams, queues or topics, dead letters and parked letters included).
pub type RawDump<'a> = &'a (dyn Fn() -> Pin<Box<dyn Future<Output = Vec<u8>> + Send>> + Sync);

#[derive(Debug, Serialize, Deserialize, DomainEvent)]
#[event(aggregate = "Chart")]
struct Charted {
    #[data_subject]
    patient: String,
    #[personal_data(replacement = "[forgotten]")]
    note: String,
    seq: u64,
}

/// Aggregates per subject, and events per aggregate.
const AGGREGATES: u64 = 10;
const VERSIONS: u64 = 50;

fn canary(aggregate: &str, version: u64) -> String {
    format!("canary-{aggregate}-v{version:02}")
}

/// Whether a raw read holds any canary of the run; the first found.
fn first_canary(raw: &[u8]) -> Option<String> {
    let needle = b"canary-";
    raw.windows(needle.len())
        .position(|w| w == needle)
        .map(|at| String::from_utf8_lossy(&raw[at..(at + 24).min(raw.len())]).into_owned())
}

fn assert_sealed(raw: &[u8], when: &str, copies_left: bool) {
    assert!(
        !copies_left || raw.windows(9).any(|w| w == b"es:enc:1:"),
        "{when}: the raw read found no sealed field at all ({} bytes): it does not read the broker's copies",
        raw.len()
    );
    if let Some(found) = first_canary(raw) {
        panic!("{when}: personal data in the clear on the broker: `{found}`…");
    }
}

/// Publishes 1,000 events of two subjects (`S`: aggregates `s-0`…`s-9`,
/// `T`: `t-0`…`t-9`, 50 versions each), each with a unique canary in a
/// personal field, to two groups: `charts` handles all; `billing` parks
/// and fails on `s-0` v45 (v46–v50 parked behind it) and on v50 of nine
/// other aggregates (10 dead letters, 5 parked). Reads the broker raw;
/// forgets `S` (a `SubjectForgotten` event reaches `charts`); replays
/// `billing`'s letters after the fix: `S`'s open with the replacement,
/// `T`'s with their canary; reads the broker raw again.
///
/// `bus` must allow parking (`Features::parks_aggregates`).
pub async fn personal_data_is_sealed_on_the_bus(
    bus: Arc<dyn EventBus>,
    raw: RawDump<'_>,
    patience: Duration,
) {
    let shredder = Arc::new(Shredder::new(Arc::new(InMemoryKeyStore::new())));
    let (charts_tx, mut charts) = mpsc::unbounded_channel::<EventEnvelope>();
    let charts_sub = Subscription::builder("charts")
        .retry(fast_retry(3))
        .concurrency(4)
        .handler(OpenedHandler::new(
            shredder.clone(),
            handler_fn(move |e: EventEnvelope| {
                let tx = charts_tx.clone();
                async move {
                    let _ = tx.send(e);
                    Ok(())
                }
            }),
        ))
        .build()
        .expect("valid");
    let fixed = Arc::new(AtomicBool::new(false));
    let (billing_tx, mut billing) = mpsc::unbounded_channel::<EventEnvelope>();
    let broken = {
        let fixed = fixed.clone();
        move |e: &EventEnvelope| {
            let v = e.aggregate_version;
            let id = e.aggregate_id.as_str();
            !fixed.load(Ordering::SeqCst)
                && ((id == "s-0" && v == 45)
                    || (v == VERSIONS
                        && [
                            "s-1", "s-2", "s-3", "s-4", "s-5", "t-1", "t-2", "t-3", "t-4",
                        ]
                        .contains(&id)))
        }
    };
    let billing_sub = Subscription::builder("billing")
        .filter(EventFilter::pattern("Chart.*").expect("valid"))
        .park_aggregate_on_failure(true)
        .retry(fast_retry(1))
        .concurrency(4)
        .handler(OpenedHandler::new(
            shredder.clone(),
            handler_fn(move |e: EventEnvelope| {
                let (tx, broken) = (billing_tx.clone(), broken.clone());
                async move {
                    if broken(&e) {
                        return Err(HandlerError::permanent("the billing bug"));
                    }
                    let _ = tx.send(e);
                    Ok(())
                }
            }),
        ))
        .build()
        .expect("valid");
    let charts_handle = subscribe(&bus, charts_sub).await;
    let billing_handle = subscribe(&bus, billing_sub).await;

    let mut events = Vec::new();
    for version in 1..=VERSIONS {
        for subject in ["s", "t"] {
            for n in 0..AGGREGATES {
                let aggregate = format!("{subject}-{n}");
                let event = Charted {
                    patient: subject.to_uppercase(),
                    note: canary(&aggregate, version),
                    seq: version,
                };
                events.push(
                    shredder
                        .envelope(aggregate, version, &event)
                        .await
                        .expect("seal"),
                );
            }
        }
    }
    for batch in events.chunks(100) {
        bus.publish(batch).await.expect("publish");
    }

    // `charts` sees every event opened: the canary, decrypted.
    let all = receive(&mut charts, events.len(), patience, "charts").await;
    for e in &all {
        assert_eq!(
            e.payload["note"],
            canary(&e.aggregate_id, e.aggregate_version),
            "charts got {e:?}"
        );
    }
    let handled = receive(&mut billing, events.len() - 15, patience, "billing").await;
    assert!(handled
        .iter()
        .all(|e| e.payload["note"] == canary(&e.aggregate_id, e.aggregate_version)));
    let dlq = bus.dead_letters();
    let letters = crate::eventually("billing's 10 dead and 5 parked letters", patience, || {
        let dlq = dlq.clone();
        async move {
            let letters = dlq
                .list(&DeadLetterQuery::group("billing"))
                .await
                .expect("list");
            (letters.len() == 15).then_some(letters)
        }
    })
    .await;
    let parked = letters
        .iter()
        .filter(|l| l.failure.kind == FailureKind::Parked)
        .count();
    assert_eq!(parked, 5, "{letters:?}");
    for letter in &letters {
        let body = letter.envelope().expect("an event letter");
        let note = body.payload["note"].as_str().unwrap_or_default();
        assert!(
            note.starts_with("es:enc:1:"),
            "a letter in the clear: {note}"
        );
    }
    assert_sealed(&raw().await, "after delivery and dead-lettering", true);

    // Forget S; the charts group hears of it.
    shredder
        .forget("S", Some(bus.as_ref()))
        .await
        .expect("forget");
    let forgotten = receive(&mut charts, 1, patience, "charts (SubjectForgotten)").await;
    assert_eq!(forgotten[0].event_type, SUBJECT_FORGOTTEN);
    assert_eq!(forgotten[0].payload["subject"], "S");

    // The fix is deployed; the letters are replayed: S's open with the
    // replacement, T's still with their data, each aggregate in order.
    fixed.store(true, Ordering::SeqCst);
    dlq.replay_all(&DeadLetterQuery::group("billing"))
        .await
        .expect("replay");
    let replayed = receive(&mut billing, 15, patience, "billing (replays)").await;
    let mut per_aggregate: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for e in &replayed {
        per_aggregate
            .entry(&e.aggregate_id)
            .or_default()
            .push(e.aggregate_version);
        let expected = if e.aggregate_id.starts_with("s-") {
            "[forgotten]".to_owned()
        } else {
            canary(&e.aggregate_id, e.aggregate_version)
        };
        assert_eq!(e.payload["note"], expected.as_str(), "{e:?}");
    }
    assert_eq!(per_aggregate["s-0"], [45, 46, 47, 48, 49, 50]);
    // (A broker that drops what was handled may hold nothing now.)
    assert_sealed(&raw().await, "after forgetting and replaying", false);
    charts_handle.unsubscribe().await;
    billing_handle.unsubscribe().await;
}

async fn receive(
    rx: &mut mpsc::UnboundedReceiver<EventEnvelope>,
    n: usize,
    patience: Duration,
    what: &str,
) -> Vec<EventEnvelope> {
    let mut got = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + patience;
    while got.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) => got.push(e),
            Ok(None) => panic!("{what}: the handler was dropped"),
            Err(_) => panic!("{what}: {} of {n} events within {patience:?}", got.len()),
        }
    }
    got
}
