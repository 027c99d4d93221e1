//! A dead member's work goes to another member of its group: member A
//! takes an event and hangs in its handler, then dies (shut down with a
//! 50 ms deadline, abandoning it); member B, on a bus of its own, gets
//! the event. Redis and RabbitMQ run it, each in the order its broker
//! makes interesting.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use eventsource_core::{handler_fn, EventBus, EventEnvelope, Subscription};
use tokio::sync::mpsc;

use crate::fixtures::{probe, Recorder};

/// When member B joins, in [`a_dead_members_event_goes_to_another`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BJoins {
    /// Before A dies: B must get nothing over this window while A holds
    /// the event (RabbitMQ: the broker keeps it with A's channel).
    BeforeTheDeath(Duration),
    /// After A died: B, started afterwards, gets it without any call
    /// (Redis: it claims what A left).
    AfterTheDeath,
}

/// Runs the scenario on buses from `connect` (one for A, one for B) in
/// group `takeover`; B must get the event within `patience`. Returns B's
/// bus (still running, for the backend's own checks) and the event.
pub async fn a_dead_members_event_goes_to_another<C, Fut>(
    connect: C,
    b_joins: BJoins,
    patience: Duration,
) -> (Arc<dyn EventBus>, EventEnvelope)
where
    C: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn EventBus>>,
{
    let a = connect().await;
    let (started_tx, mut started) = mpsc::unbounded_channel();
    a.subscribe(
        Subscription::builder("takeover")
            .handler(handler_fn(move |_e| {
                let started_tx = started_tx.clone();
                async move {
                    let _ = started_tx.send(());
                    std::future::pending::<()>().await; // hangs: A dies with it
                    Ok(())
                }
            }))
            .build()
            .expect("valid"),
    )
    .await
    .expect("subscribe A");
    let sent = probe("agg-1", 1, 1);
    a.publish(std::slice::from_ref(&sent))
        .await
        .expect("publish");
    tokio::time::timeout(Duration::from_secs(10), started.recv())
        .await
        .expect("A got the event")
        .expect("open");
    let join_b = || async {
        let b = connect().await;
        let (rec, h) = Recorder::new("member B");
        b.subscribe(
            Subscription::builder("takeover")
                .handler(h)
                .build()
                .expect("valid"),
        )
        .await
        .expect("subscribe B");
        (b, rec)
    };
    let kill_a = || async {
        let report = a
            .shutdown(Duration::from_millis(50))
            .await
            .expect("shutdown A");
        assert_eq!(
            report.abandoned, 1,
            "A died with the event unacked: {report:?}"
        );
    };
    let (b, mut rec) = match b_joins {
        BJoins::BeforeTheDeath(quiet) => {
            let (b, mut rec) = join_b().await;
            rec.expect_nothing(quiet).await; // A still holds it
            kill_a().await;
            (b, rec)
        }
        BJoins::AfterTheDeath => {
            kill_a().await;
            join_b().await
        }
    };
    let got = rec.expect(1, patience).await;
    assert_eq!(
        got[0].event_id, sent.event_id,
        "B takes over what A never acked"
    );
    (b, sent)
}
