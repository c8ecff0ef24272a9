//! The README's draft examples are real: each fenced JSON block after a
//! `<!-- draft-example: KIND as=TEAM -->` marker is submitted, verbatim and
//! in README order, with `certex submit - --as TEAM` to a real broker, and
//! must come back with a receipt. The examples name each other by fixed
//! ids (the case update names the request, the retraction the report), so
//! the README text needs no placeholders and stays copy-pasteable.

mod common;

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Every (kind, team, JSON) example of README.md, in order.
fn examples() -> Vec<(String, String, String)> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut out = Vec::new();
    let mut rest = readme.as_str();
    while let Some(at) = rest.find("<!-- draft-example:") {
        rest = &rest[at + "<!-- draft-example:".len()..];
        let end = rest.find("-->").expect("marker ends with -->");
        let mut words = rest[..end].split_whitespace();
        let kind = words.next().expect("a kind").to_owned();
        let team = words
            .find_map(|w| w.strip_prefix("as="))
            .expect("as=TEAM")
            .to_owned();
        let open = rest
            .find("```json\n")
            .expect("a ```json block after the marker");
        assert!(
            rest[end..open].trim_start_matches("-->").trim().is_empty(),
            "{kind}: the ```json block must follow its marker"
        );
        let body = &rest[open + "```json\n".len()..];
        let close = body.find("\n```").expect("the block is closed");
        out.push((kind, team, body[..close].to_owned()));
        rest = &body[close..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_readme_draft_example_is_accepted() {
    let examples = examples();
    let kinds: Vec<&str> = examples.iter().map(|(k, _, _)| k.as_str()).collect();
    for want in [
        "incident",
        "warning",
        "request",
        "case_update",
        "retraction",
        "exercise",
    ] {
        assert!(
            kinds.contains(&want),
            "README has no {want} example: {kinds:?}"
        );
    }
    let b = TestBroker::start().await;
    for (i, (kind, team, json)) in examples.iter().enumerate() {
        let draft: serde_json::Value = serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("the {kind} example is not JSON: {e}\n{json}"));
        if *kind != "exercise" {
            assert!(
                draft.get(kind.as_str()).is_some(),
                "the {kind} example holds no {kind}"
            );
        } else {
            assert!(!draft["exercise"].as_str().unwrap_or("").is_empty());
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_certex"))
            .args(["submit", "-", "--as", team])
            .env("CERTEX_BROKER", b.url())
            .env("CERTEX_PKI", b.pki())
            .env("RUST_LOG", "error")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(json.as_bytes()).await.unwrap();
        drop(stdin);
        let out = child.wait_with_output().await.unwrap();
        assert!(
            out.status.success(),
            "the {kind} example as {team} was refused: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let receipt: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(receipt["seq"], i as u64 + 1, "{receipt}");
        assert_eq!(receipt["duplicate"], false);
        if let Some(id) = draft["id"].as_str() {
            assert_eq!(receipt["id"], id);
        }
    }
}
