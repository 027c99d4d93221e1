//! `eventsource`: the operator's CLI for a bus's dead letters.
//!
//! ```text
//! eventsource --bus redis://127.0.0.1:6379 --namespace shop dlq list --group billing
//! eventsource --bus amqp://guest:guest@127.0.0.1:5672/%2f dlq replay billing/01934f…
//! eventsource --bus kafka://127.0.0.1:9092 dlq replay-all --group billing
//! eventsource --bus redis://… dlq purge --group billing --yes
//! eventsource --bus redis://… stats
//! ```

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use eventsource::{connect_bus, BusConfig, DeadLetter, DeadLetterQuery, Result};

#[derive(Parser)]
#[command(
    name = "eventsource",
    version,
    about = "Inspect, replay and purge the dead letters of an eventsource bus"
)]
struct Cli {
    /// The bus: redis://…, amqp://…, kafka://… (or memory://, which is empty in a new process).
    #[arg(long, env = "EVENTSOURCE_BUS")]
    bus: String,
    /// The key, queue or topic prefix the application uses (default: eventsource).
    #[arg(long, env = "EVENTSOURCE_NAMESPACE")]
    namespace: Option<String>,
    /// Print JSON (one object per line) instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Dead-letter queue operations.
    Dlq {
        #[command(subcommand)]
        action: Dlq,
    },
    /// Counters and per-group state.
    Stats,
}

#[derive(Subcommand)]
enum Dlq {
    /// Lists dead letters, oldest first.
    List {
        /// Only this consumer group's (needed on RabbitMQ and Kafka).
        #[arg(long, value_parser = group_name)]
        group: Option<String>,
        /// At most this many.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Shows one dead letter with its event.
    Show {
        /// The dead letter's id, as `list` prints it.
        id: String,
    },
    /// Sends one dead letter back to its group (only that group).
    Replay {
        /// The dead letter's id.
        id: String,
    },
    /// Replays every dead letter of a group.
    ReplayAll {
        /// The consumer group.
        #[arg(long, value_parser = group_name)]
        group: String,
    },
    /// Deletes every dead letter of a group.
    Purge {
        /// The consumer group.
        #[arg(long, value_parser = group_name)]
        group: String,
        /// Confirms the deletion.
        #[arg(long)]
        yes: bool,
    },
}

/// A consumer group name as subscriptions accept it; anything else is a
/// usage error (exit code 2), not an empty listing.
fn group_name(s: &str) -> Result<String, String> {
    eventsource::validate_name("consumer group", s)
        .map(|()| s.to_owned())
        .map_err(|e| e.to_string())
}

fn print_letter(l: &DeadLetter, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string(l).expect("a dead letter serializes")
        );
        return;
    }
    let what = l
        .envelope
        .as_ref()
        .map(|e| {
            format!(
                "{} {}/{} v{}",
                e.routing_key(),
                e.aggregate_type,
                e.aggregate_id,
                e.aggregate_version
            )
        })
        .unwrap_or_else(|| "(undecodable message)".to_owned());
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

async fn run(cli: Cli) -> Result<()> {
    let mut config = BusConfig::from_url(&cli.bus)?;
    if let Some(ns) = &cli.namespace {
        config = config.with_namespace(ns);
    }
    let bus = connect_bus(&config).await?;
    let dlq = bus.dead_letters();
    match cli.command {
        Command::Stats => {
            let stats = bus.stats().await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&stats).expect("stats serialize")
            );
        }
        Command::Dlq { action } => match action {
            Dlq::List { group, limit } => {
                let query = DeadLetterQuery {
                    group: group.clone(),
                    limit,
                };
                let letters = dlq.list(&query).await?;
                for l in &letters {
                    print_letter(l, cli.json);
                }
                if !cli.json {
                    eprintln!("{} dead letter(s)", letters.len());
                    if letters.is_empty() && group.is_none() && bus.backend() != "redis" {
                        eprintln!(
                            "hint: on {} pass --group to list a group's dead letters",
                            bus.backend()
                        );
                    }
                }
            }
            Dlq::Show { id } => match dlq.get(&id).await? {
                Some(l) => {
                    if cli.json {
                        print_letter(&l, true);
                    } else {
                        print_letter(&l, false);
                        if let Some(e) = &l.envelope {
                            println!(
                                "{}",
                                serde_json::to_string_pretty(e).expect("an envelope serializes")
                            );
                        } else if let Some(raw) = &l.raw {
                            println!("raw: {raw}");
                        }
                    }
                }
                None => return Err(eventsource::Error::not_found(format!("dead letter `{id}`"))),
            },
            Dlq::Replay { id } => {
                dlq.replay(&id).await?;
                eprintln!("replayed {id}");
            }
            Dlq::ReplayAll { group } => {
                let total = dlq
                    .replay_all_with_progress(&DeadLetterQuery::group(&group), &|done, total| {
                        eprintln!("[{done}/{total}] replayed");
                    })
                    .await?;
                eprintln!("replayed {total} dead letter(s) of `{group}`");
            }
            Dlq::Purge { group, yes } => {
                if !yes {
                    return Err(eventsource::Error::config(format!(
                        "purging deletes every dead letter of `{group}` for good: add --yes to confirm"
                    )));
                }
                let n = dlq.purge(&DeadLetterQuery::group(&group)).await?;
                eprintln!("purged {n} dead letter(s) of `{group}`");
            }
        },
    }
    bus.shutdown(std::time::Duration::from_secs(5)).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    // Logs to stderr, filtered by RUST_LOG (warnings by default).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
