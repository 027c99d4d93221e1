//! The durability contract of the event store, checked at connect. A
//! returned `append` is a committed transaction. On PostgreSQL it
//! survives a crash of the server and of the host as long as `fsync`,
//! `full_page_writes` and `synchronous_commit` keep their defaults; the
//! check reads them for the store's own sessions (a `-c` option in the
//! URL counts). On SQLite the store sets WAL and `synchronous = NORMAL`
//! itself: a commit survives a crash of the process; a power loss may
//! lose the last commits, never corrupt the file. Nothing to check there.

use eventsource_core::driver::enforce_durability;
use eventsource_core::{DurabilityRisk, Result};
use sqlx::AnyPool;

use crate::{Dialect, StoreConfig};

/// Reads the settings and applies the config's `durability` mode.
pub(crate) async fn check(pool: &AnyPool, dialect: Dialect, config: &StoreConfig) -> Result<()> {
    if config.durability == eventsource_core::Durability::Off || dialect != Dialect::Postgres {
        return Ok(());
    }
    enforce_durability("postgres", config.durability, risks(pool).await)
}

/// The settings that break the contract, or why they could not be read.
async fn risks(pool: &AnyPool) -> std::result::Result<Vec<DurabilityRisk>, String> {
    let mut risks = Vec::new();
    for (setting, bad, consequence) in [
        (
            "fsync",
            &["off"][..],
            "writes are not forced to disk: a crash of the host can corrupt the database",
        ),
        (
            "full_page_writes",
            &["off"][..],
            "a crash of the host mid-write can leave torn pages: the database may not recover",
        ),
        (
            "synchronous_commit",
            &["off"][..],
            "a commit returns before its WAL is on disk: a crash of the server loses the last appends (up to three times wal_writer_delay)",
        ),
    ] {
        let value: String = sqlx::query_scalar(&format!("SHOW {setting}"))
            .fetch_one(pool)
            .await
            .map_err(|e| format!("SHOW {setting}: {e}"))?;
        if bad.contains(&value.as_str()) {
            risks.push(DurabilityRisk::new(setting, value, consequence));
        }
    }
    Ok(risks)
}
