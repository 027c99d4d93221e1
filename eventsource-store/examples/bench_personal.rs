//! What sealing personal data costs (#29): appending and loading events
//! with one personal field, sealed per data subject (AES-256-GCM, keys in
//! the store), beside the same events without, in the same run.
//!
//! ```sh
//! cargo run --release -p eventsource-store --example bench_personal -- [sqlite|postgres|both] [events] [rounds]
//! ```
//!
//! Append: `Repository::save` of batches of 1, 10 and 100 events (the
//! sealed side also looks up the subject's key, cached after the first).
//! Load: `Repository::load` of one stream of `events` events, and of
//! `events / 100` aggregates of 100 events each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventsource_core::personal::Shredder;
use eventsource_core::{Aggregate, DomainEvent, EventStore, Repository};
use eventsource_store::{SqlEventStore, SqlKeyStore, StoreConfig};
use eventsource_testkit::bench;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, DomainEvent)]
#[event(aggregate = "Sealed")]
struct SealedNote {
    #[data_subject]
    patient: String,
    #[personal_data]
    note: String,
    seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, DomainEvent)]
#[event(aggregate = "Plain")]
struct PlainNote {
    patient: String,
    note: String,
    seq: u64,
}

struct Notes<E>(u64, std::marker::PhantomData<fn() -> E>);

impl<E> Default for Notes<E> {
    fn default() -> Self {
        Notes(0, std::marker::PhantomData)
    }
}

/// `(patient, how many)` decides that many notes.
macro_rules! notes_aggregate {
    ($event:ident) => {
        impl Aggregate for Notes<$event> {
            type Event = $event;
            type Command = (String, usize);
            type Error = std::convert::Infallible;
            fn apply(&mut self, _: &$event) {
                self.0 += 1;
            }
            fn handle(&self, (patient, n): (String, usize)) -> Result<Vec<$event>, Self::Error> {
                Ok((0..n as u64)
                    .map(|i| $event {
                        patient: patient.clone(),
                        note: format!("a note about {patient}'s visit, number {}", self.0 + i),
                        seq: self.0 + i,
                    })
                    .collect())
            }
        }
    };
}
notes_aggregate!(SealedNote);
notes_aggregate!(PlainNote);

async fn save_batches<A>(repo: &Repository<A>, id: &str, n: usize, batch: usize) -> Duration
where
    A: Aggregate<Command = (String, usize)>,
{
    let t = Instant::now();
    let mut root = repo.load(id).await.expect("load");
    let mut left = n;
    while left > 0 {
        let take = left.min(batch);
        root.execute((format!("patient-{id}"), take))
            .expect("decide");
        repo.save(&mut root).await.expect("save");
        left -= take;
    }
    t.elapsed()
}

async fn run(
    url: &str,
    label: &str,
    n: usize,
    rounds: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let store = SqlEventStore::connect(StoreConfig::new(url).validated()?).await?;
    let shredder = Arc::new(Shredder::new(Arc::new(SqlKeyStore::new(&store))));
    let sealed =
        Repository::<Notes<SealedNote>>::new(Arc::new(store.clone())).with_shredder(shredder);
    let plain = Repository::<Notes<PlainNote>>::new(Arc::new(store.clone()));
    let mut rows = Vec::new();
    for batch in [1usize, 10, 100] {
        rows.push(
            bench::compare(
                &format!("{label}: save, batch of {batch}"),
                n,
                rounds,
                async |n| save_batches(&sealed, &uuid::Uuid::now_v7().to_string(), n, batch).await,
                async |n| save_batches(&plain, &uuid::Uuid::now_v7().to_string(), n, batch).await,
            )
            .await,
        );
    }
    let id = uuid::Uuid::now_v7().to_string();
    save_batches(&sealed, &id, n, 100).await;
    save_batches(&plain, &id, n, 100).await;
    rows.push(
        bench::compare(
            &format!("{label}: load, one stream of {n} events"),
            n,
            rounds,
            async |_| {
                let t = Instant::now();
                sealed.load(&id).await.expect("load");
                t.elapsed()
            },
            async |_| {
                let t = Instant::now();
                plain.load(&id).await.expect("load");
                t.elapsed()
            },
        )
        .await,
    );
    // The budget's batch: aggregates of 100 events each, loaded in turn.
    let ids: Vec<String> = (0..n.div_ceil(100))
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    for id in &ids {
        save_batches(&sealed, id, 100, 100).await;
        save_batches(&plain, id, 100, 100).await;
    }
    rows.push(
        bench::compare(
            &format!("{label}: load, 100 events per aggregate"),
            ids.len() * 100,
            rounds,
            async |_| {
                let t = Instant::now();
                for id in &ids {
                    sealed.load(id).await.expect("load");
                }
                t.elapsed()
            },
            async |_| {
                let t = Instant::now();
                for id in &ids {
                    plain.load(id).await.expect("load");
                }
                t.elapsed()
            },
        )
        .await,
    );
    // Where loading spends it: reading the rows alone.
    rows.push(
        bench::compare(
            &format!("{label}: read_stream (no opening)"),
            n,
            rounds,
            async |_| {
                let t = Instant::now();
                store
                    .read_stream(&format!("Sealed-{id}"), 1)
                    .await
                    .expect("read");
                t.elapsed()
            },
            async |_| {
                let t = Instant::now();
                store
                    .read_stream(&format!("Plain-{id}"), 1)
                    .await
                    .expect("read");
                t.elapsed()
            },
        )
        .await,
    );
    bench::table_of(&rows, "plain", "sealed");
    Ok(())
}

