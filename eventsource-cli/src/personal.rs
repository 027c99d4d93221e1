//! `forget` and `subjects show`: a data subject's key in the store, and
//! the streams that hold its data.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use eventsource::personal::{KeyStore, Shredder, SubjectStatus};
use eventsource::store::{SqlEventStore, SqlKeyStore};
use eventsource::{connect_bus, EventStore};
use serde_json::json;

use crate::exit::{Exit, Failure};
use crate::output::{self, Output, Progress};
use crate::Cli;

use crate::commands::Outcome;

/// Events read per page while scanning the store.
const PAGE: usize = 1_000;

/// The streams holding sealed data of `subject`, with how many events
/// each: a scan of the whole store (progress on stderr).
async fn streams_of(
    store: &SqlEventStore,
    subject: &str,
) -> std::result::Result<BTreeMap<String, u64>, Failure> {
    let progress = Progress::new("events scanned");
    let (mut after, mut scanned, mut streams) = (0, 0, BTreeMap::new());
    loop {
        let page = store.read_all(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        for recorded in &page {
            if Shredder::subject_of(&recorded.envelope)?.as_deref() == Some(subject) {
                *streams.entry(recorded.stream.clone()).or_insert(0) += 1;
            }
        }
        scanned += page.len();
        // The total is not known up front: report what is done so far.
        progress.step(scanned, scanned + usize::from(page.len() == PAGE));
    }
    Ok(streams)
}

fn status_json(status: SubjectStatus) -> serde_json::Value {
    match status {
        SubjectStatus::Unknown => json!({ "status": "unknown" }),
        SubjectStatus::Remembered { since } => json!({ "status": "remembered", "since": since }),
        SubjectStatus::Forgotten { at } => json!({ "status": "forgotten", "at": at }),
    }
}

fn status_text(status: SubjectStatus) -> String {
    match status {
        SubjectStatus::Unknown => "unknown (no key was ever made for it)".into(),
        SubjectStatus::Remembered { since } => format!("remembered (key made {since})"),
        SubjectStatus::Forgotten { at } => format!("forgotten at {at}"),
    }
}

/// `subjects show SUBJECT`.
pub(crate) async fn show(cli: &Cli, subject: &str) -> Outcome {
    let store = crate::commands::store(cli).await?;
    let status = SqlKeyStore::new(&store).status(subject).await?;
    let streams = streams_of(&store, subject).await?;
    match cli.output {
        Output::Json => {
            let mut v = status_json(status);
            v["subject"] = json!(subject);
            v["streams"] = json!(streams
                .iter()
                .map(|(s, n)| json!({ "stream": s, "events": n }))
                .collect::<Vec<_>>());
            output::json(&v);
        }
        Output::Text => {
            println!("subject  {subject}");
            println!("key      {}", status_text(status));
            if streams.is_empty() {
                println!("no stored event holds its data");
            }
            for (stream, n) in &streams {
                println!("  {stream}  {n} event(s)");
            }
        }
    }
    Ok(())
}

/// `forget SUBJECT [--yes]`: without `--yes`, says what it would do.
pub(crate) async fn forget(cli: &Cli, subject: &str, yes: bool) -> Outcome {
    if subject.trim().is_empty() {
        return Err(Failure::new(Exit::Usage, "the subject is empty"));
    }
    let store = crate::commands::store(cli).await?;
    let keys = Arc::new(SqlKeyStore::new(&store));
    let status = keys.status(subject).await?;
    if !yes {
        let streams = streams_of(&store, subject).await?;
        let events: u64 = streams.values().sum();
        return Err(Failure::new(
            Exit::Usage,
            format!(
                "forgetting `{subject}` ({}) deletes its key for good: {events} stored event(s) in \
                 {} stream(s), and every copy on the bus, will read with replacement values",
                status_text(status),
                streams.len()
            ),
        )
        .hint("run it again with --yes to forget"));
    }
    // The bus, when one is named, hears of it (projections delete rows).
    let bus = match crate::commands::bus_config(cli) {
        Ok(config) => Some(connect_bus(&config).await.map_err(Failure::connecting)?),
        Err(_) => None,
    };
    let shredder = Shredder::new(keys);
    let at = shredder.forget(subject, bus.as_deref()).await?;
    if let Some(bus) = &bus {
        let _ = bus.shutdown(Duration::from_secs(5)).await;
    }
    match cli.output {
        Output::Json => output::json(&json!({
            "subject": subject,
            "forgotten_at": at,
            "announced": bus.is_some(),
        })),
        Output::Text => {
            println!("forgot `{subject}` (recorded at {at})");
            match &bus {
                Some(bus) => println!("published SubjectForgotten on {}", bus.backend()),
                None => println!("no bus given: SubjectForgotten was not published (pass --bus)"),
            }
        }
    }
    Ok(())
}
