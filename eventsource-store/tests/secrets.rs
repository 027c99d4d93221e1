//! A database password never shows: not in the error of a failed connect,
//! not in `StoreConfig`'s `Debug`, not in any log line at `TRACE`.

use eventsource_store::{SqlEventStore, StoreConfig};
use eventsource_testkit::assert_never_shown;

const SECRET: &str = "s3cret";

#[tokio::test]
async fn a_password_never_shows_in_errors_debug_or_trace_logs() {
    for url in [
        format!("postgres://app:{SECRET}@127.0.0.1:1/test"),
        format!("postgres://app:{SECRET}/x@127.0.0.1:1/test"),
        format!("postgres:app:{SECRET}@127.0.0.1:1/test"),
        // sqlx reads a password from the query too.
        format!("postgres://app@127.0.0.1:1/test?password={SECRET}"),
        format!("postgres://app@127.0.0.1:1/test?sslmode=disable&sslpassword={SECRET}"),
        format!("postgres://app:a%25b:{SECRET}@127.0.0.1:1/test"),
        format!("postgres://app:ä€{SECRET}@127.0.0.1:1/test"),
    ] {
        assert_never_shown(SECRET, async {
            let built = StoreConfig::new(url.as_str()).validated();
            let debug = format!("{built:?}");
            match built {
                Err(e) => format!("{debug}\n{e}\n{e:?}"),
                Ok(config) => match SqlEventStore::connect(config).await {
                    Ok(_) => panic!("nothing listens on 127.0.0.1:1, yet {url} connected"),
                    Err(e) => format!("{debug}\n{e}\n{e:?}"),
                },
            }
        })
        .await;
    }
}

/// An unreachable PostgreSQL is reported as what it is (connection
/// refused, with host and port), at once, not as "pool timed out".
#[tokio::test]
async fn an_unreachable_database_is_reported_as_refused_with_host_and_port() {
    let started = std::time::Instant::now();
    let connected = SqlEventStore::connect(
        StoreConfig::new("postgres://app@127.0.0.1:1/test")
            .validated()
            .expect("valid config"),
    )
    .await;
    let Err(err) = connected else {
        panic!("nothing listens on 127.0.0.1:1, yet the store connected");
    };
    let text = err.to_string();
    assert!(
        text.to_lowercase().contains("refused") && text.contains("127.0.0.1:1"),
        "{text}"
    );
    assert!(!text.contains("pool timed out"), "{text}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "a refused connection is known at once, took {:?}",
        started.elapsed()
    );
}
