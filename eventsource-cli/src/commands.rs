//! What each command does.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventsource::store::{SqlEventStore, StoreConfig};
use eventsource::{
    connect_bus, BusConfig, Config, DeadLetterQuery, EventBus, EventFilter, GroupStats,
};
use serde_json::json;

use crate::exit::{Exit, Failure};
use crate::output::{self, Output, Progress};
use crate::{Cli, Command, Dlq};

pub(crate) type Outcome = std::result::Result<(), Failure>;

/// The bus the options name: `--bus` (or `EVENTSOURCE_BUS`), else the
/// `[bus]` table of `--config`; then `--namespace`.
pub(crate) fn bus_config(cli: &Cli) -> std::result::Result<BusConfig, Failure> {
    let mut config = match (&cli.bus, &cli.config) {
        (Some(url), _) => BusConfig::from_url(url)?,
        (None, Some(file)) => Config::load(file)?.bus,
        (None, None) => {
            return Err(Failure::new(Exit::Usage, "no bus given").hint(
                "pass --bus URL (or set EVENTSOURCE_BUS), or --config FILE with a [bus] table",
            ))
        }
    };
    if let Some(ns) = &cli.namespace {
        config = config.with_namespace(ns);
    }
    // The operator's tool reads and replays; whether the broker keeps what
    // it acknowledges is for the application's own connect to say (and to
    // refuse), not a warning before every command's output.
    Ok(config.with_durability(eventsource::Durability::Off))
}

/// The store the options name: `--store` (or `EVENTSOURCE_STORE`), else
/// the `store` of `--config`.
pub(crate) async fn store(cli: &Cli) -> std::result::Result<SqlEventStore, Failure> {
    let url = match (&cli.store, &cli.config) {
        (Some(url), _) => url.clone(),
        (None, Some(file)) => Config::load(file)?.store.ok_or_else(|| {
            Failure::new(Exit::Usage, "the configuration file sets no `store`")
                .hint("pass --store URL (or set EVENTSOURCE_STORE)")
        })?,
        (None, None) => {
            return Err(Failure::new(Exit::Usage, "no event store given").hint(
                "pass --store URL (sqlite://events.db, postgres://user@host/db), or set \
                 EVENTSOURCE_STORE, or --config FILE with `store`",
            ))
        }
    };
    let config = StoreConfig::new(url).validated()?;
    SqlEventStore::connect(config)
        .await
        .map_err(Failure::connecting)
}

/// The console's event store: the one given, if any.
async fn console_store(cli: &Cli) -> std::result::Result<Option<SqlEventStore>, Failure> {
    let given = cli.store.is_some()
        || match &cli.config {
            Some(file) => Config::load(file)?.store.is_some(),
            None => false,
        };
    if given {
        store(cli).await.map(Some)
    } else {
        Ok(None)
    }
}

/// Where the bus looks, for messages: the backend and the namespace.
fn place(cli: &Cli, bus: &dyn EventBus) -> String {
    match &cli.namespace {
        Some(ns) => format!("{} namespace `{ns}`", bus.backend()),
        None => format!(
            "{} namespace `eventsource` (the default; pass --namespace)",
            bus.backend()
        ),
    }
}

/// What the broker knows of `group`; "not found" naming the groups it
/// does know when it knows none by that name.
async fn require_group(
    cli: &Cli,
    bus: &dyn EventBus,
    group: &str,
) -> std::result::Result<GroupStats, Failure> {
    if let Some(stats) = bus.group_stats(group).await? {
        return Ok(stats);
    }
    let known: Vec<String> = bus.stats().await?.groups.into_keys().collect();
    let hint = if known.is_empty() {
        "no consumer group is known there: check --bus and --namespace".to_owned()
    } else {
        format!("groups known there: {}", known.join(", "))
    };
    Err(Failure::new(
        Exit::NotFound,
        format!("no consumer group `{group}` on {}", place(cli, bus)),
    )
    .hint(hint))
}

