//! A password in a bus URL never shows: not in the error of a failed
//! connect, not in a config's `Debug`, not in any log line at `TRACE`, not
//! in the CLI's output. Each URL points at a closed port (127.0.0.1:1).

use std::process::Command;

use eventsource::BusConfig;
use eventsource_testkit::assert_never_shown;

const SECRET: &str = "s3cret";

/// Bus URLs carrying `SECRET` in every shape seen leak before: plain, with
/// a `/` in the password, without `//`.
fn urls() -> Vec<String> {
    let mut urls = Vec::new();
    for (scheme, tail) in [
        ("redis", "127.0.0.1:1"),
        ("amqp", "127.0.0.1:1/%2f"),
        ("kafka", "127.0.0.1:1"),
    ] {
        urls.push(format!("{scheme}://user:{SECRET}@{tail}"));
        urls.push(format!("{scheme}://user:{SECRET}/x@{tail}"));
        urls.push(format!("{scheme}:user:{SECRET}@{tail}"));
    }
    urls
}

#[tokio::test]
async fn a_password_never_shows_in_errors_debug_or_trace_logs() {
    for url in urls() {
        let shown = assert_never_shown(SECRET, async {
            let config = format!("{:?}", BusConfig::from_url(&url));
            let connected = tokio::time::timeout(
                std::time::Duration::from_secs(30),
                eventsource::connect_url(&url),
            )
            .await
            .unwrap_or_else(|_| panic!("connecting to a closed port must fail fast: {url}"));
            match connected {
                Ok(_) => panic!("nothing listens on 127.0.0.1:1, yet {url} connected"),
                Err(e) => format!("{config}\n{e}\n{e:?}"),
            }
        })
        .await;
        assert!(
            shown.contains("***") || !shown.contains("user:"),
            "{url}: the error should show the redacted URL: {shown}"
        );
    }
}

#[test]
fn the_cli_never_shows_a_password() {
    for url in urls() {
        let out = Command::new(env!("CARGO_BIN_EXE_eventsource"))
            .env("RUST_LOG", "trace")
            .args(["--bus", &url, "dlq", "list", "--group", "g"])
            .output()
            .expect("run the eventsource binary");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.status.success(),
            "{url}: a closed port must fail: {text}"
        );
        assert!(
            !text.contains(SECRET),
            "{url}: the CLI showed the password: {text}"
        );
    }
}

/// A consumer group the bus could never have (empty, spaces) is a usage
/// error with a reason, not an empty listing that exits 0.
#[test]
fn the_cli_refuses_a_group_name_no_subscription_could_have() {
    for group in ["", "a b"] {
        let out = Command::new(env!("CARGO_BIN_EXE_eventsource"))
            .args(["--bus", "memory://", "dlq", "list", "--group", group])
            .output()
            .expect("run the eventsource binary");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "group {group:?}: {stderr}");
        assert!(
            stderr.contains("consumer group"),
            "group {group:?}: {stderr}"
        );
    }
}
