//! Shared by the command's tests: the Redis bus they run against, a
//! `billing` group that dead-letters an order until it is fixed, and
//! child processes that announce themselves on stderr.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventsource::{
    connect_bus, handler_fn, BusConfig, EventBus, EventEnvelope, HandlerError, RetryPolicy,
    Subscription,
};
use eventsource_testkit::{dead_letters_of, probe};
use tokio::sync::mpsc;

/// Runs the binary with `args` (and none of its environment variables);
/// its exit code, stdout and stderr.
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_eventsource"))
        .args(args)
        .env_remove("EVENTSOURCE_BUS")
        .env_remove("EVENTSOURCE_STORE")
        .env_remove("EVENTSOURCE_NAMESPACE")
        .output()
        .expect("run the eventsource binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `REDIS_URL`, or the local Redis the test script starts.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A fresh namespace starting with `prefix`, and a bus on it.
pub async fn redis_bus(prefix: &str) -> (String, Arc<dyn EventBus>) {
    let namespace = format!("{prefix}-{}", uuid::Uuid::now_v7().simple());
    let config = BusConfig::from_url(&redis_url())
        .expect("redis url")
        .with_namespace(&namespace);
    let bus = connect_bus(&config).await.unwrap_or_else(|e| {
        panic!("Redis is not reachable ({e}); start it with ./scripts/test.sh")
    });
    (namespace, bus)
}

/// `NATS_URL`, or the local NATS the test script starts.
pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A fresh namespace starting with `prefix`, and a NATS bus on it.
pub async fn nats_bus(prefix: &str) -> (String, Arc<dyn EventBus>) {
    let namespace = format!("{prefix}-{}", uuid::Uuid::now_v7().simple());
    let config = BusConfig::from_url(&nats_url())
        .expect("nats url")
        .with_namespace(&namespace);
    let bus = connect_bus(&config)
        .await
        .unwrap_or_else(|e| panic!("NATS is not reachable ({e}); start it with ./scripts/test.sh"));
    (namespace, bus)
}

/// A `billing` group whose handler fails ("tax service says no", no
/// retry) until `fixed`, and the order it dead-lettered.
pub struct Billing {
    /// Set to let the handler succeed.
    pub fixed: Arc<AtomicBool>,
    /// The ids of the events the handler handled.
    pub handled: mpsc::UnboundedReceiver<uuid::Uuid>,
    /// The order that is now a dead letter.
    pub sent: EventEnvelope,
}

/// Subscribes [`Billing`], publishes an order and waits for its dead letter.
pub async fn dead_lettered_order(bus: &Arc<dyn EventBus>) -> Billing {
    let fixed = Arc::new(AtomicBool::new(false));
    let (tx, handled) = mpsc::unbounded_channel();
    let f = Arc::clone(&fixed);
    bus.subscribe(
        Subscription::builder("billing")
            .retry(RetryPolicy::no_retry())
            .handler(handler_fn(move |e| {
                let (f, tx) = (Arc::clone(&f), tx.clone());
                async move {
                    if !f.load(Ordering::SeqCst) {
                        return Err(HandlerError::transient("tax service says no"));
                    }
                    let _ = tx.send(e.event_id);
                    Ok(())
                }
            }))
            .build()
            .expect("valid"),
    )
    .await
    .expect("subscribe");
    let sent = probe("order-7", 1, 7);
    bus.publish(std::slice::from_ref(&sent))
        .await
        .expect("publish");
    dead_letters_of(bus, "billing", 1, Duration::from_secs(10)).await;
    Billing {
        fixed,
        handled,
        sent,
    }
}

/// A child process killed when the test ends, however it ends.
pub struct Killed(Option<Child>);

impl Killed {
    /// Holds `child` until the end of the test.
    pub fn new(child: Child) -> Self {
        Killed(Some(child))
    }

    /// Waits for the process to end by itself; its exit status and stdout.
    pub fn output(mut self) -> std::process::Output {
        self.0
            .take()
            .expect("still held")
            .wait_with_output()
            .expect("wait for the process")
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the `eventsource` binary with `args`; the process and the first
/// line it writes to stderr (a command that serves or follows announces
/// itself there). Stdout is piped for the caller.
pub fn announced(args: &[&str]) -> (Killed, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_eventsource"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the eventsource binary");
    let mut stderr = BufReader::new(child.stderr.take().expect("piped"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("a line on stderr");
    // The rest is drained (and shown), so the process never writes to a
    // closed pipe.
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            eprintln!("[eventsource] {line}");
        }
    });
    (Killed(Some(child)), line)
}

/// The `http://…` address in an announcement.
pub fn address(line: &str) -> String {
    line.split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned()
}
