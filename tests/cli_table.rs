//! `--format table` for people: `case list`, `case show` and `log head`
//! through the real binary against a real broker, next to the JSON lines
//! that stay the default.

mod common;

use std::process::Output;

use common::*;
use tokio::process::Command;

fn certex(b: &TestBroker, team: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_certex"));
    c.env("CERTEX_BROKER", b.url())
        .env("CERTEX_PKI", b.pki())
        .env("CERTEX_TEAM", team)
        .env("RUST_LOG", "error");
    c
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

async fn run(b: &TestBroker, team: &str, args: &[&str]) -> String {
    stdout(&certex(b, team).args(args).output().await.unwrap())
}

/// The column of `word` in `line`, in characters.
fn column(line: &str, word: &str) -> usize {
    let at = line
        .find(word)
        .unwrap_or_else(|| panic!("{word} not in {line:?}"));
    line[..at].chars().count()
}

const REQUEST: &str = r#"{"tlp": "amber", "audience": {"teams": ["CN-CNCERT"]},
 "request": {"to": "CN-CNCERT", "action": "preserve-evidence", "legal_basis": "MLAT art. 18",
             "description": "Preserve logs of 203.0.113.7", "respond_by": "2030-01-01T00:00:00Z",
             "priority": "high"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_list_case_show_and_log_head_as_tables() {
    let b = TestBroker::start().await;
    let draft = b.tmp.path().join("request.json");
    std::fs::write(&draft, REQUEST).unwrap();
    let receipt: serde_json::Value =
        serde_json::from_str(&run(&b, "BR-CERTBR", &["submit", draft.to_str().unwrap()]).await)
            .unwrap();
    let id = receipt["id"].as_str().unwrap().to_owned();
    run(&b, "CN-CNCERT", &["case", "ack", &id]).await;
    run(&b, "CN-CNCERT", &["case", "accept", &id]).await;
    run(
        &b,
        "CN-CNCERT",
        &["case", "progress", &id, "--note", "logs preserved"],
    )
    .await;

    // JSON lines stay the default.
    let json = run(&b, "CN-CNCERT", &["case", "list"]).await;
    let line: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(line["state"], "in-progress");

    let table = run(&b, "CN-CNCERT", &["case", "list", "--format", "table"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    let (header, row) = (lines[0], lines[1]);
    for h in [
        "SEQ",
        "ID",
        "STATE",
        "REQUESTER",
        "TO",
        "ACTION",
        "RESPOND BY",
        "OVERDUE",
    ] {
        assert!(header.contains(h), "{header}");
    }
    assert_eq!(
        column(header, "STATE"),
        column(row, "in-progress"),
        "{table}"
    );
    assert_eq!(
        column(header, "REQUESTER"),
        column(row, "BR-CERTBR"),
        "{table}"
    );
    assert_eq!(column(header, "ID"), column(row, &id), "{table}");
    assert!(row.starts_with("1 "), "{row}");
    assert!(!table.contains('{'), "{table}");

    let show = run(&b, "BR-CERTBR", &["case", "show", &id, "--format", "table"]).await;
    assert!(
        show.lines()
            .any(|l| l.starts_with("state") && l.ends_with("in-progress")),
        "{show}"
    );
    assert!(show.contains("MLAT art. 18"), "{show}");
    let history: Vec<&str> = show.lines().skip_while(|l| !l.starts_with("SEQ")).collect();
    assert_eq!(history.len(), 4, "{show}");
    assert!(history[0].contains("TRANSITION") && history[0].contains("VERIFIED"));
    assert!(history[1].contains("acknowledged") && history[1].contains("CN-CNCERT"));
    assert!(history[3].contains("in-progress") && history[3].ends_with("logs preserved"));
    assert_eq!(
        column(history[0], "TRANSITION"),
        column(history[3], "in-progress")
    );
    assert_eq!(column(history[0], "VERIFIED"), column(history[3], "yes"));

    let head = run(&b, "US-CISA", &["log", "head", "--format", "table"]).await;
    let field = |name: &str| {
        head.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {head}"))
            .trim_start_matches(name)
            .trim()
            .to_owned()
    };
    assert_eq!(field("tree size"), "4", "{head}");
    assert_eq!(field("verified"), "yes", "{head}");
    assert_eq!(field("root hash").len(), 64, "{head}");
    assert!(field("signed at").ends_with('Z'), "{head}");

    // A wrong word is refused by clap, listing the choices.
    let out = certex(&b, "US-CISA")
        .args(["log", "head", "--format", "tabel"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("json") && err.contains("table"), "{err}");
}
