//! A group's register of live members and their filter, kept on the
//! server so that members in other processes see it too: a member joins
//! only if every live member uses its filter (a member acks what its own
//! filter skips, so two filters in one group would lose events).
//!
//! Two keys per group: a sorted set of members scored by when each stops
//! counting as alive (server time, renewed every `claim_interval`, lapsing
//! after `claim_min_idle`, as the entries a member holds do), and a hash of
//! members to filters. A crashed member lapses; a clean leave removes
//! itself at once, so a group's filter can change once its old members
//! are gone.

use eventsource_core::{Error, Result};

use crate::client::{redis_err, Conn};
use crate::config::RedisBusConfig;

/// Drops lapsed members, then registers (or renews) `ARGV[1]` with filter
/// `ARGV[2]` for `ARGV[3]` ms, unless a live member has another filter:
/// then returns that filter and registers nothing.
const JOIN: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local live = {}
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do live[m] = true end
local filters = redis.call('HGETALL', KEYS[2])
for i = 1, #filters, 2 do
  local member, filter = filters[i], filters[i + 1]
  if not live[member] then
    redis.call('HDEL', KEYS[2], member)
  elseif member ~= ARGV[1] and filter ~= ARGV[2] then
    return filter
  end
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
return false
";

/// Registers `consumer` of `group` with `filter` (its canonical form), or
/// renews it; refuses it with [`Error::GroupFilterConflict`] when a live
/// member of the group uses another filter.
pub(crate) async fn join(
    conn: &mut Conn,
    config: &RedisBusConfig,
    group: &str,
    consumer: &str,
    filter: &str,
) -> Result<()> {
    let existing: Option<String> = redis::cmd("EVAL")
        .arg(JOIN)
        .arg(2)
        .arg(config.group_members_key(group))
        .arg(config.group_filters_key(group))
        .arg(consumer)
        .arg(filter)
        .arg(config.claim_min_idle.as_millis().to_string())
        .query_async(conn)
        .await
        .map_err(|e| redis_err(format!("registering a member of group `{group}`"), e))?;
    match existing {
        Some(existing) => Err(Error::group_filter_conflict(group, &existing, filter)),
        None => Ok(()),
    }
}

/// Removes `consumer` from `group`'s register (a clean leave).
pub(crate) async fn leave(conn: &mut Conn, config: &RedisBusConfig, group: &str, consumer: &str) {
    let removed: redis::RedisResult<()> = redis::pipe()
        .atomic()
        .zrem(config.group_members_key(group), consumer)
        .ignore()
        .hdel(config.group_filters_key(group), consumer)
        .ignore()
        .query_async(conn)
        .await;
    if let Err(e) = removed {
        tracing::warn!(group, error = %e, "could not leave the group's member register; the entry lapses after claim_min_idle");
    }
}
