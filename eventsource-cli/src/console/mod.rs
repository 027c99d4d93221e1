//! `eventsource console`: a web page for operators — consumer groups with
//! their backlog, members, in-flight handlers and dead letters, refreshing;
//! each group's dead letters with their failure; replay one or all, purge
//! with a confirmation. Server-rendered HTML (no JavaScript), read-only
//! unless started with `--allow-writes`.
//!
//! Every request is checked before it reaches a page ([`access`]): the
//! `Host` it names, a login session when the console has a token (always
//! with `--allow-writes`), and for a POST its origin and the form's CSRF
//! token. Every response forbids framing and loads nothing from elsewhere.
//!
//! Given an event store (`--store`), it also shows the store's targeted
//! replays ([`replays`]: start one, watch it, resume it) and process
//! managers' timeouts ([`timeouts`]).

mod access;
mod html;
mod replays;
mod timeouts;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Extension, Form, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use eventsource::store::SqlEventStore;
use eventsource::{DeadLetterQuery, EventBus, GroupStats};
use serde::Deserialize;

pub(crate) use access::{random_hex, Access, TokenSource, MIN_TOKEN_LEN};
use access::{same_origin, Session, SESSION_COOKIE};

/// What the pages need.
pub(crate) struct Console {
    pub(crate) bus: Arc<dyn EventBus>,
    /// Groups to show besides those the broker lists (RabbitMQ and Kafka
    /// do not list groups).
    pub(crate) groups: Vec<String>,
    pub(crate) allow_writes: bool,
    /// Where the bus is, passwords redacted.
    pub(crate) place: String,
    /// Hosts, login and sessions.
    pub(crate) access: Access,
    /// The event store, for the replay and timeout pages.
    pub(crate) store: Option<SqlEventStore>,
    /// Replays this console runs (or ran and saw stop), by id.
    pub(crate) replays: Mutex<BTreeMap<String, replays::Run>>,
}

/// The console's store, or a page saying how to give it one.
fn the_store(console: &Console) -> Result<&SqlEventStore, PageError> {
    console.store.as_ref().ok_or_else(|| {
        PageError(
            StatusCode::NOT_FOUND,
            "this console has no event store: start it with --store URL (or \
             EVENTSOURCE_STORE) to see replays and timeouts"
                .into(),
        )
    })
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
        .route("/replays", get(replays::list))
        .route("/replays/new", get(replays::preview))
        .route("/replays/start", post(replays::start))
        .route("/replays/resume", post(replays::resume))
        .route("/replays/status", get(replays::status))
        .route("/timeouts", get(timeouts::timeouts))
        .route("/login", get(login))
        .route("/style.css", get(style))
        .layer(middleware::from_fn_with_state(Arc::clone(&console), guard))
        .with_state(console)
}

/// The largest form a POST may carry.
const MAX_FORM: usize = 64 * 1024;

/// Headers on every response: no framing, nothing loaded from
/// elsewhere, forms posted only here, no caching of letters' payloads.
const SECURITY_HEADERS: [(header::HeaderName, &str); 6] = [
    (header::X_FRAME_OPTIONS, "DENY"),
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "same-origin"),
    (header::CACHE_CONTROL, "no-store"),
    (
        header::HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    ),
];

/// Checks every request before its page: the `Host` (421 otherwise), a
/// session where the console has a token (401), and for a POST its
/// origin and CSRF token (403). Adds [`SECURITY_HEADERS`] to every
/// response, refusals included.
async fn guard(State(console): Shared, request: Request, next: Next) -> Response {
    let mut response = match check(&console, request).await {
        Ok(request) => next.run(request).await,
        Err(refused) => refused.into_response(),
    };
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn check(console: &Console, request: Request) -> Result<Request, PageError> {
    let access = &console.access;
    let headers = request.headers();
    let host = header_str(headers, header::HOST)
        .unwrap_or_default()
        .to_owned();
    if !access.host_allowed(&host) {
        return Err(PageError(
            StatusCode::MISDIRECTED_REQUEST,
            "this console does not answer to that host name (it answers to IP addresses, \
             localhost and the names given with --allowed-host)"
                .into(),
        ));
    }
    let path = request.uri().path();
    let session = access.session(header_str(headers, header::COOKIE));
    if access.needs_login() && session.is_none() && path != "/login" && path != "/style.css" {
        return Err(PageError(
            StatusCode::UNAUTHORIZED,
            "log in first: open the login link the console printed when it started \
             (or enter its token below)"
                .into(),
        ));
    }
    if request.method() != Method::POST {
        let mut request = request;
        if let Some(session) = session {
            request.extensions_mut().insert(session);
        }
        return Ok(request);
    }
    if !same_origin(
        &host,
        header_str(headers, header::ORIGIN),
        header_str(headers, header::REFERER),
    ) {
        return Err(PageError(
            StatusCode::FORBIDDEN,
            "refused: the form was not posted from this console's own pages".into(),
        ));
    }
    let Some(session) = session else {
        return Err(PageError(
            StatusCode::FORBIDDEN,
            "this console is read-only: start it with --allow-writes to replay or purge".into(),
        ));
    };
    // The CSRF token is checked here, for every POST, before any page
    // reads the form.
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM).await.map_err(|_| {
        PageError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a form is at most {MAX_FORM} bytes"),
        )
    })?;
    let csrf = form_urlencoded::parse(&bytes)
        .find(|(name, _)| name == "csrf")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    if !session.csrf_matches(&csrf) {
        return Err(PageError(
            StatusCode::FORBIDDEN,
            "refused: the form's CSRF token is missing or stale (reload the page)".into(),
        ));
    }
    let mut request = Request::from_parts(parts, Body::from(bytes));
    request.extensions_mut().insert(session);
    Ok(request)
}

