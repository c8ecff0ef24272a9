//! Unit tests of the STIX import mapping: TLP markings, severities,
//! containers and their members, refusals and skips.

use serde_json::json;

use super::*;

const TLP1_GREEN: &str = "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da";
const TLP1_WHITE: &str = "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9";
const TLP1_RED: &str = "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed";
const TLP2_AMBER: &str = "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421";
const TLP2_STRICT: &str = "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003";

fn opts() -> Options {
    Options {
        team: "CN-CNCERT".into(),
        tlp: None,
        audience: AudienceJson::Word("community".into()),
        exercise: None,
    }
}

fn indicator(id: &str, pattern: &str, marking: &str) -> Value {
    json!({"type": "indicator", "spec_version": "2.1", "id": id,
           "created": "2026-11-20T10:00:00.000Z", "modified": "2026-11-20T10:00:00.000Z",
           "pattern": pattern, "pattern_type": "stix", "valid_from": "2026-11-20T10:00:00Z",
           "object_marking_refs": [marking]})
}

fn line<'a>(i: &'a Import, stix_id: &str) -> &'a ObjectReport {
    i.reports.iter().find(|r| r.stix_id == stix_id).unwrap()
}

#[test]
fn tlp_1_and_2_markings_map_and_the_strictest_wins() {
    let none = HashMap::new();
    let with = |refs: &[&str]| json!({"object_marking_refs": refs});
    assert_eq!(tlp_of_object(&with(&[TLP1_GREEN]), &none), Some("green"));
    assert_eq!(tlp_of_object(&with(&[TLP1_WHITE]), &none), Some("clear"));
    assert_eq!(tlp_of_object(&with(&[TLP1_RED]), &none), Some("red"));
    assert_eq!(tlp_of_object(&with(&[TLP2_AMBER]), &none), Some("amber"));
    assert_eq!(
        tlp_of_object(&with(&[TLP2_AMBER, TLP1_GREEN, TLP2_STRICT]), &none),
        Some("amber+strict")
    );
    assert_eq!(
        tlp_of_object(&with(&["marking-definition--x"]), &none),
        None
    );
    assert_eq!(tlp_of_object(&json!({}), &none), None);
    // Granular markings count too.
    assert_eq!(
        tlp_of_object(
            &json!({"object_marking_refs": [TLP1_GREEN],
                    "granular_markings": [{"marking_ref": TLP1_RED, "selectors": ["description"]}]}),
            &none
        ),
        Some("red")
    );
}

#[test]
fn bundle_marking_definitions_in_platform_shapes() {
    for (m, want) in [
        // OpenCTI.
        (
            json!({"type": "marking-definition", "id": "marking-definition--1",
                   "definition_type": "TLP", "definition": {"TLP": "TLP:AMBER"}, "name": "TLP:AMBER"}),
            Some("amber"),
        ),
        // STIX 2.0 style.
        (
            json!({"type": "marking-definition", "id": "marking-definition--2",
                   "definition_type": "tlp", "definition": {"tlp": "white"}}),
            Some("clear"),
        ),
        (
            json!({"type": "marking-definition", "id": "marking-definition--3",
                   "definition_type": "tlp", "name": "TLP:AMBER+STRICT"}),
            Some("amber+strict"),
        ),
        // TLP 2.0 extension on a copy with another id.
        (
            json!({"type": "marking-definition", "id": "marking-definition--4",
                   "extensions": {TLP2_EXTENSION: {"extension_type": "property-extension", "tlp_2_0": "red"}}}),
            Some("red"),
        ),
        (
            json!({"type": "marking-definition", "id": "marking-definition--5",
                   "definition_type": "statement", "definition": {"statement": "Copyright"}}),
            None,
        ),
        (
            json!({"type": "marking-definition", "id": "marking-definition--6",
                   "definition_type": "tlp", "definition": {"tlp": "purple"}}),
            None,
        ),
    ] {
        assert_eq!(tlp_of_definition(&m), want, "{m}");
    }
    assert_eq!(tlp_word("TLP:CLEAR"), Some("clear"));
    assert_eq!(tlp_word("amber strict"), Some("amber+strict"));
}

