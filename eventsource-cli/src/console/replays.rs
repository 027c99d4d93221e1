//! The replay pages: targeted replays recorded in the store, each with
//! its progress (refreshing while it runs); with writes allowed, a form
//! to start one (previewed with its count first, confirmed by typing the
//! group's name above the CLI's threshold) and a button to resume one
//! that stopped. A replay started here runs in the console's process.

use std::sync::Arc;

use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, Redirect};
use axum::Extension;
use eventsource::store::{ReplayOptions, ReplaySelection, ReplayStatus, TargetedReplay};
use serde::Deserialize;

use super::access::Session;
use super::html::{csrf_field, esc, page, query_value, when};
use super::{csrf, the_store, writable, Console, Page, PageError, Shared};
use crate::replay::{instant, CONFIRM_ABOVE};

/// A replay this console runs, or ran and saw fail.
pub(crate) enum Run {
    Running,
    Failed(String),
}

/// The form that selects and starts a replay (every field text, empty
/// when not given).
#[derive(Deserialize, Default)]
pub(crate) struct ReplayForm {
    #[serde(default)]
    group: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    aggregate_type: String,
    #[serde(default)]
    aggregate: String,
    #[serde(default)]
    event_type: String,
    #[serde(default)]
    rate: String,
    #[serde(default)]
    reprocess: Option<String>,
    #[serde(default)]
    confirm: Option<String>,
}

fn bad(field: &str, why: impl std::fmt::Display) -> PageError {
    PageError(StatusCode::BAD_REQUEST, format!("{field}: {why}"))
}

