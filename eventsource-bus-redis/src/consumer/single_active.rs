//! Single active consumer: one member of the group reads, holding the
//! group's lease; the others stand by and take over when it lapses.

use super::GroupConsumer;
use crate::client::Conn;

impl GroupConsumer {
    /// With `single_active_consumer`: takes or keeps the group's lease.
    /// Returns whether this member may read. Always `true` without it.
    pub(super) async fn hold_lease(&self, conn: &mut Conn) -> bool {
        let config = &self.client.config;
        if !self.ownership.single_active() {
            return true;
        }
        let ttl = config.claim_min_idle.as_millis().to_string();
        // Take it if free, or extend it if ours; anything else: stand by.
        let held: redis::RedisResult<i64> = redis::cmd("EVAL")
            .arg(
                "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end \
                 if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end \
                 return 0",
            )
            .arg(1)
            .arg(config.lease_key(self.group()))
            .arg(&self.consumer)
            .arg(&ttl)
            .query_async(conn)
            .await;
        match held {
            Ok(1) => true,
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(group = self.group(), error = %e, "could not check the group lease; standing by");
                false
            }
        }
    }

    /// Gives the lease up if this member holds it.
    pub(super) async fn release_lease(&self) {
        if !self.ownership.single_active() {
            return;
        }
        let mut conn = self.client.conn.clone();
        let _: redis::RedisResult<i64> = redis::cmd("EVAL")
            .arg("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0")
            .arg(1)
            .arg(self.client.config.lease_key(self.group()))
            .arg(&self.consumer)
            .query_async(&mut conn)
            .await;
    }

    /// This member took what another held (a partition, or the group's
    /// lease): what it knows of parked aggregates is reloaded.
    pub(super) fn took_over(&self) {
        if let Some(parking) = self.core.parking() {
            parking.invalidate();
        }
    }
}
