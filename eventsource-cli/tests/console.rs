//! The web console end to end, in headless Chromium driven over WebDriver:
//! an application dead-letters an event on Redis; the operator opens the
//! console, sees the group and the letter with its failure, fixes the bug,
//! presses Replay, and the handler receives the event.
//!
//! Needs Debian's `chromium` and `chromium-driver` (./scripts/test.sh
//! installs them). Set `EVENTSOURCE_UPDATE_SCREENSHOT=1` to write the
//! README's screenshot (docs/console.png); otherwise it goes to the
//! target directory.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{
    address, announced, dead_lettered_order, nats_bus, nats_url, redis_bus, redis_url, Killed,
};
use eventsource::{handler_fn, HandlerError, RetryPolicy, Subscription};
use eventsource_testkit::{dead_letters_of, free_port, probe};
use fantoccini::{ClientBuilder, Locator};

/// Starts chromedriver and waits until it listens.
fn chromedriver() -> (Killed, u16) {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "chromedriver could not start ({e}): install Debian's chromium and chromium-driver \
                 (./scripts/test.sh does)"
            )
        });
    let child = Killed::new(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "chromedriver did not listen on port {port} within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, port)
}

/// Starts a read-only `eventsource console` on `namespace` (no login
/// needed on a loopback address); its address.
fn read_only_console(bus_url: &str, namespace: &str) -> (Killed, String) {
    let (child, line) = console_line(bus_url, namespace, &[]);
    assert!(
        line.contains("read-only") && !line.contains("login"),
        "{line}"
    );
    (child, address(&line))
}

/// A WebDriver session in headless Chromium, and the driver behind it.
async fn browser() -> (fantoccini::Client, Killed) {
    let (driver, port) = chromedriver();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,700"],
        }),
    );
    let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session in headless Chromium");
    (browser, driver)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_replays_a_dead_letter_from_the_browser() {
    let (namespace, bus) = redis_bus("es-console").await;
    let mut billing = dead_lettered_order(&bus).await;
    let sent = billing.sent.clone();

    let (_console, line) = console_line(&redis_url(), &namespace, &["--allow-writes"]);
    let url = address(&line);
    let (browser, _driver) = browser().await;

    // Without the login link, the console shows nothing.
    browser.goto(&url).await.expect("open the console");
    let refused = browser
        .wait()
        .for_element(Locator::Id("error"))
        .await
        .expect("a login is asked for");
    assert!(refused.text().await.expect("text").contains("log in"));
    browser
        .goto(&login_link(&line))
        .await
        .expect("open the login link");

    // The overview (where the login link leads): billing with one dead letter.
    let row = browser
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("tr[data-group='billing']"))
        .await
        .expect("billing is listed");
    let cells = row.text().await.expect("row text");
    assert!(cells.ends_with('1'), "one dead letter: {cells:?}");

    // The group: the letter and its failure.
    row.find(Locator::LinkText("billing"))
        .await
        .expect("link")
        .click()
        .await
        .expect("open the group");
    let letter = browser
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("tr.letter"))
        .await
        .expect("the dead letter is listed");
    let text = letter.text().await.expect("text");
    assert!(text.contains("tax service says no"), "{text}");
    assert!(text.contains("order-7"), "{text}");
    take_screenshot(&browser).await;

    // The letter, fixed, replayed.
    letter
        .find(Locator::Css("a"))
        .await
        .expect("link")
        .click()
        .await
        .expect("open the letter");
    let event = browser
        .wait()
        .for_element(Locator::Id("event"))
        .await
        .expect("the event is shown");
    assert!(
        event
            .text()
            .await
            .expect("text")
            .contains(&sent.event_id.to_string()),
        "the letter shows its event"
    );
    billing.fixed.store(true, Ordering::SeqCst);
    browser
        .find(Locator::Id("replay"))
        .await
        .expect("a Replay button (writes allowed)")
        .click()
        .await
        .expect("replay");
    let got = tokio::time::timeout(Duration::from_secs(10), billing.handled.recv())
        .await
        .expect("the replayed event reaches the handler")
        .expect("open");
    assert_eq!(got, sent.event_id);
    let done = browser
        .wait()
        .for_element(Locator::Id("done"))
        .await
        .expect("the group page says what was done");
    assert!(done.text().await.expect("text").contains("replayed"));
    browser
        .find(Locator::Id("no-letters"))
        .await
        .expect("no dead letters left");

    browser.close().await.expect("close the browser");
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

