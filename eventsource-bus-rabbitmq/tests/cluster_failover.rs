//! A RabbitMQ cluster node SIGKILLed mid-stream, with quorum queues: the
//! node every connection and the group queue's leader are on. The bus
//! reconnects to the next node of its list, the queue elects a leader
//! among the two left, and every publish the cluster confirmed is
//! handled, while the killed node is still down. Runs on a private
//! cluster (nodes es-fault-N@localhost, AMQP on 5711-5713, distribution
//! on 25711-25713) started with `scripts/services.sh`'s functions, never
//! the shared broker or the suites' cluster on 5701-5703.

mod common;

use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventsource_bus_rabbitmq::QueueType;
use eventsource_core::EventBus;
use eventsource_testkit::survives_outage;

const CLUSTER_DIR: &str = "/tmp/eventsource-rabbitmq-failover";
const NAME: &str = "es-fault";

/// A command that runs `script` after sourcing `scripts/services.sh`, set
/// to this test's cluster.
fn services_command(script: &str) -> Command {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(format!("source {root}/scripts/services.sh && {script}"))
        .env("RABBITMQ_CLUSTER_DIR", CLUSTER_DIR)
        .env("RABBITMQ_CLUSTER_NAME", NAME)
        .env("RABBITMQ_CLUSTER_PORT_BASE", "5710");
    command
}

/// Runs `script` (blocking: for setup and teardown, before and after the
/// stream).
fn services(script: &str) -> Output {
    services_command(script)
        .output()
        .expect("bash runs scripts/services.sh")
}

/// Runs `script` and fails the test with its output unless it succeeds.
fn services_ok(script: &str) -> Output {
    let out = services(script);
    assert!(
        out.status.success(),
        "`{script}` failed (it needs rabbitmq-server installed and root, as \
         ./scripts/test.sh has): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The node that leads the quorum queue `queue`, asked of node `n`.
/// Asynchronous: it runs while the stream does, and a blocking call
/// would hold one of the runtime's two workers for the whole
/// `rabbitmqctl` run (a few hundred ms each).
async fn leader_of(queue: &str, n: u32) -> Option<String> {
    let out = tokio::process::Command::from(services_command(&format!(
        "rabbitmqctl -q -n \"$(rabbitmq_cluster_node {n})\" list_queues name leader"
    )))
    .output()
    .await
    .expect("bash runs scripts/services.sh");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .find(|(name, _)| *name == queue)
        .map(|(_, leader)| leader.trim().to_owned())
}

/// Stops the private cluster however the test ends.
struct Teardown;

impl Drop for Teardown {
    fn drop(&mut self) {
        services("stop_rabbitmq_cluster");
        let _ = std::fs::remove_dir_all(CLUSTER_DIR);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_stream_loses_nothing_confirmed_on_quorum_queues() {
    let started = Instant::now();
    services_ok("ensure_rabbitmq_cluster");
    let _teardown = Teardown;
    println!("private 3-node cluster up in {:?}", started.elapsed());
    let pid: u32 = std::fs::read_to_string(format!("{CLUSTER_DIR}/1/pid"))
        .expect("node 1's pid file")
        .trim()
        .parse()
        .expect("a pid");
    let mut config = common::config().queue_type(QueueType::Quorum);
    config.url = "amqp://guest:guest@127.0.0.1:5711,127.0.0.1:5712,127.0.0.1:5713/%2f".to_owned();
    let queue = config.queue("fault");
    // A partitioned namespace, its marker queue (classic) made on node 1.
    let mut partitioned = common::config().partitions(2).queue_type(QueueType::Quorum);
    partitioned.url = config.url.clone();
    drop(common::connect(partitioned.clone()).await);
    let bus: Arc<dyn EventBus> = Arc::new(common::connect(config).await);

    let node1 = format!("{NAME}-1@localhost");
    let mut failover = Duration::ZERO;
    let report = survives_outage(
        bus,
        400,
        Duration::from_millis(10),
        Duration::from_secs(90),
        || async {
            // Everything is on node 1, the first of the list: the
            // publisher, the member, and so the queue's leader.
            assert_eq!(
                leader_of(&queue, 2).await.as_deref(),
                Some(node1.as_str()),
                "the group queue's leader is on node 1, where the member declared it"
            );
            let killed = Instant::now();
            let status = tokio::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()
                .await
                .expect("kill");
            assert!(status.success(), "SIGKILL node 1 (pid {pid})");
            let deadline = killed + Duration::from_secs(60);
            loop {
                match leader_of(&queue, 2).await {
                    Some(leader) if !leader.is_empty() && leader != node1 => break,
                    _ => {}
                }
                assert!(
                    Instant::now() < deadline,
                    "no new leader for `{queue}` within 60 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            failover = killed.elapsed();
            // With node 1 down the partition count cannot be read: the
            // bus says so, rather than taking the namespace for an
            // unpartitioned one.
            let refused = eventsource_bus_rabbitmq::RabbitBus::connect(partitioned.clone())
                .await
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                refused.contains("node that holds it is down"),
                "a partitioned bus with its marker's node down: {refused:?}"
            );
            // Node 1 stays down: the rest of the stream, and every event
            // still to be handled, go through nodes 2 and 3.
        },
    )
    .await;
    println!(
        "rabbitmq cluster: node 1 (every connection, the queue's leader) SIGKILLed mid-stream; \
         a new leader in {failover:?}; {} publishes confirmed, {} refused, 0 confirmed lost, \
         all handled with node 1 down; {:?} in all",
        report.acknowledged,
        report.refused,
        started.elapsed()
    );
    assert!(
        report.acknowledged > 300,
        "most publishes are confirmed across the loss of a node: {report:?}"
    );
}