fn given(text: &str) -> Option<String> {
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

impl ReplayForm {
    fn selection(&self) -> Result<ReplaySelection, PageError> {
        let number = |field: &str, text: &str| -> Result<Option<u64>, PageError> {
            given(text)
                .map(|t| {
                    t.parse::<u64>()
                        .map_err(|_| bad(field, "not a whole number"))
                })
                .transpose()
        };
        let time = |field: &str, text: &str| {
            given(text)
                .map(|t| instant(&t).map_err(|e| bad(field, e)))
                .transpose()
        };
        let mut selection = ReplaySelection::new();
        selection.from_position = number("from", &self.from)?;
        selection.to_position = number("to", &self.to)?;
        selection.since = time("since", &self.since)?;
        selection.until = time("until", &self.until)?;
        selection.aggregate_type = given(&self.aggregate_type);
        selection.aggregate_ids = given(&self.aggregate).into_iter().collect();
        selection.event_types = given(&self.event_type).into_iter().collect();
        selection.validate()?;
        Ok(selection)
    }

    fn options(&self) -> Result<ReplayOptions, PageError> {
        let mut options = ReplayOptions::new().reprocess(self.reprocess.is_some());
        if let Some(rate) = given(&self.rate) {
            let rate: u32 = rate
                .parse()
                .map_err(|_| bad("rate", "not a whole number of events per second"))?;
            options = options.rate(rate);
        }
        options.validate()?;
        Ok(options)
    }

    fn group(&self) -> Result<String, PageError> {
        let group = given(&self.group).ok_or_else(|| bad("group", "name the consumer group"))?;
        eventsource::helpers::validate_name("consumer group", &group)?;
        Ok(group)
    }

    /// The form's fields as hidden inputs (the confirmation excluded).
    fn hidden(&self) -> String {
        let mut out = String::new();
        for (name, value) in [
            ("group", &self.group),
            ("since", &self.since),
            ("until", &self.until),
            ("from", &self.from),
            ("to", &self.to),
            ("aggregate_type", &self.aggregate_type),
            ("aggregate", &self.aggregate),
            ("event_type", &self.event_type),
            ("rate", &self.rate),
        ] {
            out.push_str(&format!(
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
                esc(value)
            ));
        }
        if self.reprocess.is_some() {
            out.push_str("<input type=\"hidden\" name=\"reprocess\" value=\"on\">");
        }
        out
    }
}

fn state(console: &Console, r: &ReplayStatus) -> String {
    if let Some(at) = r.finished_at {
        return format!("finished {}", when(&at));
    }
    let runs = console.replays.lock().unwrap_or_else(|p| p.into_inner());
    match runs.get(&r.id) {
        Some(Run::Running) => "running here".to_owned(),
        Some(Run::Failed(e)) => format!("stopped: {e}"),
        None => "stopped (resume it)".to_owned(),
    }
}

/// All replays, newest first, and the form to start one.
pub(crate) async fn list(State(console): Shared, session: Option<Extension<Session>>) -> Page {
    let replays = TargetedReplay::new(the_store(&console)?.clone());
    let all = replays.list().await?;
    let mut body = String::new();
    if all.is_empty() {
        body.push_str("<p id=\"no-replays\">No replays recorded in this store.</p>");
    } else {
        body.push_str(
            "<table id=\"replays\"><tr><th>replay</th><th>group</th><th>delivered</th>\
             <th>started</th><th>state</th></tr>",
        );
        for r in &all {
            body.push_str(&format!(
                "<tr class=\"replay\"><td><a href=\"/replays/status?id={}\">{}</a></td><td>{}</td>\
                 <td class=\"n\">{}/{}</td><td>{}</td><td>{}</td></tr>",
                query_value(&r.id),
                esc(&r.id),
                esc(&r.group),
                r.delivered,
                r.total,
                esc(&when(&r.started_at)),
                esc(&state(&console, r)),
            ));
        }
        body.push_str("</table>");
    }
    if console.allow_writes && session.is_some() {
        body.push_str(
            "<h2>Replay stored events to one group</h2><form method=\"get\" action=\"/replays/new\" id=\"new-replay\">\
             <p><label>group <input name=\"group\" required></label> \
             <label>since <input name=\"since\" placeholder=\"2026-12-01\"></label> \
             <label>until <input name=\"until\"></label> \
             <label>from position <input name=\"from\"></label> \
             <label>to position <input name=\"to\"></label></p>\
             <p><label>aggregate type <input name=\"aggregate_type\"></label> \
             <label>aggregate <input name=\"aggregate\"></label> \
             <label>event type <input name=\"event_type\"></label> \
             <label>rate per second <input name=\"rate\" value=\"500\"></label> \
             <label><input type=\"checkbox\" name=\"reprocess\"> reprocess (the inbox handles them again)</label></p>\
             <p><button id=\"preview\">Count them first</button></p></form>",
        );
    }
    Ok(Html(page(&console, "Replays", true, &body)))
}

/// What a replay would send: the count, and the confirmed form.
pub(crate) async fn preview(
    State(console): Shared,
    session: Option<Extension<Session>>,
    Query(form): Query<ReplayForm>,
) -> Page {
    writable(&console)?;
    let group = form.group()?;
    let selection = form.selection()?;
    form.options()?;
    let count = TargetedReplay::new(the_store(&console)?.clone())
        .count(&selection)
        .await?;
    let mut body = format!(
        "<p id=\"count\">{count} stored event(s) would be delivered again to group <b>{}</b> only.</p>",
        esc(&group)
    );
    if count == 0 {
        body.push_str("<p><a href=\"/replays\">Back</a>: nothing to replay.</p>");
    } else {
        let confirm = if count > CONFIRM_ABOVE {
            format!(
                "<p>More than {CONFIRM_ABOVE}: type the group's name to confirm \
                 <input name=\"confirm\" id=\"confirm\" autocomplete=\"off\"></p>"
            )
        } else {
            String::new()
        };
        body.push_str(&format!(
            "<form method=\"post\" action=\"/replays/start\">{}{}{confirm}\
             <button id=\"start\">Start the replay</button></form> <a href=\"/replays\">Cancel</a>",
            form.hidden(),
            csrf_field(csrf(&session)),
        ));
    }
    Ok(Html(page(&console, "Start a replay", false, &body)))
}

/// Starts the replay the form selects, and runs it here.
pub(crate) async fn start(
    State(console): Shared,
    Form(form): Form<ReplayForm>,
) -> Result<Redirect, PageError> {
    writable(&console)?;
    let group = form.group()?;
    let selection = form.selection()?;
    let options = form.options()?;
    let replays = TargetedReplay::new(the_store(&console)?.clone());
    let count = replays.count(&selection).await?;
    if count > CONFIRM_ABOVE && form.confirm.as_deref() != Some(group.as_str()) {
        return Err(bad(
            "confirm",
            format!("{count} events: type the group's name to confirm"),
        ));
    }
    let status = replays.start(&group, selection, options).await?;
    run(&console, replays, status.id.clone());
    Ok(Redirect::to(&format!(
        "/replays/status?id={}",
        query_value(&status.id)
    )))
}

#[derive(Deserialize)]
pub(crate) struct IdForm {
    id: String,
}

/// Resumes a replay that stopped.
pub(crate) async fn resume(
    State(console): Shared,
    Form(f): Form<IdForm>,
) -> Result<Redirect, PageError> {
    writable(&console)?;
    let replays = TargetedReplay::new(the_store(&console)?.clone());
    let Some(status) = replays.status(&f.id).await? else {
        return Err(PageError(
            StatusCode::NOT_FOUND,
            format!("replay `{}` not found", f.id),
        ));
    };
    if status.finished_at.is_none() {
        run(&console, replays, status.id.clone());
    }
    Ok(Redirect::to(&format!(
        "/replays/status?id={}",
        query_value(&status.id)
    )))
}

/// Runs replay `id` in a task, unless this console runs it already.
fn run(console: &Arc<Console>, replays: TargetedReplay, id: String) {
    {
        let mut runs = console.replays.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(runs.get(&id), Some(Run::Running)) {
            return;
        }
        runs.insert(id.clone(), Run::Running);
    }
    let console = Arc::clone(console);
    tokio::spawn(async move {
        let ran = replays.run(&id, console.bus.as_ref(), &|_| {}).await;
        let mut runs = console.replays.lock().unwrap_or_else(|p| p.into_inner());
        match ran {
            Ok(_) => {
                runs.remove(&id);
            }
            Err(e) => {
                eprintln!("replay {id}, started from the console, stopped: {e}");
                runs.insert(id, Run::Failed(e.to_string()));
            }
        }
    });
}

#[derive(Deserialize)]
pub(crate) struct IdQuery {
    id: String,
}

/// One replay's progress; refreshes until it finishes.
pub(crate) async fn status(
    State(console): Shared,
    session: Option<Extension<Session>>,
    Query(q): Query<IdQuery>,
) -> Page {
    let replays = TargetedReplay::new(the_store(&console)?.clone());
    let Some(r) = replays.status(&q.id).await? else {
        return Err(PageError(
            StatusCode::NOT_FOUND,
            format!("replay `{}` not found", q.id),
        ));
    };
    let state = state(&console, &r);
    let mut body = format!(
        "<table id=\"replay\"><tr><th>group</th><td>{}</td></tr>\
         <tr><th>delivered</th><td id=\"delivered\">{}/{}</td></tr>\
         <tr><th>rate</th><td>{}</td></tr><tr><th>reprocess</th><td>{}</td></tr>\
         <tr><th>started</th><td>{}</td></tr><tr><th>state</th><td id=\"state\">{}</td></tr></table>",
        esc(&r.group),
        r.delivered,
        r.total,
        r.options
            .rate
            .map_or("no cap".to_owned(), |n| format!("at most {n}/s")),
        if r.options.reprocess { "yes" } else { "no (an inbox skips what it handled)" },
        esc(&when(&r.started_at)),
        esc(&state),
    );
    let running = state == "running here";
    if r.finished_at.is_none() && !running && console.allow_writes && session.is_some() {
        body.push_str(&format!(
            "<form method=\"post\" action=\"/replays/resume\"><input type=\"hidden\" name=\"id\" value=\"{}\">{}\
             <button id=\"resume\">Resume</button></form>",
            esc(&r.id),
            csrf_field(csrf(&session)),
        ));
    }
    Ok(Html(page(
        &console,
        &format!("Replay {}", r.id),
        r.finished_at.is_none(),
        &body,
    )))
}