/// A page on another port of the same host (another origin, the same
/// site, so the browser sends the console's cookie along) that posts a
/// form to the console as soon as it loads.
async fn hostile_site(console: &str, letter: &str) -> (String, tokio::task::JoinHandle<()>) {
    let console = console.trim_end_matches('/').to_owned();
    let forms = [
        ("replay", format!("<input name=id value=\"{letter}\">")),
        ("replay-all", "<input name=group value=billing>".to_owned()),
        (
            "purge",
            "<input name=group value=billing><input name=confirm value=billing><input name=csrf value=guess>"
                .to_owned(),
        ),
    ];
    let mut app = axum::Router::new();
    for (action, fields) in forms {
        let page = format!(
            "<!doctype html><html><body onload=\"document.forms[0].submit()\">\
             <form method=post action=\"{console}/{action}\">{fields}</form></body></html>"
        );
        app = app.route(
            &format!("/{action}"),
            axum::routing::get(move || async move { axum::response::Html(page) }),
        );
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port for the hostile site");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let served = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, served)
}

/// An operator logged in to a writable console visits a hostile page on
/// another port, which auto-submits replay, replay-all and purge forms
/// to the console: each is refused and no letter changes. The
/// operator's own purge, from the console's page, still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_page_cannot_replay_or_purge() {
    let (namespace, bus) = redis_bus("es-console").await;
    let letters = failing_billing(&bus, 3).await;
    let ids = |letters: &[eventsource::DeadLetter]| {
        let mut ids: Vec<String> = letters.iter().map(|l| l.id.clone()).collect();
        ids.sort();
        ids
    };
    let before = ids(&letters);

    let (_console, line) = console_line(&redis_url(), &namespace, &["--allow-writes"]);
    let url = address(&line);
    let (hostile, _served) = hostile_site(&url, &letters[0].id).await;
    let (browser, _driver) = browser().await;
    browser
        .goto(&login_link(&line))
        .await
        .expect("the operator logs in");
    browser
        .wait()
        .for_element(Locator::Css("tr[data-group='billing']"))
        .await
        .expect("logged in: billing is listed");

    for action in ["replay", "replay-all", "purge"] {
        browser
            .goto(&format!("{hostile}/{action}"))
            .await
            .expect("visit the hostile page");
        let refused = browser
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Id("error"))
            .await
            .unwrap_or_else(|e| panic!("{action}: the console's refusal is shown ({e})"));
        let text = refused.text().await.expect("text");
        assert!(text.contains("refused"), "{action}: {text}");
        let now = bus
            .dead_letters()
            .list(&eventsource::DeadLetterQuery::group("billing"))
            .await
            .expect("list");
        assert_eq!(ids(&now), before, "{action}: no letter replayed or purged");
    }

    // The operator's own session: purge from the console's page.
    browser
        .goto(&format!("{}purge?name=billing", url))
        .await
        .expect("the purge page");
    browser
        .wait()
        .for_element(Locator::Id("confirm"))
        .await
        .expect("the confirmation field")
        .send_keys("billing")
        .await
        .expect("type the group");
    browser
        .find(Locator::Id("purge-confirmed"))
        .await
        .expect("the Purge button")
        .click()
        .await
        .expect("purge");
    let done = browser
        .wait()
        .for_element(Locator::Id("done"))
        .await
        .expect("the group page says what was done");
    assert!(done.text().await.expect("text").contains("purged 3"));
    assert_eq!(letters_of(&bus, "billing").await, 0);

    browser.close().await.expect("close the browser");
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

/// Saves what the browser shows: the README's screenshot when asked,
/// the target directory otherwise.
async fn take_screenshot(browser: &fantoccini::Client) {
    let png = browser.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = if std::env::var_os("EVENTSOURCE_UPDATE_SCREENSHOT").is_some() {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/console.png").to_owned()
    } else {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/console.png").to_owned()
    };
    std::fs::write(&path, png).unwrap_or_else(|e| panic!("writing {path}: {e}"));
}

/// One HTTP/1.1 request over a plain connection, with extra `headers`
/// (a `Host` among them replaces the console's own): the status line
/// and the whole response.
fn request(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    form: &str,
) -> (String, String) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(addr).expect("the console listens");
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    write!(
        stream,
        "{head}Content-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let status = response.lines().next().unwrap_or_default().to_owned();
    (status, response)
}

/// A request without a session, as a script or another page would send.
fn http(base: &str, method: &str, path: &str, form: &str) -> (String, String) {
    request(base, method, path, &[], form)
}

