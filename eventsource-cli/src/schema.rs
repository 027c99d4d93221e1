//! `schema check`: every stored event, dead letter and parked letter
//! against the application's schema manifest.

use std::path::Path;
use std::time::Duration;

use eventsource::manifest::{Census, SchemaManifest};
use eventsource::{connect_bus, DeadLetterQuery};

use crate::exit::{Exit, Failure};
use crate::output::{self, Output};
use crate::Cli;

/// `schema check --manifest FILE [--group G]…`.
pub(crate) async fn check(cli: &Cli, manifest: &Path, groups: &[String]) -> Result<(), Failure> {
    let text = std::fs::read_to_string(manifest).map_err(|e| {
        Failure::new(
            Exit::Usage,
            format!("cannot read the manifest {}: {e}", manifest.display()),
        )
        .hint("write it from the application: SchemaManifest::…().to_json()")
    })?;
    let manifest = SchemaManifest::from_json(&text)?;
    let store = crate::commands::store(cli).await?;
    let mut found = store.event_census().await?;
    // The bus, when one is named: its dead and parked letters too.
    let letters = match crate::commands::bus_config(cli) {
        Ok(config) => {
            let bus = connect_bus(&config).await.map_err(Failure::connecting)?;
            let dlq = bus.dead_letters();
            let mut letters = Vec::new();
            if groups.is_empty() {
                letters.extend(dlq.list(&DeadLetterQuery::all()).await?);
            }
            for group in groups {
                letters.extend(dlq.list(&DeadLetterQuery::group(group)).await?);
            }
            let _ = bus.shutdown(Duration::from_secs(5)).await;
            Some(letters)
        }
        Err(_) => None,
    };
    if let Some(letters) = &letters {
        found.extend(Census::of_letters(letters));
    }
    let report = manifest.check(&found);
    match cli.output {
        Output::Json => output::json(&report),
        Output::Text => {
            for problem in &report.problems {
                println!("{problem}");
            }
            println!(
                "checked {} stored event(s){}; {} without a path to the current type",
                found
                    .iter()
                    .filter(|c| c.found == eventsource::manifest::Found::Stored)
                    .map(|c| c.count)
                    .sum::<u64>(),
                match &letters {
                    Some(l) => format!(" and {} letter(s)", l.len()),
                    None => " (no bus given: letters not checked)".into(),
                },
                report.failing()
            );
        }
    }
    if report.passed() {
        Ok(())
    } else {
        Err(Failure::new(
            Exit::Failure,
            format!(
                "schema check: {} event(s) or letter(s) in {} kind(s) have no path to the current type",
                report.failing(),
                report.problems.len()
            ),
        )
        .hint("register the missing upcasters (or deploy the newer consumer) and check again"))
    }
}
