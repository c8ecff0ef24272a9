//! `certex directory …` and `certex pki issue-team-cert` through the real
//! binary, against a real broker process reloading on SIGHUP: a team added
//! from the command line publishes, a key revoked from a time keeps the
//! records logged before it verified, a rotated key publishes, and an edit
//! the directory's loader refuses leaves the file byte-identical.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use certex::broker::config::Limits;
use common::*;
use serde_json::Value;

/// A community TLP:CLEAR warning every member may read.
const WARNING: &str = r#"{"tlp":"clear","audience":"community","warning":{"title":"VPN flaw","severity":"critical","cves":["CVE-2024-3400"]}}"#;

fn certex(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_certex"));
    c.args(args).env("RUST_LOG", "error");
    c
}

/// The one JSON line a successful command printed.
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

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `certex directory ARGS… FILE`.
fn directory(file: &Path, args: &[&str]) -> Output {
    let mut c = certex(&["directory", args[0]]);
    c.arg(file).args(&args[1..]);
    c.output().unwrap()
}

/// A sample PKI and a broker process over it that logs at INFO.
fn start() -> (tempfile::TempDir, PathBuf, BrokerProcess) {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    make_pki(&pki);
    let broker = BrokerProcess::start_logging(&pki, &tmp.path().join("data"), &Limits::default());
    (tmp, pki, broker)
}