/// An operator logged in over HTTP: the session cookie, and what the
/// console's own forms send.
struct Operator {
    base: String,
    cookie: String,
    origin: String,
}

impl Operator {
    /// Opens the login link the console announced.
    fn log_in(line: &str) -> Operator {
        let link = login_link(line);
        let base = address(line);
        let path = &link[base.trim_end_matches('/').len()..];
        let (status, response) = http(&base, "GET", path, "");
        assert!(status.contains("303"), "the login link logs in: {response}");
        let cookie = response
            .lines()
            .find_map(|l| {
                l.strip_prefix("set-cookie: ")
                    .or_else(|| l.strip_prefix("Set-Cookie: "))
            })
            .unwrap_or_else(|| panic!("a session cookie: {response}"));
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        let cookie = cookie.split(';').next().expect("name=value").to_owned();
        let origin = base.trim_end_matches('/').to_owned();
        Operator {
            base,
            cookie,
            origin,
        }
    }

    fn get(&self, path: &str) -> (String, String) {
        request(&self.base, "GET", path, &[("Cookie", &self.cookie)], "")
    }

    /// The CSRF token in the forms of the page at `path`.
    fn csrf(&self, path: &str) -> String {
        let (status, page) = self.get(path);
        assert!(status.contains("200"), "{page}");
        let at = page
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("a CSRF field on {path}: {page}"));
        let rest = &page[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').expect("closing quote")].to_owned()
    }

    /// Posts `form` as the console's own page would.
    fn post(&self, path: &str, form: &str) -> (String, String) {
        request(
            &self.base,
            "POST",
            path,
            &[("Cookie", &self.cookie), ("Origin", &self.origin)],
            form,
        )
    }
}

/// The login link in an announcement.
fn login_link(line: &str) -> String {
    line.split_whitespace()
        .find(|w| w.contains("/login?token="))
        .unwrap_or_else(|| panic!("no login link in {line:?}"))
        .to_owned()
}

async fn letters_of(bus: &std::sync::Arc<dyn eventsource::EventBus>, group: &str) -> usize {
    bus.dead_letters()
        .list(&eventsource::DeadLetterQuery::group(group))
        .await
        .expect("list")
        .len()
}

