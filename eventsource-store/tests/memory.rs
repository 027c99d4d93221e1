//! `sqlite::memory:` is one database for the whole store, whatever the
//! pool does: every task sees the tables and the events of the others.

use std::sync::Arc;

use eventsource_core::{EventStore, ExpectedVersion};
use eventsource_store::{SqlEventStore, StoreConfig};
use eventsource_testkit::probe;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_sqlite_store_is_one_database() {
    for run in 0..3 {
        let store = Arc::new(
            SqlEventStore::connect(
                StoreConfig::new("sqlite::memory:")
                    .validated()
                    .expect("valid"),
            )
            .await
            .expect("connect"),
        );
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    for v in 1..=5u64 {
                        let e = probe(&format!("w-{w}"), v, v);
                        store
                            .append(&e.stream_name(), ExpectedVersion::Any, &[e])
                            .await
                            .unwrap_or_else(|err| panic!("run {run}, writer {w}: {err}"));
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.expect("writer");
        }
        let all = store.read_all(0, 1_000).await.expect("read all");
        assert_eq!(all.len(), 40, "run {run}: every append in one database");
    }
}
