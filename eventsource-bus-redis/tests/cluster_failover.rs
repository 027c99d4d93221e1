//! A Redis Cluster master SIGKILLed mid-stream: its replica takes over and
//! no publish acknowledged with `replica_acks = 1` is lost. Runs on a
//! private cluster (masters on 7201-7203, replicas on 7204-7206, cluster
//! bus ports 17201-17206), never the shared one on 7101-7106.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::start_redis;
use eventsource_core::EventBus;
use eventsource_testkit::survives_outage;
use tokio::process::Child;

const PORTS: [u16; 6] = [7201, 7202, 7203, 7204, 7205, 7206];

/// Starts (or restarts, from its own directory and `nodes.conf`) the
/// cluster node on `port`.
async fn start_node(dir: &std::path::Path, port: u16) -> Child {
    let node_dir = dir.join(port.to_string());
    std::fs::create_dir_all(&node_dir).expect("node dir");
    let args = [
        "--cluster-enabled",
        "yes",
        "--cluster-node-timeout",
        "1000",
        "--appendfsync",
        "everysec",
    ];
    start_redis(port, &node_dir, &args).await
}

/// Starts six nodes and joins them: three masters with a replica each.
async fn start_cluster(dir: &std::path::Path) -> Vec<(u16, Child)> {
    let mut nodes = Vec::new();
    for port in PORTS {
        nodes.push((port, start_node(dir, port).await));
    }
    let addrs: Vec<String> = PORTS.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let created = tokio::process::Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "1", "--cluster-yes"])
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .expect("redis-cli (install redis-tools, or run ./scripts/test.sh)");
    assert!(created.success(), "redis-cli --cluster create failed");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !healthy(PORTS[0], 3).await {
        assert!(
            Instant::now() < deadline,
            "the private cluster never became whole"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    nodes
}

/// Whether the node on `port` sees `cluster_state:ok` and `replicas` replicas.
async fn healthy(port: u16, replicas: usize) -> bool {
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}")) else {
        return false;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return false;
    };
    let info: String = redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    info.contains("cluster_state:ok") && nodes.matches("slave").count() == replicas
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_stream_loses_nothing_acknowledged_to_a_replica() {
    let dir = std::env::temp_dir().join(format!(
        "es-redis-cluster-failover-{}",
        uuid::Uuid::now_v7().simple()
    ));
    let mut nodes = start_cluster(&dir).await;
    let seeds = "redis+cluster://127.0.0.1:7201,127.0.0.1:7202,127.0.0.1:7203";
    // A publish the new master cannot have a replica acknowledge (it has
    // none until the old master rejoins) fails after publish_timeout.
    let config = common::config(seeds)
        .replica_acks(1)
        .publish_timeout(Duration::from_secs(1));
    let master = common::master_of("redis://127.0.0.1:7201", &config.events_stream()).await;
    let master_port: u16 = master
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let survivor = PORTS
        .into_iter()
        .find(|p| *p != master_port)
        .expect("another node");
    let bus: Arc<dyn EventBus> = Arc::new(common::connect(config).await);

    let mut failover = Duration::ZERO;
    let report = survives_outage(
        bus,
        400,
        Duration::from_millis(5),
        Duration::from_secs(60),
        || async {
            let (_, child) = nodes
                .iter_mut()
                .find(|(port, _)| *port == master_port)
                .expect("the master's process");
            child.kill().await.expect("SIGKILL the master");
            let killed = Instant::now();
            // Its replica is promoted once the others agree it failed
            // (cluster-node-timeout 1 s); then the cluster is whole again
            // with one replica fewer.
            let deadline = killed + Duration::from_secs(30);
            while !healthy(survivor, 2).await {
                assert!(
                    Instant::now() < deadline,
                    "no replica took over within 30 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            failover = killed.elapsed();
            // The old master comes back as a replica of the promoted one,
            // so publishes find a replica to acknowledge them again.
            child.wait().await.expect("reaped");
            *child = start_node(&dir, master_port).await;
            while !healthy(survivor, 3).await {
                assert!(Instant::now() < deadline, "the old master never rejoined");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await;
    println!(
        "redis cluster: master {master_port} SIGKILLed mid-stream; replica promoted in {failover:?}; \
         {} publishes acknowledged (each by a replica), {} refused (no replica until the old \
         master rejoined), 0 acknowledged lost",
        report.acknowledged, report.refused
    );
    assert!(
        report.acknowledged > 200,
        "most publishes succeed across a failover: {report:?}"
    );
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}
