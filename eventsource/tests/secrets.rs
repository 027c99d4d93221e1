//! A password in a bus URL never shows: not in the error of a failed
//! connect, not in a config's `Debug`, not in any log line at `TRACE`, not
//! in the CLI's output (`eventsource-cli/tests/secrets.rs`). Each URL
//! points at a closed port (127.0.0.1:1).

use eventsource::BusConfig;
use eventsource_testkit::assert_never_shown;

const SECRET: &str = "s3cret";

/// Bus URLs carrying `SECRET`, in every shape seen leak before.
fn urls() -> Vec<String> {
    eventsource_testkit::urls_with_password(SECRET)
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

/// A configuration that holds a password in its store URL (in the
/// authority or the query) never shows it in `Debug`, and a password put
/// in a field that wants something else is not echoed by the error.
#[test]
fn config_debug_and_config_errors_never_show_a_password() {
    for store in [
        format!("postgres://app:{SECRET}@db/events"),
        format!("postgres://app@db/events?sslmode=require&password={SECRET}"),
        format!("postgres://app:a/b@c%d#{SECRET}@db/events"),
    ] {
        let config = eventsource::Config::from_json(
            &serde_json::json!({ "bus": { "url": "memory://" }, "store": store }).to_string(),
        )
        .expect("valid");
        let shown = format!("{config:?}");
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(shown.contains("***"), "{shown}");
    }
    let url = format!("redis://:{SECRET}@h:1");
    let bad = [
        format!("[bus]\nurl = \"memory://\"\n[groups.billing]\nconcurrency = \"{url}\"\n"),
        format!("[bus]\nurl = \"redis://127.0.0.1:1\"\nprefetch = \"{url}\"\n"),
        format!("[bus]\nurl = \"redis://127.0.0.1:1\"\nnamespace = 7\nblock = \"{url}\"\n"),
        format!("store = 5\n[bus]\nurl = \"memory://\"\nzzz = \"{url}\"\n"),
    ];
    for toml in &bad {
        let err = eventsource::Config::from_toml(toml).expect_err("a wrong type");
        let shown = format!("{err}\n{err:?}");
        assert!(!shown.contains(SECRET), "{toml}: {shown}");
    }
    let json =
        format!(r#"{{"bus":{{"url":"memory://"}},"groups":{{"g":{{"concurrency":"{url}"}}}}}}"#);
    let err = eventsource::Config::from_json(&json).expect_err("a wrong type");
    assert!(!format!("{err}{err:?}").contains(SECRET), "{err}");
    let err = eventsource::Config::from_vars([
        ("EVENTSOURCE_BUS".to_owned(), "memory://".to_owned()),
        (
            "EVENTSOURCE_GROUP_BILLING_CONCURRENCY".to_owned(),
            url.clone(),
        ),
    ])
    .expect_err("not a number");
    assert!(!format!("{err}{err:?}").contains(SECRET), "{err}");
    assert!(
        !err.to_string()
            .contains("invalid configuration: invalid configuration"),
        "{err}"
    );
}
