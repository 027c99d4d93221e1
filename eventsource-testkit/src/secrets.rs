//! Checks that a secret never shows: not in an error, not in a `Debug`,
//! not in any log line at `TRACE`.

use std::future::Future;
use std::io::Write;
use std::sync::Arc;

use parking_lot::Mutex;

/// Bus URLs carrying `secret` as the password in every shape seen leak
/// before — plain, with a `/` in the password, without `//`, with each of
/// `@ % : # ?` or non-ASCII in it, in a `?password=` query — for Redis,
/// RabbitMQ, Kafka and NATS, each pointing at a closed port (127.0.0.1:1).
pub fn urls_with_password(secret: &str) -> Vec<String> {
    let mut urls = Vec::new();
    for (scheme, tail) in [
        ("redis", "127.0.0.1:1"),
        ("redis+cluster", "127.0.0.1:1,127.0.0.1:2"),
        ("amqp", "127.0.0.1:1/%2f"),
        ("kafka", "127.0.0.1:1"),
        ("nats", "127.0.0.1:1"),
    ] {
        urls.push(format!("{scheme}://user:{secret}@{tail}"));
        urls.push(format!("{scheme}://user:{secret}/x@{tail}"));
        urls.push(format!("{scheme}:user:{secret}@{tail}"));
        // The characters a URL treats specially, and non-ASCII.
        for odd in ["@", "%", ":", "#", "?", "ä€"] {
            urls.push(format!("{scheme}://user:a{odd}{secret}@{tail}"));
        }
        // A password in the query (sqlx reads `?password=`).
        let sep = if tail.contains('?') { '&' } else { '?' };
        urls.push(format!("{scheme}://user@{tail}{sep}password={secret}"));
    }
    urls
}

/// Collects what the `fmt` layer writes.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `work` with every `tracing` event down to `TRACE` recorded (on
/// this thread: run it on a current-thread runtime), then fails the test
/// if `secret` appears in what `work` returned (its text) or in the logs.
/// Returns the text, for further checks.
pub async fn assert_never_shown<F>(secret: &str, work: F) -> String
where
    F: Future<Output = String>,
{
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let shown = work.await;
    let logged = String::from_utf8_lossy(&logs.0.lock()).into_owned();
    assert!(
        !shown.contains(secret),
        "the secret appears in what was shown: {shown}"
    );
    assert!(
        !logged.contains(secret),
        "the secret appears in the logs:\n{logged}"
    );
    shown
}