pub(crate) async fn run(cli: Cli) -> Outcome {
    // These read the event store; the bus is optional.
    match &cli.command {
        Command::Forget { subject, yes } => {
            return crate::personal::forget(&cli, subject, *yes).await
        }
        Command::Subjects {
            action: crate::Subjects::Show { subject },
        } => return crate::personal::show(&cli, subject).await,
        Command::Schema {
            action: crate::Schema::Check { manifest, groups },
        } => return crate::schema::check(&cli, manifest, groups).await,
        Command::Replay(args) => return crate::replay::replay(&cli, args).await,
        Command::Timeouts {
            action: crate::Timeouts::List { process, all },
        } => return crate::timeouts::list(&cli, process.as_deref(), *all).await,
        _ => {}
    }
    let config = bus_config(&cli)?;
    let bus = connect_bus(&config).await.map_err(Failure::connecting)?;
    if let Command::Console {
        listen,
        allow_writes,
        groups,
        token_file,
        allowed_hosts,
        exposed,
    } = &cli.command
    {
        let options = ConsoleOptions {
            listen,
            allow_writes: *allow_writes,
            groups,
            token_file: token_file.as_deref(),
            allowed_hosts,
            exposed: *exposed,
        };
        return console(&cli, bus, options).await;
    }
    let result = command(&cli, bus.as_ref()).await;
    // Nothing is consumed here; shutting down only closes connections.
    let _ = bus.shutdown(Duration::from_secs(5)).await;
    result
}

/// Prints events as they are published, until `count` or Ctrl-C.
async fn tail(
    bus: &dyn EventBus,
    filters: &[String],
    count: Option<usize>,
    out: Output,
) -> Outcome {
    let filter = if filters.is_empty() {
        EventFilter::all()
    } else {
        EventFilter::patterns(filters)?
    };
    let mut watch = bus.watch(filter).await?;
    // On stderr in every mode: a script can wait for it before publishing.
    eprintln!("following new events on {} (Ctrl-C stops)", bus.backend());
    let mut seen = 0;
    while count.is_none_or(|n| seen < n) {
        let next = tokio::select! {
            next = watch.next() => next,
            _ = tokio::signal::ctrl_c() => break,
        };
        match next {
            Some(Ok(event)) => {
                seen += 1;
                match out {
                    Output::Json => output::json(&event),
                    Output::Text => output::event_line(&event),
                }
            }
            Some(Err(e)) => eprintln!("warning: {e}"),
            None => break,
        }
    }
    Ok(())
}

/// The `console` command's options.
struct ConsoleOptions<'a> {
    listen: &'a str,
    allow_writes: bool,
    groups: &'a [String],
    token_file: Option<&'a std::path::Path>,
    allowed_hosts: &'a [String],
    exposed: bool,
}

/// The environment variable that may hold the console's login token.
pub(crate) const CONSOLE_TOKEN_VAR: &str = "EVENTSOURCE_CONSOLE_TOKEN";

/// The login token given with `--token-file` or the environment, checked
/// for length; never echoed.
fn given_token(token_file: Option<&std::path::Path>) -> Result<Option<String>, Failure> {
    let (token, from) = match token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Failure::new(
                    Exit::Usage,
                    format!("cannot read --token-file {}: {e}", path.display()),
                )
            })?;
            (text, format!("--token-file {}", path.display()))
        }
        None => match std::env::var(CONSOLE_TOKEN_VAR) {
            Ok(token) => (token, CONSOLE_TOKEN_VAR.to_owned()),
            Err(_) => return Ok(None),
        },
    };
    let token = token.trim().to_owned();
    let min = crate::console::MIN_TOKEN_LEN;
    if token.chars().count() < min || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Failure::new(
            Exit::Usage,
            format!(
                "the console token from {from} must be at least {min} characters, \
                 without spaces or control characters"
            ),
        ));
    }
    Ok(Some(token))
}

