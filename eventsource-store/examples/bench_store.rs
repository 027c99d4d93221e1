//! Append and read throughput of the SQL event store beside raw sqlx
//! inserts of the same rows, in the same run, printed as ratios.
//!
//! ```sh
//! cargo run --release -p eventsource-store --example bench_store -- [sqlite|postgres|both] [events] [rounds]
//! ```
//!
//! For batches of 1, 10 and 100 events: `SqlEventStore::append` (version
//! check, lock, multi-row inserts, commit) vs raw sqlx inserting the same
//! rows into a table of the same shape with the same multi-row inserts in
//! one transaction per batch. Then `read_stream` of a 1 000-event stream
//! vs a raw `SELECT` whose rows are made into envelopes.

use std::time::{Duration, Instant};

use eventsource_core::{EventEnvelope, EventStore, ExpectedVersion};
use eventsource_store::{SqlEventStore, StoreConfig};
use eventsource_testkit::{bench, probe};
use sqlx::{AnyPool, Row};

/// Rows per raw multi-row `INSERT`: the store's own chunk size, so both
/// sides send the same statements' worth of rows.
const ROWS_PER_INSERT: usize = 64;

/// Raw sqlx: a batch as multi-row `INSERT`s (up to 64 rows each, as the
/// store writes) in one transaction — or, for a batch of one, one `INSERT`
/// alone (a statement is atomic by itself), the least a raw client can do.
async fn raw_insert(
    pool: &AnyPool,
    sqlite: bool,
    stream: &str,
    batch: &[EventEnvelope],
) -> Result<(), sqlx::Error> {
    let sql = |rows: usize| {
        let mut sql = String::from(
            "INSERT INTO raw_events (stream, version, event_id, event_type, schema_version, aggregate_type, \
             aggregate_id, occurred_at, correlation_id, causation_id, metadata, payload) VALUES ",
        );
        for i in 0..rows {
            let params: Vec<String> = (1..=12).map(|k| format!("${}", i * 12 + k)).collect();
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("({})", params.join(", ")));
        }
        sql
    };
    if batch.len() == 1 {
        insert(&sql(1), stream, batch).execute(pool).await?;
        return Ok(());
    }
    let mut tx = if sqlite {
        pool.begin_with("BEGIN IMMEDIATE").await?
    } else {
        pool.begin().await?
    };
    for rows in batch.chunks(ROWS_PER_INSERT) {
        let sql = sql(rows.len());
        insert(&sql, stream, rows).execute(&mut *tx).await?;
    }
    tx.commit().await
}

/// One multi-row `INSERT` of `rows` into `stream`, `sql` having a row of
/// placeholders for each.
fn insert<'q>(
    sql: &'q str,
    stream: &str,
    rows: &[EventEnvelope],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    let mut query = sqlx::query(sql);
    for e in rows {
        query = query
            .bind(stream.to_owned())
            .bind(e.aggregate_version as i64)
            .bind(e.event_id.to_string())
            .bind(e.event_type.clone())
            .bind(i64::from(e.schema_version))
            .bind(e.aggregate_type.clone())
            .bind(e.aggregate_id.clone())
            .bind(e.occurred_at.to_rfc3339())
            .bind(e.correlation_id.clone())
            .bind(e.causation_id.clone())
            .bind(serde_json::to_string(&e.metadata).expect("a string map serializes"))
            .bind(e.payload.to_string());
    }
    query
}

/// Raw sqlx's read of a stream: the rows in version order, each made into
/// an envelope as an application would (the same work as the store's
/// decoding: ids, time, metadata and payload parsed).
async fn raw_read(pool: &AnyPool, stream: &str) -> Vec<EventEnvelope> {
    let rows = sqlx::query(
        "SELECT * FROM raw_events WHERE stream = $1 AND version >= $2 ORDER BY version",
    )
    .bind(stream)
    .bind(1i64)
    .fetch_all(pool)
    .await
    .expect("raw read");
    rows.iter()
        .map(|r| {
            let s = |c: &str| r.get::<String, _>(c);
            EventEnvelope {
                event_id: s("event_id").parse().expect("a uuid"),
                event_type: s("event_type"),
                schema_version: r.get::<i64, _>("schema_version") as u32,
                aggregate_type: s("aggregate_type"),
                aggregate_id: s("aggregate_id"),
                aggregate_version: r.get::<i64, _>("version") as u64,
                occurred_at: chrono::DateTime::parse_from_rfc3339(&s("occurred_at"))
                    .expect("a time")
                    .with_timezone(&chrono::Utc),
                correlation_id: r.get("correlation_id"),
                causation_id: r.get("causation_id"),
                metadata: serde_json::from_str(&s("metadata")).expect("metadata"),
                payload: serde_json::from_str(&s("payload")).expect("payload"),
            }
        })
        .collect()
}

