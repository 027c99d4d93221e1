//! Delivering stored events again to one consumer group
//! (`EventBus::redeliver`, what the store's targeted replay sends by):
//! that group gets each copy, once, marked for it and in order per
//! aggregate; the other groups and a watch get nothing.

use std::collections::BTreeMap;

use eventsource_core::{EventFilter, REPLAYED_FOR, REPLAY_ID};

use crate::fixtures::*;
use crate::BusFactory;

/// Groups `target` and `other` both handle 6 events of 2 aggregates;
/// then 4 of them go again to `target` alone, carrying a replay id: it
/// handles each once more, in order per aggregate, with the marks and
/// the metadata the caller gave; `other` and a watch see nothing.
pub async fn redeliver_reaches_one_group_only(f: &dyn BusFactory) {
    let bus = f.bus().await;
    let prefix = uuid::Uuid::now_v7().simple().to_string();
    let (mut target, h) = Recorder::new("group replayed to");
    let _t = subscribe(&bus, sub("replayed-to", h)).await;
    let (mut other, h) = Recorder::new("other group");
    let _o = subscribe(&bus, sub("not-replayed-to", h)).await;
    let events: Vec<_> = (1..=3)
        .flat_map(|v| {
            [
                probe(&format!("{prefix}-a"), v, v),
                probe(&format!("{prefix}-b"), v, 10 + v),
            ]
        })
        .collect();
    publish(&bus, &events).await;
    target.expect(6, f.patience()).await;
    other.expect(6, f.patience()).await;
    let mut watch = bus.watch(EventFilter::all()).await.ok();
    let again: Vec<_> = events
        .iter()
        .filter(|e| e.aggregate_version >= 2)
        .map(|e| {
            let mut copy = e.clone();
            copy.metadata.insert(REPLAY_ID.to_owned(), "r-1".to_owned());
            copy
        })
        .collect();
    bus.redeliver("replayed-to", &again)
        .await
        .expect("redeliver to one group");
    let got = target.expect(4, f.patience()).await;
    let mut per_aggregate: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in &got {
        assert_eq!(
            e.metadata.get(REPLAYED_FOR).map(String::as_str),
            Some("replayed-to"),
            "a copy is marked for its group"
        );
        assert_eq!(e.metadata.get(REPLAY_ID).map(String::as_str), Some("r-1"));
        assert!(
            again.iter().any(|a| a.event_id == e.event_id),
            "only what was sent again: {}",
            e.event_id
        );
        per_aggregate
            .entry(e.aggregate_id.clone())
            .or_default()
            .push(e.aggregate_version);
    }
    for versions in per_aggregate.values() {
        assert_eq!(versions, &[2, 3], "each once, in order per aggregate");
    }
    other.expect_nothing(f.quiet()).await;
    target.expect_nothing(f.quiet()).await;
    if let Some(watch) = watch.as_mut() {
        let seen = tokio::time::timeout(f.quiet(), watch.next()).await;
        assert!(seen.is_err(), "a watch shows no copy: {seen:?}");
    }
    finish(bus).await;
}