/// A `billing` group whose handler always fails, with `n` dead letters.
async fn failing_billing(
    bus: &std::sync::Arc<dyn eventsource::EventBus>,
    n: u64,
) -> Vec<eventsource::DeadLetter> {
    let _member = bus
        .subscribe(
            Subscription::builder("billing")
                .retry(RetryPolicy::no_retry())
                .handler(handler_fn(|_e| async {
                    Err(HandlerError::permanent("<script>alert(1)</script>"))
                }))
                .build()
                .expect("valid"),
        )
        .await
        .expect("subscribe");
    let events: Vec<_> = (1..=n)
        .map(|i| probe(&format!("order-{i}"), 1, i))
        .collect();
    bus.publish(&events).await.expect("publish");
    dead_letters_of(bus, "billing", n as usize, Duration::from_secs(10)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_allow_writes_and_a_purge_needs_the_group_typed() {
    let (namespace, bus) = redis_bus("es-console").await;
    writes_need_allow_writes_and_a_purge_needs_the_group_typed_on(&redis_url(), &namespace, bus)
        .await;
}

/// The same on NATS JetStream: the console reads, refuses and purges a
/// group's dead-letter stream as it does Redis's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_nats_writes_need_allow_writes_and_a_purge_needs_the_group_typed() {
    let (namespace, bus) = nats_bus("es-console").await;
    writes_need_allow_writes_and_a_purge_needs_the_group_typed_on(&nats_url(), &namespace, bus)
        .await;
}

async fn writes_need_allow_writes_and_a_purge_needs_the_group_typed_on(
    url: &str,
    namespace: &str,
    bus: std::sync::Arc<dyn eventsource::EventBus>,
) {
    let letters = failing_billing(&bus, 2).await;

    // Read-only: no buttons, and the write endpoints refuse.
    let (_read_only, base) = read_only_console(url, namespace);
    let (status, page) = http(&base, "GET", "/group?name=billing", "");
    assert!(status.contains("200"), "{status}");
    assert!(
        !page.contains("replay-all") && !page.contains("Purge"),
        "{page}"
    );
    assert!(
        page.contains("&lt;script&gt;") && !page.contains("<script>alert"),
        "the error text is escaped: {page}"
    );
    let origin = [("Origin", base.trim_end_matches('/'))];
    let (status, _) = request(
        &base,
        "POST",
        "/replay",
        &origin,
        &format!("id={}", letters[0].id),
    );
    assert!(status.contains("403"), "{status}");
    let (status, _) = request(
        &base,
        "POST",
        "/purge",
        &origin,
        "group=billing&confirm=billing",
    );
    assert!(status.contains("403"), "{status}");

    // Writable: a purge without the group's name typed is refused.
    let (_console, line) = console_line(url, namespace, &["--allow-writes"]);
    let operator = Operator::log_in(&line);
    let (status, page) = operator.get("/purge?name=billing");
    assert!(
        status.contains("200") && page.contains("all 2 dead letter(s)"),
        "{page}"
    );
    let csrf = operator.csrf("/purge?name=billing");
    let (status, _) = operator.post("/purge", &format!("group=billing&confirm=bill&csrf={csrf}"));
    assert!(status.contains("400"), "{status}");
    assert_eq!(letters_of(&bus, "billing").await, 2, "nothing purged");
    let (status, response) = operator.post(
        "/purge",
        &format!("group=billing&confirm=billing&csrf={csrf}"),
    );
    assert!(status.contains("303"), "{response}");
    assert!(response.contains("purged%202"), "{response}");
    dead_letters_of(&bus, "billing", 0, Duration::from_secs(1)).await;
    assert_eq!(letters_of(&bus, "billing").await, 0);
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

/// Starts the console on `namespace` with `extra` arguments; the process
/// and its announcement.
fn console_line(bus_url: &str, namespace: &str, extra: &[&str]) -> (Killed, String) {
    let mut args = vec!["--bus", bus_url, "--namespace", namespace];
    args.extend(["console", "--listen", "127.0.0.1:0"]);
    args.extend(extra);
    announced(&args)
}

/// DNS rebinding and cross-site forms: a request naming another host is
/// refused (421) on every page; with writes allowed, every page needs a
/// session; a POST needs the console's own origin and its session's
/// CSRF token; a purge that fails any of these deletes nothing. Every
/// response forbids framing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_answers_only_its_own_host_origin_and_session() {
    let (namespace, bus) = redis_bus("es-console").await;
    let letters = failing_billing(&bus, 3).await;

    let (_read_only, base) = read_only_console(&redis_url(), &namespace);
    for path in [
        "/",
        "/group?name=billing",
        &format!("/letter?id={}", letters[0].id),
    ] {
        let (status, response) = request(&base, "GET", path, &[("Host", "evil.example")], "");
        assert!(status.contains("421"), "{path}: {response}");
        assert!(!response.contains("order-1"), "{path}: {response}");
        let (status, _) = request(&base, "GET", path, &[("Host", "evil.example:80")], "");
        assert!(status.contains("421"), "{path}: {status}");
    }
    let port = base.trim_end_matches('/').rsplit(':').next().expect("port");
    let (status, response) = request(
        &base,
        "GET",
        "/",
        &[("Host", &format!("localhost:{port}"))],
        "",
    );
    assert!(status.contains("200"), "{response}");
    for header in [
        "x-frame-options: DENY",
        "content-security-policy: default-src 'self'; frame-ancestors 'none'",
    ] {
        assert!(
            response
                .to_ascii_lowercase()
                .contains(&header.to_ascii_lowercase()),
            "{header}: {response}"
        );
    }

    let (_console, line) = console_line(&redis_url(), &namespace, &["--allow-writes"]);
    let base = address(&line);
    // Without a session nothing is shown, let alone done.
    let (status, response) = http(&base, "GET", "/group?name=billing", "");
    assert!(status.contains("401"), "{response}");
    assert!(!response.contains("order-1"), "{response}");
    let (status, _) = http(&base, "GET", "/login?token=wrong", "");
    assert!(status.contains("401"), "{status}");

    let operator = Operator::log_in(&line);
    let csrf = operator.csrf("/purge?name=billing");
    let purge = format!("group=billing&confirm=billing&csrf={csrf}");
    let cookie = ("Cookie", operator.cookie.as_str());
    type Headers<'a> = Vec<(&'a str, &'a str)>;
    let refused: [(&str, Headers<'_>, String); 7] = [
        (
            "another origin",
            vec![cookie, ("Origin", "http://evil.example")],
            purge.clone(),
        ),
        (
            "another port",
            vec![cookie, ("Origin", "http://127.0.0.1:1")],
            purge.clone(),
        ),
        (
            "an opaque origin",
            vec![cookie, ("Origin", "null")],
            purge.clone(),
        ),
        (
            "another referer",
            vec![cookie, ("Referer", "http://evil.example/x")],
            purge.clone(),
        ),
        ("no origin or referer", vec![cookie], purge.clone()),
        (
            "no CSRF token",
            vec![cookie, ("Origin", operator.origin.as_str())],
            "group=billing&confirm=billing".into(),
        ),
        (
            "no session",
            vec![("Origin", operator.origin.as_str())],
            purge.clone(),
        ),
    ];
    for (what, headers, form) in &refused {
        let (status, response) = request(&base, "POST", "/purge", headers, form);
        assert!(
            status.contains("403") || status.contains("401"),
            "{what}: {response}"
        );
        let (status, _) = request(&base, "POST", "/replay-all", headers, "group=billing");
        assert!(
            status.contains("403") || status.contains("401"),
            "{what}: {status}"
        );
    }
    let (status, _) = operator.post(
        "/purge",
        &format!("group=billing&confirm=billing&csrf={}x", csrf),
    );
    assert!(status.contains("403"), "a wrong CSRF token: {status}");
    let (status, _) = request(
        &base,
        "POST",
        "/purge",
        &[
            cookie,
            ("Origin", "http://evil.example"),
            ("Host", "evil.example"),
        ],
        &purge,
    );
    assert!(status.contains("421"), "a rebound host name: {status}");
    assert_eq!(letters_of(&bus, "billing").await, 3, "nothing was purged");

    // The operator's own form still works.
    let (status, response) = operator.post("/purge", &purge);
    assert!(status.contains("303"), "{response}");
    assert_eq!(letters_of(&bus, "billing").await, 0);
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

/// A console other machines can reach needs a token of the operator's
/// own, or the explicit flag; with a token every page needs a login,
/// even read-only.
#[test]
fn a_console_on_a_non_loopback_address_needs_a_token() {
    let out = Command::new(env!("CARGO_BIN_EXE_eventsource"))
        .env_remove("EVENTSOURCE_CONSOLE_TOKEN")
        .args(["--bus", "memory://", "console", "--listen", "0.0.0.0:0"])
        .output()
        .expect("run the eventsource binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("refusing") && stderr.contains("--token-file"),
        "{stderr}"
    );

    let token = "a-token-of-my-own-0123456789";
    let mut child = Command::new(env!("CARGO_BIN_EXE_eventsource"))
        .env("EVENTSOURCE_CONSOLE_TOKEN", token)
        .args(["--bus", "memory://", "console", "--listen", "0.0.0.0:0"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the eventsource binary");
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("piped"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut line).expect("announced");
    let _console = Killed::new(child);
    assert!(line.contains("log in at"), "{line}");
    assert!(
        !line.contains(token),
        "a given token is never printed: {line}"
    );
    let port = address(&line)
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .expect("port")
        .to_owned();
    let base = format!("http://127.0.0.1:{port}/");
    let (status, _) = http(&base, "GET", "/", "");
    assert!(
        status.contains("401"),
        "read-only, yet a login is needed: {status}"
    );
    let (status, _) = http(&base, "GET", &format!("/login?token={token}"), "");
    assert!(status.contains("303"), "{status}");

    for short in ["short", "   "] {
        let out = Command::new(env!("CARGO_BIN_EXE_eventsource"))
            .env("EVENTSOURCE_CONSOLE_TOKEN", short)
            .args(["--bus", "memory://", "console", "--listen", "127.0.0.1:0"])
            .output()
            .expect("run the eventsource binary");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("at least 16"), "{stderr}");
    }
}

/// With `--store`, the console shows the store's timeouts and replays
/// (#28, #31): an operator previews a replay of 30 stored events to one
/// group, starts it, watches it finish, and the group (only it) gets the
/// 30; a read-only console shows the pages and refuses to start one; a
/// console without a store says how to give it one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_starts_a_replay_and_sees_timeouts() {
    use eventsource::process::Commands;
    use eventsource::store::{ProcessRunner, SqlEventStore, StoreConfig};
    use eventsource::{EventEnvelope, EventHandler, EventStore, ExpectedVersion};
    use eventsource_testkit::checkout::{CheckoutSaga, OrderEvent};
    use eventsource_testkit::Recorder;

    let (namespace, bus) = redis_bus("es-console").await;
    let (mut g, handler) = Recorder::new("replayed group");
    let _g = bus
        .subscribe(
            Subscription::builder("g")
                .handler(handler)
                .build()
                .expect("valid"),
        )
        .await
        .expect("subscribe");
    let (mut other, handler) = Recorder::new("other group");
    let _o = bus
        .subscribe(
            Subscription::builder("other")
                .handler(handler)
                .build()
                .expect("valid"),
        )
        .await
        .expect("subscribe");
    let path =
        std::env::temp_dir().join(format!("es-console-{}.db", uuid::Uuid::now_v7().simple()));
    let store_url = format!("sqlite://{}", path.display());
    let store = SqlEventStore::connect(StoreConfig::new(&store_url).validated().expect("config"))
        .await
        .expect("store");
    for i in 1..=30 {
        let e: EventEnvelope = probe(&format!("order-{i}"), 1, i);
        store
            .append(&e.stream_name(), ExpectedVersion::Any, &[e])
            .await
            .expect("append");
    }
    // A checkout saga's payment timeout, pending.
    let placed = EventEnvelope::new("o-1", 1, &OrderEvent::Placed { amount: 0 })
        .expect("envelope")
        .with_correlation_id("o-1");
    let runner = ProcessRunner::new(store.clone(), CheckoutSaga, Commands::new(), "checkout");
    assert!(
        runner.handle(&placed).await.is_err(),
        "no Payment repository: the step stays"
    );

    let redis = redis_url();
    let with_store = |extra: &[&str]| {
        let mut args = vec![
            "--bus",
            redis.as_str(),
            "--namespace",
            &namespace,
            "--store",
            &store_url,
        ];
        args.extend(["console", "--listen", "127.0.0.1:0"]);
        args.extend(extra);
        announced(&args)
    };
    let (_console, line) = with_store(&["--allow-writes"]);
    let operator = Operator::log_in(&line);

    let (status, page) = operator.get("/timeouts");
    assert!(status.contains("200"), "{page}");
    assert!(
        page.contains("<td>o-1</td><td>payment</td><td>checkout</td>") && page.contains("due in"),
        "{page}"
    );

    let (status, page) = operator.get("/replays");
    assert!(
        status.contains("200") && page.contains("No replays"),
        "{page}"
    );
    let preview = "/replays/new?group=g&since=&rate=1000";
    let (status, page) = operator.get(preview);
    assert!(status.contains("200"), "{page}");
    assert!(
        page.contains("30 stored event(s) would be delivered again to group <b>g</b>"),
        "{page}"
    );
    let csrf = operator.csrf(preview);
    let (status, response) =
        operator.post("/replays/start", &format!("group=g&rate=1000&csrf={csrf}"));
    assert!(status.contains("303"), "{response}");
    let location = response
        .lines()
        .find_map(|l| {
            l.strip_prefix("location: ")
                .or_else(|| l.strip_prefix("Location: "))
        })
        .expect("a redirect to the replay")
        .trim()
        .to_owned();
    assert!(location.starts_with("/replays/status?id="), "{location}");
    let got = g.expect(30, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 30);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, page) = operator.get(&location);
        if page.contains("finished") {
            assert!(page.contains("<td id=\"delivered\">30/30</td>"), "{page}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replay did not finish: {page}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    other.expect_nothing(Duration::from_millis(300)).await;
    // A bad field is a 400 naming it.
    let (status, page) = operator.get("/replays/new?group=g&since=yesterday");
    assert!(status.contains("400") && page.contains("since"), "{page}");

    // Read-only: the pages, no form, no start.
    let (_read_only, line) = with_store(&[]);
    let base = address(&line);
    let (status, page) = http(&base, "GET", "/replays", "");
    assert!(
        status.contains("200") && page.contains("finished"),
        "{page}"
    );
    assert!(!page.contains("new-replay"), "{page}");
    let (status, _) = http(&base, "GET", "/replays/new?group=g", "");
    assert!(status.contains("403"), "{status}");
    let origin = [("Origin", base.trim_end_matches('/'))];
    let (status, _) = request(&base, "POST", "/replays/start", &origin, "group=g");
    assert!(status.contains("403"), "{status}");

    // No store: the pages say how to give one.
    let (_no_store, base) = read_only_console(&redis_url(), &namespace);
    let (status, page) = http(&base, "GET", "/timeouts", "");
    assert!(
        status.contains("404") && page.contains("--store"),
        "{status} {page}"
    );
    let _ = std::fs::remove_file(path);
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}
