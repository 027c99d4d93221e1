//! The SQL event store against a SQLite file and the real PostgreSQL.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::TestDb;
use eventsource_core::{Error, EventEnvelope, EventStore, ExpectedVersion};
use eventsource_testkit::probe;

fn events(aggregate: &str, from: u64, n: u64) -> Vec<EventEnvelope> {
    (from..from + n).map(|v| probe(aggregate, v, v)).collect()
}

async fn append_read_and_expected_versions(db: &TestDb) {
    let store = db.store(false).await;
    let a = events("a", 1, 3);
    let r = store
        .append("Probe-a", ExpectedVersion::NoStream, &a)
        .await
        .expect("append");
    assert_eq!(r.version, 3);
    assert_eq!(
        store.read_stream("Probe-a", 1).await.expect("read"),
        a,
        "round trip of every field"
    );
    assert_eq!(
        store.read_stream("Probe-a", 3).await.expect("read").len(),
        1
    );
    assert!(store
        .read_stream("Probe-none", 1)
        .await
        .expect("read")
        .is_empty());

    let err = store
        .append("Probe-a", ExpectedVersion::NoStream, &events("a", 4, 1))
        .await
        .expect_err("exists");
    assert!(matches!(err, Error::Concurrency { actual: 3, .. }), "{err}");
    let err = store
        .append("Probe-a", ExpectedVersion::Exact(2), &events("a", 4, 1))
        .await
        .expect_err("stale");
    assert!(
        err.to_string()
            .contains("expected version 2, found version 3"),
        "{err}"
    );
    store
        .append("Probe-a", ExpectedVersion::Exact(3), &events("a", 4, 1))
        .await
        .expect("exact");
    store
        .append("Probe-a", ExpectedVersion::Any, &events("a", 5, 1))
        .await
        .expect("any");

    // Batches that agree with their expectation but not with the stream
    // (now at 5): the insert itself refuses them, and the error says what
    // the stream holds.
    let stale = store
        .append("Probe-a", ExpectedVersion::Exact(2), &events("a", 3, 1))
        .await
        .expect_err("versions 3 taken");
    assert!(
        stale
            .to_string()
            .contains("expected version 2, found version 5"),
        "{stale}"
    );
    for len in [1, 2] {
        let ahead = store
            .append("Probe-a", ExpectedVersion::Exact(7), &events("a", 8, len))
            .await
            .expect_err("a gap after 5");
        assert!(
            matches!(ahead, Error::Concurrency { actual: 5, .. }),
            "{ahead}"
        );
    }
    let recreated = store
        .append("Probe-a", ExpectedVersion::NoStream, &events("a", 1, 1))
        .await
        .expect_err("exists");
    assert!(
        matches!(recreated, Error::Concurrency { actual: 5, .. }),
        "{recreated}"
    );
    let behind = store
        .append("Probe-a", ExpectedVersion::Any, &events("a", 3, 1))
        .await
        .expect_err("any, but versions must follow 5");
    assert!(behind.to_string().contains("version 6"), "{behind}");
    assert_eq!(
        store.read_stream("Probe-a", 1).await.expect("read").len(),
        5,
        "nothing of a refused batch stored"
    );

    // A duplicate event id rejects the whole batch — a lone event too
    // (appended with one statement, no transaction).
    for (aggregate, n, taken) in [("b", 2, a[0].event_id), ("c", 1, a[1].event_id)] {
        let stream = format!("Probe-{aggregate}");
        let mut dup = events(aggregate, 1, n);
        dup[n as usize - 1].event_id = taken;
        let err = store
            .append(&stream, ExpectedVersion::NoStream, &dup)
            .await
            .expect_err("duplicate id");
        assert!(matches!(err, Error::DuplicateEvent { .. }), "{err}");
        assert!(
            err.to_string().contains(&taken.to_string()),
            "names the id already stored: {err}"
        );
        assert!(
            store
                .read_stream(&stream, 1)
                .await
                .expect("read")
                .is_empty(),
            "nothing of the batch stored in {stream}"
        );
    }

    let all = store.read_all(0, 100).await.expect("read_all");
    assert_eq!(all.len(), 5);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(
        store
            .read_all(all[1].position, 2)
            .await
            .expect("page")
            .len(),
        2
    );
}