/// Appends `n` fresh events in batches to a fresh stream through the
/// store and the same rows with plain sqlx to another, one batch of each
/// in turn (which goes first alternating), and returns the time each
/// spent: a commit waits for the disk, whose latency drifts within a
/// round, so both sides are timed over the same moments.
async fn append_round(
    store: &SqlEventStore,
    pool: &AnyPool,
    sqlite: bool,
    n: usize,
    batch: usize,
) -> (Duration, Duration) {
    let id = uuid::Uuid::now_v7().simple();
    let (stream, raw_stream) = (format!("Probe-{id}"), format!("raw-{id}"));
    let events: Vec<EventEnvelope> = (1..=n as u64).map(|v| probe("bus", v, v)).collect();
    let raw_events: Vec<EventEnvelope> = (1..=n as u64).map(|v| probe("raw", v, v)).collect();
    let (mut bus, mut raw) = (Duration::ZERO, Duration::ZERO);
    let mut version = 0;
    for (i, (chunk, raw_chunk)) in events
        .chunks(batch)
        .zip(raw_events.chunks(batch))
        .enumerate()
    {
        for side in [i % 2, 1 - i % 2] {
            let t = Instant::now();
            if side == 0 {
                store
                    .append(&stream, ExpectedVersion::Exact(version), chunk)
                    .await
                    .expect("append");
                bus += t.elapsed();
            } else {
                raw_insert(pool, sqlite, &raw_stream, raw_chunk)
                    .await
                    .expect("raw insert");
                raw += t.elapsed();
            }
        }
        version += chunk.len() as u64;
    }
    (bus, raw)
}

async fn run(
    url: &str,
    label: &str,
    n: usize,
    rounds: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let sqlite = url.starts_with("sqlite");
    let store = SqlEventStore::connect(StoreConfig::new(url).validated()?).await?;
    let pool = store.pool().clone();
    let serial = if sqlite {
        "INTEGER PRIMARY KEY AUTOINCREMENT"
    } else {
        "BIGSERIAL PRIMARY KEY"
    };
    sqlx::query("DROP TABLE IF EXISTS raw_events")
        .execute(&pool)
        .await?;
    sqlx::query(&format!(
        "CREATE TABLE raw_events (position {serial}, stream TEXT NOT NULL, version BIGINT NOT NULL, \
         event_id TEXT NOT NULL UNIQUE, event_type TEXT NOT NULL, schema_version INTEGER NOT NULL, \
         aggregate_type TEXT NOT NULL, aggregate_id TEXT NOT NULL, occurred_at TEXT NOT NULL, \
         correlation_id TEXT, causation_id TEXT, metadata TEXT NOT NULL, payload TEXT NOT NULL, \
         UNIQUE (stream, version))"
    ))
    .execute(&pool)
    .await?;
    let mut rows = Vec::new();
    for batch in [1usize, 10, 100] {
        rows.push(
            bench::compare_paired(
                &format!("{label}: append, batch of {batch}"),
                n,
                rounds,
                async |n| append_round(&store, &pool, sqlite, n, batch).await,
            )
            .await,
        );
    }
    // Reads of one stream of `n` events, both sides written once.
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let (raw_stream, stream) = (format!("raw-{run_id}"), format!("Probe-{run_id}"));
    let events: Vec<EventEnvelope> = (1..=n as u64).map(|v| probe("read", v, v)).collect();
    for chunk in events.chunks(100) {
        raw_insert(&pool, sqlite, &raw_stream, chunk).await?;
        store.append(&stream, ExpectedVersion::Any, chunk).await?;
    }
    rows.push(
        bench::compare(
            &format!("{label}: read_stream"),
            n,
            rounds,
            async |_| {
                let t = Instant::now();
                store.read_stream(&stream, 1).await.expect("read");
                t.elapsed()
            },
            async |_| {
                let t = Instant::now();
                assert_eq!(raw_read(&pool, &raw_stream).await.len(), n);
                t.elapsed()
            },
        )
        .await,
    );
    bench::table(&rows);
    sqlx::query("DROP TABLE IF EXISTS raw_events")
        .execute(&pool)
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map(String::as_str).unwrap_or("both");
    let n: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1_000);
    let rounds: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(5);
    bench::header(
        "eventsource-store (raw = the same rows with plain sqlx, one transaction per batch)",
        probe("x", 1, 1).payload.to_string().len(),
    );
    if which == "sqlite" || which == "both" {
        let path =
            std::env::temp_dir().join(format!("es-bench-{}.db", uuid::Uuid::now_v7().simple()));
        run(&format!("sqlite://{}", path.display()), "SQLite", n, rounds).await?;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
    if which == "postgres" || which == "both" {
        let url = std::env::var("POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        run(&url, "PostgreSQL", n, rounds).await?;
    }
    Ok(())
}