#[test]
fn severity_from_scores_labels_and_properties() {
    let core = |n: u64| json!({"extensions": {INCIDENT_CORE_EXTENSION: {"criticality": n}}});
    assert_eq!(severity_of(&core(0)).0, "low");
    assert_eq!(severity_of(&core(25)).0, "low");
    assert_eq!(severity_of(&core(50)).0, "medium");
    assert_eq!(severity_of(&core(75)).0, "high");
    assert_eq!(severity_of(&core(100)).0, "critical");
    assert_eq!(severity_of(&json!({"severity": "High"})).0, "high");
    assert_eq!(
        severity_of(&json!({"labels": ["severity:critical"]})).0,
        "critical"
    );
    let (s, note) = severity_of(&json!({"confidence": 90}));
    assert_eq!(s, "critical");
    assert!(note.unwrap().contains("confidence"));
    assert_eq!(severity_of(&json!({"x_opencti_score": 40})).0, "medium");
    assert_eq!(severity_of(&json!({"confidence": 900})).0, "medium");
    assert_eq!(severity_of(&json!({})).0, "medium");
}

#[test]
fn missing_tlp_is_refused_per_object_unless_given() {
    let bundle = json!({"type": "bundle", "id": "bundle--1", "objects": [
        indicator("indicator--a", "[ipv4-addr:value = '203.0.113.7']", TLP1_GREEN),
        {"type": "indicator", "id": "indicator--b", "pattern": "[domain-name:value = 'evil.example']",
         "pattern_type": "stix", "modified": "2026-11-20T10:00:00.000Z"},
    ]});
    let i = import(&bundle, &opts()).unwrap();
    assert_eq!(line(&i, "indicator--a").result, Outcome::Imported);
    let b = line(&i, "indicator--b");
    assert_eq!(b.result, Outcome::Refused);
    assert!(b.reason.as_ref().unwrap().contains("no TLP"));
    assert_eq!(i.drafts.len(), 1);
    assert_eq!(i.drafts[0].draft.tlp, "green");

    let mut o = opts();
    o.tlp = Some("amber".into());
    let i = import(&bundle, &o).unwrap();
    assert_eq!(i.drafts.len(), 2);
    assert_eq!(i.drafts[0].draft.tlp, "green", "a marking beats --tlp");
    assert_eq!(i.drafts[1].draft.tlp, "amber");
}

#[test]
fn a_report_takes_its_members_and_a_stricter_member_raises_its_tlp() {
    let bundle = json!({"type": "bundle", "id": "bundle--1", "objects": [
        {"type": "report", "id": "report--r", "name": "Campaign", "description": "d",
         "modified": "2026-11-20T10:00:00.000Z", "published": "2026-11-20T10:00:00Z",
         "object_marking_refs": [TLP1_GREEN],
         "object_refs": ["indicator--a", "vulnerability--v", "course-of-action--c", "malware--m", "incident--i"]},
        indicator("indicator--a", "[ipv4-addr:value = '203.0.113.7' OR file:name = 'x.exe']", TLP2_AMBER),
        {"type": "vulnerability", "id": "vulnerability--v", "name": "xz backdoor",
         "external_references": [{"source_name": "cve", "external_id": "CVE-2024-3094"}]},
        {"type": "course-of-action", "id": "course-of-action--c", "name": "Downgrade xz",
         "description": "to 5.4.6"},
        {"type": "malware", "id": "malware--m", "name": "x", "is_family": false},
        {"type": "incident", "id": "incident--i", "name": "Breach", "object_marking_refs": [TLP1_GREEN]},
    ]});
    let i = import(&bundle, &opts()).unwrap();
    assert_eq!(i.drafts.len(), 2);
    assert!(i.drafts[0].draft.incident.is_some(), "incidents first");
    let d = &i.drafts[1].draft;
    assert_eq!(d.tlp, "amber");
    let w = d.warning.as_ref().unwrap();
    assert_eq!(w.title, "Campaign");
    assert_eq!(w.cves, ["CVE-2024-3094"]);
    assert_eq!(w.recommended_actions, ["Downgrade xz: to 5.4.6"]);
    assert_eq!(w.observables.len(), 1);
    assert_eq!(d.references[0].id, message_id("incident--i"));
    let r = line(&i, "report--r");
    assert!(r.notes.iter().any(|n| n.contains("TLP raised")), "{r:?}");
    let a = line(&i, "indicator--a");
    assert_eq!(a.result, Outcome::Merged);
    assert_eq!(a.into.as_deref(), Some("report--r"));
    assert!(a.notes.iter().any(|n| n.contains("file:name")));
    assert_eq!(line(&i, "malware--m").result, Outcome::Skipped);
    assert_eq!(line(&i, "incident--i").result, Outcome::Imported);
}

