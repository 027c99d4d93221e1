//! Garbage on the wire: a message another program wrote to the events
//! stream, queue or topic that does not decode as an event. Every broker
//! backend runs [`garbage_is_dead_lettered_raw`] with its own raw client
//! writing the garbage (the one part that differs), then checks what its
//! letter's error and source say.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use eventsource_core::{DeadLetter, EventBus, Subscription};

use crate::fixtures::{dead_letters_of, probe, Recorder};

/// Subscribes group `raw`, lets `write_garbage` put a message that is not
/// an event where the group reads (with the raw client), publishes a good
/// event after it, and checks that the group handles the good one — the
/// consumer goes on — and that the garbage is the group's one dead letter:
/// no envelope, its raw fields shown (they contain `marker`). Returns the
/// letter (for the backend's checks of its error and source) and the
/// group's recorder (nothing else arrived on it yet); the member stays
/// subscribed until the bus shuts down.
pub async fn garbage_is_dead_lettered_raw<F, Fut>(
    bus: &Arc<dyn EventBus>,
    write_garbage: F,
    marker: &str,
    patience: Duration,
) -> (DeadLetter, Recorder)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let (mut rec, h) = Recorder::new("group `raw`");
    let _member = bus
        .subscribe(
            Subscription::builder("raw")
                .handler(h)
                .build()
                .expect("valid"),
        )
        .await
        .expect("subscribe");
    write_garbage().await;
    let good = probe("agg-1", 1, 1);
    bus.publish(std::slice::from_ref(&good))
        .await
        .expect("publish");
    assert_eq!(
        rec.expect(1, patience).await[0].event_id,
        good.event_id,
        "the event after the garbage is handled"
    );
    let letters = dead_letters_of(bus, "raw", 1, patience).await;
    let letter = letters.into_iter().next().expect("one letter");
    assert!(letter.envelope().is_none(), "{letter:?}");
    assert!(
        letter.raw_body().is_some_and(|r| r.contains(marker)),
        "the raw fields are shown: {letter:?}"
    );
    (letter, rec)
}
