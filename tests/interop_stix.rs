//! `certex export --format stix21` against a real broker (SPEC §5, §14):
//! several teams publish every kind of record through the `certex` binary
//! (all observable types, warnings full and minimal, TLP:RED to one team, a
//! group audience, two assistance requests driven through their lifecycle,
//! a retraction, exercise traffic), then each team exports with the binary.
//!
//! Every bundle passes the OASIS `stix2_validator` in strict mode, and a JSON
//! Schema check (Python `jsonschema`, `tests/python/check_json_schemas.py`)
//! of what the validator does not look at: the incident-core and task
//! extension contents (schemas written here from the OASIS extension
//! definitions), the TLP 2.0 marking definitions (the official ids, written
//! here literally) and the certex provenance extension. The content checks
//! follow the mapping of `src/interop/stix.rs`; the access checks search the
//! raw text of every team's bundle.
//!
//! The tools are found through `CERTEX_STIX_VALIDATOR` (set by `.ci/run`),
//! else `target/ci-venv/bin/stix2_validator`; the Python beside the
//! validator (its venv has `jsonschema`) runs the schema check. A missing
//! tool fails the test, saying how to install it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;

use common::TestBroker;
use serde_json::{Value, json};
use tokio::process::Command;

// === the published identifiers, written literally ===

/// The official TLP 2.0 marking definitions (OASIS cti-stix-common-objects,
/// `extension-definition-specifications/tlp-2.0`): id, name, `tlp_2_0`.
const TLP2: [(&str, &str, &str); 5] = [
    (
        "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
        "TLP:CLEAR",
        "clear",
    ),
    (
        "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
        "TLP:GREEN",
        "green",
    ),
    (
        "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
        "TLP:AMBER",
        "amber",
    ),
    (
        "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
        "TLP:AMBER+STRICT",
        "amber+strict",
    ),
    (
        "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
        "TLP:RED",
        "red",
    ),
];
const TLP2_EXT: &str = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d";
const INCIDENT_CORE: &str = "extension-definition--ef765651-680c-498d-9894-99799f2fa126";
const TASK: &str = "extension-definition--2074a052-8be4-4932-849e-f5e7798e0030";
const CERTEX_EXT: &str = "extension-definition--3d9a6c41-5b0e-4f2c-8e7a-c1f4b2d9e860";

const EXERCISE: &str = "DRILL-STIX-1";
const ALL: [&str; 7] = [
    "CN-CNCERT",
    "RU-GOVCERT",
    "BR-CERTBR",
    "IN-CERTIN",
    "ZA-CSIRT",
    "US-CISA",
    "DE-CERTBUND",
];

// === tools ===

struct Tools {
    validator: PathBuf,
    python: PathBuf,
}

const INSTALL: &str = "install the tools as .ci/run does: \
     python3 -m venv target/ci-venv && target/ci-venv/bin/pip install \
     'stix2-validator==3.3.2' 'jsonschema==4.26.0' (or point CERTEX_STIX_VALIDATOR \
     at a stix2_validator whose venv has jsonschema)";

/// The validator and the Python of its venv; a missing tool fails the test.
fn tools() -> Tools {
    let validator = match std::env::var_os("CERTEX_STIX_VALIDATOR") {
        Some(p) => PathBuf::from(p),
        None => {
            let p =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ci-venv/bin/stix2_validator");
            assert!(
                p.exists(),
                "CERTEX_STIX_VALIDATOR is unset and {} does not exist: {INSTALL}",
                p.display()
            );
            p
        }
    };
    assert!(
        validator.exists(),
        "CERTEX_STIX_VALIDATOR={} does not exist: {INSTALL}",
        validator.display()
    );
    let beside = validator.with_file_name("python");
    let python = if beside.exists() {
        beside
    } else {
        std::env::var_os("CERTEX_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                panic!(
                    "no python beside {} and CERTEX_PYTHON is unset: {INSTALL}",
                    validator.display()
                )
            })
    };
    Tools { validator, python }
}

/// Runs the validator in strict mode on `files`; every one must be "Valid".
fn validate_strictly(tools: &Tools, files: &[PathBuf]) {
    let out = std::process::Command::new(&tools.validator)
        .args(["--strict", "--version", "2.1"])
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}: {INSTALL}", tools.validator.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let valid = text.matches("STIX JSON: Valid").count();
    assert!(
        out.status.success() && valid == files.len() && !text.contains("Invalid"),
        "stix2_validator --strict --version 2.1 on {} bundle(s): exit {:?}, {valid} valid:\n{text}",
        files.len(),
        out.status.code()
    );
}

/// Runs the JSON Schema checks; the output lines (`ok`/`FAIL`, one per
/// check) and whether all passed.
fn run_schema_checks(
    tools: &Tools,
    dir: &Path,
    schemas: &Value,
    checks: &[Value],
) -> (bool, String) {
    let file = dir.join("schema-checks.json");
    std::fs::write(
        &file,
        serde_json::to_vec(&json!({"schemas": schemas, "checks": checks})).unwrap(),
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/check_json_schemas.py");
    let out = std::process::Command::new(&tools.python)
        .arg(script)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}: {INSTALL}", tools.python.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "the schema check did not run: {text}"
    );
    (out.status.success(), text)
}

// === the schemas ===

