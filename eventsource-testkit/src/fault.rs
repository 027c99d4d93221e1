//! The fault scenario broker backends run: the broker goes away and comes back.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use eventsource_core::{handler_fn, EventBus, EventEnvelope, Subscription};

use crate::fixtures::*;

/// What [`survives_outage`] observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutageReport {
    /// Publishes the backend acknowledged.
    pub acknowledged: usize,
    /// Publishes that returned an error (during the outage).
    pub refused: usize,
}

/// The fault scenario every broker backend runs: a subscription handles
/// `events` paced publishes; once 50 are handled, `outage` runs (it stops
/// the broker and starts it again) while the publisher is still going.
/// Fails unless every publish the backend acknowledged is handled within
/// `patience` after the outage.
pub async fn survives_outage<F, Fut>(
    bus: Arc<dyn EventBus>,
    events: u64,
    pace: Duration,
    patience: Duration,
    outage: F,
) -> OutageReport
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let (tx, mut handled) = mpsc::unbounded_channel();
    bus.subscribe(
        Subscription::builder("fault")
            .concurrency(4)
            .handler(handler_fn(move |e: EventEnvelope| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(e.event_id);
                    Ok(())
                }
            }))
            .build()
            .expect("valid"),
    )
    .await
    .expect("subscribe");
    let publisher = {
        let bus = Arc::clone(&bus);
        tokio::spawn(async move {
            let (mut acknowledged, mut refused) = (Vec::new(), 0);
            for i in 0..events {
                let e = probe(&format!("agg-{}", i % 10), i / 10 + 1, i);
                match bus.publish(std::slice::from_ref(&e)).await {
                    Ok(()) => acknowledged.push(e.event_id),
                    Err(_) => refused += 1,
                }
                // Pacing, so that the outage lands mid-stream.
                tokio::time::sleep(pace).await;
            }
            (acknowledged, refused)
        })
    };
    let mut seen = HashSet::new();
    while seen.len() < 50 {
        let id = tokio::time::timeout(patience, handled.recv())
            .await
            .expect("the first 50 events handled before the outage")
            .expect("open");
        seen.insert(id);
    }
    assert!(
        !publisher.is_finished(),
        "the outage must land mid-stream: publish more or pace slower"
    );
    outage().await;
    let (acknowledged, refused) = publisher.await.expect("publisher task");
    let deadline = tokio::time::Instant::now() + patience;
    let missing =
        |seen: &HashSet<uuid::Uuid>| acknowledged.iter().filter(|id| !seen.contains(*id)).count();
    while missing(&seen) > 0 {
        match tokio::time::timeout_at(deadline, handled.recv()).await {
            Ok(Some(id)) => {
                seen.insert(id);
            }
            _ => panic!(
                "{} of {} acknowledged events were never handled after the outage",
                missing(&seen),
                acknowledged.len()
            ),
        }
    }
    let report = OutageReport {
        acknowledged: acknowledged.len(),
        refused,
    };
    println!("outage survived: {report:?}, every acknowledged event handled");
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    report
}
