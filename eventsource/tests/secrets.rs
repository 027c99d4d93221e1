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
