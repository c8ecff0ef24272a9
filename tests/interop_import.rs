//! `certex import` against a real broker: a MISP-style and an OpenCTI-style
//! STIX 2.1 bundle become signed messages other teams read; a second import
//! publishes nothing; `--dry-run` publishes nothing; objects without TLP,
//! changed objects and a TLP:RED object for the community are refused with
//! their reason.

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::*;
use serde_json::{Value, json};
use tokio::process::Command;

const TLP1_GREEN: &str = "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da";
const TLP2_AMBER: &str = "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421";
const TLP2_RED: &str = "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1";
const SHA256: &str = "d6a770ba38583ed4bb4525bd96e50461655d2758b6d4bb7b3f5c3f2e1e8bb4c3";
const MD5: &str = "0cc175b9c0f1b6a831c399e269772661";

fn certex(b: &TestBroker, team: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_certex"));
    c.env("CERTEX_BROKER", b.url())
        .env("CERTEX_PKI", b.pki())
        .env("CERTEX_TEAM", team)
        .env("RUST_LOG", "error");
    c
}

fn write_bundle(b: &TestBroker, name: &str, bundle: &Value) -> PathBuf {
    let path = b.tmp.path().join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(bundle).unwrap()).unwrap();
    path
}

/// The report of one `certex import`: its lines by STIX id, its summary and
/// whether it exited 0.
struct Report {
    lines: Vec<Value>,
    summary: Value,
    ok: bool,
    stderr: String,
}

impl Report {
    fn of(&self, stix_id: &str) -> &Value {
        self.lines
            .iter()
            .find(|l| l["stix_id"] == stix_id)
            .unwrap_or_else(|| panic!("no line for {stix_id}: {:#?}", self.lines))
    }
}

