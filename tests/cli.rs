//! The `certex` binary against a real broker: submit, get, log commands,
//! environment variables, JSON output and exit codes.

mod common;

use std::process::Output;

use common::*;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

fn certex(b: &TestBroker, team: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_certex"));
    c.env("CERTEX_BROKER", b.url())
        .env("CERTEX_PKI", b.pki())
        .env("CERTEX_TEAM", team)
        .env("RUST_LOG", "error");
    c
}

fn json_line(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(text.lines().count(), 1, "one JSON line: {text}");
    serde_json::from_str(&text).unwrap()
}

const DRAFT: &str = r#"{"tlp": "amber", "audience": {"teams": ["BR-CERTBR"]}, "exercise": "", "references": [],
 "incident": {"title": "Grid intrusion", "description": "…", "category": "intrusions", "severity": "high",
              "sectors": ["energy"], "detected_at": "2026-11-25T10:00:00Z",
              "observables": [{"type": "ipv4", "value": "203.0.113.7"}]}}"#;

/// `certex submit` of [`DRAFT`] as `team`; the command's output.
async fn submit_draft(b: &TestBroker, team: &str) -> Output {
    let draft_path = b.tmp.path().join("draft.json");
    std::fs::write(&draft_path, DRAFT).unwrap();
    certex(b, team)
        .arg("submit")
        .arg(&draft_path)
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_get_and_log_commands() {
    let b = TestBroker::start().await;
    let out = submit_draft(&b, "CN-CNCERT").await;
    let receipt = json_line(&out);
    assert_eq!(receipt["seq"], 1);
    assert_eq!(receipt["duplicate"], false);
    assert_eq!(receipt["leaf_hash"].as_str().unwrap().len(), 64);
    let id = receipt["id"].as_str().unwrap().to_owned();

    // From stdin, with explicit flags instead of environment variables.
    let mut child = Command::new(env!("CARGO_BIN_EXE_certex"))
        .args([
            "submit",
            "-",
            "--broker",
            &b.url(),
            "--as",
            "RU-GOVCERT",
            "--pki",
        ])
        .arg(b.pki())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let warning = r#"{"tlp":"clear","audience":"community","warning":{"title":"VPN flaw","severity":"critical","cves":["CVE-2024-3400"]}}"#;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(warning.as_bytes())
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(json_line(&out)["seq"], 2);

    let rec = json_line(
        &certex(&b, "BR-CERTBR")
            .args(["get", &id])
            .output()
            .await
            .unwrap(),
    );
    assert_eq!(rec["seq"], 1);
    assert_eq!(rec["sender"], "CN-CNCERT");
    assert_eq!(rec["kind"], "incident");
    assert_eq!(rec["tlp"], "amber");
    assert_eq!(rec["verified"], true);
    assert_eq!(
        rec["body"]["incident"]["observables"][0]["value"],
        "203.0.113.7"
    );
    assert_eq!(rec["body"]["audience"]["teams"][0], "BR-CERTBR");

    let out = certex(&b, "US-CISA")
        .args(["get", "1"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));

    let head = json_line(
        &certex(&b, "US-CISA")
            .args(["log", "head"])
            .output()
            .await
            .unwrap(),
    );
    assert_eq!(
        (head["tree_size"].as_u64(), head["verified"].as_bool()),
        (Some(2), Some(true))
    );
    let proof = json_line(
        &certex(&b, "BR-CERTBR")
            .args(["log", "prove", &id])
            .output()
            .await
            .unwrap(),
    );
    assert_eq!(proof["verified"], true);
    let state = b.tmp.path().join("state.json");
    let audit = json_line(
        &certex(&b, "US-CISA")
            .args(["log", "verify", "--state"])
            .arg(&state)
            .output()
            .await
            .unwrap(),
    );
    assert_eq!(audit["consistent"], true);

    // A kept head from a longer log: rollback, non-zero exit.
    let mut kept: Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    kept["tree_size"] = 50.into();
    std::fs::write(&state, kept.to_string()).unwrap();
    let out = certex(&b, "US-CISA")
        .args(["log", "verify", "--state"])
        .arg(&state)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("LOG ROLLBACK"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_one_line_on_stderr_with_non_zero_exit() {
    let b = TestBroker::start().await;
    let bad = b.tmp.path().join("bad.json");
    let cases = [
        (
            r#"{"tlp":"amber","audience":"community","incident":{"title":"x","category":"nope","severity":"high"}}"#,
            "incident.category: unknown category \"nope\"",
        ),
        (
            r#"{"tlp":"red","audience":"community","incident":{"title":"x","category":"fraud","severity":"high"}}"#,
            "explicit list of teams",
        ),
        (
            r#"{"tlp":"clear","audience":"community"}"#,
            "exactly one of incident",
        ),
        (r#"not json"#, "is not valid"),
    ];
    for (text, expected) in cases {
        std::fs::write(&bad, text).unwrap();
        let out = certex(&b, "CN-CNCERT")
            .arg("submit")
            .arg(&bad)
            .output()
            .await
            .unwrap();
        assert!(!out.status.success());
        assert!(out.stdout.is_empty());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{expected:?} not in {err:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    // No credentials at all.
    let out = Command::new(env!("CARGO_BIN_EXE_certex"))
        .args(["get", "1", "--as", "CN-CNCERT"])
        .env_remove("CERTEX_PKI")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no credentials"));
    assert_eq!(b.broker.log().head().tree_size, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pki_init_writes_the_spec_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let out = Command::new(env!("CARGO_BIN_EXE_certex"))
        .args([
            "pki",
            "init",
            "--teams",
            "CN-CNCERT,US-CISA,RU-GOVCERT",
            "--group",
            "SCO=CN-CNCERT,RU-GOVCERT",
            "--dir",
        ])
        .arg(&dir)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "directory.toml",
        "ca/CN.pem",
        "ca/CN.key",
        "ca/US.pem",
        "ca/RU.key",
        "broker/cert.pem",
        "broker/key.pem",
        "broker/ca.pem",
        "broker/signing.key",
        "teams/CN-CNCERT/cert.pem",
        "teams/CN-CNCERT/key.pem",
        "teams/CN-CNCERT/signing.key",
        "teams/US-CISA/signing.key",
    ] {
        assert!(dir.join(f).exists(), "{f}");
    }
    let dir_file = certex::rules::directory::Directory::load(&dir.join("directory.toml")).unwrap();
    assert_eq!(dir_file.group("SCO").unwrap().len(), 2);
    let cert = std::fs::read_to_string(dir.join("teams/US-CISA/cert.pem")).unwrap();
    let der = rustls_pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
    assert_eq!(
        certex::broker::transport::team_of_certificate(&der).unwrap(),
        "US-CISA"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_certex"))
        .args([
            "pki",
            "init",
            "--teams",
            "CN-CNCERT",
            "--group",
            "G7=XX-NOPE",
            "--dir",
        ])
        .arg(tmp.path().join("other"))
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("XX-NOPE is not one of --teams"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_exits_non_zero_only_when_a_signature_does_not_verify() {
    let b = TestBroker::start().await;
    json_line(&submit_draft(&b, "CN-CNCERT").await);

    // A directory in which CN's key is another key: the signature fails.
    let text = std::fs::read_to_string(b.pki().join("directory.toml")).unwrap();
    let mut file: certex::rules::directory::DirectoryFile = toml::from_str(&text).unwrap();
    let other = ed25519_dalek::SigningKey::from_bytes(&[5u8; 32]).verifying_key();
    let cn = file.teams.iter_mut().find(|t| t.id == "CN-CNCERT").unwrap();
    cn.keys[0].public_key = hex::encode(other.as_bytes());
    cn.keys[0].key_id = None;
    let forged = b.pki().join("forged-directory.toml");
    std::fs::write(&forged, toml::to_string(&file).unwrap()).unwrap();
    let out = certex(&b, "BR-CERTBR")
        .args(["get", "1", "--directory"])
        .arg(&forged)
        .output()
        .await
        .unwrap();
    assert!(
        !out.status.success(),
        "a record that does not verify must fail the command"
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["verified"], false);
    assert!(
        printed["verify_error"]
            .as_str()
            .unwrap()
            .contains("not a signing key"),
        "{printed}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("did NOT verify"));

    // The genuine directory: verified, the key active, exit 0.
    let out = certex(&b, "BR-CERTBR")
        .args(["get", "1"])
        .output()
        .await
        .unwrap();
    let printed = json_line(&out);
    assert_eq!(printed["verified"], true);
    assert_eq!(printed["key_status"], "active");
}

/// `certex demo` runs to the end: the story the README promises, including
/// members cosigning the checkpoint, the evidence bundle verified with the
/// broker stopped (its files go to the temporary directory given), and
/// three national brokers relaying a bilateral report, warnings and a
/// cross-border case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_to_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_certex"))
        .arg("demo")
        .env("TMPDIR", tmp.path())
        .env("RUST_LOG", "error")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "== 8b. Members witness the log",
        "quorum members: met",
        "== 10. A tabletop drill",
        "== 11. Evidence with the broker stopped",
        "(quorum met)",
        "== 12. Three national brokers",
        "origin CN record",
        "RU's own log (0 records) holds no record with that id",
        "RU withheld (egress policy: TLP:AMBER does not leave for this peer)",
        "handed to the authority BR",
        "Both brokers agree: case closed at CN and at BR",
        "== 12d. Relay status per peer",
        "== Done",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    let evidence = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("certex-demo-evidence-"))
        .expect("the evidence directory");
    let check = Command::new(env!("CARGO_BIN_EXE_certex"))
        .args(["log", "check-proof", "--require-quorum"])
        .arg(evidence.join("request.tlog-proof"))
        .arg("--record")
        .arg(evidence.join("request.json"))
        .arg("--directory")
        .arg(evidence.join("directory.toml"))
        .output()
        .await
        .unwrap();
    let v = json_line(&check);
    assert_eq!(v["verified"], true);
    assert_eq!(v["quorum"]["met"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_signs_internationalised_domains_in_their_idna_form() {
    let b = TestBroker::start().await;
    let path = b.tmp.path().join("idn.json");
    std::fs::write(
        &path,
        r#"{"tlp": "green", "audience": "community",
            "warning": {"title": "Look-alike domains", "severity": "medium",
                        "observables": [{"type": "domain", "value": "Bücher.example"},
                                        {"type": "email", "value": "kontakt@bücher.example"}]}}"#,
    )
    .unwrap();
    let out = certex(&b, "CN-CNCERT")
        .arg("submit")
        .arg(&path)
        .output()
        .await
        .unwrap();
    let seq = json_line(&out)["seq"].as_u64().unwrap();
    let out = certex(&b, "BR-CERTBR")
        .args(["get", &seq.to_string()])
        .output()
        .await
        .unwrap();
    let rec = json_line(&out);
    assert_eq!(rec["verified"], true);
    let obs = &rec["body"]["warning"]["observables"];
    assert_eq!(obs[0]["value"], "xn--bcher-kva.example", "{rec}");
    assert_eq!(obs[1]["value"], "kontakt@xn--bcher-kva.example", "{rec}");
}
