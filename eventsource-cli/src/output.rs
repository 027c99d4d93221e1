//! How results are printed: text for people, JSON for scripts, progress
//! on stderr.

use std::io::IsTerminal;

use eventsource::{BusStats, DeadLetter, EventEnvelope, GroupStats};

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Output {
    /// Lines for people.
    Text,
    /// JSON: one object per line (a dead letter per line for `dlq list`).
    Json,
}

/// Prints `value` as one line of JSON.
pub(crate) fn json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string(value).expect("CLI output serializes")
    );
}

/// What a dead letter holds, in a few words: `Order.Placed Order/o-1 v3`.
pub(crate) fn what(l: &DeadLetter) -> String {
    l.envelope()
        .map(|e| {
            format!(
                "{} {}/{} v{}",
                e.routing_key(),
                e.aggregate_type,
                e.aggregate_id,
                e.aggregate_version
            )
        })
        .unwrap_or_else(|| match l.failure.kind {
            eventsource::FailureKind::Unreadable => {
                "(unreadable letter: see its raw fields)".to_owned()
            }
            _ => "(undecodable message)".to_owned(),
        })
}

/// One dead letter in a line or two: what, why, where.
pub(crate) fn letter_line(l: &DeadLetter) {
    let what = what(l);
    println!(
        "{}  group={}  attempts={}  last={}  {}\n    error: {}\n    source: {}",
        l.id,
        l.failure.group,
        l.failure.attempts,
        l.failure.last_failed_at.to_rfc3339(),
        what,
        l.failure.error,
        l.failure.source
    );
}

/// One event in a line: when, what, whose, which.
pub(crate) fn event_line(e: &EventEnvelope) {
    println!(
        "{}  {}  {}/{} v{}  {}",
        e.occurred_at.format("%H:%M:%S%.3f"),
        e.routing_key(),
        e.aggregate_type,
        e.aggregate_id,
        e.aggregate_version,
        e.event_id
    );
}

/// One dead letter in full: its failure history, then its event.
pub(crate) fn letter_detail(l: &DeadLetter) {
    let f = &l.failure;
    println!("dead letter   {}", l.id);
    println!("group         {}", f.group);
    println!("handler       {}", f.handler.as_deref().unwrap_or("-"));
    println!("source        {}", f.source);
    println!("failure       {:?} after {} attempt(s)", f.kind, f.attempts);
    println!("first failed  {}", f.first_failed_at.to_rfc3339());
    println!("last failed   {}", f.last_failed_at.to_rfc3339());
    println!("error         {}", f.error);
    if let Some(e) = l.envelope() {
        println!(
            "event\n{}",
            serde_json::to_string_pretty(e).expect("an envelope serializes")
        );
    } else if let Some(raw) = l.raw_body() {
        println!("raw message (undecodable)\n{raw}");
    }
}

fn group_row(name: &str, g: &GroupStats) {
    println!(
        "{name:<24} {:>8} {:>10} {:>10} {:>13}",
        g.members, g.pending, g.in_flight, g.dead_letters
    );
}

/// The groups as a table, then the streams and this process's counters.
pub(crate) fn stats(stats: &BusStats) {
    if stats.groups.is_empty() {
        println!("no consumer groups known");
    } else {
        println!(
            "{:<24} {:>8} {:>10} {:>10} {:>13}",
            "GROUP", "MEMBERS", "PENDING", "IN FLIGHT", "DEAD LETTERS"
        );
        for (name, g) in &stats.groups {
            group_row(name, g);
        }
    }
    for (stream, length) in &stats.streams {
        println!("stream {stream}: {length} event(s)");
    }
    println!(
        "this process: published {}, handled {}, failed attempts {}, dead-lettered {}, parked {}, replayed {}",
        stats.published,
        stats.handled,
        stats.failed_attempts,
        stats.dead_lettered,
        stats.parked,
        stats.replayed
    );
}

/// Progress of a bulk operation on stderr: a bar on a terminal, a line
/// per step otherwise (logs, CI, pipes).
pub(crate) struct Progress {
    bar: Option<indicatif::ProgressBar>,
    verb: &'static str,
}

impl Progress {
    pub(crate) fn new(verb: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.set_message(verb);
            bar
        });
        Progress { bar, verb }
    }

    /// Reports `done` of `total`; nothing for nothing to do (an empty or
    /// unknown group is reported once, by the command).
    pub(crate) fn step(&self, done: usize, total: usize) {
        if total == 0 {
            return;
        }
        match &self.bar {
            Some(bar) => {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            }
            None => eprintln!("[{done}/{total}] {}", self.verb),
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