#[test]
fn exercise_traffic_needs_an_exercise() {
    let mut ind = indicator(
        "indicator--a",
        "[ipv4-addr:value = '203.0.113.7']",
        TLP1_GREEN,
    );
    ind["labels"] = json!(["EXERCISE"]);
    let i = import(&ind, &opts()).unwrap();
    assert_eq!(i.reports[0].result, Outcome::Skipped);
    assert!(i.reports[0].reason.as_ref().unwrap().contains("--exercise"));
    let mut o = opts();
    o.exercise = Some("CYBER-SHIELD-26".into());
    let i = import(&json!([ind]), &o).unwrap();
    assert_eq!(i.drafts[0].draft.exercise, "CYBER-SHIELD-26");
}

#[test]
fn odd_inputs() {
    assert!(import(&json!("x"), &opts()).is_err());
    assert!(import(&json!({"objects": []}), &opts()).is_err());
    let i = import(
        &json!([{"type": "indicator"}, 5, {"type": "identity", "id": "identity--1", "name": "x"}]),
        &opts(),
    )
    .unwrap();
    assert_eq!(i.reports.len(), 3);
    assert!(i.reports.iter().all(|r| r.result == Outcome::Skipped));
    // Two versions of one object: the newest is read.
    let old = indicator(
        "indicator--a",
        "[ipv4-addr:value = '203.0.113.7']",
        TLP1_GREEN,
    );
    let mut new = indicator(
        "indicator--a",
        "[ipv4-addr:value = '203.0.113.8']",
        TLP1_GREEN,
    );
    new["modified"] = json!("2026-11-21T10:00:00.000Z");
    let i = import(&json!([new, old]), &opts()).unwrap();
    assert_eq!(i.drafts.len(), 1);
    let w = i.drafts[0].draft.warning.as_ref().unwrap();
    assert_eq!(w.observables[0].value, "203.0.113.8");
    assert!(i.reports[1].reason.as_ref().unwrap().contains("newer"));
    // A pattern that yields nothing is skipped with the reason.
    let i = import(
        &indicator(
            "indicator--z",
            "[file:name = 'a.exe' AND file:size = 3]",
            TLP1_GREEN,
        ),
        &opts(),
    )
    .unwrap();
    assert_eq!(i.reports[0].result, Outcome::Skipped);
    assert!(i.reports[0].reason.as_ref().unwrap().contains("AND"));
    // Ids are derived from STIX ids.
    assert_eq!(message_id("indicator--a"), message_id("indicator--a"));
    assert_ne!(message_id("indicator--a"), message_id("indicator--b"));
}

#[test]
fn long_text_is_cut_and_said() {
    let mut ind = indicator(
        "indicator--a",
        "[ipv4-addr:value = '203.0.113.7']",
        TLP1_GREEN,
    );
    ind["description"] = json!("é".repeat(limits::SUMMARY + 5));
    ind["name"] = json!("n".repeat(500));
    let i = import(&ind, &opts()).unwrap();
    let w = i.drafts[0].draft.warning.as_ref().unwrap();
    assert_eq!(w.summary.chars().count(), limits::SUMMARY);
    assert_eq!(w.title.chars().count(), limits::TITLE);
    let notes = &i.reports[0].notes;
    assert!(notes.iter().any(|n| n.contains("summary cut")), "{notes:?}");
    assert!(notes.iter().any(|n| n.contains("title cut")), "{notes:?}");
}

#[test]
fn values_of_the_wrong_json_type_are_skipped_not_trusted() {
    let bundle = json!([
        {"type": "report", "id": "report--x", "name": 5, "description": ["a"],
         "object_refs": "indicator--a", "object_marking_refs": [1, null, TLP1_GREEN],
         "labels": {"severity": "high"}, "confidence": "high", "modified": 7},
        {"type": "indicator", "id": "indicator--a", "pattern": 3, "valid_until": false,
         "object_marking_refs": "x"},
        {"type": "incident", "id": "incident--i", "object_marking_refs": [TLP1_GREEN],
         "extensions": {INCIDENT_CORE_EXTENSION: {"criticality": "very", "incident_types": [1, "fraud"]}},
         "first_seen": "yesterday"},
        {"type": "relationship", "id": "relationship--r", "source_ref": 1, "target_ref": "incident--i"},
        {"type": "file", "id": "file--f", "hashes": {"SHA-256": 5, "MD5": "zz"}},
        {"type": "observed-data", "id": "observed-data--o", "object_refs": [1, "nope--1"]},
    ]);
    let i = import(&bundle, &opts()).unwrap();
    assert_eq!(i.reports.len(), 6);
    let r = line(&i, "report--x");
    assert_eq!(r.result, Outcome::Imported);
    let w = i.drafts[1].draft.warning.as_ref().unwrap();
    assert_eq!(w.title, "report report--x");
    assert!(w.observables.is_empty());
    let inc = i.drafts[0].draft.incident.as_ref().unwrap();
    assert_eq!(inc.category, "fraud");
    assert_eq!(inc.severity, "medium");
    assert_eq!(inc.detected_at, None);
    assert_eq!(line(&i, "indicator--a").result, Outcome::Refused);
    assert_eq!(line(&i, "file--f").result, Outcome::Skipped);
    assert_eq!(line(&i, "relationship--r").result, Outcome::Skipped);
}

