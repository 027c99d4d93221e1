//! Rolling deploys: a producer upgraded before its consumers. Events of a
//! schema version a consumer does not know wait in its group's DLQ as
//! `newer_version` (its aggregate's later events behind them, where the
//! group parks), never dead-lettered as undecodable nor lost, and a
//! member that knows the version handles them, in order, when it starts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use eventsource_core::{
    handler_for, DeadLetterQuery, DomainEvent, EventEnvelope, FailureKind, Subscription,
};

use crate::fixtures::*;
use crate::BusFactory;

/// `Price.Set` as the old consumer knows it (version 1).
#[derive(Serialize, Deserialize)]
struct PriceV1 {
    cents: u64,
}

impl DomainEvent for PriceV1 {
    fn event_type(&self) -> &str {
        "Set"
    }
    const AGGREGATE_TYPE: &'static str = "Price";
    fn event_types() -> &'static [&'static str] {
        &["Set"]
    }
}

/// `Price.Set` version 2: a currency beside the amount. A v2 payload
/// deserializes into [`PriceV1`] (the extra field is ignored), which is
/// exactly what must not happen silently.
#[derive(Serialize, Deserialize)]
struct PriceV2 {
    cents: u64,
    #[serde(default)]
    currency: String,
}

impl DomainEvent for PriceV2 {
    fn event_type(&self) -> &str {
        "Set"
    }
    const AGGREGATE_TYPE: &'static str = "Price";
    const SCHEMA_VERSION: u32 = 2;
    fn event_types() -> &'static [&'static str] {
        &["Set"]
    }
}

/// What a consumer handled: (aggregate, version), in order per aggregate.
type Seen = mpsc::UnboundedReceiver<(String, u64)>;

/// A subscription of `group` decoding `Price.Set` as `E`.
fn consumer<E: DomainEvent + Send>(group: &str, parks: bool) -> (Subscription, Seen) {
    let (tx, rx) = mpsc::unbounded_channel();
    let s = Subscription::builder(group)
        .park_aggregate_on_failure(parks)
        .retry(fast_retry(3))
        .concurrency(4)
        .handler(handler_for(move |_: E, meta: EventEnvelope| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((meta.aggregate_id.clone(), meta.aggregate_version));
                Ok(())
            }
        }))
        .build()
        .expect("valid");
    (s, rx)
}

/// Waits until `seen` has given `n` events, returning them per aggregate.
async fn collect(seen: &mut Seen, n: usize, f: &dyn BusFactory) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for i in 0..n {
        let (aggregate, version) = tokio::time::timeout(f.patience(), seen.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{i} of {n} events handled within {:?}: {out:?}",
                    f.patience()
                )
            })
            .expect("the handler lives");
        out.entry(aggregate).or_default().push(version);
    }
    out
}

/// `Price.Set` of `aggregate` at `version`, written at `schema`.
fn price(aggregate: &str, version: u64, schema: u32) -> EventEnvelope {
    match schema {
        1 => EventEnvelope::new(aggregate, version, &PriceV1 { cents: version }),
        _ => EventEnvelope::new(
            aggregate,
            version,
            &PriceV2 {
                cents: version,
                currency: "EUR".into(),
            },
        ),
    }
    .expect("encode")
}

/// Producer v2, consumer v1 in one group: x's v1 events are handled, its
/// v2 events wait as `newer_version` (x's later event parked behind the
/// first where the group parks), y goes on; nothing is dead-lettered as
/// undecodable or lost. The v1 member leaves and a v2 member joins: it
/// handles x's waiting events, in order where the group parks, then x's
/// next event, and the group's DLQ empties.
pub async fn a_newer_version_waits_for_a_member_that_knows_it(f: &dyn BusFactory) {
    let bus = f.bus().await;
    let parks = f.features().parks_aggregates;
    let prefix = uuid::Uuid::now_v7().simple().to_string();
    let (x, y) = (format!("{prefix}-x"), format!("{prefix}-y"));
    let (old, mut old_seen) = consumer::<PriceV1>("rolling", parks);
    let old = subscribe(&bus, old).await;
    publish(
        &bus,
        &[
            price(&x, 1, 1),
            price(&y, 1, 1),
            price(&x, 2, 1),
            price(&x, 3, 2),
            price(&y, 2, 1),
            price(&x, 4, 2),
        ],
    )
    .await;
    let handled = collect(&mut old_seen, 4, f).await;
    assert_eq!(
        handled.get(&x),
        Some(&vec![1, 2]),
        "x's v1 events: {handled:?}"
    );
    assert_eq!(handled.get(&y), Some(&vec![1, 2]), "y goes on: {handled:?}");
    let letters = dead_letters_of(&bus, "rolling", 2, f.patience()).await;
    let mut kinds: Vec<(u64, FailureKind)> = letters
        .iter()
        .map(|l| {
            let e = l.envelope().expect("a newer version is still readable");
            (e.aggregate_version, l.failure.kind)
        })
        .collect();
    kinds.sort_unstable_by_key(|(v, _)| *v);
    let behind = if parks {
        FailureKind::Parked
    } else {
        FailureKind::NewerVersion
    };
    assert_eq!(
        kinds,
        [(3, FailureKind::NewerVersion), (4, behind)],
        "x's v2 events wait, none is undecodable"
    );
    assert!(
        letters[0].failure.error.contains("schema version 2"),
        "the letter says why: {}",
        letters[0].failure.error
    );
    old.unsubscribe().await;
    let (new, mut new_seen) = consumer::<PriceV2>("rolling", parks);
    let _new = subscribe(&bus, new).await;
    let handled = collect(&mut new_seen, 2, f).await;
    let mut got = handled.get(&x).cloned().unwrap_or_default();
    if !parks {
        got.sort_unstable(); // Without parking, replayed letters keep no order.
    }
    assert_eq!(got, [3, 4], "x's waiting events, in order: {handled:?}");
    eventually("the group's DLQ to empty", f.patience(), || async {
        bus.dead_letters()
            .list(&DeadLetterQuery::group("rolling"))
            .await
            .expect("list")
            .is_empty()
            .then_some(())
    })
    .await;
    publish(&bus, &[price(&x, 5, 2)]).await;
    let handled = collect(&mut new_seen, 1, f).await;
    assert_eq!(handled.get(&x), Some(&vec![5]), "released: x goes on");
    assert!(
        old_seen.try_recv().is_err(),
        "the old member handled nothing more"
    );
    finish(bus).await;
}