#[derive(Deserialize)]
struct LoginQuery {
    #[serde(default)]
    token: String,
}

/// The login link: opens a session for the right token and goes to the
/// overview (so the token leaves the address bar).
async fn login(State(console): Shared, Query(q): Query<LoginQuery>) -> Response {
    if !console.access.needs_login() {
        return Redirect::to("/").into_response();
    }
    match console.access.login(&q.token) {
        Some(id) => {
            let cookie = format!("{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict");
            let mut response = Redirect::to("/").into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        None => PageError(
            StatusCode::UNAUTHORIZED,
            "wrong token: open the login link the console printed when it started".into(),
        )
        .into_response(),
    }
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        html::STYLE,
    )
        .into_response()
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
        let login = self.0 == StatusCode::UNAUTHORIZED;
        (self.0, Html(html::error(self.0, &self.1, login))).into_response()
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

/// The CSRF token the forms of a page carry ("" without a session: then
/// the console is read-only and shows no form).
fn csrf(session: &Option<Extension<Session>>) -> &str {
    session.as_ref().map_or("", |s| s.0.csrf.as_str())
}

async fn group(
    State(console): Shared,
    session: Option<Extension<Session>>,
    Query(q): Query<GroupQuery>,
) -> Page {
    eventsource::helpers::validate_name("consumer group", &q.name)?;
    let stats = console.bus.group_stats(&q.name).await?;
    let letters = console
        .bus
        .dead_letters()
        .list(&DeadLetterQuery::group(&q.name))
        .await?;
    Ok(Html(html::group(
        &console,
        csrf(&session),
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

async fn letter(
    State(console): Shared,
    session: Option<Extension<Session>>,
    Query(q): Query<LetterQuery>,
) -> Page {
    let Some(letter) = console.bus.dead_letters().get(&q.id).await? else {
        return Err(PageError(
            StatusCode::NOT_FOUND,
            format!("dead letter `{}` not found", q.id),
        ));
    };
    Ok(Html(html::letter(&console, csrf(&session), &letter)))
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
    eventsource::helpers::validate_name("consumer group", &f.group)?;
    let n = console
        .bus
        .dead_letters()
        .replay_all(&DeadLetterQuery::group(&f.group))
        .await?;
    Ok(back_to(&f.group, &format!("replayed {n} dead letter(s)")))
}

async fn purge_confirm(
    State(console): Shared,
    session: Option<Extension<Session>>,
    Query(q): Query<GroupQuery>,
) -> Page {
    writable(&console)?;
    eventsource::helpers::validate_name("consumer group", &q.name)?;
    let count = console
        .bus
        .dead_letters()
        .list(&DeadLetterQuery::group(&q.name))
        .await?
        .len();
    Ok(Html(html::purge_confirm(
        &console,
        csrf(&session),
        &q.name,
        count,
    )))
}

async fn purge(State(console): Shared, Form(f): Form<GroupForm>) -> Result<Redirect, PageError> {
    writable(&console)?;
    eventsource::helpers::validate_name("consumer group", &f.group)?;
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

/// The address the console listens on, announced on stderr in one line,
/// with the login link when a token was generated (the only time the
/// token is shown) or where to find it when it was given.
pub(crate) fn announce(addr: SocketAddr, allow_writes: bool, login: Option<(TokenSource, &str)>) {
    let mode = if allow_writes {
        "replay and purge allowed"
    } else {
        "read-only"
    };
    let base = format!("http://{addr}/");
    match login {
        None => eprintln!("console on {base} ({mode})"),
        Some((TokenSource::Generated, token)) => {
            eprintln!("console on {base} ({mode}); log in at {base}login?token={token}")
        }
        Some((TokenSource::Given, _)) => eprintln!(
            "console on {base} ({mode}); log in at {base}login with the token you gave \
             (--token-file or EVENTSOURCE_CONSOLE_TOKEN)"
        ),
    }
}
