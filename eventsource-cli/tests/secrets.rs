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

/// `--help` names the variables it reads, never their values; a
/// configuration file with a password in the wrong field is refused
/// without echoing it.
#[test]
fn help_and_config_file_errors_never_show_a_password() {
    let url = format!("redis://:{SECRET}@127.0.0.1:1");
    for args in [
        &["--help"][..],
        &["console", "--help"],
        &["dlq", "list", "--help"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_eventsource"))
            .env("EVENTSOURCE_BUS", &url)
            .env("EVENTSOURCE_NAMESPACE", SECRET)
            .args(args)
            .output()
            .expect("run the eventsource binary");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}: {text}");
        assert!(text.contains("EVENTSOURCE_BUS"), "{args:?}: {text}");
        assert!(!text.contains(SECRET), "{args:?}: {text}");
    }
    let dir = std::env::temp_dir().join(format!("es-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let file = dir.join("eventsource.toml");
    std::fs::write(
        &file,
        format!("[bus]\nurl = \"memory://\"\n[groups.g]\nconcurrency = \"{url}\"\n"),
    )
    .expect("write the file");
    let out = Command::new(env!("CARGO_BIN_EXE_eventsource"))
        .arg("--config")
        .arg(&file)
        .args(["dlq", "list", "--group", "g"])
        .output()
        .expect("run the eventsource binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("concurrency"), "{stderr}");
    assert!(!stderr.contains(SECRET), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
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
