//! Runs the example and checks what the ledger, the tax service and the
//! event log report.

use std::process::Command;

#[test]
fn ledger_tax_and_event_log_add_up() {
    let out = Command::new(env!("CARGO_BIN_EXE_invoices"))
        .output()
        .expect("the example runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        // 10,000 + 20 % and 5,000 + 5 %; 25,000 + 20 %; 1,000 + 0 %.
        "  ada: 17250 cents",
        "  grace: 30000 cents",
        "  linus: 1000 cents",
        "  0%: 0 cents",
        "  20%: 7000 cents",
        "  5%: 250 cents",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing `{line}` in:\n{stdout}"
        );
    }
    let logged: Vec<&str> = stdout
        .lines()
        .skip_while(|l| *l != "Event log:")
        .skip(1)
        .collect();
    assert_eq!(logged.len(), 4, "{stdout}");
    for (line, id) in logged.iter().zip(["inv-1", "inv-2", "inv-3", "inv-4"]) {
        assert!(line.contains(&format!("INVOICE_CREATED {id} ")), "{line}");
    }
}
