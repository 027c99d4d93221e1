//! Runs the pipeline on the in-process bus, then `rebuild` against the
//! store it left, and checks both agree with what happened.

use std::process::Command;

fn run(store: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_order-pipeline"))
        .args(args)
        .env("ORDER_PIPELINE_STORE", store)
        .output()
        .expect("the example runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_pipeline_runs_and_a_rebuild_from_the_store_equals_the_live_projection() {
    let path = std::env::temp_dir().join(format!("order-pipeline-test-{}.db", std::process::id()));
    let store = format!("sqlite://{}", path.display());
    let live = run(&store, &[]);
    for line in [
        "[inventory]    reserved 1 x keyboard for order-1",
        "[payment]      charged grace 898.00 for order-2",
        "Dead letters in `payment`: 1",
        "Event store holds 4 events.",
        "The rebuilt projection equals the live one (3 orders).",
    ] {
        assert!(
            live.lines().any(|l| l == line),
            "missing `{line}` in:\n{live}"
        );
    }
    let rebuilt = run(&store, &["rebuild"]);
    for line in [
        "Rebuilt from the store (4 events):",
        "  order-1: shipped, 12900 cents",
        "  order-2: placed, 89800 cents",
        "  order-3: placed, 2700 cents",
        "The rebuilt projection equals the live one (3 orders).",
    ] {
        assert!(
            rebuilt.lines().any(|l| l == line),
            "missing `{line}` in:\n{rebuilt}"
        );
    }
    let _ = std::fs::remove_file(path);
}
