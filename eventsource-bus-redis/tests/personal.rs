//! Forgetting a person on Redis (#29): every key of the bus's namespace —
//! event streams, DLQ and replay streams, leases — read raw, holds personal
//! data only sealed, before and after the subject is forgotten.

mod common;

use std::sync::Arc;

use eventsource_core::EventBus;

/// Every value under `namespace*`, whatever its type, as bytes.
async fn dump(url: String, namespace: String) -> Vec<u8> {
    let client = redis::Client::open(url).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis is reachable (start it with ./scripts/test.sh)");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{namespace}*"))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    let mut raw = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("TYPE");
        let mut cmd = match kind.as_str() {
            "stream" => redis::cmd("XRANGE"),
            "list" => redis::cmd("LRANGE"),
            "hash" => redis::cmd("HGETALL"),
            "set" => redis::cmd("SMEMBERS"),
            "zset" => redis::cmd("ZRANGE"),
            _ => redis::cmd("GET"),
        };
        cmd.arg(&key);
        match kind.as_str() {
            "stream" => {
                cmd.arg("-").arg("+");
            }
            "list" | "zset" => {
                cmd.arg(0).arg(-1);
            }
            _ => {}
        }
        let value: redis::Value = cmd.query_async(&mut conn).await.expect("read a key");
        raw.extend(format!("{value:?}").into_bytes());
    }
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_is_sealed_on_the_bus() {
    let url = common::redis_url();
    let mut config = common::config(&url);
    config.single_active_consumer = true;
    let namespace = config.namespace.clone();
    let bus: Arc<dyn EventBus> = Arc::new(common::connect(config).await);
    let raw = move || Box::pin(dump(url.clone(), namespace.clone())) as _;
    eventsource_testkit::personal_data_is_sealed_on_the_bus(
        bus,
        &raw,
        std::time::Duration::from_secs(30),
    )
    .await;
}