async fn concurrent_writers_never_make_a_reader_skip(db: &TestDb) {
    const WRITERS: u64 = 4;
    const PER: u64 = 40;
    let store = Arc::new(db.store(false).await);
    let stop = tokio_util::sync::CancellationToken::new();
    let reader = {
        let (store, stop) = (Arc::clone(&store), stop.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut position = 0;
            loop {
                // Stop only on an empty read that began after the writers finished.
                let writers_done = stop.is_cancelled();
                let batch = store.read_all(position, 7).await.expect("read_all");
                if let Some(last) = batch.last() {
                    position = last.position;
                }
                let empty = batch.is_empty();
                seen.extend(batch.into_iter().map(|r| (r.position, r.envelope.event_id)));
                if empty && writers_done {
                    return seen;
                }
                if empty {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for v in 1..=PER {
                    let e = probe(&format!("w{w}"), v, v);
                    store
                        .append(&format!("Probe-w{w}"), ExpectedVersion::Exact(v - 1), &[e])
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    stop.cancel();
    let seen = reader.await.expect("reader");
    let stored: HashSet<_> = store
        .read_all(0, 10_000)
        .await
        .expect("read_all")
        .into_iter()
        .map(|r| r.envelope.event_id)
        .collect();
    let read: HashSet<_> = seen.iter().map(|(_, id)| *id).collect();
    assert_eq!(stored.len() as u64, WRITERS * PER);
    assert_eq!(
        read,
        stored,
        "the tailing reader skipped {} event(s)",
        stored.difference(&read).count()
    );
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "positions only grow"
    );
}

async fn snapshots_every_n_and_schema_invalidation(db: &TestDb) {
    use eventsource_core::{Aggregate, Repository};
    use eventsource_store::{SnapshotPolicy, SnapshotRepository};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Default, Serialize, Deserialize)]
    struct Counter {
        total: u64,
        seen: u64,
    }
    impl Aggregate for Counter {
        type Event = eventsource_testkit::Probe;
        type Command = u64;
        type Error = std::io::Error;
        fn apply(&mut self, e: &Self::Event) {
            let (eventsource_testkit::Probe::Created { n }
            | eventsource_testkit::Probe::Updated { n }) = e;
            self.total += n;
            self.seen += 1;
        }
        fn handle(&self, n: u64) -> Result<Vec<Self::Event>, std::io::Error> {
            Ok(vec![eventsource_testkit::Probe::Created { n }])
        }
    }

    let store = db.store(false).await;
    let shared: Arc<dyn EventStore> = Arc::new(store.clone());
    let repo = SnapshotRepository::new(
        Repository::<Counter>::new(Arc::clone(&shared)),
        store.clone(),
        SnapshotPolicy::every(5, 1).expect("valid"),
    );
    for n in 1..=12 {
        let mut c = repo.load("c1").await.expect("load");
        c.execute(n).expect("cmd");
        repo.save(&mut c).await.expect("save");
    }
    assert_eq!(repo.snapshot_version("c1").await.expect("read"), Some(10));
    let c = repo.load("c1").await.expect("load");
    assert_eq!((c.version(), c.state().total, c.state().seen), (12, 78, 12));

    // A snapshot of another schema version is ignored: rebuilt from events.
    let v2 = SnapshotRepository::new(
        Repository::<Counter>::new(shared),
        store.clone(),
        SnapshotPolicy::every(5, 2).expect("valid"),
    );
    assert_eq!(v2.snapshot_version("c1").await.expect("read"), None);
    let c = v2.load("c1").await.expect("load");
    assert_eq!((c.version(), c.state().total), (12, 78));
    assert!(SnapshotPolicy::every(0, 1).is_err());
}

async fn catch_up_runner_checkpoints_and_follows_live(db: &TestDb) {
    use async_trait::async_trait;
    use eventsource_core::{BoxError, RecordedEvent};
    use eventsource_store::{CatchUpRunner, Checkpoints, ProjectionHandler};
    use std::sync::Mutex;

    #[derive(Default)]
    struct Count(Mutex<BTreeMap<String, u64>>);
    #[async_trait]
    impl ProjectionHandler for Count {
        async fn handle(&self, e: &RecordedEvent) -> Result<(), BoxError> {
            *self
                .0
                .lock()
                .expect("lock")
                .entry(e.stream.clone())
                .or_default() += 1;
            Ok(())
        }
    }

    let store = db.store(false).await;
    let shared: Arc<dyn EventStore> = Arc::new(store.clone());
    for s in ["x", "y", "z"] {
        store
            .append(
                &format!("Probe-{s}"),
                ExpectedVersion::NoStream,
                &events(s, 1, 10),
            )
            .await
            .expect("append");
    }
    let count = Arc::new(Count::default());
    let runner = CatchUpRunner::new(
        "counts",
        Arc::clone(&shared),
        Checkpoints::new(store.clone()),
        count.clone(),
    )
    .batch_size(7)
    .poll_interval(Duration::from_millis(20));
    let reached = runner.catch_up().await.expect("catch up");
    assert_eq!(count.0.lock().expect("lock").values().sum::<u64>(), 30);
    assert_eq!(
        Checkpoints::new(store.clone())
            .load("counts")
            .await
            .expect("load"),
        reached
    );

    let stop = tokio_util::sync::CancellationToken::new();
    let live = {
        let stop = stop.clone();
        tokio::spawn(async move { runner.run(stop).await })
    };
    store
        .append("Probe-x", ExpectedVersion::Exact(10), &events("x", 11, 5))
        .await
        .expect("append");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while count.0.lock().expect("lock").values().sum::<u64>() < 35 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "live events not projected"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    live.await.expect("task").expect("runner");
    // A new runner with the same name starts at the checkpoint: nothing to redo.
    let again = Arc::new(Count::default());
    let runner = CatchUpRunner::new("counts", shared, Checkpoints::new(store), again.clone());
    runner.catch_up().await.expect("catch up");
    assert!(
        again.0.lock().expect("lock").is_empty(),
        "re-handled {:?}",
        again.0.lock().expect("lock")
    );
}

/// A batch larger than one multi-row insert (64 rows) is stored whole, in
/// order, with its outbox rows, and a duplicate in its last chunk rejects
/// all of it.
async fn a_large_batch_spans_several_inserts(db: &TestDb) {
    let store = db.store(true).await;
    let batch = events("big", 1, 150);
    let appended = store
        .append("Probe-big", ExpectedVersion::NoStream, &batch)
        .await
        .expect("append 150");
    assert_eq!((appended.version, appended.last_position), (150, 150));
    let read = store.read_all(0, 1_000).await.expect("read");
    let ids: Vec<_> = read.iter().map(|r| r.envelope.event_id).collect();
    let want: Vec<_> = batch.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, want, "every event, in order");
    let positions: Vec<u64> = read.iter().map(|r| r.position).collect();
    assert_eq!(positions, (1..=150).collect::<Vec<u64>>());
    let mut dup = events("other", 1, 130);
    dup[129].event_id = batch[3].event_id;
    let err = store
        .append("Probe-other", ExpectedVersion::NoStream, &dup)
        .await
        .expect_err("duplicate in the last chunk");
    assert!(
        err.to_string().contains(&batch[3].event_id.to_string()),
        "{err}"
    );
    assert!(
        store
            .read_stream("Probe-other", 1)
            .await
            .expect("read")
            .is_empty(),
        "nothing of the rejected batch is stored"
    );
}

on_both_databases!(
    a_large_batch_spans_several_inserts,
    append_read_and_expected_versions,
    concurrent_writers_never_make_a_reader_skip,
    snapshots_every_n_and_schema_invalidation,
    catch_up_runner_checkpoints_and_follows_live,
);
