//! A partitioned namespace keeps its partition count (Redis and RabbitMQ,
//! whose `partitions` setting splits the events of a namespace): a bus
//! with another count, or without partitions, is refused at connect, and
//! so is a partitioned bus on a namespace that already holds
//! unpartitioned events. The backend says how to connect; it checks the
//! errors' text, which names what its broker stores.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use eventsource_core::{Error, EventBus, Result};

use crate::fixtures::probe;

/// The refusals [`a_namespace_keeps_its_partition_count`] met, each an
/// [`Error::Config`], for the backend's checks of what they say.
#[derive(Debug)]
pub struct PartitionCountRefusals {
    /// The namespace partitioned into 16, with `order-7`'s three events.
    pub namespace: String,
    /// A bus with 8 partitions on it.
    pub other_count: Error,
    /// A bus without partitions on it.
    pub unpartitioned: Error,
    /// A bus with 4 partitions on a namespace an unpartitioned bus used.
    pub onto_unpartitioned: Error,
}

/// Connects (`connect(namespace, partitions)`) with 16 partitions on a new
/// namespace and publishes three events of `order-7`; then a bus with 8
/// and one without partitions on that namespace must be refused with
/// [`Error::Config`]; then, on another new namespace where an
/// unpartitioned bus published, so must a bus with 4.
pub async fn a_namespace_keeps_its_partition_count<C, Fut>(connect: C) -> PartitionCountRefusals
where
    C: Fn(String, Option<u32>) -> Fut,
    Fut: Future<Output = Result<Arc<dyn EventBus>>>,
{
    let fresh = || format!("es-test-{}", uuid::Uuid::now_v7().simple());
    let refused = |what: &str, connected: Result<Arc<dyn EventBus>>| match connected {
        Err(e @ Error::Config(_)) => e,
        Err(e) => panic!("{what}: expected a configuration error, got {e}"),
        Ok(_) => panic!("{what}: connected"),
    };
    let namespace = fresh();
    let bus = connect(namespace.clone(), Some(16))
        .await
        .expect("a new namespace takes 16 partitions");
    let events: Vec<_> = (1..=3).map(|v| probe("order-7", v, v)).collect();
    bus.publish(&events).await.expect("publish");
    let other_count = refused(
        "8 partitions on a namespace of 16",
        connect(namespace.clone(), Some(8)).await,
    );
    let unpartitioned = refused(
        "no partitions on a namespace of 16",
        connect(namespace.clone(), None).await,
    );
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");

    let plain = fresh();
    let unpartitioned_bus = connect(plain.clone(), None)
        .await
        .expect("a new namespace without partitions");
    unpartitioned_bus
        .publish(&[probe("a", 1, 1)])
        .await
        .expect("publish");
    let onto_unpartitioned = refused(
        "4 partitions on a namespace of unpartitioned events",
        connect(plain, Some(4)).await,
    );
    unpartitioned_bus
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    PartitionCountRefusals {
        namespace,
        other_count,
        unpartitioned,
        onto_unpartitioned,
    }
}