async fn import(b: &TestBroker, team: &str, bundle: &PathBuf, extra: &[&str]) -> Report {
    let out: Output = certex(b, team)
        .arg("import")
        .arg(bundle)
        .args(extra)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let summary = lines.pop().expect("a summary line")["summary"].clone();
    assert!(summary.is_object(), "the last line is the summary: {text}");
    Report {
        lines,
        summary,
        ok: out.status.success(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn json_of(cmd: &mut Command) -> Vec<Value> {
    let out = cmd.output().await.unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `certex get ID --sender CN-CNCERT` as `team`: the record.
async fn get_as(b: &TestBroker, team: &str, id: &str) -> Value {
    json_of(certex(b, team).args(["get", id, "--sender", "CN-CNCERT"]))
        .await
        .remove(0)
}

fn observables(v: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["type"].as_str().unwrap().to_owned(),
                o["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = list
        .iter()
        .map(|(t, v)| (t.to_string(), v.to_string()))
        .collect();
    out.sort();
    out
}

/// A bundle in the shape misp-stix 2.1 writes for a MISP event: the
/// organisation's identity, the TLP 1.0 green marking, a `grouping` with
/// the event's attributes as indicators and an observed-data object, and
/// `x_misp_*` custom properties.
fn misp_bundle() -> Value {
    let t = "2025-06-02T08:15:00.000Z";
    let ind = |uuid: &str, misp_type: &str, pattern: &str| {
        json!({"type": "indicator", "spec_version": "2.1", "id": format!("indicator--{uuid}"),
               "created_by_ref": "identity--55f6ea5e-2c60-40e5-964f-47a8950d210f",
               "created": t, "modified": t,
               "pattern": pattern, "pattern_type": "stix", "pattern_version": "2.1",
               "valid_from": t, "valid_until": "2027-01-01T00:00:00Z",
               "kill_chain_phases": [{"kill_chain_name": "misp-category", "phase_name": "Network activity"}],
               "labels": [format!("misp:type=\"{misp_type}\""), "misp:category=\"Network activity\"", "misp:to_ids=\"True\""],
               "x_misp_comment": "seen in proxy logs"})
    };
    json!({
        "type": "bundle",
        "id": "bundle--6f1b1b3c-5b4e-4d8a-9d6f-2a8c9b7e1f00",
        "objects": [
            {"type": "identity", "spec_version": "2.1", "id": "identity--55f6ea5e-2c60-40e5-964f-47a8950d210f",
             "created": t, "modified": t, "name": "CIRCL", "identity_class": "organization"},
            {"type": "marking-definition", "spec_version": "2.1", "id": TLP1_GREEN,
             "created": "2017-01-20T00:00:00.000Z", "definition_type": "tlp", "name": "TLP:GREEN",
             "definition": {"tlp": "green"}},
            {"type": "grouping", "spec_version": "2.1", "id": "grouping--5e8a4d6b-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
             "created_by_ref": "identity--55f6ea5e-2c60-40e5-964f-47a8950d210f",
             "created": t, "modified": t, "name": "Phishing wave against ministries",
             "description": "Credential phishing kit hosted on compromised sites.",
             "context": "suspicious-activity",
             "object_refs": [
                 "indicator--91ae0a21-c7ae-4c7f-b84b-b84a7ce53d1f",
                 "indicator--92ae0a21-c7ae-4c7f-b84b-b84a7ce53d1f",
                 "indicator--93ae0a21-c7ae-4c7f-b84b-b84a7ce53d1f",
                 "indicator--94ae0a21-c7ae-4c7f-b84b-b84a7ce53d1f",
                 "indicator--95ae0a21-c7ae-4c7f-b84b-b84a7ce53d1f",
                 "observed-data--96ae0a21-c7ae-4c7f-b84b-b84a7ce53d1f",
                 "identity--55f6ea5e-2c60-40e5-964f-47a8950d210f"
             ],
             "labels": ["Threat-Report", "misp:tool=\"MISP-STIX-Converter\"", "tlp:green"],
             "object_marking_refs": [TLP1_GREEN],
             "x_misp_published": true, "x_misp_threat_level_id": "2"},
            ind("91ae0a21-c7ae-4c7f-b84b-b84a7ce53d1f", "ip-dst", "[ipv4-addr:value = '198.51.100.23']"),
            ind("92ae0a21-c7ae-4c7f-b84b-b84a7ce53d1f", "domain", "[domain-name:value = 'login-gov.example']"),
            ind("93ae0a21-c7ae-4c7f-b84b-b84a7ce53d1f", "url",
                "[url:value = 'https://login-gov.example/owa/auth.php' OR url:value = 'http://login-gov.example/']"),
            ind("94ae0a21-c7ae-4c7f-b84b-b84a7ce53d1f", "sha256", &format!("[file:hashes.'SHA-256' = '{SHA256}']")),
            // filename|md5: an AND of two comparisons, not imported.
            ind("95ae0a21-c7ae-4c7f-b84b-b84a7ce53d1f", "filename|md5",
                &format!("[file:name = 'kit.zip' AND file:hashes.MD5 = '{MD5}']")),
            {"type": "observed-data", "spec_version": "2.1", "id": "observed-data--96ae0a21-c7ae-4c7f-b84b-b84a7ce53d1f",
             "created": t, "modified": t, "first_observed": t, "last_observed": t, "number_observed": 1,
             "object_refs": ["email-addr--97ae0a21-c7ae-4c7f-b84b-b84a7ce53d1f"],
             "labels": ["misp:type=\"email-src\"", "misp:category=\"Payload delivery\""]},
            {"type": "email-addr", "spec_version": "2.1", "id": "email-addr--97ae0a21-c7ae-4c7f-b84b-b84a7ce53d1f",
             "value": "helpdesk@login-gov.example"}
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misp_bundle_imports_once_and_other_teams_read_it() {
    let b = TestBroker::start().await;
    let bundle = write_bundle(&b, "misp.json", &misp_bundle());
    let grouping = "grouping--5e8a4d6b-1c2d-4e5f-8a9b-0c1d2e3f4a5b";

    let r = import(&b, "CN-CNCERT", &bundle, &[]).await;
    assert!(r.ok, "{}\n{:#?}", r.stderr, r.lines);
    assert_eq!(r.lines.len(), 10);
    let g = r.of(grouping);
    assert_eq!(g["result"], "imported");
    assert_eq!(g["type"], "grouping");
    let id = g["id"].as_str().unwrap().to_owned();
    assert_eq!(g["seq"], 1);
    for ind in ["91", "92", "93", "94"] {
        let l = r.of(&format!(
            "indicator--{ind}ae0a21-c7ae-4c7f-b84b-b84a7ce53d1f"
        ));
        assert_eq!(l["result"], "merged");
        assert_eq!(l["into"], grouping);
    }
    let and = r.of("indicator--95ae0a21-c7ae-4c7f-b84b-b84a7ce53d1f");
    assert_eq!(and["result"], "skipped");
    assert!(and["reason"].as_str().unwrap().contains("AND"), "{and}");
    assert_eq!(
        r.of("observed-data--96ae0a21-c7ae-4c7f-b84b-b84a7ce53d1f")["result"],
        "merged"
    );
    assert_eq!(
        r.of("email-addr--97ae0a21-c7ae-4c7f-b84b-b84a7ce53d1f")["into"],
        grouping
    );
    assert_eq!(
        r.of("identity--55f6ea5e-2c60-40e5-964f-47a8950d210f")["result"],
        "skipped"
    );
    assert_eq!(r.of(TLP1_GREEN)["result"], "skipped");
    assert_eq!(r.summary["imported"], 1);
    assert_eq!(r.summary["merged"], 6);
    assert_eq!(r.summary["refused"], 0);

    // Another team reads the warning, signature verified.
    let got = json_of(certex(&b, "BR-CERTBR").args(["get", &id, "--sender", "CN-CNCERT"])).await;
    let rec = &got[0];
    assert_eq!(rec["verified"], true);
    assert_eq!(rec["kind"], "warning");
    assert_eq!(rec["tlp"], "green");
    assert_eq!(rec["sender"], "CN-CNCERT");
    let w = &rec["body"]["warning"];
    assert_eq!(w["title"], "Phishing wave against ministries");
    assert_eq!(
        w["summary"],
        "Credential phishing kit hosted on compromised sites."
    );
    assert_eq!(w["severity"], "medium");
    assert_eq!(w["expires_at"], "2027-01-01T00:00:00.000Z");
    assert_eq!(
        observables(&w["observables"]),
        pairs(&[
            ("ipv4", "198.51.100.23"),
            ("domain", "login-gov.example"),
            ("url", "https://login-gov.example/owa/auth.php"),
            ("url", "http://login-gov.example/"),
            ("sha256", SHA256),
            ("email", "helpdesk@login-gov.example"),
        ])
    );
    assert_eq!(rec["body"]["audience"], "community");

    // A second import publishes nothing new.
    let again = import(&b, "CN-CNCERT", &bundle, &[]).await;
    assert!(again.ok, "{}", again.stderr);
    assert_eq!(again.of(grouping)["result"], "duplicate");
    assert_eq!(again.of(grouping)["seq"], 1);
    assert_eq!(again.summary["imported"], 0);
    assert_eq!(again.summary["duplicate"], 1);
    let seen = json_of(certex(&b, "RU-GOVCERT").args(["subscribe", "--from", "0"])).await;
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0]["id"], id.as_str());
    assert_eq!(seen[0]["verified"], true);
}

/// A bundle in the shape OpenCTI exports a report with: TLP 2.0 amber (the
/// official marking object), `x_opencti_*` properties, an incident with
/// incident-core data, a CVE, a course of action, SCOs linked by
/// relationships.
fn opencti_bundle() -> Value {
    let t = "2025-03-30T12:00:00.000Z";
    json!({
        "type": "bundle",
        "id": "bundle--0b5f3f3e-8c1a-4a43-9a5c-7d2b6f5e4a01",
        "objects": [
            {"type": "marking-definition", "spec_version": "2.1", "id": TLP2_AMBER,
             "created": "2022-10-01T00:00:00.000Z", "name": "TLP:AMBER",
             "extensions": {"extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d":
                 {"extension_type": "property-extension", "tlp_2_0": "amber"}},
             "x_opencti_id": "1b2c", "x_opencti_order": 3, "x_opencti_color": "#ffc000"},
            {"type": "identity", "spec_version": "2.1", "id": "identity--c017f212-546b-4f21-999e-2d8c9f4b1a01",
             "created": t, "modified": t, "name": "CN-CNCERT analysts", "identity_class": "organization",
             "x_opencti_organization_type": "csirt"},
            {"type": "report", "spec_version": "2.1", "id": "report--a445d22a-db0c-4b5d-9ec8-e9ad0b6dbdd7",
             "created": t, "modified": t, "name": "xz-utils backdoor exploitation",
             "description": "Backdoored liblzma observed on exposed SSH servers.",
             "report_types": ["threat-report"], "published": t, "confidence": 85,
             "created_by_ref": "identity--c017f212-546b-4f21-999e-2d8c9f4b1a01",
             "object_marking_refs": [TLP2_AMBER],
             "object_refs": [
                 "indicator--0c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c",
                 "vulnerability--1c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c",
                 "course-of-action--2c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c",
                 "relationship--3c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c",
                 "ipv4-addr--4c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c",
                 "incident--5c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c",
                 "domain-name--6c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c",
                 "relationship--7c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c",
                 "relationship--8c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c"
             ],
             "x_opencti_id": "6e7f", "x_opencti_reliability": "B - Usually reliable",
             "x_opencti_files": []},
            {"type": "indicator", "spec_version": "2.1", "id": "indicator--0c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c",
             "created": t, "modified": t, "name": "xz C2 host", "pattern_type": "stix",
             "pattern": "[ipv6-addr:value = '2001:db8:dead::7'] OR [autonomous-system:number = 64511]",
             "valid_from": t, "valid_until": "2026-12-31T00:00:00Z",
             "object_marking_refs": [TLP2_AMBER], "x_opencti_score": 80,
             "x_opencti_main_observable_type": "IPv6-Addr", "x_opencti_detection": true},
            {"type": "vulnerability", "spec_version": "2.1", "id": "vulnerability--1c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c",
             "created": t, "modified": t, "name": "CVE-2024-3094",
             "external_references": [{"source_name": "cve", "external_id": "CVE-2024-3094"}],
             "x_opencti_cvss_base_score": 10.0, "object_marking_refs": [TLP2_AMBER]},
            {"type": "course-of-action", "spec_version": "2.1", "id": "course-of-action--2c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c",
             "created": t, "modified": t, "name": "Downgrade xz-utils",
             "description": "Roll back to 5.4.6 and rotate SSH host keys.", "object_marking_refs": [TLP2_AMBER]},
            {"type": "relationship", "spec_version": "2.1", "id": "relationship--3c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c",
             "created": t, "modified": t, "relationship_type": "mitigates",
             "source_ref": "course-of-action--2c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c",
             "target_ref": "vulnerability--1c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c"},
            {"type": "ipv4-addr", "spec_version": "2.1", "id": "ipv4-addr--4c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c",
             "value": "203.0.113.45", "x_opencti_score": 70, "object_marking_refs": [TLP2_AMBER]},
            {"type": "incident", "spec_version": "2.1", "id": "incident--5c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c",
             "created": t, "modified": t, "name": "Backdoored sshd at a power utility",
             "description": "sshd linked against a backdoored liblzma.",
             "incident_type": "compromise", "severity": "low", "first_seen": "2025-03-29T22:10:00Z",
             "object_marking_refs": [TLP2_AMBER],
             "extensions": {"extension-definition--ef765651-680c-498d-9894-99799f2fa126": {
                 "extension_type": "property-extension", "determination": "confirmed",
                 "investigation_status": "open", "incident_types": ["data-exfiltration", "intrusions"],
                 "criticality": 80}}},
            {"type": "domain-name", "spec_version": "2.1", "id": "domain-name--6c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c",
             "value": "update-xz.example", "object_marking_refs": [TLP2_AMBER]},
            {"type": "relationship", "spec_version": "2.1", "id": "relationship--7c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c",
             "created": t, "modified": t, "relationship_type": "related-to",
             "source_ref": "incident--5c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c",
             "target_ref": "ipv4-addr--4c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c"},
            {"type": "relationship", "spec_version": "2.1", "id": "relationship--8c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c",
             "created": t, "modified": t, "relationship_type": "related-to",
             "source_ref": "domain-name--6c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c",
             "target_ref": "incident--5c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c"},
            {"type": "malware", "spec_version": "2.1", "id": "malware--9c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c",
             "created": t, "modified": t, "name": "xz backdoor", "is_family": false}
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencti_bundle_imports_an_incident_and_a_warning() {
    let b = TestBroker::start().await;
    let bundle = write_bundle(&b, "opencti.json", &opencti_bundle());
    let report = "report--a445d22a-db0c-4b5d-9ec8-e9ad0b6dbdd7";
    let incident = "incident--5c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c";

    let r = import(
        &b,
        "CN-CNCERT",
        &bundle,
        &["--audience", "teams:BR-CERTBR,RU-GOVCERT"],
    )
    .await;
    assert!(r.ok, "{}\n{:#?}", r.stderr, r.lines);
    assert_eq!(r.of(report)["result"], "imported");
    assert_eq!(r.of(incident)["result"], "imported");
    // The incident is published first, so the warning can refer to it.
    assert_eq!(r.of(incident)["seq"], 1);
    assert_eq!(r.of(report)["seq"], 2);
    for merged in [
        "indicator--0c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c",
        "vulnerability--1c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c",
        "course-of-action--2c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c",
        "ipv4-addr--4c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c",
        "domain-name--6c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c",
        "relationship--3c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c",
    ] {
        assert_eq!(r.of(merged)["result"], "merged", "{merged}");
        assert_eq!(r.of(merged)["into"], report, "{merged}");
    }
    // The SCOs are in the report and linked to the incident: both take them.
    assert!(
        r.of("ipv4-addr--4c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c")["notes"][0]
            .as_str()
            .unwrap()
            .contains(incident)
    );
    for linked in [
        "relationship--7c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c",
        "relationship--8c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c",
    ] {
        assert_eq!(r.of(linked)["result"], "merged", "{linked}");
        assert_eq!(r.of(linked)["into"], incident, "{linked}");
    }
    let malware = r.of("malware--9c8f9d5a-3b1e-4e0a-9f3c-1d2e3f4a5b6c");
    assert_eq!(malware["result"], "skipped");
    assert!(malware["reason"].as_str().unwrap().contains("malware"));
    assert_eq!(r.of(TLP2_AMBER)["result"], "skipped");

    let inc = get_as(&b, "BR-CERTBR", r.of(incident)["id"].as_str().unwrap()).await;
    assert_eq!(inc["tlp"], "amber");
    assert_eq!(inc["kind"], "incident");
    let body = &inc["body"]["incident"];
    assert_eq!(body["title"], "Backdoored sshd at a power utility");
    assert_eq!(body["category"], "intrusions");
    assert_eq!(body["severity"], "high", "criticality 80 wins");
    assert_eq!(body["detected_at"], "2025-03-29T22:10:00.000Z");
    assert_eq!(
        observables(&body["observables"]),
        pairs(&[("ipv4", "203.0.113.45"), ("domain", "update-xz.example")])
    );
    assert_eq!(
        inc["body"]["audience"],
        json!({"teams": ["BR-CERTBR", "RU-GOVCERT"]})
    );

    let warn = get_as(&b, "BR-CERTBR", r.of(report)["id"].as_str().unwrap()).await;
    assert_eq!(warn["tlp"], "amber");
    let w = &warn["body"]["warning"];
    assert_eq!(w["title"], "xz-utils backdoor exploitation");
    assert_eq!(w["severity"], "high", "from confidence 85");
    assert_eq!(w["cves"], json!(["CVE-2024-3094"]));
    assert_eq!(
        w["recommended_actions"],
        json!(["Downgrade xz-utils: Roll back to 5.4.6 and rotate SSH host keys."])
    );
    assert_eq!(w["expires_at"], "2026-12-31T00:00:00.000Z");
    assert_eq!(
        observables(&w["observables"]),
        pairs(&[
            ("ipv6", "2001:db8:dead::7"),
            ("asn", "AS64511"),
            ("ipv4", "203.0.113.45"),
            ("domain", "update-xz.example"),
        ])
    );
    assert_eq!(
        warn["body"]["references"],
        json!([{"sender": "CN-CNCERT", "id": r.of(incident)["id"]}])
    );

    // Outside the audience, nothing is disclosed.
    let out = certex(&b, "DE-CERTBUND")
        .args([
            "get",
            r.of(report)["id"].as_str().unwrap(),
            "--sender",
            "CN-CNCERT",
        ])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_publishes_nothing_and_refusals_say_why() {
    let b = TestBroker::start().await;
    let t = "2025-01-10T09:00:00.000Z";
    let marked = json!({"type": "indicator", "spec_version": "2.1",
        "id": "indicator--11111111-1111-4111-8111-111111111111", "created": t, "modified": t,
        "name": "Scanner", "pattern": "[ipv4-addr:value = '192.0.2.10']", "pattern_type": "stix",
        "valid_from": t, "object_marking_refs": [TLP1_GREEN]});
    let unmarked = json!({"type": "indicator", "spec_version": "2.1",
        "id": "indicator--22222222-2222-4222-8222-222222222222", "created": t, "modified": t,
        "pattern": "[domain-name:value = 'c2.example']", "pattern_type": "stix", "valid_from": t});
    let bundle = json!({"type": "bundle", "id": "bundle--33333333-3333-4333-8333-333333333333",
                        "objects": [marked, unmarked]});
    let path = write_bundle(&b, "small.json", &bundle);

    // No TLP on one object and no --tlp: that object is refused, the run
    // exits non-zero, and a dry run publishes nothing.
    let r = import(&b, "CN-CNCERT", &path, &["--dry-run"]).await;
    assert!(!r.ok);
    assert!(r.stderr.contains("refused"), "{}", r.stderr);
    let refused = r.of("indicator--22222222-2222-4222-8222-222222222222");
    assert_eq!(refused["result"], "refused");
    assert!(refused["reason"].as_str().unwrap().contains("no TLP"));
    let ok = r.of("indicator--11111111-1111-4111-8111-111111111111");
    assert_eq!(ok["result"], "imported");
    assert_eq!(r.summary["dry_run"], true);
    assert_eq!(
        ok["draft"],
        json!({"id": ok["id"], "tlp": "green", "audience": "community", "exercise": "", "references": [],
               "warning": {"title": "Scanner", "summary": "", "severity": "medium", "cves": [],
                           "observables": [{"type": "ipv4", "value": "192.0.2.10"}],
                           "recommended_actions": []}})
    );
    // With --tlp both map; the unnamed indicator is titled by its pattern.
    let r = import(&b, "CN-CNCERT", &path, &["--dry-run", "--tlp", "clear"]).await;
    assert!(r.ok, "{}", r.stderr);
    let d = &r.of("indicator--22222222-2222-4222-8222-222222222222")["draft"];
    assert_eq!(d["tlp"], "clear");
    assert_eq!(d["warning"]["title"], "[domain-name:value = 'c2.example']");
    let c = b.client("CN-CNCERT").await;
    assert!(
        catch_up(&c).await.is_empty(),
        "a dry run published something"
    );

    // Publish; then the producer changes an object: the same id with other
    // content is refused, with the reason.
    let r = import(&b, "CN-CNCERT", &path, &["--tlp", "clear"]).await;
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.summary["imported"], 2);
    let mut changed = bundle.clone();
    changed["objects"][0]["pattern"] = json!("[ipv4-addr:value = '192.0.2.11']");
    changed["objects"][0]["modified"] = json!("2025-01-11T09:00:00.000Z");
    let path2 = write_bundle(&b, "changed.json", &changed);
    let r = import(&b, "CN-CNCERT", &path2, &["--tlp", "clear"]).await;
    assert!(!r.ok);
    let l = r.of("indicator--11111111-1111-4111-8111-111111111111");
    assert_eq!(l["result"], "refused");
    assert!(l["reason"].as_str().unwrap().contains("immutable"), "{l}");
    assert_eq!(
        r.of("indicator--22222222-2222-4222-8222-222222222222")["result"],
        "duplicate"
    );
    assert_eq!(catch_up(&c).await.len(), 2);

    // TLP:RED for the community: the broker's reason comes back.
    let red = json!({"type": "indicator", "spec_version": "2.1",
        "id": "indicator--44444444-4444-4444-8444-444444444444", "created": t, "modified": t,
        "pattern": "[url:value = 'https://c2.example/gate']", "pattern_type": "stix",
        "valid_from": t, "object_marking_refs": [TLP2_RED]});
    let path3 = write_bundle(&b, "red.json", &red);
    let r = import(&b, "CN-CNCERT", &path3, &[]).await;
    assert!(!r.ok);
    let l = r.of("indicator--44444444-4444-4444-8444-444444444444");
    assert_eq!(l["result"], "refused");
    assert!(
        l["reason"].as_str().unwrap().contains("InvalidArgument"),
        "{l}"
    );
    let r = import(&b, "CN-CNCERT", &path3, &["--audience", "teams:BR-CERTBR"]).await;
    assert!(r.ok, "{}", r.stderr);

    // Exercise traffic only with --exercise, and then only in that exercise.
    let mut drill = red.clone();
    drill["id"] = json!("indicator--55555555-5555-4555-8555-555555555555");
    drill["labels"] = json!(["EXERCISE"]);
    drill["object_marking_refs"] = json!([TLP1_GREEN]);
    let path4 = write_bundle(&b, "drill.json", &json!([drill]));
    let r = import(&b, "CN-CNCERT", &path4, &[]).await;
    assert!(r.ok);
    let l = &r.lines[0];
    assert_eq!(l["result"], "skipped");
    assert!(l["reason"].as_str().unwrap().contains("--exercise"));
    let r = import(&b, "CN-CNCERT", &path4, &["--exercise", "CYBER-SHIELD-26"]).await;
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.lines[0]["result"], "imported");
    let ex = json_of(certex(&b, "BR-CERTBR").args([
        "get",
        r.lines[0]["id"].as_str().unwrap(),
        "--sender",
        "CN-CNCERT",
        "--exercise",
        "CYBER-SHIELD-26",
    ]))
    .await;
    assert_eq!(ex[0]["exercise"], "CYBER-SHIELD-26");
    assert_eq!(ex[0]["marking"], "EXERCISE");
}

/// A bundle exported by certex imports back into equivalent drafts: the
/// incident's title, description, category, severity and observables, and
/// the warning's title, summary, severity, CVEs, observables and actions,
/// each at its TLP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certex_export_imports_back_into_equivalent_drafts() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    let incident = draft(
        r#"{"tlp": "amber", "audience": {"teams": ["BR-CERTBR"]},
            "incident": {"title": "Grid intrusion", "description": "Operator VPN abused",
                         "category": "intrusions", "severity": "critical",
                         "observables": [{"type": "ipv4", "value": "203.0.113.7"},
                                         {"type": "domain", "value": "grid-c2.example"},
                                         {"type": "sha256", "value": "d6a770ba38583ed4bb4525bd96e50461655d2758b6d4bb7b3f5c3f2e1e8bb4c3"}]}}"#,
    );
    let warning = draft(
        r#"{"tlp": "green", "audience": "community",
            "warning": {"title": "xz backdoor exploited", "summary": "Patch now",
                        "severity": "high", "cves": ["CVE-2024-3094"],
                        "observables": [{"type": "url", "value": "http://bad.example/x"},
                                        {"type": "email", "value": "ops@bad.example"}],
                        "recommended_actions": ["Upgrade xz-utils to 5.6.2 or later"]}}"#,
    );
    cn.submit(incident.clone()).await.unwrap();
    cn.submit(warning.clone()).await.unwrap();

    let exported = b.tmp.path().join("export.json");
    let out = certex(&b, "BR-CERTBR")
        .args(["export", "--format", "stix21", "--out"])
        .arg(&exported)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let r = import(&b, "BR-CERTBR", &exported, &["--dry-run"]).await;
    assert!(r.ok, "{}", r.stderr);
    let drafts: Vec<&Value> = r
        .lines
        .iter()
        .filter(|l| l["result"] == "imported")
        .map(|l| &l["draft"])
        .collect();
    assert_eq!(drafts.len(), 2, "{:#?}", r.lines);
    let back = |kind: &str| -> Value {
        drafts
            .iter()
            .find(|d| d.get(kind).is_some())
            .unwrap_or_else(|| panic!("no {kind} draft: {drafts:#?}"))
            .to_owned()
            .clone()
    };
    let (i, w) = (back("incident"), back("warning"));
    let want_i = serde_json::to_value(&incident).unwrap();
    let want_w = serde_json::to_value(&warning).unwrap();
    assert_eq!(i["tlp"], "amber");
    for f in ["title", "description", "category", "severity"] {
        assert_eq!(i["incident"][f], want_i["incident"][f], "incident.{f}");
    }
    assert_eq!(
        observables(&i["incident"]["observables"]),
        observables(&want_i["incident"]["observables"])
    );
    assert_eq!(w["tlp"], "green");
    for f in [
        "title",
        "summary",
        "severity",
        "cves",
        "recommended_actions",
    ] {
        assert_eq!(w["warning"][f], want_w["warning"][f], "warning.{f}");
    }
    assert_eq!(
        observables(&w["warning"]["observables"]),
        observables(&want_w["warning"]["observables"])
    );
}
