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

use common::{address, announced, dead_lettered_order, redis_bus, redis_url, Killed};
use eventsource::{handler_fn, HandlerError, RetryPolicy, Subscription};
use eventsource_testkit::{dead_letters_of, probe};
use fantoccini::{ClientBuilder, Locator};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

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

/// Starts `eventsource console --allow-writes` on `namespace`; its address.
fn console(namespace: &str, writes: bool) -> (Killed, String) {
    let url = redis_url();
    let mut args = vec!["--bus", &url, "--namespace", namespace];
    args.extend(["console", "--listen", "127.0.0.1:0"]);
    if writes {
        args.push("--allow-writes");
    }
    let (child, line) = announced(&args);
    assert!(
        line.contains(if writes {
            "replay and purge allowed"
        } else {
            "read-only"
        }),
        "{line}"
    );
    (child, address(&line))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_replays_a_dead_letter_from_the_browser() {
    let (namespace, bus) = redis_bus("es-console").await;
    let mut billing = dead_lettered_order(&bus).await;
    let sent = billing.sent.clone();

    let (_console, url) = console(&namespace, true);
    let (_driver, port) = chromedriver();
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

    // The overview: billing with one dead letter.
    browser.goto(&url).await.expect("open the console");
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

/// One HTTP/1.1 request over a plain connection: the status line and the
/// whole response.
fn http(base: &str, method: &str, path: &str, form: &str) -> (String, String) {
    use std::io::{Read, Write};
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(host).expect("the console listens");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let status = response.lines().next().unwrap_or_default().to_owned();
    (status, response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_allow_writes_and_a_purge_needs_the_group_typed() {
    let (namespace, bus) = redis_bus("es-console").await;
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
    bus.publish(&[probe("order-1", 1, 1), probe("order-2", 1, 2)])
        .await
        .expect("publish");
    let letters = dead_letters_of(&bus, "billing", 2, Duration::from_secs(10)).await;

    // Read-only: no buttons, and the write endpoints refuse.
    let (_read_only, base) = console(&namespace, false);
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
    let (status, _) = http(&base, "POST", "/replay", &format!("id={}", letters[0].id));
    assert!(status.contains("403"), "{status}");
    let (status, _) = http(&base, "POST", "/purge", "group=billing&confirm=billing");
    assert!(status.contains("403"), "{status}");

    // Writable: a purge without the group's name typed is refused.
    let (_console, base) = console(&namespace, true);
    let (status, page) = http(&base, "GET", "/purge?name=billing", "");
    assert!(
        status.contains("200") && page.contains("all 2 dead letter(s)"),
        "{page}"
    );
    let (status, _) = http(&base, "POST", "/purge", "group=billing&confirm=bill");
    assert!(status.contains("400"), "{status}");
    assert_eq!(
        bus.dead_letters()
            .list(&eventsource::DeadLetterQuery::group("billing"))
            .await
            .expect("list")
            .len(),
        2,
        "nothing purged"
    );
    let (status, response) = http(&base, "POST", "/purge", "group=billing&confirm=billing");
    assert!(status.contains("303"), "{response}");
    assert!(response.contains("purged%202"), "{response}");
    dead_letters_of(&bus, "billing", 0, Duration::from_secs(1)).await;
    assert!(bus
        .dead_letters()
        .list(&eventsource::DeadLetterQuery::group("billing"))
        .await
        .expect("list")
        .is_empty());
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}
