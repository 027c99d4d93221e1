//! The durability contract on Redis, checked at connect. An acknowledged
//! publish is an XADD Redis answered: in memory, and on disk as the
//! persistence settings say. With `appendonly yes` and `appendfsync
//! everysec` (the recommended setup) a crash of Redis loses nothing and a
//! crash of the host at most the last second; the settings below lose
//! more, or delete streams outright.

use eventsource_core::driver::enforce_durability;
use eventsource_core::{DurabilityRisk, Result};

use crate::client::{Conn, BACKEND};
use crate::RedisBusConfig;

/// Reads the settings and applies the config's `durability` mode.
pub(crate) async fn check(conn: &mut Conn, config: &RedisBusConfig) -> Result<()> {
    if config.durability == eventsource_core::Durability::Off {
        return Ok(());
    }
    enforce_durability(
        BACKEND,
        config.durability,
        risks(conn, &config.events_stream()).await,
    )
}

/// The settings that break the contract, or why they could not be read,
/// on the server that holds `key` (on a cluster, the master of the
/// namespace's slot).
async fn risks(conn: &mut Conn, key: &str) -> std::result::Result<Vec<DurabilityRisk>, String> {
    let mut setting = async |name: &str| -> std::result::Result<String, String> {
        let pair: Vec<String> = conn
            .query_at(redis::cmd("CONFIG").arg("GET").arg(name), key)
            .await
            .map_err(|e| format!("CONFIG GET {name}: {e}"))?;
        pair.into_iter()
            .nth(1)
            .ok_or_else(|| format!("CONFIG GET {name}: no such setting"))
    };
    let appendonly = setting("appendonly").await?;
    let appendfsync = setting("appendfsync").await?;
    let save = setting("save").await?;
    let eviction = setting("maxmemory-policy").await?;
    Ok(judge(&appendonly, &appendfsync, &save, &eviction))
}

/// What the four settings cost.
fn judge(appendonly: &str, appendfsync: &str, save: &str, eviction: &str) -> Vec<DurabilityRisk> {
    let mut risks = Vec::new();
    if appendonly != "yes" {
        let consequence = if save.trim().is_empty() {
            "nothing is written to disk (and `save` is empty): a restart of Redis loses every event, dead letter and lease; set appendonly yes".to_owned()
        } else {
            format!("events reach disk only with the next RDB snapshot (save {save}): a crash of Redis loses what was published since; set appendonly yes")
        };
        risks.push(DurabilityRisk::new("appendonly", appendonly, consequence));
    } else if appendfsync == "no" {
        risks.push(DurabilityRisk::new(
            "appendfsync",
            appendfsync,
            "the OS flushes the append-only file when it likes (about every 30 s): a crash of the host loses what was published since; set appendfsync everysec or always",
        ));
    }
    if eviction != "noeviction" {
        risks.push(DurabilityRisk::new(
            "maxmemory-policy",
            eviction,
            "when Redis reaches maxmemory it deletes keys: whole event streams, dead letters and leases can vanish; set maxmemory-policy noeviction",
        ));
    }
    risks
}

#[cfg(test)]
mod tests {
    use super::judge;

    #[test]
    fn names_each_setting_that_loses_events() {
        let names = |r: Vec<eventsource_core::DurabilityRisk>| {
            r.into_iter().map(|r| r.setting).collect::<Vec<_>>()
        };
        assert!(judge("yes", "everysec", "", "noeviction").is_empty());
        assert!(judge("yes", "always", "3600 1", "noeviction").is_empty());
        assert_eq!(
            names(judge("no", "everysec", "", "noeviction")),
            ["appendonly"]
        );
        assert!(judge("no", "everysec", "", "noeviction")[0]
            .consequence
            .contains("restart of Redis loses every event"));
        assert!(judge("no", "everysec", "3600 1", "noeviction")[0]
            .consequence
            .contains("RDB snapshot (save 3600 1)"));
        assert_eq!(names(judge("yes", "no", "", "noeviction")), ["appendfsync"]);
        assert_eq!(
            names(judge("no", "no", "", "allkeys-lru")),
            ["appendonly", "maxmemory-policy"]
        );
    }
}
