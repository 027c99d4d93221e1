//! `eventsource timeouts list`: process managers' durable timeouts.

use eventsource::store::TimeoutScheduler;

use crate::commands::Outcome;
use crate::output::{self, Output};
use crate::Cli;

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
                let state = match (t.fired_at, t.cancelled_at) {
                    (_, Some(at)) => format!("cancelled {at}"),
                    (Some(at), None) => format!("fired {at}"),
                    (None, None) if t.due_at <= now => "due now".to_owned(),
                    (None, None) => format!("due in {}s", (t.due_at - now).num_seconds()),
                };
                println!(
                    "{}  {}  instance {}  timeout {}  group {}  due {}  {state}",
                    t.id, t.process, t.instance, t.name, t.group, t.due_at
                );
            }
        }
    }
    Ok(())
}
