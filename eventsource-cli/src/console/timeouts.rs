//! The timeouts page: process managers' durable timeouts in the store,
//! pending ones (or all), soonest due first. Read-only.

use axum::extract::{Query, State};
use axum::response::Html;
use eventsource::store::TimeoutScheduler;
use serde::Deserialize;

use super::html::{esc, page, query_value, when};
use super::{the_store, Page, Shared};

#[derive(Deserialize)]
pub(crate) struct TimeoutsQuery {
    #[serde(default)]
    all: Option<String>,
    #[serde(default)]
    process: Option<String>,
}

pub(crate) async fn timeouts(State(console): Shared, Query(q): Query<TimeoutsQuery>) -> Page {
    let store = the_store(&console)?;
    let process = q.process.as_deref().filter(|p| !p.is_empty());
    let all = q.all.is_some();
    let listed = TimeoutScheduler::list(store, process, all).await?;
    let now = chrono::Utc::now();
    let mut body = String::from(if all {
        "<p><a href=\"/timeouts\">pending only</a></p>"
    } else {
        "<p><a href=\"/timeouts?all=1\">fired and cancelled too</a></p>"
    });
    if listed.is_empty() {
        body.push_str(&format!(
            "<p class=\"ok\" id=\"no-timeouts\">No {}timeouts.</p>",
            if all { "" } else { "pending " }
        ));
    } else {
        body.push_str(
            "<table id=\"timeouts\"><tr><th>process</th><th>instance</th><th>timeout</th>\
             <th>group</th><th>due</th><th>state</th></tr>",
        );
        for t in &listed {
            let state = crate::timeouts::state(t, now, when);
            body.push_str(&format!(
                "<tr class=\"timeout\"><td><a href=\"/timeouts?process={}\">{}</a></td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                query_value(&t.process),
                esc(&t.process),
                esc(&t.instance),
                esc(&t.name),
                esc(&t.group),
                esc(&when(&t.due_at)),
                esc(&state),
            ));
        }
        body.push_str("</table>");
    }
    Ok(Html(page(&console, "Timeouts", true, &body)))
}
