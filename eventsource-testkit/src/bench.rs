//! A runner for the bench programs: the bus and the raw client library
//! measured side by side, several rounds, interleaved, so that a
//! difference is told from the run-to-run spread.
//!
//! Each case runs one warm-up round of both (not counted), then `rounds`
//! rounds in which bus and raw alternate which goes first; it prints the
//! min / median / max rate of each and the ratio of the medians. [`header`]
//! states the machine's load and the payload size first, so a report says
//! under what it was measured.
//!
//! ```no_run
//! # async fn run() {
//! use std::time::{Duration, Instant};
//! use eventsource_testkit::bench;
//!
//! bench::header("my-bus", 120);
//! let row = bench::compare("publish", 10_000, 5,
//!     async |n| { let t = Instant::now(); /* bus publishes n */ t.elapsed() },
//!     async |n| { let t = Instant::now(); /* raw client publishes n */ t.elapsed() },
//! ).await;
//! bench::table(&[row]);
//! # }
//! ```

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventsource_core::{handler_fn, EventBus, EventEnvelope, Subscription};

/// The rates one case measured, in events per second.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// What was measured.
    pub label: String,
    /// Events per round.
    pub events: usize,
    /// The bus's rate in each round.
    pub bus: Vec<f64>,
    /// The raw client's rate in each round.
    pub raw: Vec<f64>,
    /// The bus side's CPU time per event in each round, in microseconds:
    /// the whole process, user and system, all threads (a broker running
    /// as another process is not counted). Empty where not measured
    /// ([`compare_paired`]), not available (not Linux), or too short to
    /// tell (a side under 100 ms of CPU in some round).
    pub bus_cpu: Vec<f64>,
    /// The raw side's CPU time per event in each round, as `bus_cpu`.
    pub raw_cpu: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn spread(v: &[f64]) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(0.0, f64::max);
    format!("{:.0} / {:.0} / {:.0}", min, median(v), max)
}

impl Comparison {
    /// Median bus rate over median raw rate.
    pub fn ratio(&self) -> f64 {
        let raw = median(&self.raw);
        if raw == 0.0 {
            0.0
        } else {
            median(&self.bus) / raw
        }
    }

    /// Median CPU time per event of the bus over the raw client's, where
    /// both were measured.
    pub fn cpu_ratio(&self) -> Option<f64> {
        let raw = median(&self.raw_cpu);
        (!self.bus_cpu.is_empty() && raw > 0.0).then(|| median(&self.bus_cpu) / raw)
    }
}

/// CPU time this process has used so far, user and system, every thread
/// including those that ended (Linux: `/proc/self/stat`, in ticks of
/// 10 ms), or `None` where that cannot be read.
pub fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses and may
    // hold spaces: the state is field 3, utime and stime fields 14 and 15.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    // USER_HZ is 100 on every Linux the kernel's ABI promises it to.
    Some(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// Runs `f` and returns its result with the process CPU time it took.
async fn with_cpu<T>(f: impl Future<Output = T>) -> (T, Option<Duration>) {
    let before = process_cpu();
    let out = f.await;
    let used = before.zip(process_cpu()).map(|(b, a)| a.saturating_sub(b));
    (out, used)
}

/// The bench programs' arguments: `[events] [rounds] [url]`, with these
/// defaults (5 rounds). Exits with a usage line on a malformed number.
pub fn args(default_events: usize, default_url: &str) -> (usize, usize, String) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: usize| match args.get(i) {
        None => default,
        Some(s) => s.parse().unwrap_or_else(|_| {
            eprintln!("usage: [events] [rounds] [url] (`{s}` is not a number)");
            std::process::exit(2)
        }),
    };
    let url = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| default_url.to_owned());
    (number(0, default_events), number(1, 5), url)
}

/// Prints what the numbers were measured under: cores, the load average
/// (Linux), the payload size.
pub fn header(name: &str, payload_bytes: usize) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned());
    println!(
        "{name}: {cores} cores, load average {load} at start, payload {payload_bytes} bytes per event"
    );
}