/// A hostile bundle: one report naming many indicators, each with the most
/// comparisons a pattern may hold. Gathering its observables must stay
/// linear (it was quadratic: `Vec::contains` for every observable, over a
/// minute of CPU for a few MB of input).
#[test]
fn a_report_with_a_hundred_thousand_observables_maps_quickly() {
    let mut objects = Vec::new();
    let mut refs = Vec::new();
    let mut k = 0u32;
    for i in 0..150 {
        let comps: Vec<String> = (0..1000)
            .map(|_| {
                k += 1;
                format!(
                    "[ipv4-addr:value = '10.{}.{}.{}']",
                    (k >> 16) & 255,
                    (k >> 8) & 255,
                    k & 255
                )
            })
            .collect();
        let id = format!("indicator--00000000-0000-4000-8000-{i:012}");
        objects.push(indicator(&id, &comps.join(" OR "), TLP2_AMBER));
        refs.push(id);
    }
    objects.push(json!({"type": "report", "spec_version": "2.1",
        "id": "report--00000000-0000-4000-8000-000000000001",
        "created": "2026-11-20T10:00:00.000Z", "modified": "2026-11-20T10:00:00.000Z",
        "name": "many", "published": "2026-11-20T10:00:00.000Z",
        "object_refs": refs, "object_marking_refs": [TLP2_AMBER]}));
    let bundle = json!({"type": "bundle", "id": "bundle--00000000-0000-4000-8000-000000000002",
                        "objects": objects});
    let start = std::time::Instant::now();
    let out = import(&bundle, &opts()).unwrap();
    let took = start.elapsed();
    assert_eq!(out.drafts.len(), 1);
    assert!(
        took < std::time::Duration::from_secs(8),
        "mapping 150,000 observables took {took:?}"
    );
}

/// A member linked to a report only by a TLP:RED relationship: the link
/// itself (this indicator belongs to this report) is RED information, so
/// the warning made of them must not be published at GREEN.
#[test]
fn a_red_relationship_raises_the_container_it_links_into() {
    let red = "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1";
    let bundle = json!({"type": "bundle", "id": "bundle--00000000-0000-4000-8000-000000000003",
    "objects": [
        {"type": "report", "spec_version": "2.1",
         "id": "report--00000000-0000-4000-8000-000000000004",
         "created": "2026-11-20T10:00:00.000Z", "modified": "2026-11-20T10:00:00.000Z",
         "name": "green report", "published": "2026-11-20T10:00:00.000Z",
         "object_refs": [], "object_marking_refs": [TLP1_GREEN]},
        indicator("indicator--00000000-0000-4000-8000-000000000005",
                  "[ipv4-addr:value = '198.51.100.1']", TLP1_GREEN),
        {"type": "relationship", "spec_version": "2.1",
         "id": "relationship--00000000-0000-4000-8000-000000000006",
         "created": "2026-11-20T10:00:00.000Z", "modified": "2026-11-20T10:00:00.000Z",
         "relationship_type": "related-to",
         "source_ref": "indicator--00000000-0000-4000-8000-000000000005",
         "target_ref": "report--00000000-0000-4000-8000-000000000004",
         "object_marking_refs": [red]}
    ]});
    let out = import(&bundle, &opts()).unwrap();
    assert_eq!(
        line(&out, "indicator--00000000-0000-4000-8000-000000000005").result,
        Outcome::Merged
    );
    assert_eq!(out.drafts.len(), 1);
    assert_eq!(out.drafts[0].draft.tlp, "red", "the RED link was dropped");
}
