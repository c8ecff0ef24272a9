//! Tabletop drills end to end (SPEC §13): a broker child process, automated
//! participants and the control cell as `certex drill respond` and
//! `certex drill run` child processes, a scenario at speed 60, and the
//! after-action report read back: statuses and scores as predicted, the
//! participants' configured delays showing up as response times, a silent
//! team failing its expectations and its comcheck, no exercise record in a
//! real-world subscription, every entry proved in the log, and an HTML
//! report that is well-formed and self-contained.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use certex::client::connection::{Client, ClientFiles};
use certex::drill::report::Report;
use certex::proto as pb;
use common::BrokerProcess;

const TEAMS: &[&str] = &["ZA-EXCON", "ZA-CSIRT", "BR-CERTBR", "IN-CERTIN"];

/// Speed 60: one wall second is one exercise minute.
const SCENARIO: &str = r#"
[exercise]
id = "EX-TEST-GRID"
name = "Grid ransomware (test)"
description = "A compressed drill for the test suite."
objectives = ["Warn partners of the incident", "Handle assistance requests"]
core_capabilities = ["Intelligence and Information Sharing", "Operational Coordination"]
duration = "30m"
time_compression = 60

[[participant]]
team = "ZA-EXCON"
role = "control"
[[participant]]
team = "ZA-CSIRT"
role = "player"
[[participant]]
team = "BR-CERTBR"
role = "player"
[[participant]]
team = "IN-CERTIN"
role = "player"

[[comcheck]]
id = "C1"
at = "0m"
expires = "3m"
message = "Start of exercise"

[[inject]]
id = "I1"
move = 1
at = "1m"
from = "ZA-EXCON"
to = ["ZA-CSIRT", "BR-CERTBR"]
method = "incident"
subject = "Ransomware at the grid operator"
expected_action = "ZA-CSIRT warns its partners"
[inject.payload]
tlp = "amber"
[inject.payload.incident]
category = "malicious-code"
severity = "high"
detected_at = "{{now-20m}}"
observables = [{ type = "ipv4", value = "203.0.113.7" }]

[[inject]]
id = "I2"
move = 2
after = "E1"
delay = "1m"
from = "ZA-EXCON"
to = ["BR-CERTBR"]
method = "request"
subject = "Take down the C2 server"
[inject.payload]
references = [{ sender = "{{sender:I1}}", id = "{{inject:I1}}" }]
[inject.payload.request]
action = "takedown"
priority = "high"
respond_by = "{{now+1h}}"

[[inject]]
id = "I3"
move = 2
at = "2m"
from = "ZA-EXCON"
to = ["IN-CERTIN"]
method = "request"
subject = "Preserve evidence"
[inject.payload.request]
action = "preserve-evidence"

[[expectation]]
id = "E1"
inject = "I1"
team = "ZA-CSIRT"
kind = "warning"
within = "10m"
objective = "O1"
[expectation.match]
"warning.severity" = "high"

[[expectation]]
id = "E1B"
inject = "I1"
team = "ZA-CSIRT"
kind = "warning"
within = "10m"
objective = "O1"
description = "ZA-CSIRT rates the warning critical"
[expectation.match]
"warning.severity" = "critical"

[[expectation]]
id = "E2"
inject = "I2"
team = "BR-CERTBR"
kind = "accept"
within = "5m"
objective = "O2"

[[expectation]]
id = "E3"
inject = "I2"
team = "BR-CERTBR"
kind = "resolve"
within = "10m"
score = 20
objective = "O2"

[[expectation]]
id = "E4"
inject = "I3"
team = "IN-CERTIN"
kind = "acknowledge"
within = "4m"
objective = "O2"

[[expectation]]
id = "E5"
comcheck = "C1"
team = "IN-CERTIN"
kind = "comcheck-reply"
within = "3m"
"#;

fn certex() -> Command {
    Command::new(env!("CARGO_BIN_EXE_certex"))
}

/// A child process killed (and reaped) when dropped, even when a test fails.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `certex drill respond` as `team`, once it is listening.
fn responder(broker: &BrokerProcess, pki: &Path, team: &str, delay: &str) -> Running {
    let mut child = certex()
        .args([
            "drill",
            "respond",
            "--exercise",
            "EX-TEST-GRID",
            "--delay",
            delay,
        ])
        .args(["--broker", &broker.url, "--as", team, "--pki"])
        .arg(pki)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("answers exercise EX-TEST-GRID"), "{first}");
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    Running(child)
}