/// Measures `bus` and `raw` (each given how many events to move and
/// returning how long that took) over a warm-up and `rounds` rounds.
///
/// Both are async closures, so they may borrow what the caller holds
/// (`async |n| bus_round(&url, &events[..n]).await`).
pub async fn compare<B, R>(
    label: &str,
    events: usize,
    rounds: usize,
    mut bus: B,
    mut raw: R,
) -> Comparison
where
    B: AsyncFnMut(usize) -> Duration,
    R: AsyncFnMut(usize) -> Duration,
{
    // The warm-up runs bus first; then the counted rounds alternate which
    // goes first, raw in the first one. Each side's CPU time is read
    // around its own call, so the other side's never counts.
    let mut call = 0usize;
    let (mut bus_cpu, mut raw_cpu) = (Vec::new(), Vec::new());
    // Under 100 ms (ten ticks) a reading says little: not reported.
    let per_event = |cpu: Option<Duration>| {
        cpu.filter(|d| *d >= Duration::from_millis(100))
            .map(|d| d.as_secs_f64() * 1e6 / events as f64)
    };
    let mut c = compare_paired(label, events, rounds, async |n| {
        call += 1;
        let (b, r) = if call.is_multiple_of(2) {
            let r = with_cpu(raw(n)).await;
            (with_cpu(bus(n)).await, r)
        } else {
            let b = with_cpu(bus(n)).await;
            (b, with_cpu(raw(n)).await)
        };
        if call > 1 {
            bus_cpu.extend(per_event(b.1));
            raw_cpu.extend(per_event(r.1));
        }
        (b.0, r.0)
    })
    .await;
    if bus_cpu.len() == c.bus.len() && raw_cpu.len() == c.raw.len() {
        (c.bus_cpu, c.raw_cpu) = (bus_cpu, raw_cpu);
    }
    if let Some(cpu) = c.cpu_ratio() {
        eprintln!("  {label}: CPU per event, bus / raw {cpu:.2}");
    }
    c
}

/// [`compare`] for a case whose cost drifts faster than a round lasts (a
/// disk's flush latency moving from one second to the next): `round` runs
/// bus and raw interleaved step by step — one append of each in turn, say
/// — and returns the time each side spent, so both sides see the same
/// moments of the machine. A warm-up round, then `rounds` counted ones.
pub async fn compare_paired<P>(
    label: &str,
    events: usize,
    rounds: usize,
    mut round: P,
) -> Comparison
where
    P: AsyncFnMut(usize) -> (Duration, Duration),
{
    let rate = |d: Duration| events as f64 / d.as_secs_f64().max(1e-9);
    round(events).await;
    let mut c = Comparison {
        label: label.to_owned(),
        events,
        bus: Vec::with_capacity(rounds),
        raw: Vec::with_capacity(rounds),
        bus_cpu: Vec::new(),
        raw_cpu: Vec::new(),
    };
    for _ in 0..rounds.max(1) {
        let (bus, raw) = round(events).await;
        c.bus.push(rate(bus));
        c.raw.push(rate(raw));
    }
    eprintln!("  {label}: ratio {:.2}", c.ratio());
    c
}

/// A subscription of `group` with `concurrency` workers whose handler only
/// counts, and a receiver told once `n` events were handled: the bus side
/// of an end-to-end or consume case.
pub fn counting(
    group: &str,
    n: usize,
    concurrency: usize,
) -> (Subscription, tokio::sync::oneshot::Receiver<()>) {
    let handled = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = Arc::new(parking_lot::Mutex::new(Some(tx)));
    let subscription = Subscription::builder(group)
        .concurrency(concurrency)
        .handler(handler_fn(move |_event| {
            if handled.fetch_add(1, Ordering::Relaxed) + 1 == n {
                if let Some(tx) = tx.lock().take() {
                    let _ = tx.send(());
                }
            }
            async { Ok(()) }
        }))
        .build()
        .expect("a valid counting subscription");
    (subscription, rx)
}

/// The bus side of a fan-out case: `groups` consumer groups of one member
/// each subscribe to `bus`, `events` are published in batches of `batch`,
/// and the time runs until every group has handled every event.
pub async fn fan_out(
    bus: &dyn EventBus,
    events: &[EventEnvelope],
    groups: usize,
    batch: usize,
) -> Duration {
    let mut handles = Vec::with_capacity(groups);
    let mut done = Vec::with_capacity(groups);
    for g in 0..groups {
        let (subscription, all) = counting(&format!("g{g}"), events.len(), 1);
        handles.push(bus.subscribe(subscription).await.expect("subscribe"));
        done.push(all);
    }
    let t = std::time::Instant::now();
    for chunk in events.chunks(batch.max(1)) {
        bus.publish(chunk).await.expect("publish");
    }
    for all in done {
        tokio::time::timeout(Duration::from_secs(900), all)
            .await
            .expect("every group handles every event")
            .expect("open");
    }
    let took = t.elapsed();
    for handle in handles {
        handle.unsubscribe().await;
    }
    took
}

