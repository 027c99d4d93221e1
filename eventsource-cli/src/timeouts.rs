//! `eventsource timeouts list`: process managers' durable timeouts.

use chrono::{DateTime, Utc};
use eventsource::store::{ScheduledTimeout, TimeoutScheduler};

use crate::commands::Outcome;
use crate::output::{self, Output};
use crate::Cli;

/// Where a timeout stands at `now` (the CLI's list and the console's
/// page), its times written by `at`.
pub(crate) fn state(
    t: &ScheduledTimeout,
    now: DateTime<Utc>,
    at: impl Fn(&DateTime<Utc>) -> String,
) -> String {
    match (t.fired_at, t.cancelled_at) {
        (_, Some(when)) => format!("cancelled {}", at(&when)),
        (Some(when), None) => format!("fired {}", at(&when)),
        (None, None) if t.due_at <= now => "due now".to_owned(),
        (None, None) => format!("due in {} s", (t.due_at - now).num_seconds()),
    }
}

/// Lists the store's timeouts (pending only unless `all`).
pub(crate) async fn list(cli: &Cli, process: Option<&str>, all: bool) -> Outcome {
    let store = crate::commands::store(cli).await?;
    let timeouts = TimeoutScheduler::list(&store, process, all).await?;
    match cli.output {
        Output::Json => output::json(&timeouts),
        Output::Text => {
            if timeouts.is_empty() {
                println!("no {}timeouts", if all { "" } else { "pending " });
            }
            let now = chrono::Utc::now();
            for t in &timeouts {
                let state = state(t, now, DateTime::to_string);
                println!(
                    "{}  {}  instance {}  timeout {}  group {}  due {}  {state}",
                    t.id, t.process, t.instance, t.name, t.group, t.due_at
                );
            }
        }
    }
    Ok(())
}
