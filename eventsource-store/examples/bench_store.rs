//! Append and read throughput of the SQL event store beside raw sqlx
//! inserts of the same rows, in the same run, printed as ratios.
//!
//! ```sh
//! cargo run --release -p eventsource-store --example bench_store -- [sqlite|postgres|both] [events]
//! ```
//!
//! For batches of 1, 10 and 100 events: `SqlEventStore::append` (version
//! check, lock, insert per event, commit) vs raw sqlx inserting the same
//! rows into a table of the same shape in one transaction per batch. Then
//! `read_stream` of a 1 000-event stream vs a raw `SELECT`.

use std::time::{Duration, Instant};

use eventsource_core::{EventEnvelope, EventStore, ExpectedVersion};
use eventsource_store::{SqlEventStore, StoreConfig};
use eventsource_testkit::probe;
use sqlx::{AnyPool, Row};

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

async fn raw_insert(
    pool: &AnyPool,
    sqlite: bool,
    stream: &str,
    batch: &[EventEnvelope],
) -> Result<(), sqlx::Error> {
    let mut tx = if sqlite {
        pool.begin_with("BEGIN IMMEDIATE").await?
    } else {
        pool.begin().await?
    };
    for e in batch {
        sqlx::query(
            "INSERT INTO raw_events (stream, version, event_id, event_type, schema_version, aggregate_type, \
             aggregate_id, occurred_at, correlation_id, causation_id, metadata, payload) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(stream)
        .bind(e.aggregate_version as i64)
        .bind(e.event_id.to_string())
        .bind(&e.event_type)
        .bind(i64::from(e.schema_version))
        .bind(&e.aggregate_type)
        .bind(&e.aggregate_id)
        .bind(e.occurred_at.to_rfc3339())
        .bind(e.correlation_id.clone())
        .bind(e.causation_id.clone())
        .bind("{}")
        .bind(e.payload.to_string())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

async fn run(url: &str, label: &str, n: usize) -> Result<(), Box<dyn std::error::Error>> {
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
    println!("\n{label}: {n} events per case");
    println!(
        "{:<22} {:>14} {:>16} {:>8}",
        "", "raw sqlx", "SqlEventStore", "ratio"
    );
    for batch in [1usize, 10, 100] {
        let run_id = uuid::Uuid::now_v7().simple().to_string();
        let raw_events: Vec<EventEnvelope> = (1..=n as u64).map(|v| probe("raw", v, v)).collect();
        let t = Instant::now();
        for chunk in raw_events.chunks(batch) {
            raw_insert(&pool, sqlite, &format!("raw-{run_id}"), chunk).await?;
        }
        let raw = t.elapsed();
        let events: Vec<EventEnvelope> = (1..=n as u64).map(|v| probe("bus", v, v)).collect();
        let stream = format!("Probe-{run_id}");
        let t = Instant::now();
        let mut version = 0;
        for chunk in events.chunks(batch) {
            store
                .append(&stream, ExpectedVersion::Exact(version), chunk)
                .await?;
            version += chunk.len() as u64;
        }
        let ours = t.elapsed();
        println!(
            "{:<22} {:>9.0} ev/s {:>11.0} ev/s {:>8.2}",
            format!("append, batch of {batch}"),
            rate(n, raw),
            rate(n, ours),
            rate(n, ours) / rate(n, raw)
        );
        if batch == 100 {
            let reads = 20;
            let t = Instant::now();
            for _ in 0..reads {
                let rows = sqlx::query(
                    "SELECT * FROM raw_events WHERE stream = $1 AND version >= $2 ORDER BY version",
                )
                .bind(format!("raw-{run_id}"))
                .bind(1i64)
                .fetch_all(&pool)
                .await?;
                let _: Vec<String> = rows.iter().map(|r| r.get::<String, _>("payload")).collect();
            }
            let raw = t.elapsed();
            let t = Instant::now();
            for _ in 0..reads {
                store.read_stream(&stream, 1).await?;
            }
            let ours = t.elapsed();
            println!(
                "{:<22} {:>9.0} ev/s {:>11.0} ev/s {:>8.2}",
                format!("read_stream ({n})"),
                rate(n * reads, raw),
                rate(n * reads, ours),
                rate(n * reads, ours) / rate(n * reads, raw)
            );
        }
    }
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
    println!("eventsource-store bench (raw = the same rows inserted with plain sqlx, one transaction per batch)");
    if which == "sqlite" || which == "both" {
        let path =
            std::env::temp_dir().join(format!("es-bench-{}.db", uuid::Uuid::now_v7().simple()));
        run(
            &format!("sqlite://{}", path.display()),
            "SQLite (file, WAL)",
            n,
        )
        .await?;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
    if which == "postgres" || which == "both" {
        let url = std::env::var("POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        run(&url, "PostgreSQL", n).await?;
    }
    Ok(())
}