/// Serves the web console until Ctrl-C.
async fn console(cli: &Cli, bus: Arc<dyn EventBus>, options: ConsoleOptions<'_>) -> Outcome {
    use crate::console::TokenSource;
    let listen = options.listen;
    let given = given_token(options.token_file)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Failure::new(Exit::Usage, format!("cannot listen on {listen}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::new(Exit::Failure, e.to_string()))?;
    let exposed = !addr.ip().is_loopback();
    if exposed && given.is_none() && !options.exposed {
        return Err(Failure::new(
            Exit::Usage,
            format!(
                "refusing to serve the console on {addr}, which other machines can reach, \
                 without a token: give one with --token-file FILE or {CONSOLE_TOKEN_VAR} \
                 (every page then needs it), or pass --i-know-this-is-exposed to use a \
                 generated one"
            ),
        ));
    }
    // A token guards every page when writes are allowed, when one is
    // given, and on a non-loopback address.
    let token = match given {
        Some(token) => Some((TokenSource::Given, token)),
        None if options.allow_writes || exposed => {
            Some((TokenSource::Generated, crate::console::random_hex()))
        }
        None => None,
    };
    crate::console::announce(
        addr,
        options.allow_writes,
        token.as_ref().map(|(source, t)| (*source, t.as_str())),
    );
    if exposed {
        eprintln!(
            "warning: the console on {addr} is reachable from other machines over plain HTTP; \
             anyone who can read the traffic can take the token"
        );
    }
    let console = Arc::new(crate::console::Console {
        bus: Arc::clone(&bus),
        groups: options.groups.to_vec(),
        allow_writes: options.allow_writes,
        place: place(cli, bus.as_ref()),
        access: crate::console::Access::new(options.allowed_hosts, token.map(|(_, t)| t)),
        store: console_store(cli).await?,
        replays: Default::default(),
    });
    let served = tokio::select! {
        served = crate::console::serve(listener, console) => served,
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    let _ = bus.shutdown(Duration::from_secs(5)).await;
    served.map_err(|e| Failure::new(Exit::Failure, format!("console: {e}")))
}

async fn command(cli: &Cli, bus: &dyn EventBus) -> Outcome {
    let dlq = bus.dead_letters();
    let out = cli.output;
    match &cli.command {
        Command::Console { .. }
        | Command::Forget { .. }
        | Command::Subjects { .. }
        | Command::Replay(_)
        | Command::Timeouts { .. }
        | Command::Schema { .. } => {
            unreachable!("run serves these without a bus")
        }
        Command::Tail { filters, count } => tail(bus, filters, *count, out).await?,
        Command::Stats { group: Some(group) } => {
            let stats = require_group(cli, bus, group).await?;
            match out {
                Output::Json => output::json(&json!({ "group": group, "stats": stats })),
                Output::Text => {
                    let mut all = eventsource::BusStats::default();
                    all.groups.insert(group.clone(), stats);
                    output::stats(&all);
                }
            }
        }
        Command::Stats { group: None } => {
            let stats = bus.stats().await?;
            match out {
                Output::Json => output::json(&stats),
                Output::Text => output::stats(&stats),
            }
        }
        Command::Dlq { action } => match action {
            Dlq::List { group, limit } => {
                let query = DeadLetterQuery {
                    group: group.clone(),
                    limit: *limit,
                };
                let letters = dlq.list(&query).await?;
                if letters.is_empty() {
                    match group {
                        Some(group) => {
                            require_group(cli, bus, group).await?;
                        }
                        None if bus.backend() != "redis" && bus.backend() != "memory" => {
                            return Err(Failure::new(
                                Exit::Usage,
                                format!(
                                    "{} lists dead letters one consumer group at a time",
                                    bus.backend()
                                ),
                            )
                            .hint("pass --group NAME"));
                        }
                        None => {}
                    }
                }
                for l in &letters {
                    match out {
                        Output::Json => output::json(l),
                        Output::Text => output::letter_line(l),
                    }
                }
                if out == Output::Text {
                    let whose = group
                        .as_ref()
                        .map(|g| format!(" in group `{g}`"))
                        .unwrap_or_default();
                    eprintln!("{} dead letter(s){whose}", letters.len());
                }
            }
            Dlq::Show { id } => {
                let Some(letter) = dlq.get(id).await? else {
                    return Err(Failure::new(
                        Exit::NotFound,
                        format!("dead letter `{id}` not found on {}", place(cli, bus)),
                    )
                    .hint("ids look like GROUP/ID, as `dlq list --group GROUP` prints them"));
                };
                match out {
                    Output::Json => output::json(&letter),
                    Output::Text => output::letter_detail(&letter),
                }
            }
            Dlq::Replay { id } => {
                dlq.replay(id).await?;
                match out {
                    Output::Json => output::json(&json!({ "replayed": id })),
                    Output::Text => eprintln!("replayed {id}"),
                }
            }
            Dlq::Parked { group } => {
                if let Some(group) = group {
                    require_group(cli, bus, group).await?;
                }
                let query = DeadLetterQuery {
                    group: group.clone(),
                    limit: None,
                };
                let parked = dlq.parked(&query).await?;
                for p in &parked {
                    match out {
                        Output::Json => output::json(p),
                        Output::Text => println!(
                            "{}\t{}\thead {}\t{} parked behind it",
                            p.group, p.aggregate_id, p.head, p.parked
                        ),
                    }
                }
                if out == Output::Text {
                    eprintln!("{} parked aggregate(s)", parked.len());
                }
            }
            Dlq::Discard { id } => {
                if !dlq.discard(id).await? {
                    return Err(Failure::new(
                        Exit::NotFound,
                        format!("dead letter `{id}` not found on {}", place(cli, bus)),
                    ));
                }
                match out {
                    Output::Json => output::json(&json!({ "discarded": id })),
                    Output::Text => {
                        eprintln!("discarded {id}; what was parked behind it is released")
                    }
                }
            }
            Dlq::ReplayAll { group } => {
                let n = bulk(cli, bus, group, Bulk::Replay).await?;
                match out {
                    Output::Json => output::json(&json!({ "group": group, "replayed": n })),
                    Output::Text => eprintln!("replayed {n} dead letter(s) of `{group}`"),
                }
            }
            Dlq::Purge { group, yes } => {
                if !yes {
                    return Err(Failure::new(
                        Exit::Usage,
                        format!("purging deletes every dead letter of `{group}` for good"),
                    )
                    .hint("add --yes to confirm"));
                }
                // Members that parked these aggregates are not told: they
                // go on parking their next events (ADR 0010).
                let parked = dlq
                    .parked(&DeadLetterQuery::group(group))
                    .await
                    .map_or(0, |p| p.len());
                let n = bulk(cli, bus, group, Bulk::Purge).await?;
                match out {
                    Output::Json => output::json(
                        &json!({ "group": group, "purged": n, "parked_aggregates": parked }),
                    ),
                    Output::Text => {
                        eprintln!("purged {n} dead letter(s) of `{group}`");
                        if parked > 0 {
                            eprintln!(
                                "warning: {parked} aggregate(s) were parked behind the purged letters; \
                                 the members that parked them keep parking their next events until \
                                 one of those letters is replayed (`dlq parked --group {group}` lists \
                                 them). To release a parked aggregate, `dlq discard` its head instead"
                            );
                        }
                    }
                }
            }
        },
    }
    Ok(())
}

/// A bulk operation on a group's dead letters.
#[derive(Clone, Copy)]
enum Bulk {
    Replay,
    Purge,
}

/// Runs a bulk operation on `group`'s letters with progress; a failure
/// after some were done is `Partial`, and an empty, unknown group is
/// "not found".
async fn bulk(
    cli: &Cli,
    bus: &dyn EventBus,
    group: &str,
    op: Bulk,
) -> std::result::Result<usize, Failure> {
    let verb = match op {
        Bulk::Replay => "replayed",
        Bulk::Purge => "purged",
    };
    let progress = Progress::new(verb);
    let done = AtomicUsize::new(0);
    let report = |n: usize, total: usize| {
        done.store(n, Ordering::Relaxed);
        progress.step(n, total);
    };
    let dlq = bus.dead_letters();
    let query = DeadLetterQuery::group(group);
    let result = match op {
        Bulk::Replay => dlq.replay_all_with_progress(&query, &report).await,
        Bulk::Purge => dlq.purge_with_progress(&query, &report).await,
    };
    progress.finish();
    match result {
        Ok(0) => {
            require_group(cli, bus, group).await?;
            Ok(0)
        }
        Ok(n) => Ok(n),
        Err(e) => {
            let done = done.load(Ordering::Relaxed);
            if done == 0 {
                Err(e.into())
            } else {
                Err(Failure::new(
                    Exit::Partial,
                    format!("{verb} {done} dead letter(s) of `{group}`, then: {e}"),
                )
                .hint(format!(
                    "what was {verb} stays {verb}; run the command again for the rest"
                )))
            }
        }
    }
}