/// JSON Schemas of what the validator does not check, written from the
/// extension definitions. The task schema lists STIX's common properties
/// itself: the OASIS file takes them from `core.json` in another `allOf`
/// branch, where its `additionalProperties: false` would refuse them.
fn schemas() -> Value {
    let timestamp = json!({
        "type": "string",
        "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z$"
    });
    let marking = json!({
        "oneOf": TLP2.iter().map(|(id, name, word)| json!({
            "type": "object",
            "required": ["type", "spec_version", "id", "created", "name", "extensions"],
            "additionalProperties": false,
            "properties": {
                "type": {"const": "marking-definition"},
                "spec_version": {"const": "2.1"},
                "id": {"const": id},
                "created": {"const": "2022-10-01T00:00:00.000Z"},
                "name": {"const": name},
                "extensions": {
                    "type": "object",
                    "required": [TLP2_EXT],
                    "additionalProperties": false,
                    "properties": {TLP2_EXT: {
                        "type": "object",
                        "required": ["extension_type", "tlp_2_0"],
                        "additionalProperties": false,
                        "properties": {
                            "extension_type": {"const": "property-extension"},
                            "tlp_2_0": {"const": word}
                        }
                    }}
                }
            }
        })).collect::<Vec<_>>()
    });
    let incident_core = json!({
        "type": "object",
        "required": ["extension_type", "determination", "investigation_status"],
        "additionalProperties": false,
        "properties": {
            "extension_type": {"enum": ["property-extension"]},
            "determination": {"enum": ["blocked", "failed-attempt", "false-positive",
                                       "low-value", "successful-attempt", "suspected"]},
            "investigation_status": {"type": "string", "minLength": 1},
            "incident_types": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "detection_methods": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "criticality": {"type": "integer", "minimum": 0, "maximum": 100}
        }
    });
    let task = json!({
        "type": "object",
        "required": ["type", "spec_version", "id", "created", "modified", "outcome", "extensions"],
        "additionalProperties": false,
        "properties": {
            "type": {"const": "task"},
            "spec_version": {"const": "2.1"},
            "id": {"type": "string", "pattern": "^task--[0-9a-f-]{36}$"},
            "created": timestamp,
            "modified": timestamp,
            "created_by_ref": {"type": "string", "pattern": "^identity--"},
            "revoked": {"type": "boolean"},
            "labels": {"type": "array", "items": {"type": "string"}},
            "object_marking_refs": {"type": "array", "items": {"type": "string", "pattern": "^marking-definition--"}},
            "external_references": {"type": "array"},
            "name": {"type": "string"},
            "description": {"type": "string"},
            "task_types": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "outcome": {"enum": ["cancelled", "failed", "ongoing", "pending", "successful", "unknown"]},
            "start_time": timestamp,
            "end_time": timestamp,
            "error": {"type": "string"},
            "priority": {"type": "integer", "minimum": 0, "maximum": 100},
            "extensions": {
                "type": "object",
                "required": [TASK],
                "properties": {TASK: {
                    "type": "object",
                    "required": ["extension_type"],
                    "additionalProperties": false,
                    "properties": {"extension_type": {"const": "new-sdo"}}
                }}
            }
        }
    });
    let team = json!({"type": "string", "pattern": "^[A-Z]{2}-[A-Z0-9-]+$"});
    let provenance = json!({
        "type": "object",
        "required": ["extension_type", "seq", "leaf_hash", "sender", "message_id", "key_id",
                     "signature", "tlp", "audience", "received_at"],
        "properties": {
            "extension_type": {"const": "property-extension"},
            "seq": {"type": "integer", "minimum": 1},
            "leaf_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "sender": team,
            "message_id": {"type": "string", "minLength": 1},
            "key_id": {"type": "string", "minLength": 1},
            "signature": {"type": "string", "pattern": "^([0-9a-f]{2})+$", "minLength": 128, "maxLength": 128},
            "tlp": {"enum": ["clear", "green", "amber", "amber+strict", "red"]},
            "audience": {"oneOf": [
                {"const": "community"},
                {"type": "object", "required": ["teams"], "additionalProperties": false,
                 "properties": {"teams": {"type": "array", "minItems": 1, "items": team}}},
                {"type": "object", "required": ["group"], "additionalProperties": false,
                 "properties": {"group": {"type": "string", "minLength": 1}}}
            ]},
            "received_at": timestamp,
            "exercise": {"type": "string", "minLength": 1},
            "severity": {"enum": ["low", "medium", "high", "critical"]},
            "expires_at": timestamp,
            "case_state": {"enum": ["open", "acknowledged", "accepted", "declined", "in-progress",
                                    "resolved", "closed", "withdrawn"]},
            "updated_by": team,
            "addressee": team
        }
    });
    json!({
        "tlp2-marking": marking,
        "incident-core": incident_core,
        "task": task,
        "certex-provenance": provenance,
    })
}

// === bundles ===

/// An exported bundle: who exported it, how, its file and its text.
struct Export {
    label: String,
    path: PathBuf,
    text: String,
    bundle: Value,
}

impl Export {
    fn objects(&self) -> &[Value] {
        self.bundle["objects"].as_array().unwrap()
    }

    fn with_id(&self, id: &str) -> Vec<&Value> {
        self.objects().iter().filter(|o| o["id"] == id).collect()
    }

    fn of_type(&self, t: &str) -> Vec<&Value> {
        self.objects().iter().filter(|o| o["type"] == t).collect()
    }

    /// The objects whose provenance names the message `id`.
    fn of_message(&self, id: &str) -> Vec<&Value> {
        self.objects()
            .iter()
            .filter(|o| o["extensions"][CERTEX_EXT]["message_id"] == id)
            .collect()
    }

