//! `replay`: stored events delivered again to one consumer group
//! (`eventsource_store::TargetedReplay`), with a dry run, a confirmation
//! above a threshold, a rate, progress, and `--resume` after a crash.

use std::time::Duration;

use chrono::{DateTime, Utc};
use eventsource::connect_bus;
use eventsource::store::{ReplayOptions, ReplaySelection, TargetedReplay};
use serde_json::json;

use crate::exit::{Exit, Failure};
use crate::output::{self, Output, Progress};
use crate::{Cli, ReplayArgs};

use crate::commands::Outcome;

/// A replay of more events than this needs `--yes`.
pub(crate) const CONFIRM_ABOVE: u64 = 1_000;

/// An instant as `--since`/`--until` take it: RFC 3339, or a date (its
/// midnight, UTC).
pub(crate) fn instant(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
        .map_err(|_| {
            format!("`{s}` is not an RFC 3339 time (2026-12-05T10:00:00Z) or a date (2026-12-05)")
        })
}

fn selection(args: &ReplayArgs) -> ReplaySelection {
    ReplaySelection {
        from_position: args.from,
        to_position: args.to,
        since: args.since,
        until: args.until,
        aggregate_type: args.aggregate_type.clone(),
        aggregate_ids: args.aggregates.clone(),
        event_types: args.event_types.clone(),
    }
}

/// `replay --list`.
async fn list(cli: &Cli, replays: &TargetedReplay) -> Outcome {
    let all = replays.list().await?;
    match cli.output {
        Output::Json => output::json(&all),
        Output::Text => {
            if all.is_empty() {
                println!("no replays recorded in this store");
            }
            for status in &all {
                let state = match status.finished_at {
                    Some(at) => format!("finished {at}"),
                    None => format!(
                        "stopped at {}/{}: resume with --resume {}",
                        status.delivered, status.total, status.id
                    ),
                };
                println!(
                    "{}  group {}  {}/{} events  started {}  {state}",
                    status.id, status.group, status.delivered, status.total, status.started_at
                );
            }
        }
    }
    Ok(())
}

/// `replay …`: list, resume, dry run, or start and run one.
pub(crate) async fn replay(cli: &Cli, args: &ReplayArgs) -> Outcome {
    let replays = TargetedReplay::new(crate::commands::store(cli).await?);
    if args.list {
        return list(cli, &replays).await;
    }
    let status = match (&args.resume, &args.group) {
        (Some(id), _) => replays.status(id).await?.ok_or_else(|| {
            Failure::new(Exit::NotFound, format!("no replay `{id}` in this store"))
                .hint("list them with `eventsource replay --list`")
        })?,
        (None, Some(group)) => {
            let selection = selection(args);
            let count = replays.count(&selection).await?;
            if args.dry_run {
                match cli.output {
                    Output::Json => {
                        output::json(&json!({ "group": group, "events": count, "dry_run": true }))
                    }
                    Output::Text => println!(
                        "{count} stored event(s) would be delivered again to group `{group}`"
                    ),
                }
                return Ok(());
            }
            if count > CONFIRM_ABOVE && !args.yes {
                return Err(Failure::new(
                    Exit::Usage,
                    format!("{count} stored event(s) would be delivered again to group `{group}`, more than {CONFIRM_ABOVE}"),
                )
                .hint("narrow the selection, or run it again with --yes"));
            }
            let options = ReplayOptions {
                rate: args.rate,
                reprocess: args.reprocess,
                ..ReplayOptions::default()
            };
            replays.start(group, selection, options).await?
        }
        (None, None) => {
            return Err(Failure::new(
                Exit::Usage,
                "replay needs --group (or --resume ID, or --list)",
            ))
        }
    };
    eprintln!(
        "replay {} to group `{}`: {} event(s){}; if it stops, resume it with `eventsource replay --resume {}`",
        status.id,
        status.group,
        status.total,
        status.options.rate.map(|r| format!(" at most {r}/s")).unwrap_or_default(),
        status.id
    );
    let bus = connect_bus(&crate::commands::bus_config(cli)?)
        .await
        .map_err(Failure::connecting)?;
    let progress = Progress::new("events replayed");
    let to_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    let ran = replays
        .run(&status.id, &*bus, &|s| {
            progress.step(to_usize(s.delivered), to_usize(s.total.max(s.delivered)))
        })
        .await;
    progress.finish();
    let _ = bus.shutdown(Duration::from_secs(5)).await;
    let done = match ran {
        Ok(done) => done,
        Err(e) => {
            let hint = format!(
                "what was delivered stays delivered; resume with `eventsource replay --resume {}`",
                status.id
            );
            let delivered = replays
                .status(&status.id)
                .await
                .ok()
                .flatten()
                .map_or(0, |s| s.delivered);
            let mut stopped = Failure::from(e);
            if delivered > 0 {
                stopped = Failure::new(
                    Exit::Partial,
                    format!(
                        "replay stopped after {delivered} of {} event(s): {}",
                        status.total, stopped.message
                    ),
                );
            }
            return Err(stopped.hint(hint));
        }
    };
    match cli.output {
        Output::Json => output::json(&done),
        Output::Text => println!(
            "replayed {} event(s) to group `{}` (replay {})",
            done.delivered, done.group, done.id
        ),
    }
    Ok(())
}