fn exp<'r>(r: &'r Report, id: &str) -> &'r certex::drill::report::ExpectationOutcome {
    r.expectations.iter().find(|e| e.id == id).unwrap()
}

/// Asserts an exercise time (seconds) is the configured wall delay times
/// the speed, give or take what delivery adds (half a wall second).
fn about(what: &str, got: Option<f64>, want: f64) {
    let got = got.unwrap_or_else(|| panic!("{what}: no time"));
    assert!(
        got >= want - 1.0 && got <= want + 30.0,
        "{what}: {got} s of exercise time, wanted {want} s (+30 s tolerance)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_plays_scores_and_reports_as_predicted() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    let teams: Vec<String> = TEAMS.iter().map(|s| s.to_string()).collect();
    certex::cli::pki::init(&pki, &teams, &[]).unwrap();
    let broker = BrokerProcess::start(&pki, &tmp.path().join("data"));
    let scenario = tmp.path().join("grid.toml");
    std::fs::write(&scenario, SCENARIO).unwrap();

    // A real-world reader for the whole drill, and a real record during it.
    let reader = Client::connect(
        &broker.url,
        &ClientFiles::from_pki(&pki, "ZA-CSIRT"),
        "ZA-CSIRT",
    )
    .await
    .unwrap();
    let mut real = reader
        .exchange()
        .subscribe(pb::SubscribeRequest {
            start: Some(pb::subscribe_request::Start::AfterSeq(0)),
            filter: None,
            follow: true,
        })
        .await
        .unwrap()
        .into_inner();
    let real_seen = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Ok(Some(r)) = real.message().await {
            seen.push(r);
        }
        seen
    });

    // ZA-CSIRT and BR-CERTBR answer after 1 s (60 s of exercise time) per
    // step; IN-CERTIN never answers.
    let za = responder(&broker, &pki, "ZA-CSIRT", "1s");
    let br = responder(&broker, &pki, "BR-CERTBR", "1s");

    let out = tmp.path().join("report");
    let run = {
        let (pki, out, scenario, url) = (
            pki.clone(),
            out.clone(),
            scenario.clone(),
            broker.url.clone(),
        );
        tokio::task::spawn_blocking(move || {
            certex()
                .args(["drill", "run"])
                .arg(&scenario)
                .args([
                    "--speed", "60", "--as", "ZA-EXCON", "--broker", &url, "--pki",
                ])
                .arg(&pki)
                .arg("--out")
                .arg(&out)
                .output()
                .unwrap()
        })
    };
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let brazil = Client::connect(
        &broker.url,
        &ClientFiles::from_pki(&pki, "BR-CERTBR"),
        "BR-CERTBR",
    )
    .await
    .unwrap();
    let draft: certex::client::draft::BodyJson = serde_json::from_str(
        r#"{"tlp": "green", "audience": "community", "incident": {"title": "A real incident",
            "category": "intrusions", "severity": "low"}}"#,
    )
    .unwrap();
    let real_receipt = brazil.submit(draft).await.unwrap();

    let output = tokio::time::timeout(std::time::Duration::from_secs(120), run)
        .await
        .expect("the drill ends within two minutes")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "drill run failed: {stderr}");
    assert!(
        stderr.contains("inject I1 sent"),
        "progress is shown: {stderr}"
    );
    drop((za, br));

    let report: Report =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report.exercise.ended, "completed", "{stderr}");

    // Statuses and scores as predicted.
    let status = |id: &str| exp(&report, id).status.clone();
    assert_eq!(status("E1"), "SUCCESS");
    assert_eq!(exp(&report, "E1").score, 10);
    assert_eq!(status("E1B"), "PARTIAL", "{:?}", exp(&report, "E1B"));
    assert_eq!(
        exp(&report, "E1B").score,
        5,
        "right kind, wrong severity: half"
    );
    assert!(exp(&report, "E1B").note.contains("critical expected"));
    assert_eq!(status("E2"), "SUCCESS");
    assert_eq!(status("E3"), "SUCCESS");
    assert_eq!(exp(&report, "E3").score, 20);
    assert_eq!(status("E4"), "FAILED", "the silent team");
    assert_eq!(status("E5"), "FAILED", "the silent team's comcheck");
    assert_eq!(report.overall.score, 10 + 5 + 10 + 20);
    assert_eq!(report.overall.max_score, 10 + 10 + 10 + 20 + 10 + 10);
    assert_eq!(report.overall.expectations.success, 3);
    assert_eq!(report.overall.expectations.partial, 1);
    assert_eq!(report.overall.expectations.failed, 2);

    // The configured delay (1 s at speed 60 = 60 s a step) is what the
    // report measured.
    about("E1 warning", exp(&report, "E1").response_after_s, 60.0);
    about("E2 accept", exp(&report, "E2").response_after_s, 120.0);
    about("E3 resolve", exp(&report, "E3").response_after_s, 240.0);
    let brm = report.teams.iter().find(|t| t.team == "BR-CERTBR").unwrap();
    about(
        "BR time to acknowledge",
        brm.time_to_acknowledge.p50_s,
        60.0,
    );
    about("BR time to accept", brm.time_to_accept.p50_s, 120.0);
    about("BR time to resolve", brm.time_to_resolve.max_s, 240.0);
    let inj2 = report.injects.iter().find(|i| i.id == "I2").unwrap();
    assert_eq!(inj2.status, "sent", "I2 follows E1, which was met");
    let e1_at = report
        .timeline
        .iter()
        .find(|e| e.seq == exp(&report, "E1").response_seq)
        .unwrap()
        .at_s;
    about(
        "I2, 1m after E1 was met",
        inj2.at_s.map(|t| t - e1_at),
        60.0,
    );

    // Comchecks: the two answering teams replied after ~60 s; IN missed.
    let c1 = &report.comchecks[0];
    for r in &c1.replies {
        match r.team.as_str() {
            "IN-CERTIN" => assert_eq!(r.status, "missed"),
            _ => {
                assert_eq!(r.status, "replied", "{r:?}");
                about("comcheck reply", r.reply_after_s, 60.0);
            }
        }
    }
    let inm = report.teams.iter().find(|t| t.team == "IN-CERTIN").unwrap();
    assert_eq!((inm.comchecks_replied, inm.comchecks_missed), (0, 1));
    assert!(
        report
            .hseep
            .areas_for_improvement
            .iter()
            .any(|f| f.team == "IN-CERTIN"
                && f.expectation == "E5"
                && f.records == vec![c1.replies[2].request_seq.unwrap()]),
        "the missed comcheck is an area for improvement, with the check's record: {:?}",
        report.hseep.areas_for_improvement
    );
    let ratings: Vec<&str> = report
        .hseep
        .ratings
        .iter()
        .map(|r| r.rating.as_str())
        .collect();
    // O1: 15 of 20 expected points = S; O2: 30 of 40 = S.
    assert_eq!(ratings, ["S", "S"]);
    assert!(
        report
            .matrix
            .iter()
            .any(|c| c.from == "BR-CERTBR" && c.to == "ZA-EXCON" && c.kind == "case_update")
    );

    // Exercise traffic stayed an exercise.
    assert!(report.isolation.passed, "{}", report.isolation.statement);
    assert_eq!(report.isolation.exercise_records_in_real_world, 0);
    assert!(report.isolation.real_world_subscriptions >= 4);
    let seen = {
        drop(reader);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        real_seen.abort();
        real_seen.await.unwrap_or_default()
    };
    let _ = seen;
    let real_records = {
        // A fresh real-world read of the whole log as every team.
        let mut all = Vec::new();
        for team in TEAMS {
            let c = Client::connect(&broker.url, &ClientFiles::from_pki(&pki, team), team)
                .await
                .unwrap();
            all.extend(common::catch_up(&c).await);
        }
        all
    };
    assert!(
        real_records.iter().any(|r| r.seq == real_receipt.seq),
        "the real record is read"
    );
    for r in &real_records {
        let body = certex::rules::envelope::decode_body(r.envelope.as_ref().unwrap()).unwrap();
        assert!(
            body.exercise.is_empty(),
            "exercise record {} in a real-world read",
            r.seq
        );
    }
    assert!(
        report
            .timeline
            .iter()
            .all(|e| e.seq != Some(real_receipt.seq)),
        "the real record is not in the drill's timeline"
    );

    // Every record entry is proved against the signed head, and its leaf
    // hash is the log's.
    let head = report.evidence.tree_head.as_ref().unwrap();
    assert!(head.verified);
    let records: Vec<_> = report.timeline.iter().filter(|e| e.seq.is_some()).collect();
    assert_eq!(report.evidence.proved as usize, records.len());
    assert!(records.iter().all(|e| e.proved));
    assert_eq!(report.isolation.exercise_records as usize, records.len());
    let excon = Client::connect(
        &broker.url,
        &ClientFiles::from_pki(&pki, "ZA-EXCON"),
        "ZA-EXCON",
    )
    .await
    .unwrap();
    let i1 = report.injects.iter().find(|i| i.id == "I1").unwrap();
    let got = excon
        .get(pb::GetRequest {
            selector: Some(pb::get_request::Selector::Seq(i1.seq.unwrap())),
            sender: String::new(),
            exercise: Some(
                certex::rules::access::TrafficScope::Exercise("EX-TEST-GRID".into()).to_selector(),
            ),
        })
        .await
        .unwrap();
    assert_eq!(hex::encode(&got.leaf_hash), i1.leaf_hash.clone().unwrap());

    // The HTML report: self-contained, and the files are the owner's only.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    for external in ["src=", "<link", "url(", "https://", "@import"] {
        assert!(
            !html.contains(external),
            "report.html refers outside itself: {external}"
        );
    }
    let doc = roxmltree::Document::parse_with_options(
        &html,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .expect("report.html is well-formed");
    let svg = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "svg")
        .count();
    assert_eq!(svg, 1, "one inline SVG timeline");
    for team in TEAMS {
        assert!(
            doc.descendants()
                .any(|n| n.tag_name().name() == "text" && n.text() == Some(*team)),
            "the timeline has a lane for {team}"
        );
    }
    assert!(html.contains("EX-TEST-GRID"));
    use std::os::unix::fs::PermissionsExt;
    for f in ["report.json", "report.md", "report.html"] {
        let mode = std::fs::metadata(out.join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{f} is readable by others");
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("E1B"));
}

