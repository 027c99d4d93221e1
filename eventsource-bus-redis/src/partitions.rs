//! Partitioned mode on the server: the namespace's partition count, and
//! the per-partition leases that make one member at a time the owner of a
//! partition in a group (which partitions a member should own is
//! `eventsource_core::driver::assigned_partitions`).
//!
//! A lease `{ns}:lease:{group}:{p}` holds its owner's consumer name for
//! `claim_min_idle`, renewed every `claim_interval`. Acks of a partition's
//! entries go through [`ACK`], which checks the lease first: a member that
//! lost its lease (it stalled past `claim_min_idle`) cannot ack entries its
//! successor has taken over.

use eventsource_core::{Error, Result};

use crate::client::{redis_err, Conn};
use crate::config::RedisBusConfig;

/// Records the namespace's partition count on first use and returns what
/// is stored: `ARGV[1]` the count this bus wants (`0`: unpartitioned).
/// An unpartitioned namespace with events reads as `unpartitioned`.
const CHECK: &str = r"
local stored = redis.call('GET', KEYS[1])
if stored then return stored end
if ARGV[1] == '0' then return false end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'unpartitioned' end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
";

/// Takes lease `KEYS[1]` for `ARGV[1]` for `ARGV[2]` ms if free, or
/// extends it if `ARGV[1]` holds it. 1 if held afterwards, 0 if not.
const TAKE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0
";

/// Extends lease `KEYS[1]` if `ARGV[1]` holds it: 1 if so, 0 if lost.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0
";

/// Deletes lease `KEYS[1]` if `ARGV[1]` holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// XACKs ids `ARGV[3..]` of stream `KEYS[1]` in group `ARGV[2]` if
/// `ARGV[1]` still holds lease `KEYS[2]`; -1 (nothing acked) if not.
const ACK: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
return redis.call('XACK', KEYS[1], ARGV[2], unpack(ARGV, 3))
";

/// The live members of a group (not lapsed), by name.
const LIVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
";

/// Checks the namespace's partition count against `config`'s, recording
/// it on first use; refuses a count other than the stored one, and a
/// partitioned bus on a namespace that already has unpartitioned events.
pub(crate) async fn check_count(conn: &mut Conn, config: &RedisBusConfig) -> Result<()> {
    let wanted = config.partitions.unwrap_or(0);
    let stored: Option<String> = redis::cmd("EVAL")
        .arg(CHECK)
        .arg(2)
        .arg(config.partitions_key())
        .arg(config.events_stream())
        .arg(wanted)
        .query_async(conn)
        .await
        .map_err(|e| redis_err("checking the namespace's partition count", e))?;
    let ns = &config.namespace;
    match (stored.as_deref(), config.partitions) {
        (None, None) => Ok(()),
        (Some(s), Some(n)) if s == n.to_string() => Ok(()),
        (Some("unpartitioned"), Some(n)) => Err(Error::config(format!(
            "redis: namespace `{ns}` holds unpartitioned events (stream `{}`); a bus with \
             partitions = {n} would not see them and would break their order. Use a new \
             namespace for the partitioned layout, or leave `partitions` unset",
            config.events_stream()
        ))),
        (Some(s), wanted) => Err(Error::config(format!(
            "redis: namespace `{ns}` is partitioned into {s} partitions (`{}`), this bus is \
             configured with {}: changing the count would move aggregates between partitions \
             and break their order. Configure partitions = {s}, or use a new namespace",
            config.partitions_key(),
            wanted.map_or_else(|| "none (unpartitioned)".to_owned(), |n| n.to_string()),
        ))),
        (None, Some(_)) => unreachable!("the script records the count when none is stored"),
    }
}

/// The live members of `group`, sorted by name.
pub(crate) async fn live_members(
    conn: &mut Conn,
    config: &RedisBusConfig,
    group: &str,
) -> redis::RedisResult<Vec<String>> {
    let mut members: Vec<String> = redis::cmd("EVAL")
        .arg(LIVE)
        .arg(1)
        .arg(config.group_members_key(group))
        .query_async(conn)
        .await?;
    members.sort();
    Ok(members)
}

/// A member's hold on one partition's lease.
pub(crate) struct Lease<'a> {
    pub(crate) config: &'a RedisBusConfig,
    pub(crate) group: &'a str,
    pub(crate) owner: &'a str,
}

impl Lease<'_> {
    async fn run(&self, script: &str, conn: &mut Conn, p: u32) -> redis::RedisResult<i64> {
        redis::cmd("EVAL")
            .arg(script)
            .arg(1)
            .arg(self.config.partition_lease_key(self.group, p))
            .arg(self.owner)
            .arg(self.config.claim_min_idle.as_millis().to_string())
            .query_async(conn)
            .await
    }

    /// Takes partition `p` if no one holds it (or extends it if we do).
    pub(crate) async fn take(&self, conn: &mut Conn, p: u32) -> redis::RedisResult<bool> {
        self.run(TAKE, conn, p).await.map(|n| n == 1)
    }

    /// Extends our hold on `p`; `false` when it was lost.
    pub(crate) async fn renew(&self, conn: &mut Conn, p: u32) -> redis::RedisResult<bool> {
        self.run(RENEW, conn, p).await.map(|n| n == 1)
    }

    /// Gives `p` up if we hold it.
    pub(crate) async fn release(&self, conn: &mut Conn, p: u32) -> redis::RedisResult<()> {
        self.run(RELEASE, conn, p).await.map(drop)
    }

    /// XACKs `ids` of `stream` (partition `p`) if we still hold `p`;
    /// `false` (nothing acked) if we do not.
    pub(crate) async fn ack(
        &self,
        conn: &mut Conn,
        p: u32,
        stream: &str,
        ids: &[String],
    ) -> redis::RedisResult<bool> {
        let acked: i64 = redis::cmd("EVAL")
            .arg(ACK)
            .arg(2)
            .arg(stream)
            .arg(self.config.partition_lease_key(self.group, p))
            .arg(self.owner)
            .arg(self.group)
            .arg(ids)
            .query_async(conn)
            .await?;
        Ok(acked >= 0)
    }
}