/// Sends SIGHUP and waits until the broker logs one more reload.
fn reload(broker: &BrokerProcess) {
    let before = broker.log_lines(&["directory reloaded"]).len();
    broker.hangup();
    let deadline = Instant::now() + Duration::from_secs(20);
    while broker.log_lines(&["directory reloaded"]).len() == before {
        assert!(
            Instant::now() < deadline,
            "no reload logged; log: {:?}",
            broker.log_lines(&[""])
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `certex submit` of [`WARNING`] as `team`, optionally with another
/// signing key.
fn submit(broker: &BrokerProcess, pki: &Path, team: &str, signing_key: Option<&Path>) -> Output {
    let draft = pki.join("warning.json");
    std::fs::write(&draft, WARNING).unwrap();
    let mut c = certex(&["submit"]);
    c.arg(&draft)
        .args(["--broker", &broker.url, "--as", team, "--pki"])
        .arg(pki);
    if let Some(k) = signing_key {
        c.arg("--signing-key").arg(k);
    }
    c.output().unwrap()
}

/// `certex get SEQ` as `team`.
fn get(broker: &BrokerProcess, pki: &Path, team: &str, seq: u64) -> Value {
    let out = certex(&[
        "get",
        &seq.to_string(),
        "--broker",
        &broker.url,
        "--as",
        team,
        "--pki",
    ])
    .arg(pki)
    .output()
    .unwrap();
    json_line(&out)
}

#[test]
fn a_team_added_with_a_generated_key_publishes_after_sighup() {
    let (_tmp, pki, broker) = start();
    let file = pki.join("directory.toml");
    let team = "CN-NEWCERT";
    let out = certex(&["pki", "issue-team-cert", "--team", team, "--pki"])
        .arg(&pki)
        .output()
        .unwrap();
    let issued = json_line(&out);
    assert_eq!(issued["team"], team);
    let key_file = pki.join("teams").join(team).join("signing.key");
    let out = directory(
        &file,
        &[
            "add-team",
            "--id",
            team,
            "--name",
            "New CERT",
            "--contact",
            "desk@newcert.example",
            "--generate-key",
            key_file.to_str().unwrap(),
        ],
    );
    let change = json_line(&out);
    assert_eq!(change["change"], "add-team");
    assert!(stderr(&out).contains("SIGHUP"), "{}", stderr(&out));
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let key = certex::rules::envelope::read_signing_key(&key_file).unwrap();
    assert_eq!(
        change["key_id"],
        certex::rules::envelope::key_id(&key.verifying_key())
    );

    // Not yet: the broker still enforces the directory it loaded.
    let refused = submit(&broker, &pki, team, None);
    assert!(!refused.status.success(), "published before the reload");
    assert!(
        !stderr(&refused).contains("cannot read"),
        "the team's files are in place: {}",
        stderr(&refused)
    );

    reload(&broker);
    let receipt = json_line(&submit(&broker, &pki, team, None));
    let seq = receipt["seq"].as_u64().unwrap();
    let rec = get(&broker, &pki, "BR-CERTBR", seq);
    assert_eq!(rec["verified"], true, "{rec}");
    assert_eq!(rec["sender"], team, "{rec}");
}

#[test]
fn a_key_revoked_at_a_time_keeps_earlier_records_verified() {
    let (_tmp, pki, broker) = start();
    let file = pki.join("directory.toml");
    let team = "BR-CERTBR";
    let first = json_line(&submit(&broker, &pki, team, None));
    let seq = first["seq"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let at = certex::rules::time::format_time(time::OffsetDateTime::now_utc());
    std::thread::sleep(Duration::from_millis(50));

    let dir = certex::rules::directory::Directory::load(&file).unwrap();
    let key_id = dir.team(team).unwrap().keys[0].key_id.clone();
    let out = directory(
        &file,
        &[
            "revoke-key",
            "--team",
            team,
            "--key-id",
            &key_id,
            "--at",
            &at,
        ],
    );
    let change = json_line(&out);
    assert_eq!(change["revoked_at"], at.as_str());
    reload(&broker);

    // Logged before the revocation: still valid evidence.
    let rec = get(&broker, &pki, "CN-CNCERT", seq);
    assert_eq!(rec["verified"], true, "{rec}");
    assert_eq!(rec["key_status"], "revoked-after-signing", "{rec}");
    // After it: the key signs nothing any more.
    let refused = submit(&broker, &pki, team, None);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).to_lowercase().contains("unauthenticated"),
        "{}",
        stderr(&refused)
    );
    // Revoking again at a later time is refused; the file is unchanged.
    let before = std::fs::read(&file).unwrap();
    let again = directory(
        &file,
        &[
            "revoke-key",
            "--team",
            team,
            "--key-id",
            &key_id,
            "--at",
            "now",
        ],
    );
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already revoked"),
        "{}",
        stderr(&again)
    );
    assert_eq!(std::fs::read(&file).unwrap(), before);
}

#[test]
fn a_rotated_key_publishes_after_sighup() {
    let (_tmp, pki, broker) = start();
    let file = pki.join("directory.toml");
    let team = "RU-GOVCERT";
    let new_key = pki.join("teams").join(team).join("signing-2.key");
    let out = directory(
        &file,
        &[
            "rotate-key",
            "--team",
            team,
            "--generate-key",
            new_key.to_str().unwrap(),
            "--overlap",
            "2h",
        ],
    );
    let change = json_line(&out);
    assert_eq!(change["change"], "rotate-key");
    assert_ne!(change["old_key_id"], change["key_id"]);

    let early = submit(&broker, &pki, team, Some(&new_key));
    assert!(!early.status.success(), "the new key before the reload");
    reload(&broker);
    let receipt = json_line(&submit(&broker, &pki, team, Some(&new_key)));
    let rec = get(&broker, &pki, "CN-CNCERT", receipt["seq"].as_u64().unwrap());
    assert_eq!(rec["verified"], true, "{rec}");
    assert_eq!(rec["key_status"], "active", "{rec}");
    // The old key is still valid during the overlap.
    json_line(&submit(&broker, &pki, team, None));
    let dir = certex::rules::directory::Directory::load(&file).unwrap();
    let keys = &dir.team(team).unwrap().keys;
    assert_eq!(keys.len(), 2);
    assert!(keys[0].not_after.is_some());
}

#[test]
fn a_refused_edit_leaves_the_file_byte_identical_and_comments_survive() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    make_pki(&pki);
    let file = pki.join("directory.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let text = format!("# Operated by the national desk; ask before editing.\n{text}").replacen(
        "[groups]",
        "[groups] # the frameworks we share with",
        1,
    );
    std::fs::write(&file, &text).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();

    let refused: [&[&str]; 5] = [
        &["add-team", "--id", "CN-CNCERT", "--name", "Twice"],
        &[
            "add-team",
            "--id",
            "FR-CERTFR",
            "--name",
            "No anchor for FR",
        ],
        &[
            "add-group",
            "--name",
            "ASEAN",
            "--members",
            "CN-CNCERT,SG-NOPE",
        ],
        &["set-group", "--name", "SCO", "--members", "CN-NOPE"],
        &[
            "add-key",
            "--team",
            "XX-NOPE",
            "--generate-key",
            "/nonexistent/k",
        ],
    ];
    for args in refused {
        let out = directory(&file, args);
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = stderr(&out);
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: one line: {err}"
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), text, "{args:?}");
    }
    // A refused edit writes no key either.
    let key = tmp.path().join("dup.key");
    let out = directory(
        &file,
        &[
            "add-team",
            "--id",
            "CN-CNCERT",
            "--name",
            "Twice",
            "--generate-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("listed twice"), "{}", stderr(&out));
    assert!(!key.exists());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    // An existing key file is never overwritten.
    std::fs::write(&key, "keep me").unwrap();
    let out = directory(
        &file,
        &[
            "rotate-key",
            "--team",
            "CN-CNCERT",
            "--generate-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(&key).unwrap(), "keep me");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);

    // An accepted edit keeps the comments, the rest of the file and its mode.
    let out = directory(
        &file,
        &[
            "add-group",
            "--name",
            "ASEAN-ARF",
            "--members",
            "CN-CNCERT,IN-CERTIN",
        ],
    );
    json_line(&out);
    let after = std::fs::read_to_string(&file).unwrap();
    assert!(after.starts_with("# Operated by the national desk; ask before editing.\n"));
    assert!(
        after.contains("[groups] # the frameworks we share with"),
        "{after}"
    );
    assert!(
        after.contains(r#"ASEAN-ARF = ["CN-CNCERT", "IN-CERTIN"]"#),
        "{after}"
    );
    assert!(after.starts_with(&text[..text.find("[groups]").unwrap()]));
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o640
    );
    // No temporary file is left beside it.
    let left: Vec<_> = std::fs::read_dir(&pki)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn check_summarises_a_valid_file_and_refuses_an_invalid_one() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    make_pki(&pki);
    let file = pki.join("directory.toml");
    let summary = json_line(&certex(&["directory", "check"]).arg(&file).output().unwrap());
    assert_eq!(summary["valid"], true);
    assert_eq!(summary["teams"], TEAMS.len());
    assert_eq!(summary["keys"], TEAMS.len());
    assert_eq!(summary["active_keys"], TEAMS.len());
    assert_eq!(summary["groups"], 2);
    assert_eq!(summary["anchors"], 7);
    assert_eq!(summary["brokers"], 0);

    let bad = pki.join("bad.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&bad, text.replacen("\"RU-GOVCERT\",", "\"RU-NOPE\",", 1)).unwrap();
    let out = certex(&["directory", "check"]).arg(&bad).output().unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert!(err.contains("member RU-NOPE is not a team"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn every_directory_option_has_help() {
    use clap::CommandFactory;
    let cli = certex::cli::Cli::command();
    let mut commands: Vec<&clap::Command> = cli
        .find_subcommand("directory")
        .unwrap()
        .get_subcommands()
        .collect();
    commands.push(
        cli.find_subcommand("pki")
            .unwrap()
            .find_subcommand("issue-team-cert")
            .unwrap(),
    );
    assert!(commands.len() >= 9);
    for c in commands {
        assert!(c.get_about().is_some(), "{} has no help", c.get_name());
        for a in c.get_arguments() {
            if a.get_id() == "help" {
                continue;
            }
            assert!(
                a.get_help().is_some(),
                "{} {} has no help",
                c.get_name(),
                a.get_id()
            );
        }
    }
}