    /// The id of the `kind` object a message became.
    fn object_of(&self, kind: &str, message: &str) -> String {
        let found: BTreeSet<&str> = self
            .of_message(message)
            .iter()
            .filter(|o| o["type"] == kind)
            .map(|o| o["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{}: one {kind} of message {message}",
            self.label
        );
        found.into_iter().next().unwrap().to_owned()
    }

    fn ids(&self) -> Vec<String> {
        self.objects()
            .iter()
            .map(|o| o["id"].as_str().unwrap().to_owned())
            .collect()
    }

    fn contains(&self, needle: &str) -> bool {
        self.text.contains(needle)
    }
}

/// The `certex` binary as `team` against `b`.
fn certex(b: &TestBroker, team: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_certex"));
    c.env("CERTEX_BROKER", b.url())
        .env("CERTEX_PKI", b.pki())
        .env("CERTEX_TEAM", team)
        .env("RUST_LOG", "error");
    c
}

fn succeeded(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// A receipt: what the test needs of a published record.
#[derive(Clone, Debug)]
struct Sent {
    seq: u64,
    id: String,
    leaf_hash: String,
    tlp: &'static str,
}

/// `certex submit` of `draft` as `team`.
async fn submit(b: &TestBroker, team: &str, draft: Value) -> Sent {
    let tlp = match draft["tlp"].as_str().unwrap() {
        "clear" => "clear",
        "green" => "green",
        "amber" => "amber",
        "amber+strict" => "amber+strict",
        "red" => "red",
        other => panic!("tlp {other}"),
    };
    let file = b
        .tmp
        .path()
        .join(format!("draft-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&file, serde_json::to_vec(&draft).unwrap()).unwrap();
    let out = certex(b, team)
        .arg("submit")
        .arg(&file)
        .output()
        .await
        .unwrap();
    let r: Value = serde_json::from_str(&succeeded(&format!("submit as {team}"), &out)).unwrap();
    Sent {
        seq: r["seq"].as_u64().unwrap(),
        id: r["id"].as_str().unwrap().to_owned(),
        leaf_hash: r["leaf_hash"].as_str().unwrap().to_owned(),
        tlp,
    }
}

/// `certex case ARGS…` as `team`.
async fn case(b: &TestBroker, team: &str, args: &[&str]) {
    let out = certex(b, team)
        .arg("case")
        .args(args)
        .output()
        .await
        .unwrap();
    succeeded(&format!("case {args:?} as {team}"), &out);
}

/// `certex export --format stix21 --out FILE EXTRA…` as `team`.
async fn export(b: &TestBroker, team: &str, extra: &[&str], label: &str) -> Export {
    let path = b.tmp.path().join(format!("{label}.json"));
    let out = certex(b, team)
        .args(["export", "--format", "stix21", "--out"])
        .arg(&path)
        .args(extra)
        .output()
        .await
        .unwrap();
    succeeded(&format!("export {label} as {team} {extra:?}"), &out);
    let text = std::fs::read_to_string(&path).unwrap();
    let bundle: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(bundle["type"], "bundle", "{label}");
    Export {
        label: label.to_owned(),
        path,
        text,
        bundle,
    }
}

// === the scenario ===

const INC_URL: &str = "http://c2.grid-intrusion.example/gate.php?id='7'&ua=\"x\"";
/// [`INC_URL`] as a URI (RFC 3986): the double quotes percent-encoded.
const INC_URI: &str = "http://c2.grid-intrusion.example/gate.php?id='7'&ua=%22x%22";
const W1_URL: &str = "http://update.xz-mirror.example/get?f='xz'&t=\"5.6.1\"";
/// [`W1_URL`] as a URI (RFC 3986): the double quotes percent-encoded.
const W1_URI: &str = "http://update.xz-mirror.example/get?f='xz'&t=%225.6.1%22";
const RED_TITLE: &str = "RED-ONLY Kraftwerk Nord OT breach";
const RED_VALUES: [&str; 3] = [
    "192.0.2.201",
    "red-only-ot.example",
    "fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9",
];
const GROUP_TITLE: &str = "SCO-group advisory: hydro SCADA scanning";
const RETRACTED_TITLE: &str = "Wrong attribution: APT-Mistake";
const RETRACTED_DOMAIN: &str = "mistaken-attribution.example";
const EX_TITLE: &str = "Drill: ransomware at the port authority";
const EX_WARNING: &str = "Drill warning: port OT exposure";

struct Scenario {
    incident: Sent,
    warning: Sent,
    bare: Sent,
    red: Sent,
    group: Sent,
    request: Sent,
    declined: Sent,
    retracted: Sent,
    retraction: Sent,
    exercise: Sent,
    exercise_warning: Sent,
}

async fn publish(b: &TestBroker) -> Scenario {
    let incident = submit(b, "CN-CNCERT", json!({
        "tlp": "amber", "audience": {"teams": ["BR-CERTBR", "RU-GOVCERT"]},
        "incident": {"title": "Grid intrusion via VPN", "description": "Spear-phishing, then the VPN",
            "category": "intrusions", "severity": "high", "sectors": ["energy"],
            "detected_at": "2026-11-25T10:00:00Z",
            "observables": [
                {"type": "ipv4", "value": "203.0.113.7"},
                {"type": "ipv6", "value": "2001:db8::7"},
                {"type": "cidr", "value": "198.51.100.0/24"},
                {"type": "domain", "value": "c2.grid-intrusion.example"},
                {"type": "url", "value": INC_URL},
                {"type": "email", "value": "phisher@grid-intrusion.example"},
                {"type": "sha256", "value": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},
                {"type": "sha1", "value": "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3"},
                {"type": "md5", "value": "098f6bcd4621d373cade4e832627b4f6"},
                {"type": "asn", "value": "AS64500"}]}})).await;
    let warning = submit(b, "RU-GOVCERT", json!({
        "tlp": "clear", "audience": "community",
        "warning": {"title": "xz backdoor exploited", "summary": "Exploitation in the wild",
            "severity": "critical", "expires_at": "2027-06-01T00:00:00Z",
            "cves": ["CVE-2024-3094", "CVE-2024-3400"],
            "observables": [
                {"type": "ipv4", "value": "192.0.2.10"},
                {"type": "domain", "value": "update.xz-mirror.example"},
                {"type": "url", "value": W1_URL},
                {"type": "sha256", "value": "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"}],
            "recommended_actions": ["Downgrade xz-utils to 5.4.6", "Block the update mirror"]}})).await;
    let bare = submit(
        b,
        "US-CISA",
        json!({
        "tlp": "clear", "audience": "community",
        "warning": {"title": "Heads-up: details to follow", "severity": "low"}}),
    )
    .await;
    let red = submit(
        b,
        "DE-CERTBUND",
        json!({
        "tlp": "red", "audience": {"teams": ["IN-CERTIN"]},
        "incident": {"title": RED_TITLE, "category": "malicious-code", "severity": "critical",
            "observables": [
                {"type": "ipv4", "value": RED_VALUES[0]},
                {"type": "domain", "value": RED_VALUES[1]},
                {"type": "sha256", "value": RED_VALUES[2]}]}}),
    )
    .await;
    let group = submit(
        b,
        "IN-CERTIN",
        json!({
        "tlp": "amber", "audience": {"group": "SCO"},
        "warning": {"title": GROUP_TITLE, "severity": "medium",
            "observables": [{"type": "domain", "value": "scada-sco.example"}]}}),
    )
    .await;
    let request = submit(
        b,
        "BR-CERTBR",
        json!({
        "tlp": "amber", "audience": {"teams": ["CN-CNCERT"]},
        "request": {"to": "CN-CNCERT", "action": "preserve-evidence", "legal_basis": "MLAT art. 18",
            "description": "Preserve logs of 203.0.113.7", "respond_by": "2030-12-01T00:00:00Z",
            "priority": "high"}}),
    )
    .await;
    let id = request.id.clone();
    case(b, "CN-CNCERT", &["ack", &id]).await;
    case(b, "CN-CNCERT", &["accept", &id]).await;
    case(
        b,
        "CN-CNCERT",
        &["progress", &id, "--note", "logs preserved"],
    )
    .await;
    case(
        b,
        "CN-CNCERT",
        &["resolve", &id, "--note", "90-day order in place"],
    )
    .await;
    case(b, "BR-CERTBR", &["close", &id]).await;
    let declined = submit(
        b,
        "ZA-CSIRT",
        json!({
        "tlp": "green", "audience": {"teams": ["US-CISA"]},
        "request": {"to": "US-CISA", "action": "takedown", "legal_basis": "bilateral MoU",
            "description": "Take down phishing kit", "respond_by": "2030-12-05T00:00:00Z",
            "priority": "medium"}}),
    )
    .await;
    let id = declined.id.clone();
    case(b, "US-CISA", &["ack", &id]).await;
    case(
        b,
        "US-CISA",
        &["decline", &id, "--reason", "outside our jurisdiction"],
    )
    .await;
    let retracted = submit(
        b,
        "CN-CNCERT",
        json!({
        "tlp": "amber", "audience": "community",
        "warning": {"title": RETRACTED_TITLE, "severity": "high", "cves": ["CVE-2023-4966"],
            "observables": [{"type": "domain", "value": RETRACTED_DOMAIN}],
            "recommended_actions": ["Hunt for APT-Mistake"]}}),
    )
    .await;
    let retraction = submit(
        b,
        "CN-CNCERT",
        json!({
        "tlp": "amber", "audience": "community",
        "retraction": {"target": retracted.id, "reason": "attribution was wrong"}}),
    )
    .await;
    let exercise = submit(
        b,
        "BR-CERTBR",
        json!({
        "tlp": "clear", "audience": "community", "exercise": EXERCISE,
        "incident": {"title": EX_TITLE, "category": "malicious-code", "severity": "medium",
            "observables": [{"type": "ipv4", "value": "198.51.100.77"}]}}),
    )
    .await;
    let exercise_warning = submit(
        b,
        "ZA-CSIRT",
        json!({
        "tlp": "green", "audience": "community", "exercise": EXERCISE,
        "warning": {"title": EX_WARNING, "severity": "high",
            "observables": [{"type": "domain", "value": "drill-port.example"}],
            "recommended_actions": ["Isolate the port OT network"]}}),
    )
    .await;
    Scenario {
        incident,
        warning,
        bare,
        red,
        group,
        request,
        declined,
        retracted,
        retraction,
        exercise,
        exercise_warning,
    }
}

// === the test ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stix_export_validates_maps_every_record_and_keeps_access() {
    let tools = tools();
    let b = TestBroker::start().await;
    let s = publish(&b).await;

    let mut real = BTreeMap::new();
    for team in ALL {
        real.insert(team, export(&b, team, &[], &format!("real-{team}")).await);
    }
    let again = export(&b, "BR-CERTBR", &[], "again-BR-CERTBR").await;
    let drill = export(
        &b,
        "ZA-CSIRT",
        &["--exercise", EXERCISE],
        "exercise-ZA-CSIRT",
    )
    .await;
    let other_drill = export(
        &b,
        "ZA-CSIRT",
        &["--exercise", "DRILL-OTHER"],
        "other-exercise",
    )
    .await;
    let warnings = export(&b, "BR-CERTBR", &["--kind", "warning"], "kind-warning").await;
    let from_seq = s.bare.seq.to_string();
    let from = export(&b, "BR-CERTBR", &["--from", &from_seq], "from").await;

    let mut all: Vec<&Export> = real.values().collect();
    all.extend([&again, &drill, &other_drill, &warnings, &from]);
    let files: Vec<PathBuf> = all.iter().map(|e| e.path.clone()).collect();
    validate_strictly(&tools, &files);

    schema_and_markings(&tools, &b, &s, &all);
    incident_content(&real["BR-CERTBR"], &s);
    warning_content(&real["US-CISA"], &s);
    bare_warning(&real["ZA-CSIRT"], &s);
    task_lifecycles(&real, &s);
    retraction(&real, &s);
    exercise_traffic(&real, &drill, &other_drill, &s);
    kind_and_from(&real["BR-CERTBR"], &warnings, &from, &s);
    red_and_group_access(&real, &s);

    // Deterministic ids: the same log exported twice names the same objects.
    assert_eq!(
        real["BR-CERTBR"].ids(),
        again.ids(),
        "ids differ between two exports"
    );
    assert_ne!(
        real["BR-CERTBR"].bundle["id"], again.bundle["id"],
        "bundle ids are per export"
    );
}

/// Extension contents and markings by JSON Schema; every marking reference
/// resolves to a TLP 2.0 marking of the bundle whose TLP is the record's.
fn schema_and_markings(tools: &Tools, b: &TestBroker, s: &Scenario, all: &[&Export]) {
    let sent = [
        &s.incident,
        &s.warning,
        &s.bare,
        &s.red,
        &s.group,
        &s.request,
        &s.declined,
        &s.retracted,
        &s.retraction,
        &s.exercise,
        &s.exercise_warning,
    ];
    let mut checks = Vec::new();
    let mut counts = BTreeMap::<&str, usize>::new();
    for e in all {
        // Exactly the five official TLP 2.0 markings.
        let markings: BTreeSet<&str> = e
            .of_type("marking-definition")
            .iter()
            .map(|o| o["id"].as_str().unwrap())
            .collect();
        let official: BTreeSet<&str> = TLP2.iter().map(|(id, _, _)| *id).collect();
        assert_eq!(markings, official, "{}: the TLP 2.0 markings", e.label);
        let tlp_of: BTreeMap<&str, &str> = TLP2.iter().map(|(id, _, w)| (*id, *w)).collect();

        // The TLP each object must carry: from its record's provenance, and
        // for the objects a record refers to, from that record.
        let mut expected: BTreeMap<String, String> = BTreeMap::new();
        for o in e.objects() {
            let p = &o["extensions"][CERTEX_EXT];
            if p.is_null() {
                continue;
            }
            let tlp = p["tlp"].as_str().unwrap().to_owned();
            let msg = p["message_id"].as_str().unwrap();
            if let Some(r) = sent.iter().find(|r| r.id == msg) {
                assert_eq!(tlp, r.tlp, "{}: provenance tlp of {msg}", e.label);
                assert_eq!(p["seq"], r.seq, "{}: provenance seq of {msg}", e.label);
                assert_eq!(
                    p["leaf_hash"], r.leaf_hash,
                    "{}: leaf hash of {msg}",
                    e.label
                );
            }
            expected.insert(o["id"].as_str().unwrap().to_owned(), tlp.clone());
            for r in o["object_refs"].as_array().into_iter().flatten() {
                expected.insert(r.as_str().unwrap().to_owned(), tlp.clone());
            }
        }
        for o in e.objects() {
            if o["type"] == "relationship"
                && let Some(t) = expected.get(o["source_ref"].as_str().unwrap()).cloned()
            {
                expected
                    .entry(o["id"].as_str().unwrap().to_owned())
                    .or_insert(t.clone());
                expected
                    .entry(o["target_ref"].as_str().unwrap().to_owned())
                    .or_insert(t);
            }
        }
        for o in e.objects() {
            let id = o["id"].as_str().unwrap();
            let where_ = format!("{} {id}", e.label);
            if let Some(refs) = o["object_marking_refs"].as_array() {
                assert_eq!(refs.len(), 1, "{where_}: one TLP marking");
                let m = refs[0].as_str().unwrap();
                let tlp = tlp_of
                    .get(m)
                    .unwrap_or_else(|| panic!("{where_}: marking {m} is not a TLP 2.0 marking"));
                let want = expected
                    .get(id)
                    .unwrap_or_else(|| panic!("{where_}: a marked object of no record"));
                assert_eq!(tlp, want, "{where_}: marking TLP vs the record's TLP");
                *counts.entry("marked").or_default() += 1;
            }
            let mut check = |schema: &str, instance: &Value| {
                *counts.entry("schema").or_default() += 1;
                checks.push(json!({"where": where_, "schema": schema, "instance": instance}));
            };
            match o["type"].as_str().unwrap() {
                "marking-definition" => check("tlp2-marking", o),
                "incident" if o["revoked"] != true => {
                    assert!(
                        o["extensions"][INCIDENT_CORE].is_object(),
                        "{where_}: incident-core"
                    );
                    check("incident-core", &o["extensions"][INCIDENT_CORE]);
                }
                "task" => check("task", o),
                _ => {}
            }
            let p = &o["extensions"][CERTEX_EXT];
            if !p.is_null() {
                check("certex-provenance", p);
            } else if ["incident", "report", "task", "note"].contains(&o["type"].as_str().unwrap())
            {
                assert_eq!(o["revoked"], true, "{where_}: provenance on a live object");
            }
        }
    }
    assert!(
        counts["marked"] > 50 && counts["schema"] > 100,
        "{counts:?}"
    );
    let (ok, text) = run_schema_checks(tools, b.tmp.path(), &schemas(), &checks);
    let failures: Vec<&str> = text.lines().filter(|l| !l.starts_with("ok\t")).collect();
    assert!(
        ok && failures.is_empty(),
        "JSON Schema check failed:\n{}",
        failures.join("\n")
    );
    assert_eq!(
        text.lines().count(),
        checks.len(),
        "one result per check:\n{text}"
    );
}

/// The incident with observables of every type, as one of its readers sees it.
fn incident_content(e: &Export, s: &Scenario) {
    let id = e.object_of("incident", &s.incident.id);
    let inc = e.with_id(&id)[0];
    assert_eq!(inc["name"], "Grid intrusion via VPN");
    let core = &inc["extensions"][INCIDENT_CORE];
    assert_eq!(core["determination"], "successful-attempt");
    assert_eq!(core["incident_types"], json!(["intrusions"]));
    assert_eq!(core["criticality"], 75);
    assert_eq!(
        inc["extensions"][CERTEX_EXT]["audience"],
        json!({"teams": ["BR-CERTBR", "RU-GOVCERT"]})
    );
    let linked: BTreeSet<&str> = e
        .of_type("relationship")
        .iter()
        .filter(|r| r["source_ref"] == id.as_str() && r["relationship_type"] == "related-to")
        .map(|r| r["target_ref"].as_str().unwrap())
        .collect();
    let scos: Vec<&Value> = e
        .objects()
        .iter()
        .filter(|o| linked.contains(o["id"].as_str().unwrap()))
        .collect();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for o in &scos {
        let t = o["type"].as_str().unwrap();
        assert!(
            o["id"].as_str().unwrap().starts_with(&format!("{t}--")),
            "SCO id {o}"
        );
        seen.insert(match t {
            "file" => format!("file {}", o["hashes"]),
            "autonomous-system" => format!("{t} {}", o["number"]),
            _ => format!("{t} {}", o["value"].as_str().unwrap()),
        });
    }
    let want: BTreeSet<String> = [
        "ipv4-addr 203.0.113.7".to_owned(),
        "ipv6-addr 2001:db8::7".into(),
        "ipv4-addr 198.51.100.0/24".into(),
        "domain-name c2.grid-intrusion.example".into(),
        format!("url {INC_URI}"),
        "email-addr phisher@grid-intrusion.example".into(),
        r#"file {"SHA-256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}"#
            .into(),
        r#"file {"SHA-1":"a94a8fe5ccb19ba61c4c0873d391e987982fbbd3"}"#.into(),
        r#"file {"MD5":"098f6bcd4621d373cade4e832627b4f6"}"#.into(),
        "autonomous-system 64500".into(),
    ]
    .into();
    assert_eq!(seen, want, "the incident's observables as SCOs");
}

/// The full warning: indicators with patterns and `valid_until`, CVEs as
/// vulnerabilities, recommended actions as courses of action that mitigate.
fn warning_content(e: &Export, s: &Scenario) {
    let id = e.object_of("report", &s.warning.id);
    let report = e.with_id(&id)[0];
    assert_eq!(report["name"], "xz backdoor exploited");
    assert_eq!(report["report_types"], json!(["threat-report"]));
    assert!(report["published"].is_string());
    assert_eq!(
        report["extensions"][CERTEX_EXT]["expires_at"],
        "2027-06-01T00:00:00.000Z"
    );
    let refs: BTreeSet<&str> = report["object_refs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    for r in &refs {
        assert!(
            !e.with_id(r).is_empty(),
            "report refers to {r}, absent from the bundle"
        );
    }
    let referred = |t: &str| -> Vec<&Value> {
        e.of_type(t)
            .into_iter()
            .filter(|o| refs.contains(o["id"].as_str().unwrap()))
            .collect()
    };
    let indicators = referred("indicator");
    let patterns: BTreeSet<&str> = indicators
        .iter()
        .map(|i| i["pattern"].as_str().unwrap())
        .collect();
    let want: BTreeSet<String> = [
        "[ipv4-addr:value = '192.0.2.10']".to_owned(),
        "[domain-name:value = 'update.xz-mirror.example']".into(),
        format!("[url:value = '{}']", W1_URI.replace('\'', "\\'")),
        "[file:hashes.'SHA-256' = '2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824']".into(),
    ]
    .into();
    assert_eq!(
        patterns,
        want.iter().map(String::as_str).collect(),
        "one indicator per observable"
    );
    for i in &indicators {
        assert_eq!(
            i["valid_until"], "2027-06-01T00:00:00.000Z",
            "valid_until = expires_at"
        );
        assert_eq!(i["pattern_type"], "stix");
    }
    let vulns = referred("vulnerability");
    let cves: BTreeSet<String> = vulns
        .iter()
        .map(|v| {
            let r = &v["external_references"][0];
            assert_eq!(r["source_name"], "cve", "{v}");
            assert_eq!(v["name"], r["external_id"], "{v}");
            r["external_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        cves,
        ["CVE-2024-3094".to_owned(), "CVE-2024-3400".into()].into()
    );
    let coas = referred("course-of-action");
    let actions: BTreeSet<&str> = coas
        .iter()
        .map(|c| c["description"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["Downgrade xz-utils to 5.4.6", "Block the update mirror"].into()
    );
    let vuln_ids: BTreeSet<&str> = vulns.iter().map(|v| v["id"].as_str().unwrap()).collect();
    for c in &coas {
        let mitigated: BTreeSet<&str> = referred("relationship")
            .iter()
            .filter(|r| r["relationship_type"] == "mitigates" && r["source_ref"] == c["id"])
            .map(|r| r["target_ref"].as_str().unwrap())
            .collect();
        assert_eq!(mitigated, vuln_ids, "{} mitigates the CVEs", c["id"]);
    }
}

/// A warning with nothing but a title (and its required severity).
fn bare_warning(e: &Export, s: &Scenario) {
    let id = e.object_of("report", &s.bare.id);
    let report = e.with_id(&id)[0];
    assert_eq!(report["name"], "Heads-up: details to follow");
    assert!(!report["object_refs"].as_array().unwrap().is_empty());
    assert!(report.get("description").is_none());
    for r in report["object_refs"].as_array().unwrap() {
        let t = r.as_str().unwrap().split("--").next().unwrap();
        assert!(
            !["indicator", "vulnerability", "course-of-action"].contains(&t),
            "{r}"
        );
    }
}

/// A STIX timestamp in a form that sorts by time whatever its precision
/// (`….123Z` and `….123007Z`).
fn instant(ts: &Value) -> String {
    let ts = ts.as_str().unwrap().strip_suffix('Z').unwrap();
    let (whole, fraction) = ts.split_once('.').unwrap_or((ts, ""));
    format!("{whole}.{fraction:0<9}")
}

/// The versions of a task: their outcomes in log order, `modified` strictly
/// increasing.
fn task_versions(e: &Export, request: &Sent) -> (String, Vec<String>) {
    let id = e.object_of("task", &request.id);
    let versions = e.with_id(&id);
    let mut last = String::new();
    for v in &versions {
        let m = instant(&v["modified"]);
        assert!(m > last, "{}: task {id} modified {m} after {last}", e.label);
        last = m;
    }
    let outcomes = versions
        .iter()
        .map(|v| v["outcome"].as_str().unwrap().to_owned())
        .collect();
    (id, outcomes)
}

fn task_lifecycles(real: &BTreeMap<&str, Export>, s: &Scenario) {
    for team in ["BR-CERTBR", "CN-CNCERT"] {
        let e = &real[team];
        let (id, outcomes) = task_versions(e, &s.request);
        assert_eq!(
            outcomes,
            [
                "pending",
                "ongoing",
                "ongoing",
                "ongoing",
                "successful",
                "successful"
            ],
            "{team}"
        );
        let notes: Vec<&Value> = e
            .of_type("note")
            .into_iter()
            .filter(|n| n["object_refs"] == json!([id]))
            .collect();
        assert_eq!(notes.len(), 5, "{team}: a note per case update");
        assert!(notes.iter().any(|n| n["content"] == "logs preserved"));
        assert!(
            notes
                .iter()
                .any(|n| n["content"] == "90-day order in place")
        );
    }
    for team in ["ZA-CSIRT", "US-CISA"] {
        let e = &real[team];
        let (id, outcomes) = task_versions(e, &s.declined);
        assert_eq!(outcomes, ["pending", "ongoing", "failed"], "{team}");
        let notes: Vec<&Value> = e
            .of_type("note")
            .into_iter()
            .filter(|n| n["object_refs"] == json!([id]))
            .collect();
        assert_eq!(notes.len(), 2, "{team}");
        assert!(
            notes
                .iter()
                .any(|n| n["content"] == "outside our jurisdiction")
        );
    }
    // Neither case is anyone else's.
    for team in ["RU-GOVCERT", "IN-CERTIN", "DE-CERTBUND"] {
        assert!(real[team].of_type("task").is_empty(), "{team} sees a task");
        assert!(real[team].of_type("note").is_empty(), "{team} sees a note");
    }
}

/// The retracted warning is a revoked report for every reader, its content
/// only in the sender's bundle.
fn retraction(real: &BTreeMap<&str, Export>, s: &Scenario) {
    let sender = &real["CN-CNCERT"];
    let id = sender.object_of("report", &s.retracted.id);
    assert!(sender.contains(RETRACTED_TITLE) && sender.contains(RETRACTED_DOMAIN));
    let versions = sender.with_id(&id);
    assert_eq!(
        versions.len(),
        2,
        "the sender: the report and its revoked version"
    );
    assert_ne!(versions[0]["revoked"], true);
    assert_eq!(versions[1]["revoked"], true);
    assert!(instant(&versions[1]["modified"]) > instant(&versions[0]["modified"]));
    for (team, e) in real.iter().filter(|(t, _)| **t != "CN-CNCERT") {
        let versions = e.with_id(&id);
        assert!(!versions.is_empty(), "{team}: the revoked report");
        assert!(
            versions.iter().all(|v| v["revoked"] == true),
            "{team}: {versions:?}"
        );
        assert!(!e.contains(RETRACTED_TITLE), "{team}: the retracted title");
        assert!(
            !e.contains(RETRACTED_DOMAIN),
            "{team}: the retracted observable"
        );
        assert!(!e.contains("CVE-2023-4966"), "{team}: the retracted CVE");
        assert!(!e.contains("APT-Mistake"), "{team}: the retracted action");
    }
}

/// Exercise traffic only in exercise exports, every object marked.
fn exercise_traffic(real: &BTreeMap<&str, Export>, drill: &Export, other: &Export, s: &Scenario) {
    for (team, e) in real {
        for needle in [
            EXERCISE,
            EX_TITLE,
            EX_WARNING,
            "198.51.100.77",
            "drill-port.example",
        ] {
            assert!(
                !e.contains(needle),
                "{team}: real-world export has {needle}"
            );
        }
    }
    for needle in [EX_TITLE, EX_WARNING, "198.51.100.77", "drill-port.example"] {
        assert!(drill.contains(needle), "the exercise export lacks {needle}");
        assert!(
            !other.contains(needle),
            "another exercise's export has {needle}"
        );
    }
    for needle in ["xz backdoor exploited", "Heads-up: details to follow"] {
        assert!(
            !drill.contains(needle),
            "the exercise export has real traffic: {needle}"
        );
    }
    let inc = drill.object_of("incident", &s.exercise.id);
    let report = drill.object_of("report", &s.exercise_warning.id);
    let mut marked = 0;
    for o in drill.objects() {
        let t = o["type"].as_str().unwrap();
        if o.get("created_by_ref").is_none()
            || ["identity", "marking-definition", "extension-definition"].contains(&t)
        {
            continue;
        }
        assert_eq!(o["labels"][0], "EXERCISE", "{o}");
        if let Some(n) = o["name"].as_str() {
            assert!(n.starts_with("EXERCISE"), "{o}");
        }
        if !o["extensions"][CERTEX_EXT].is_null() {
            assert_eq!(o["extensions"][CERTEX_EXT]["exercise"], EXERCISE);
        }
        marked += 1;
    }
    assert!(marked >= 5, "{marked} exercise objects");
    assert!(
        drill.with_id(&inc)[0]["name"]
            .as_str()
            .unwrap()
            .contains(EX_TITLE)
    );
    assert!(
        drill.with_id(&report)[0]["name"]
            .as_str()
            .unwrap()
            .contains(EX_WARNING)
    );
}

/// `--kind warning` and `--from SEQ`.
fn kind_and_from(full: &Export, warnings: &Export, from: &Export, s: &Scenario) {
    let allowed = [
        "report",
        "indicator",
        "vulnerability",
        "course-of-action",
        "relationship",
        "identity",
        "marking-definition",
        "extension-definition",
    ];
    for o in warnings.objects() {
        assert!(
            allowed.contains(&o["type"].as_str().unwrap()),
            "--kind warning exported {o}"
        );
    }
    for r in [&s.warning, &s.bare] {
        let id = full.object_of("report", &r.id);
        assert!(
            !warnings.with_id(&id).is_empty(),
            "--kind warning lacks {id}"
        );
    }
    assert!(
        full.contains("Grid intrusion via VPN") && !warnings.contains("Grid intrusion via VPN")
    );

    for o in from.objects() {
        if let Some(seq) = o["extensions"][CERTEX_EXT]["seq"].as_u64() {
            assert!(seq > s.bare.seq, "--from {} exported seq {seq}", s.bare.seq);
        }
    }
    for (kind, r) in [
        ("incident", &s.incident),
        ("report", &s.warning),
        ("report", &s.bare),
    ] {
        let id = full.object_of(kind, &r.id);
        assert!(
            from.with_id(&id).is_empty(),
            "--from {}: {id} of seq {}",
            s.bare.seq,
            r.seq
        );
    }
    let task = full.object_of("task", &s.request.id);
    assert!(
        !from.with_id(&task).is_empty(),
        "--from lost the later case"
    );
}

/// SPEC §5 on export: the TLP:RED record only in its sender's and its
/// addressee's bundles; the group record only in its members' bundles.
fn red_and_group_access(real: &BTreeMap<&str, Export>, s: &Scenario) {
    let addressee = &real["IN-CERTIN"];
    // Its STIX ids, as the addressee received them: the incident, its SCOs
    // and the relationships between them.
    let inc = addressee.object_of("incident", &s.red.id);
    let mut ids = vec![inc.clone()];
    for r in addressee.of_type("relationship") {
        if r["source_ref"] == inc.as_str() {
            ids.push(r["id"].as_str().unwrap().to_owned());
            ids.push(r["target_ref"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        ids.len(),
        1 + 2 * RED_VALUES.len(),
        "the RED incident's objects: {ids:?}"
    );
    let mut needles: Vec<&str> = vec![RED_TITLE];
    needles.extend(RED_VALUES);
    needles.extend(ids.iter().map(String::as_str));
    for team in ["IN-CERTIN", "DE-CERTBUND"] {
        for n in &needles {
            assert!(real[team].contains(n), "positive control: {team} lacks {n}");
        }
    }
    for team in [
        "CN-CNCERT",
        "RU-GOVCERT",
        "BR-CERTBR",
        "ZA-CSIRT",
        "US-CISA",
    ] {
        for n in &needles {
            assert!(
                !real[team].contains(n),
                "TLP:RED leak: {team}'s bundle has {n}"
            );
        }
    }
    for team in ["CN-CNCERT", "RU-GOVCERT", "IN-CERTIN"] {
        assert!(
            real[team].contains(GROUP_TITLE),
            "positive control: {team} lacks the SCO record"
        );
        assert!(real[team].contains("scada-sco.example"));
    }
    let group_report = real["IN-CERTIN"].object_of("report", &s.group.id);
    for team in ["BR-CERTBR", "ZA-CSIRT", "US-CISA", "DE-CERTBUND"] {
        for n in [GROUP_TITLE, "scada-sco.example", group_report.as_str()] {
            assert!(
                !real[team].contains(n),
                "group leak: {team}'s bundle has {n}"
            );
        }
    }
}

/// The schemas are not vacuous: each refuses what its definition forbids.
#[test]
fn schemas_refuse_what_the_definitions_forbid() {
    let tools = tools();
    let dir = tempfile::tempdir().unwrap();
    let mut good_marking = json!({
        "type": "marking-definition", "spec_version": "2.1", "id": TLP2[4].0,
        "created": "2022-10-01T00:00:00.000Z", "name": "TLP:RED",
        "extensions": {TLP2_EXT: {"extension_type": "property-extension", "tlp_2_0": "red"}}});
    let mut swapped = good_marking.clone();
    swapped["extensions"][TLP2_EXT]["tlp_2_0"] = "amber".into();
    let mut unofficial = good_marking.clone();
    unofficial["id"] = "marking-definition--00000000-0000-4000-8000-000000000000".into();
    let core = json!({"extension_type": "property-extension", "determination": "suspected",
                      "investigation_status": "open", "incident_types": ["intrusions"], "criticality": 75});
    let mut over = core.clone();
    over["criticality"] = 101.into();
    let mut bad_det = core.clone();
    bad_det["determination"] = "likely".into();
    let task = json!({"type": "task", "spec_version": "2.1",
        "id": "task--6f1b1c2e-1d4a-4b6c-9e0f-2b3a4c5d6e7f",
        "created": "2026-11-26T10:00:00.000Z", "modified": "2026-11-26T10:00:00.000Z",
        "outcome": "pending", "priority": 75,
        "extensions": {TASK: {"extension_type": "new-sdo"}}});
    let mut bad_outcome = task.clone();
    bad_outcome["outcome"] = "done".into();
    let mut bad_ext = task.clone();
    bad_ext["extensions"][TASK]["extension_type"] = "property-extension".into();
    let prov = json!({"extension_type": "property-extension", "seq": 3, "leaf_hash": "ab".repeat(32),
        "sender": "CN-CNCERT", "message_id": "m", "key_id": "k", "signature": "cd".repeat(64),
        "tlp": "amber", "audience": {"teams": ["BR-CERTBR"]}, "received_at": "2026-11-26T10:00:00.000Z"});
    let mut short_hash = prov.clone();
    short_hash["leaf_hash"] = "ab".into();
    let mut white = prov.clone();
    white["tlp"] = "white".into();
    let cases = [
        ("good marking", "tlp2-marking", good_marking.take(), true),
        ("swapped tlp_2_0", "tlp2-marking", swapped, false),
        ("unofficial id", "tlp2-marking", unofficial, false),
        ("good core", "incident-core", core, true),
        ("criticality 101", "incident-core", over, false),
        ("determination", "incident-core", bad_det, false),
        ("good task", "task", task, true),
        ("outcome done", "task", bad_outcome, false),
        ("task extension type", "task", bad_ext, false),
        ("good provenance", "certex-provenance", prov, true),
        ("short leaf hash", "certex-provenance", short_hash, false),
        ("tlp white", "certex-provenance", white, false),
    ];
    let checks: Vec<Value> = cases
        .iter()
        .map(|(w, s, i, _)| json!({"where": w, "schema": s, "instance": i}))
        .collect();
    let (_, text) = run_schema_checks(&tools, dir.path(), &schemas(), &checks);
    for (w, _, _, good) in &cases {
        let passed = text.lines().any(|l| l == format!("ok\t{w}"));
        assert_eq!(passed, *good, "{w}: {text}");
    }
}