/// `profile sqlite|postgres sealed|plain EVENTS`: saves one stream of
/// `EVENTS` events of one side, then loads it three times, for an
/// instruction profile of loading alone:
///
/// ```sh
/// valgrind --tool=callgrind \
///   '--toggle-collect=eventsource_core::repository::Repository<*>::load::*' \
///   target/release/examples/bench_personal profile postgres sealed 1000
/// ```
///
/// Two sizes give the cost per event without the setup.
async fn profile(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let (Some(db), Some(side), Some(n)) = (args.get(2), args.get(3), args.get(4)) else {
        return Err("usage: profile sqlite|postgres sealed|plain EVENTS".into());
    };
    let n: usize = n.parse()?;
    let path = std::env::temp_dir().join(format!("es-prof-{}.db", uuid::Uuid::now_v7().simple()));
    let url = match db.as_str() {
        "sqlite" => format!("sqlite://{}", path.display()),
        "postgres" => std::env::var("POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
        other => return Err(format!("profile: unknown database `{other}`").into()),
    };
    let store = SqlEventStore::connect(StoreConfig::new(&url).validated()?).await?;
    let id = uuid::Uuid::now_v7().to_string();
    match side.as_str() {
        "sealed" => {
            let shredder = Arc::new(Shredder::new(Arc::new(SqlKeyStore::new(&store))));
            let repo =
                Repository::<Notes<SealedNote>>::new(Arc::new(store)).with_shredder(shredder);
            save_then_load_thrice(&repo, &id, n).await?;
        }
        "plain" => {
            let repo = Repository::<Notes<PlainNote>>::new(Arc::new(store));
            save_then_load_thrice(&repo, &id, n).await?;
        }
        other => return Err(format!("profile: unknown side `{other}`").into()),
    }
    remove_sqlite_files(&path);
    Ok(())
}

/// The profile's work for one side: `n` events saved, then loaded three
/// times.
async fn save_then_load_thrice<A>(
    repo: &Repository<A>,
    id: &str,
    n: usize,
) -> Result<(), Box<dyn std::error::Error>>
where
    A: Aggregate<Command = (String, usize)>,
{
    save_batches(repo, id, n, 100).await;
    for _ in 0..3 {
        assert_eq!(repo.load(id).await?.version(), n as u64);
    }
    Ok(())
}

/// Removes an SQLite database file and its WAL files.
fn remove_sqlite_files(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("profile") {
        return profile(&args).await;
    }
    let which = args.get(1).map(String::as_str).unwrap_or("both");
    let n: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1_000);
    let rounds: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(5);
    bench::header(
        "personal data: sealed = one personal field encrypted per subject, plain = the same event without",
        80,
    );
    if which == "sqlite" || which == "both" {
        let path =
            std::env::temp_dir().join(format!("es-bench-{}.db", uuid::Uuid::now_v7().simple()));
        run(&format!("sqlite://{}", path.display()), "SQLite", n, rounds).await?;
        remove_sqlite_files(&path);
    }
    if which == "postgres" || which == "both" {
        let url = std::env::var("POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        run(&url, "PostgreSQL", n, rounds).await?;
    }
    Ok(())
}
