//! `eventsource`: the operator's CLI for a bus's consumer groups and dead
//! letters. `eventsource --help` lists the commands, examples and exit
//! codes.

mod commands;
mod console;
mod exit;
mod output;
mod personal;
mod replay;
mod schema;
mod timeouts;

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
  eventsource --store sqlite://events.db subjects show user-42
  eventsource --store sqlite://events.db --bus redis://127.0.0.1:6379 schema check --manifest schema.json
  eventsource --store postgres://app@db/app --bus redis://127.0.0.1:6379 forget user-42 --yes
  eventsource --store sqlite://events.db --bus redis://127.0.0.1:6379 replay --group billing --since 2026-12-01 --rate 500 --dry-run

The bus comes from --bus, EVENTSOURCE_BUS, or the [bus] table of --config FILE;
the event store (forget, subjects, schema, replay) from --store, EVENTSOURCE_STORE, or `store` there.
Passwords in URLs are never printed.

Exit codes:
  0  success
  1  failure (the broker refused or failed the operation)
  2  usage (bad arguments or configuration, purge or forget without --yes,
     a replay of more than 1000 events without --yes)
  3  not found (no such dead letter, or no such consumer group on the broker)
  4  connection (the broker could not be reached, or did not answer in time)
  5  partial (replay-all, purge or replay stopped part way; what was done stays done)";

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
    /// The event store, for `forget`, `subjects`, `schema`, `replay`,
    /// `timeouts` and the console's replay and timeout pages:
    /// sqlite://FILE or postgres://….
    #[arg(long, env = "EVENTSOURCE_STORE", hide_env_values = true, global = true)]
    store: Option<String>,
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
    /// Forgets a data subject: deletes its key from the store, so every
    /// copy of its personal data (store, snapshots, bus, dead letters)
    /// reads with replacement values, and publishes SubjectForgotten when
    /// a bus is given. Without --yes it only says what it would do.
    Forget {
        /// The data subject (as `#[data_subject]` names it, e.g. a user id).
        subject: String,
        /// Confirms: the key is deleted for good.
        #[arg(long)]
        yes: bool,
    },
    /// Checks stored events, dead and parked letters against the
    /// application's schema manifest: each kind without a path to the
    /// current type is reported with its count (exit 1).
    Schema {
        #[command(subcommand)]
        action: Schema,
    },
    /// Delivers stored events again to one consumer group only (the other
    /// groups get nothing), selected by position, time, aggregate and
    /// event type, at a bounded rate, with progress; resumable.
    Replay(ReplayArgs),
    /// Process managers' durable timeouts in the store.
    Timeouts {
        #[command(subcommand)]
        action: Timeouts,
    },
    /// Data subjects in the store.
    Subjects {
        #[command(subcommand)]
        action: Subjects,
    },
    /// Serves a web console: groups with their backlog, members, in-flight
    /// handlers and dead letters (refreshing), each dead letter with its
    /// failure; replay one or all and purge with --allow-writes. With
    /// --store, the store's targeted replays (start, watch, resume) and
    /// process managers' timeouts.
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

/// `replay`'s arguments: a selection and how to run, or `--resume`, or
/// `--list`.
#[derive(clap::Args)]
pub(crate) struct ReplayArgs {
    /// The one consumer group to deliver to.
    #[arg(long, value_parser = group_name, required_unless_present_any = ["resume", "list"])]
    group: Option<String>,
    /// From this global position (inclusive).
    #[arg(long, value_name = "POSITION")]
    from: Option<u64>,
    /// Up to this global position (inclusive).
    #[arg(long, value_name = "POSITION")]
    to: Option<u64>,
    /// Events that occurred at or after this time (RFC 3339, or a date).
    #[arg(long, value_name = "TIME", value_parser = replay::instant)]
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// Events that occurred before this time (RFC 3339, or a date).
    #[arg(long, value_name = "TIME", value_parser = replay::instant)]
    until: Option<chrono::DateTime<chrono::Utc>>,
    /// Only this aggregate type.
    #[arg(long, value_name = "TYPE")]
    aggregate_type: Option<String>,
    /// Only this aggregate (repeat it).
    #[arg(long = "aggregate", value_name = "ID")]
    aggregates: Vec<String>,
    /// Only this event type (repeat it).
    #[arg(long = "event-type", value_name = "TYPE")]
    event_types: Vec<String>,
    /// At most this many events per second.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    rate: Option<u32>,
    /// Have the group's inbox handle each event again (by default it
    /// skips the events it has handled).
    #[arg(long)]
    reprocess: bool,
    /// Only count what would be delivered.
    #[arg(long)]
    dry_run: bool,
    /// Confirms a replay of more than 1000 events.
    #[arg(long)]
    yes: bool,
    /// Resumes a replay that stopped, after its last delivered event.
    #[arg(long, value_name = "ID", conflicts_with_all = ["group", "list"])]
    resume: Option<String>,
    /// Lists the replays recorded in the store.
    #[arg(long, conflicts_with = "group")]
    list: bool,
}

#[derive(Subcommand)]
enum Schema {
    /// Every (aggregate type, event type, version) in the store, and in
    /// the bus's dead letters when a bus is given, against the manifest.
    Check {
        /// The manifest the application wrote (`SchemaManifest::to_json`).
        #[arg(long, value_name = "FILE")]
        manifest: PathBuf,
        /// Only these groups' letters (repeat it; needed on RabbitMQ and
        /// Kafka, which do not list groups).
        #[arg(long = "group", value_parser = group_name)]
        groups: Vec<String>,
    },
}

#[derive(Subcommand)]
enum Timeouts {
    /// Lists pending timeouts, soonest due first: process, instance,
    /// name, group and when each falls due.
    List {
        /// Only this process manager's (its `NAME`).
        #[arg(long)]
        process: Option<String>,
        /// Fired and cancelled ones too.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum Subjects {
    /// Whether the subject's key is kept or forgotten, and which streams
    /// hold its data (a scan of the store, with progress).
    Show {
        /// The data subject.
        subject: String,
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
