//! `eventsource console`: a web page for operators — consumer groups with
//! their backlog, members, in-flight handlers and dead letters, refreshing;
//! each group's dead letters with their failure; replay one or all, purge
//! with a confirmation. Server-rendered HTML (no JavaScript), read-only
//! unless started with `--allow-writes`.

mod html;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use eventsource::{DeadLetterQuery, EventBus, GroupStats};
use serde::Deserialize;

/// What the pages need.
pub(crate) struct Console {
    pub(crate) bus: Arc<dyn EventBus>,
    /// Groups to show besides those the broker lists (RabbitMQ and Kafka
    /// do not list groups).
    pub(crate) groups: Vec<String>,
    pub(crate) allow_writes: bool,
    /// Where the bus is, passwords redacted.
    pub(crate) place: String,
}

type Shared = State<Arc<Console>>;

/// The console's routes.
pub(crate) fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/group", get(group))
        .route("/letter", get(letter))
        .route("/replay", post(replay))
        .route("/replay-all", post(replay_all))
        .route("/purge", get(purge_confirm).post(purge))
        .with_state(console)
}

/// Serves the console on `listener` until the process ends.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    console: Arc<Console>,
) -> std::io::Result<()> {
    axum::serve(listener, router(console)).await
}

/// A failure shown as a page, with its status.
struct PageError(StatusCode, String);

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        (self.0, Html(html::error(self.0, &self.1))).into_response()
    }
}

impl From<eventsource::Error> for PageError {
    fn from(e: eventsource::Error) -> Self {
        let status = match e {
            eventsource::Error::NotFound { .. } => StatusCode::NOT_FOUND,
            eventsource::Error::Config(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::BAD_GATEWAY,
        };
        PageError(status, e.to_string())
    }
}

type Page = Result<Html<String>, PageError>;

/// The groups `stats` reports, and those named with `--group` that it
/// does not (asked of the broker one by one), by name.
async fn group_rows(console: &Console) -> Result<Vec<(String, Option<GroupStats>)>, PageError> {
    let mut rows: BTreeMap<String, Option<GroupStats>> = console
        .bus
        .stats()
        .await?
        .groups
        .into_iter()
        .map(|(name, stats)| (name, Some(stats)))
        .collect();
    for name in &console.groups {
        if !rows.contains_key(name) {
            let stats = console.bus.group_stats(name).await?;
            rows.insert(name.clone(), stats);
        }
    }
    Ok(rows.into_iter().collect())
}

async fn overview(State(console): Shared) -> Page {
    let rows = group_rows(&console).await?;
    Ok(Html(html::overview(&console, &rows)))
}

#[derive(Deserialize)]
struct GroupQuery {
    name: String,
    done: Option<String>,
}

async fn group(State(console): Shared, Query(q): Query<GroupQuery>) -> Page {
    eventsource::validate_name("consumer group", &q.name)?;
    let stats = console.bus.group_stats(&q.name).await?;
    let letters = console
        .bus
        .dead_letters()
        .list(&DeadLetterQuery::group(&q.name))
        .await?;
    Ok(Html(html::group(
        &console,
        &q.name,
        stats.as_ref(),
        &letters,
        q.done.as_deref(),
    )))
}

#[derive(Deserialize)]
struct LetterQuery {
    id: String,
}

async fn letter(State(console): Shared, Query(q): Query<LetterQuery>) -> Page {
    let Some(letter) = console.bus.dead_letters().get(&q.id).await? else {
        return Err(PageError(
            StatusCode::NOT_FOUND,
            format!("dead letter `{}` not found", q.id),
        ));
    };
    Ok(Html(html::letter(&console, &letter)))
}

fn writable(console: &Console) -> Result<(), PageError> {
    if console.allow_writes {
        Ok(())
    } else {
        Err(PageError(
            StatusCode::FORBIDDEN,
            "this console is read-only: start it with --allow-writes to replay or purge".into(),
        ))
    }
}

fn back_to(group: &str, done: &str) -> Redirect {
    Redirect::to(&format!(
        "/group?name={}&done={}",
        html::query_value(group),
        html::query_value(done)
    ))
}

#[derive(Deserialize)]
struct ReplayForm {
    id: String,
}

async fn replay(State(console): Shared, Form(f): Form<ReplayForm>) -> Result<Redirect, PageError> {
    writable(&console)?;
    let dlq = console.bus.dead_letters();
    let group = dlq
        .get(&f.id)
        .await?
        .map(|l| l.failure.group)
        .ok_or_else(|| {
            PageError(
                StatusCode::NOT_FOUND,
                format!("dead letter `{}` not found", f.id),
            )
        })?;
    dlq.replay(&f.id).await?;
    Ok(back_to(&group, &format!("replayed {}", f.id)))
}

#[derive(Deserialize)]
struct GroupForm {
    group: String,
    #[serde(default)]
    confirm: Option<String>,
}

async fn replay_all(
    State(console): Shared,
    Form(f): Form<GroupForm>,
) -> Result<Redirect, PageError> {
    writable(&console)?;
    eventsource::validate_name("consumer group", &f.group)?;
    let n = console
        .bus
        .dead_letters()
        .replay_all(&DeadLetterQuery::group(&f.group))
        .await?;
    Ok(back_to(&f.group, &format!("replayed {n} dead letter(s)")))
}

async fn purge_confirm(State(console): Shared, Query(q): Query<GroupQuery>) -> Page {
    writable(&console)?;
    eventsource::validate_name("consumer group", &q.name)?;
    let count = console
        .bus
        .dead_letters()
        .list(&DeadLetterQuery::group(&q.name))
        .await?
        .len();
    Ok(Html(html::purge_confirm(&console, &q.name, count)))
}

async fn purge(State(console): Shared, Form(f): Form<GroupForm>) -> Result<Redirect, PageError> {
    writable(&console)?;
    eventsource::validate_name("consumer group", &f.group)?;
    if f.confirm.as_deref() != Some(f.group.as_str()) {
        return Err(PageError(
            StatusCode::BAD_REQUEST,
            "type the group's name to confirm the purge".into(),
        ));
    }
    let n = console
        .bus
        .dead_letters()
        .purge(&DeadLetterQuery::group(&f.group))
        .await?;
    Ok(back_to(&f.group, &format!("purged {n} dead letter(s)")))
}

/// The address the console listens on, announced on stderr.
pub(crate) fn announce(addr: SocketAddr, allow_writes: bool) {
    eprintln!(
        "console on http://{addr}/ ({})",
        if allow_writes {
            "replay and purge allowed"
        } else {
            "read-only"
        }
    );
}
