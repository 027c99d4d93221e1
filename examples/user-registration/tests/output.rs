//! Runs the example against the local RabbitMQ (./scripts/test.sh starts
//! it) and checks the refusal, the routing table and the wire headers.

use std::process::Command;

#[test]
fn patterns_route_as_documented_and_invalid_events_are_refused() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_user-registration"));
    if let Ok(url) = std::env::var("AMQP_URL") {
        command.arg(url);
    }
    let out = command.output().expect("the example runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the example failed (is RabbitMQ running? ./scripts/test.sh starts it):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.lines().any(
            |l| l.starts_with("  refused: event `user.registered` of u-2")
                && l.contains("email `not-an-email` has no @; nothing was published")
        ),
        "{stdout}"
    );
    for line in [
        "  user.registered  user.registered [domain]",
        "  user.*           user.registered [domain]",
        "  user.#           user.onboarding.completed [user], user.registered [domain]",
        "  *.registered     admin.registered [system], user.registered [domain]",
        "  #.completed      payment.completed [integration], user.onboarding.completed [user]",
        "  cloudEvents:source = user-service",
        "  cloudEvents:type = registered",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing `{line}` in:\n{stdout}"
        );
    }
}
