//! A member's Kafka consumer, closed on a thread of its own.

use std::time::Duration;

use rdkafka::consumer::StreamConsumer;

use super::MemberContext;

/// How long dropping a member's consumer waits for it to close (leave
/// the group) before going on without it.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// A member's Kafka consumer, closed on a thread of its own when dropped.
///
/// Closing runs the revoke callback, and librdkafka requests made from it
/// (the rebalance protocol, the unassign) wait for its main thread without
/// a timeout; seen one run in four or five of the conformance suite on the
/// test broker, they are never answered while the consumer closes, and a
/// consumer dropped in place hung `shutdown` forever. Dropped here, the
/// close gets [`CLOSE_WAIT`]; one that does not finish is left to its
/// thread (the group drops the member when its session times out).
pub(crate) struct OwnedConsumer(pub(super) Option<StreamConsumer<MemberContext>>);

impl std::ops::Deref for OwnedConsumer {
    type Target = StreamConsumer<MemberContext>;

    fn deref(&self) -> &Self::Target {
        self.0
            .as_ref()
            .expect("the consumer is taken only when dropped")
    }
}

impl Drop for OwnedConsumer {
    fn drop(&mut self) {
        let Some(consumer) = self.0.take() else {
            return;
        };
        let (closed, wait) = std::sync::mpsc::channel::<()>();
        let close = move || {
            drop(consumer);
            let _ = closed.send(());
        };
        match std::thread::Builder::new()
            .name("eventsource-kafka-close".to_owned())
            .spawn(close)
        {
            Ok(_) => {
                if wait.recv_timeout(CLOSE_WAIT).is_err() {
                    tracing::warn!(
                        wait = ?CLOSE_WAIT,
                        "the kafka consumer did not close in time; it leaves its group when its session times out"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "no thread to close the kafka consumer on; it is closed in place");
            }
        }
    }
}
