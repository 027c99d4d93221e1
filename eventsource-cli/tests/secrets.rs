//! The `eventsource` command never shows a password, and refuses what no
//! subscription could be. Each URL points at a closed port (127.0.0.1:1).

use std::process::Command;

const SECRET: &str = "s3cret";

/// Bus URLs carrying `SECRET`, in every shape seen leak before.
fn urls() -> Vec<String> {
    eventsource_testkit::urls_with_password(SECRET)
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
