//! `eventsource`: the operator's CLI for a bus's consumer groups and dead
//! letters. `eventsource --help` lists the commands, examples and exit
//! codes.

mod commands;
mod console;
mod exit;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::output::Output;

const AFTER_HELP: &str = "\
Examples:
  eventsource --bus redis://127.0.0.1:6379 --namespace shop dlq list --group billing
  eventsource dlq show billing/1732540000000-0 --bus redis://127.0.0.1:6379
  eventsource --bus amqp://guest:guest@127.0.0.1:5672/%2f dlq replay-all --group billing
  eventsource --config eventsource.toml dlq purge --group billing --yes
  eventsource --bus kafka://127.0.0.1:9092 console --group billing --listen 127.0.0.1:9400 --allow-writes
  EVENTSOURCE_BUS=kafka://127.0.0.1:9092 eventsource stats --group billing --output json
  eventsource --bus redis://127.0.0.1:6379 tail --filter 'order.*' --output json

The bus comes from --bus, EVENTSOURCE_BUS, or the [bus] table of --config FILE.
Passwords in URLs are never printed.

Exit codes:
  0  success
  1  failure (the broker refused or failed the operation)
  2  usage (bad arguments or configuration, purge without --yes)
  3  not found (no such dead letter, or no such consumer group on the broker)
  4  connection (the broker could not be reached, or did not answer in time)
  5  partial (replay-all or purge stopped part way; what was done stays done)";

#[derive(Parser)]
#[command(
    name = "eventsource",
    version,
    about = "Inspect consumer groups, and list, replay and purge the dead letters of an eventsource bus",
    after_help = AFTER_HELP
)]
struct Cli {
    /// The bus: redis://…, amqp://…, kafka://…, nats://… (or memory://, which is empty in a new process).
    #[arg(long, env = "EVENTSOURCE_BUS", hide_env_values = true, global = true)]
    bus: Option<String>,
    /// The key, queue or topic prefix the application uses (default: eventsource).
    #[arg(
        long,
        env = "EVENTSOURCE_NAMESPACE",
        hide_env_values = true,
        global = true
    )]
    namespace: Option<String>,
    /// A configuration file (TOML, or JSON by extension) whose `bus` table says which bus.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// How to print results.
    #[arg(long, value_enum, default_value_t = Output::Text, global = true)]
    output: Output,
    /// The same as --output json.
    #[arg(long, global = true, hide = true)]
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
    /// What the broker knows of the consumer groups (backlog, members, dead
    /// letters), and this process's counters.
    Stats {
        /// Only this consumer group (looked up on the broker by name; needed
        /// on RabbitMQ and Kafka to see a group this process is not in).
        #[arg(long, value_parser = group_name)]
        group: Option<String>,
    },
    /// Follows the events published from now on, live, without joining or
    /// creating any consumer group (nothing is taken from the groups).
    Tail {
        /// Only events whose routing key (`aggregate_type.event_type`) matches
        /// a pattern: `order.*`, `#.created` (repeat it).
        #[arg(long = "filter", value_name = "PATTERN")]
        filters: Vec<String>,
        /// Stop after this many events (default: until Ctrl-C).
        #[arg(long)]
        count: Option<usize>,
    },
    /// Serves a web console: groups with their backlog, members, in-flight
    /// handlers and dead letters (refreshing), each dead letter with its
    /// failure; replay one or all and purge with --allow-writes.
    Console {
        /// Where to listen (port 0 picks a free one; the address is printed).
        #[arg(long, default_value = "127.0.0.1:9400")]
        listen: String,
        /// Allow replaying and purging from the page (read-only otherwise).
        /// Every page then needs a login: the link printed at start, or the
        /// token given with --token-file or EVENTSOURCE_CONSOLE_TOKEN.
        #[arg(long)]
        allow_writes: bool,
        /// A file holding the login token (at least 16 characters; one is
        /// generated and printed once otherwise). The environment variable
        /// EVENTSOURCE_CONSOLE_TOKEN may hold it instead. With a token every
        /// page needs a login, read-only or not.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// A host name the console answers to besides IP addresses and
        /// localhost (repeat it): the name in the address bar when it is
        /// reached by name. Requests naming any other host are refused.
        #[arg(long = "allowed-host", value_name = "NAME")]
        allowed_hosts: Vec<String>,
        /// Serve on a non-loopback address without a token of your own (one
        /// is generated and printed; the traffic is plain HTTP).
        #[arg(long = "i-know-this-is-exposed")]
        exposed: bool,
        /// A group to show besides those the broker lists (repeat it; needed
        /// on RabbitMQ and Kafka, which do not list groups).
        #[arg(long = "group", value_parser = group_name)]
        groups: Vec<String>,
    },
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
    /// Shows one dead letter: its failure history and its event.
    Show {
        /// The dead letter's id, as `list` prints it.
        id: String,
    },
    /// Sends one dead letter back to its group (only that group).
    Replay {
        /// The dead letter's id.
        id: String,
    },
    /// Lists the aggregates whose events wait behind a dead letter (groups
    /// that park aggregates): each with its head letter and how many wait.
    Parked {
        /// Only this consumer group's (needed on RabbitMQ and Kafka).
        #[arg(long, value_parser = group_name)]
        group: Option<String>,
    },
    /// Deletes one dead letter and releases the events parked behind it,
    /// in order (replay it instead once its handler is fixed).
    Discard {
        /// The dead letter's id.
        id: String,
    },
    /// Replays every dead letter of a group, with progress.
    ReplayAll {
        /// The consumer group.
        #[arg(long, value_parser = group_name)]
        group: String,
    },
    /// Deletes every dead letter of a group, with progress.
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
    eventsource::helpers::validate_name("consumer group", s)
        .map(|()| s.to_owned())
        .map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    // Logs to stderr, filtered by RUST_LOG (warnings by default). lapin
    // logs a closed channel at ERROR even where the broker's answer is
    // expected (a group's queue that does not exist yet); the command
    // reports what went wrong itself, so lapin's own lines are off
    // unless RUST_LOG asks for them.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,lapin=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut cli = Cli::parse();
    if cli.json {
        cli.output = Output::Json;
    }
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            if let Some(hint) = &failure.hint {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(failure.exit as u8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Exit;

    #[test]
    fn global_options_are_accepted_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "eventsource",
            "dlq",
            "list",
            "--group",
            "billing",
            "--bus",
            "redis://h:6379",
            "--namespace",
            "shop",
            "--output",
            "json",
        ])
        .expect("parses");
        assert_eq!(cli.bus.as_deref(), Some("redis://h:6379"));
        assert_eq!(cli.namespace.as_deref(), Some("shop"));
        assert_eq!(cli.output, Output::Json);
    }

    #[test]
    fn help_lists_examples_and_exit_codes() {
        let help = <Cli as clap::CommandFactory>::command()
            .render_long_help()
            .to_string();
        for needle in ["Examples:", "Exit codes:", "3  not found", "4  connection"] {
            assert!(help.contains(needle), "{needle}: {help}");
        }
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn exit_codes_are_distinct() {
        let codes = [
            Exit::Failure,
            Exit::Usage,
            Exit::NotFound,
            Exit::Connection,
            Exit::Partial,
        ]
        .map(|e| e as u8);
        let mut sorted = codes.to_vec();
        sorted.dedup();
        assert_eq!(sorted, [1, 2, 3, 4, 5]);
    }
}
