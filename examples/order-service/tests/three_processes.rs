//! The three processes on each local broker (Redis, RabbitMQ, NATS):
//! orders posted over HTTP reach both consumers; the inventory process is
//! killed mid-stream (SIGKILL) and started again, and no order is missed
//! nor taken from stock twice.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const ORDERS: usize = 30;

struct Process {
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `order-service <command>`, forwarding its stdout lines to `lines`
/// tagged with `tag`, and waits for the line that says it is up.
fn start(
    broker: &str,
    tag: &'static str,
    args: &[&str],
    lines: &mpsc::Sender<(&'static str, String)>,
    ready: &mpsc::Receiver<(&'static str, String)>,
    up: &str,
    seen: &mut Vec<(&'static str, String)>,
) -> (Process, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_order-service"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the example starts");
    let stdout = child.stdout.take().expect("piped");
    let lines = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send((tag, line));
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match ready.recv_timeout(left) {
            Ok((t, line)) if t == tag && line.contains(up) => {
                return (Process { child }, line);
            }
            // Another process's line: kept for the checks.
            Ok(other) => seen.push(other),
            Err(_) => panic!(
                "`order-service {}` did not say `{up}` within 30 s (is {broker} running? ./scripts/test.sh starts it)",
                args.join(" ")
            ),
        }
    }
}

fn as_refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn post_order(addr: &str, id: usize) {
    let body = format!(
        r#"{{"order_id":"order-{id}","customer":"c{id}","sku":"widget","quantity":{}}}"#,
        id % 3 + 1
    );
    let mut stream = TcpStream::connect(addr).expect("the HTTP service listens");
    write!(
        stream,
        "POST /orders HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(
        response.starts_with("HTTP/1.1 202"),
        "order-{id}: {response}"
    );
}

fn url(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

#[test]
fn on_redis_orders_reach_both_services_and_survive_an_inventory_crash() {
    orders_reach_both_services_and_survive_an_inventory_crash(
        "Redis",
        &url("REDIS_URL", "redis://127.0.0.1:6379"),
    );
}

#[test]
fn on_rabbitmq_orders_reach_both_services_and_survive_an_inventory_crash() {
    orders_reach_both_services_and_survive_an_inventory_crash(
        "RabbitMQ",
        &url("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
    );
}

#[test]
fn on_nats_orders_reach_both_services_and_survive_an_inventory_crash() {
    orders_reach_both_services_and_survive_an_inventory_crash(
        "NATS",
        &url("NATS_URL", "nats://127.0.0.1:4222"),
    );
}

fn orders_reach_both_services_and_survive_an_inventory_crash(broker: &str, bus: &str) {
    let run = format!(
        "order-service-test-{}-{}",
        broker.to_lowercase(),
        std::process::id()
    );
    let dir = std::env::temp_dir();
    let orders_db = format!(
        "sqlite://{}",
        dir.join(format!("{run}-orders.db")).display()
    );
    let stock_db = format!("sqlite://{}", dir.join(format!("{run}-stock.db")).display());
    let common = ["--bus", bus, "--namespace", run.as_str()];
    let with = |extra: &[&'static str], store: Option<&str>| -> Vec<String> {
        let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        v.extend(common.iter().map(|s| s.to_string()));
        if let Some(s) = store {
            v.extend(["--store".to_owned(), s.to_owned()]);
        }
        v
    };
    let (tx, rx) = mpsc::channel();
    let mut seen: Vec<(&str, String)> = Vec::new();

    // The first inventory waits between committing an order and acking it,
    // so the kill below lands between the two for the order it holds.
    let slow_args = with(&["inventory", "--slow-ms", "300"], Some(&stock_db));
    let inventory_args = with(&["inventory"], Some(&stock_db));
    let (inventory, _) = start(
        broker,
        "inventory",
        &as_refs(&slow_args),
        &tx,
        &rx,
        "ready",
        &mut seen,
    );
    let notify_args = with(&["notify"], None);
    let (_notify, _) = start(
        broker,
        "notification",
        &as_refs(&notify_args),
        &tx,
        &rx,
        "ready",
        &mut seen,
    );
    let http_args = with(&["http", "--listen", "127.0.0.1:0"], Some(&orders_db));
    let (_http, line) = start(
        broker,
        "http",
        &as_refs(&http_args),
        &tx,
        &rx,
        "listening on ",
        &mut seen,
    );
    let addr = line.rsplit(' ').next().expect("an address").to_owned();

    for id in 1..=10 {
        post_order(&addr, id);
    }
    // The inventory dies mid-stream (SIGKILL), once it has committed the
    // first order and before it acked it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen
        .iter()
        .any(|(t, l)| *t == "inventory" && l.contains(" stock "))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        seen.push(
            rx.recv_timeout(left)
                .expect("the first order reaches the inventory"),
        );
    }
    drop(inventory);
    for id in 11..=20 {
        post_order(&addr, id);
    }
    let (_inventory, _) = start(
        broker,
        "inventory",
        &as_refs(&inventory_args),
        &tx,
        &rx,
        "ready",
        &mut seen,
    );
    for id in 21..=ORDERS {
        post_order(&addr, id);
    }

    let taken: i64 = (1..=ORDERS).map(|id| (id % 3 + 1) as i64).sum();
    let want_stock = format!("stock {}", 1_000 - taken);
    let all_in = |seen: &[(&str, String)], tag: &str| {
        (1..=ORDERS).all(|id| {
            let needle = format!("order-{id} ");
            seen.iter().any(|(t, l)| *t == tag && l.contains(&needle))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(all_in(&seen, "inventory") && all_in(&seen, "notification")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("not every order reached both services within 60 s:\n{seen:#?}"),
        }
    }
    // Redeliveries may still come (the killed member's unacked entries);
    // then the stock must still be exactly what the orders took.
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(3)) {
        seen.push(line);
    }
    let last_stock = seen
        .iter()
        .rev()
        .find(|(t, l)| *t == "inventory" && l.contains(" stock "))
        .map(|(_, l)| l.clone())
        .expect("a stock line");
    assert!(
        last_stock.ends_with(&want_stock),
        "each order taken from stock exactly once: want `{want_stock}`, last line `{last_stock}`\n{seen:#?}"
    );
    for db in [&orders_db, &stock_db] {
        let _ = std::fs::remove_file(db.trim_start_matches("sqlite://"));
    }
}