#[test]
fn malformed_scenarios_are_refused_with_the_line_and_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            SCENARIO.replace("to = [\"IN-CERTIN\"]", "to = [\"FR-ANSSI\"]"),
            "to = [\"FR-ANSSI\"]",
            "unknown team FR-ANSSI",
        ),
        (
            SCENARIO.replace("after = \"E1\"", "after = \"E2\""),
            "after = \"E2\"",
            "inject I2 depends on itself (I2 → E2 → I2)",
        ),
        (
            SCENARIO.replace("id = \"E5\"\ncomcheck = \"C1\"\n", "id = \"E5\"\n"),
            "[[expectation]]\nid = \"E5\"",
            "names no inject",
        ),
        (
            SCENARIO.replace(
                "severity = \"high\"\ndetected_at",
                "severity = \"apocalyptic\"\ndetected_at",
            ),
            "[[inject]]\nid = \"I1\"",
            "payload is not a valid draft: incident.severity",
        ),
    ];
    for (n, (text, at, reason)) in cases.iter().enumerate() {
        let file = tmp.path().join(format!("bad{n}.toml"));
        std::fs::write(&file, text).unwrap();
        let line = text[..text.find(at).unwrap()].matches('\n').count() + 1;
        let out = certex()
            .args(["drill", "check"])
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{at}: accepted");
        let want = format!("{}:{line}: ", file.display());
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(&want) && l.contains(reason)),
            "wanted {want}…{reason}, got: {stderr}"
        );
    }
    let good = tmp.path().join("good.toml");
    std::fs::write(&good, SCENARIO).unwrap();
    let out = certex()
        .args(["drill", "check"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_example_scenarios_pass_their_checks_against_the_readme_pki() {
    // The PKI the README's drill walkthrough creates.
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    let teams: Vec<String> =
        "ZA-EXCON,ZA-CSIRT,BW-CSIRT,MZ-CSIRT,CN-CNCERT,RU-GOVCERT,IN-CERTIN,BR-CERTBR"
            .split(',')
            .map(str::to_owned)
            .collect();
    let groups = [
        "BRICS=CN-CNCERT,RU-GOVCERT,IN-CERTIN,BR-CERTBR,ZA-CSIRT",
        "SCO=CN-CNCERT,RU-GOVCERT,IN-CERTIN",
    ]
    .iter()
    .map(|g| certex::cli::pki::parse_group(g).unwrap())
    .collect::<Vec<_>>();
    certex::cli::pki::init(&pki, &teams, &groups).unwrap();
    let dir = certex::rules::directory::Directory::load(&pki.join("directory.toml")).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/drills");
    for name in ["grid-ransomware.toml", "botnet-takedown.toml"] {
        let text = std::fs::read_to_string(root.join(name)).unwrap();
        let s = certex::drill::scenario::Scenario::parse(name, &text, Some(&dir))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(s.injects.len() >= 5 && s.expectations.len() >= 8, "{name}");
        assert!(!s.comchecks.is_empty(), "{name} has a comcheck");
    }
    let rules = root.join("participant-rules.toml");
    certex::drill::respond::Rules::load(&rules, std::time::Duration::from_secs(1)).unwrap();
}