/// How the cost of one handled event grows with the number of events and
/// of groups: for each size and group count, a fresh bus from `connect`
/// runs [`fan_out`] of `events(size)` in batches of `batch`, then shuts
/// down; prints microseconds per handled event (one event handled by one
/// group), a Markdown table with a row per size.
pub async fn growth<C, Fut, E>(
    label: &str,
    sizes: &[usize],
    groups: &[usize],
    batch: usize,
    events: E,
    mut connect: C,
) where
    C: FnMut() -> Fut,
    Fut: Future<Output = Arc<dyn EventBus>>,
    E: Fn(usize) -> Vec<EventEnvelope>,
{
    println!("\n{label}: microseconds per handled event (events x groups handled)");
    let head: Vec<String> = groups.iter().map(|g| format!("{g} group(s)")).collect();
    println!("| events | {} |", head.join(" | "));
    println!("|---|{}", "---|".repeat(groups.len()));
    for &n in sizes {
        let evs = events(n);
        let mut cells = Vec::with_capacity(groups.len());
        for &g in groups {
            let bus = connect().await;
            let took = fan_out(&*bus, &evs, g, batch).await;
            bus.shutdown(Duration::from_secs(5))
                .await
                .expect("shutdown");
            let per = took.as_secs_f64() * 1e6 / (n * g) as f64;
            eprintln!("  {n} events x {g} groups: {took:?}");
            cells.push(format!("{per:.2}"));
        }
        println!("| {n} | {} |", cells.join(" | "));
    }
}

/// One consumer group of several members, each on a bus of its own, all
/// counting into one total: the setup of [`members`].
pub struct Group {
    buses: Vec<Arc<dyn EventBus>>,
    handles: Vec<eventsource_core::SubscriptionHandle>,
    handled: Arc<(AtomicUsize, tokio::sync::Notify)>,
}

impl Group {
    /// Subscribes one member of `group` with `concurrency` workers on each
    /// of `buses`.
    pub async fn join(buses: Vec<Arc<dyn EventBus>>, group: &str, concurrency: usize) -> Group {
        let handled = Arc::new((AtomicUsize::new(0), tokio::sync::Notify::new()));
        let mut handles = Vec::with_capacity(buses.len());
        for bus in &buses {
            let count = Arc::clone(&handled);
            let subscription = Subscription::builder(group)
                .concurrency(concurrency)
                .handler(handler_fn(move |_event| {
                    count.0.fetch_add(1, Ordering::Relaxed);
                    count.1.notify_waiters();
                    async { Ok(()) }
                }))
                .build()
                .expect("a valid counting subscription");
            handles.push(bus.subscribe(subscription).await.expect("subscribe"));
        }
        Group {
            buses,
            handles,
            handled,
        }
    }

