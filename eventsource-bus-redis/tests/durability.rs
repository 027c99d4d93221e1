//! The durability contract checked at connect, on private Redis servers
//! (never the shared one): settings that lose acknowledged events are
//! refused under `durability = require` and only logged under `warn`; the
//! durable setup connects under `require`.

mod common;

use common::start_redis;
use eventsource_bus_redis::{RedisBus, RedisBusConfig};
use eventsource_core::{Durability, Error};
use eventsource_testkit::free_port;

/// Connects to a private server started with `args` under `mode`.
async fn connect_to(
    args: &[&str],
    mode: Durability,
) -> (tokio::process::Child, eventsource_core::Result<RedisBus>) {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!(
        "es-redis-durability-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let server = start_redis(port, &dir, args).await;
    let config = common::config(&format!("redis://127.0.0.1:{port}")).durability(mode);
    (server, RedisBus::connect(config).await)
}

/// The settings a refusal names.
fn refused_settings(result: eventsource_core::Result<RedisBus>) -> Vec<String> {
    match result {
        Err(Error::Durability { backend, risks }) => {
            assert_eq!(backend, "redis");
            risks.into_iter().map(|r| r.setting).collect()
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("connected, though the server loses what it acknowledges"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_append_only_file_require_refuses_and_warn_connects() {
    let no_aof = ["--appendonly", "no"];
    let (_server, result) = connect_to(&no_aof, Durability::Require).await;
    assert_eq!(refused_settings(result), ["appendonly"]);
    let (_server, result) = connect_to(&no_aof, Durability::Warn).await;
    result.expect("warn connects");
    let (_server, result) = connect_to(&no_aof, Durability::Off).await;
    result.expect("off connects");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicting_memory_policy_is_refused_under_require() {
    let (_server, result) =
        connect_to(&["--maxmemory-policy", "allkeys-lru"], Durability::Require).await;
    assert_eq!(refused_settings(result), ["maxmemory-policy"]);
    let (_server, result) = connect_to(&["--appendfsync", "no"], Durability::Require).await;
    assert_eq!(refused_settings(result), ["appendfsync"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_durable_setup_connects_under_require() {
    let (_server, result) = connect_to(&["--appendfsync", "everysec"], Durability::Require).await;
    let bus = result.expect("appendonly yes, everysec, noeviction: connects");
    eventsource_core::EventBus::shutdown(&bus, std::time::Duration::from_secs(1))
        .await
        .expect("shutdown");
}

/// A server whose `CONFIG` command is renamed away (as managed Redis
/// services do): the settings cannot be read, so `require` refuses
/// (an unverified contract is not kept) and `warn` connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_settings_are_refused_under_require() {
    let hidden = ["--rename-command", "CONFIG", ""];
    let (_server, result) = connect_to(&hidden, Durability::Require).await;
    assert_eq!(refused_settings(result), ["(settings)"]);
    let (_server, result) = connect_to(&hidden, Durability::Warn).await;
    result.expect("warn connects");
}

#[test]
fn durability_is_read_from_configuration() {
    let config: RedisBusConfig =
        serde_json::from_str(r#"{"url":"redis://h","durability":"require"}"#).expect("parses");
    assert_eq!(config.durability, Durability::Require);
    assert_eq!(RedisBusConfig::default().durability, Durability::Warn);
    let bad = serde_json::from_str::<RedisBusConfig>(r#"{"durability":"sometimes"}"#)
        .expect_err("unknown mode");
    assert!(bad.to_string().contains("sometimes"), "{bad}");
}

/// Puts a master's `maxmemory-policy` back when dropped, so a failed
/// assertion does not leave the shared test cluster evicting.
struct Restore(String);

impl Drop for Restore {
    fn drop(&mut self) {
        let client = redis::Client::open(self.0.as_str()).expect("url");
        if let Ok(mut conn) = client.get_connection() {
            let _: redis::RedisResult<()> = redis::cmd("CONFIG")
                .arg("SET")
                .arg("maxmemory-policy")
                .arg("noeviction")
                .query(&mut conn);
        }
    }
}

/// On a cluster the settings are read on the master of the namespace's
/// slot, where its keys live, not on whichever node a plain query reaches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_the_namespaces_master_is_checked() {
    let config = common::config(&common::redis_cluster_url()).durability(Durability::Require);
    RedisBus::connect(config.clone())
        .await
        .expect("the test cluster keeps what it acknowledges");
    let master = common::master_of("redis://127.0.0.1:7101", &config.events_stream()).await;
    let _restore = Restore(master.clone());
    let mut conn = redis::Client::open(master.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("master");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query_async(&mut conn)
        .await
        .expect("CONFIG SET");
    // Several connects: a check that asked a random node would pass some.
    for _ in 0..6 {
        let result = RedisBus::connect(config.clone()).await;
        assert_eq!(refused_settings(result), ["maxmemory-policy"]);
    }
}