    /// Publishes `events` in batches of `batch` through the first bus and
    /// returns how long until the group handled that many more.
    pub async fn round(&self, events: &[EventEnvelope], batch: usize) -> Duration {
        let target = self.handled.0.load(Ordering::Acquire) + events.len();
        let t = std::time::Instant::now();
        for chunk in events.chunks(batch.max(1)) {
            self.buses[0].publish(chunk).await.expect("publish");
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(900);
        loop {
            let changed = self.handled.1.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.handled.0.load(Ordering::Acquire) >= target {
                return t.elapsed();
            }
            tokio::time::timeout_at(deadline, changed)
                .await
                .expect("the group handles every event within 15 minutes");
        }
    }

    /// Unsubscribes every member and shuts every bus down.
    pub async fn leave(self) {
        for handle in self.handles {
            handle.unsubscribe().await;
        }
        for bus in self.buses {
            let _ = bus.shutdown(Duration::from_secs(5)).await;
        }
    }
}

/// End to end through one group of 1, 4, 8… members (`members`), one bus
/// each, partitioned (`connect(true)`) beside unpartitioned
/// (`connect(false)`): per member count, [`compare`] with the
/// partitioned layout as the "bus" side and the unpartitioned one as the
/// "raw" side, `events` published in batches of 100 per round.
pub async fn members<C>(
    events: &[EventEnvelope],
    rounds: usize,
    members: &[usize],
    concurrency: usize,
    mut connect: C,
) -> Vec<Comparison>
where
    C: AsyncFnMut(bool) -> Arc<dyn EventBus>,
{
    let mut rows = Vec::with_capacity(members.len());
    for &m in members {
        let mut groups = Vec::with_capacity(2);
        for partitioned in [true, false] {
            let mut buses = Vec::with_capacity(m);
            for _ in 0..m {
                buses.push(connect(partitioned).await);
            }
            groups.push(Group::join(buses, &format!("bench-{m}"), concurrency).await);
        }
        let (partitioned, plain) = (&groups[0], &groups[1]);
        rows.push(
            compare(
                &format!("{m} member(s), concurrency {concurrency} each"),
                events.len(),
                rounds,
                async |_| partitioned.round(events, 100).await,
                async |_| plain.round(events, 100).await,
            )
            .await,
        );
        for group in groups {
            group.leave().await;
        }
    }
    rows
}

/// Prints the comparisons as a Markdown table (min / median / max ev/s),
/// and a second one of CPU time per event where it was measured.
pub fn table(rows: &[Comparison]) {
    table_of(rows, "raw", "bus");
}

/// [`table`] with other names for the two sides (e.g. unpartitioned and
/// partitioned).
pub fn table_of(rows: &[Comparison], raw: &str, bus: &str) {
    println!("| case | events | {raw} ev/s (min / median / max) | {bus} ev/s (min / median / max) | ratio of medians |");
    println!("|---|---|---|---|---|");
    for c in rows {
        println!(
            "| {} | {} | {} | {} | {:.2} |",
            c.label,
            c.events,
            spread(&c.raw),
            spread(&c.bus),
            c.ratio()
        );
    }
    if rows.iter().all(|c| c.cpu_ratio().is_none()) {
        return;
    }
    println!("\nCPU time of this process per event (µs; the broker's is not counted):\n");
    println!(
        "| case | {raw} µs (min / median / max) | {bus} µs (min / median / max) | {bus} / {raw} |"
    );
    println!("|---|---|---|---|");
    for c in rows {
        if let Some(cpu) = c.cpu_ratio() {
            println!(
                "| {} | {} | {} | {cpu:.2} |",
                c.label,
                spread_fine(&c.raw_cpu),
                spread_fine(&c.bus_cpu),
            );
        }
    }
}

fn spread_fine(v: &[f64]) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(0.0, f64::max);
    format!("{:.2} / {:.2} / {:.2}", min, median(v), max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn interleaves_rounds_after_a_warm_up_and_reports_medians() {
        let order = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let (b, r) = (std::sync::Arc::clone(&order), std::sync::Arc::clone(&order));
        let c = compare(
            "case",
            1_000,
            3,
            move |_| {
                b.lock().push("bus");
                async { Duration::from_millis(2) }
            },
            move |_| {
                r.lock().push("raw");
                async { Duration::from_millis(1) }
            },
        )
        .await;
        assert_eq!(
            *order.lock(),
            ["bus", "raw", "raw", "bus", "bus", "raw", "raw", "bus"],
            "warm-up, then alternating"
        );
        assert_eq!((c.bus.len(), c.raw.len()), (3, 3));
        assert!((c.ratio() - 0.5).abs() < 1e-9, "{}", c.ratio());
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), 2.5);
        // No CPU to speak of: too little to report.
        assert!(c.bus_cpu.is_empty() && c.cpu_ratio().is_none());
    }

    #[tokio::test]
    async fn counts_each_sides_cpu_time() {
        fn spin(d: Duration) {
            let t = std::time::Instant::now();
            while t.elapsed() < d {
                std::hint::black_box(0u64);
            }
        }
        let c = compare(
            "cpu",
            1_000,
            3,
            async |_| {
                spin(Duration::from_millis(200));
                Duration::from_millis(1)
            },
            async |_| {
                spin(Duration::from_millis(120));
                Duration::from_millis(1)
            },
        )
        .await;
        // 200 and 120 ms of spinning over 1 000 events: about 200 and
        // 120 µs each, in ticks of 10 ms.
        let (bus, raw) = (median(&c.bus_cpu), median(&c.raw_cpu));
        assert!((150.0..=260.0).contains(&bus), "bus {bus} µs/event");
        assert!((100.0..=180.0).contains(&raw), "raw {raw} µs/event");
    }
}
