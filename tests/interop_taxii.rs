//! The TAXII 2.1 API (SPEC §14) read by the OASIS `taxii2-client` over
//! mutual TLS: collections, paging with `next`, `added_after`, manifests,
//! versions, and the access property of SPEC §5 on this path (a TLP:RED
//! record for one team is invisible to another in objects, manifests,
//! versions and page counts; exercise traffic only in its exercise's
//! collection).
//!
//! The client runs in the Python found through `CERTEX_PYTHON` (set by
//! `.ci/run` to its virtual environment, which has `taxii2-client`), else
//! `target/ci-venv/bin/python`; without one the test fails and says how to
//! make it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{TestBroker, draft};
use serde_json::Value;

fn python() -> PathBuf {
    let p = std::env::var_os("CERTEX_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ci-venv/bin/python"));
    let ok = Command::new(&p)
        .args(["-c", "import taxii2client"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{} cannot import taxii2client: run .ci/run once, or python3 -m venv target/ci-venv && \
         target/ci-venv/bin/pip install taxii2-client==2.3.0 (or set CERTEX_PYTHON)",
        p.display()
    );
    p
}

/// What `tests/python/taxii_read.py` saw as `team`.
fn read_as(b: &TestBroker, taxii: &str, team: &str, per_request: usize, probes: &[&str]) -> Value {
    let pki = b.pki();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/taxii_read.py");
    let out = Command::new(python())
        .arg(script)
        .arg(format!("{taxii}/taxii2/"))
        .arg(pki.join("broker/ca.pem"))
        .arg(pki.join(format!("teams/{team}/cert.pem")))
        .arg(pki.join(format!("teams/{team}/key.pem")))
        .arg(per_request.to_string())
        .args(probes)
        // requests lets these override the CA the client is given.
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "taxii2-client as {team} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn collection<'a>(seen: &'a Value, title_part: &str) -> &'a Value {
    seen["collections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["title"].as_str().unwrap().contains(title_part))
        .unwrap_or_else(|| {
            panic!(
                "no collection titled …{title_part}… in {:#}",
                seen["collections"]
            )
        })
}

fn ids(list: &Value) -> Vec<(String, String)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let v = o["modified"]
                .as_str()
                .or(o["version"].as_str())
                .or(o["created"].as_str())
                .unwrap_or("");
            (o["id"].as_str().unwrap().to_owned(), v.to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taxii2_client_reads_each_teams_collections_with_the_access_rules() {
    let b = TestBroker::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = b.broker.start_taxii(listener).unwrap();
    let taxii = format!("https://localhost:{}", at.port());
    let cn = b.client("CN-CNCERT").await;
    let br = b.client("BR-CERTBR").await;

    // A TLP:RED report for BR only, with a distinctive title and address.
    cn.submit(draft(
        r#"{"tlp": "red", "audience": {"teams": ["BR-CERTBR"]},
            "incident": {"title": "Red title only for BR", "category": "intrusions",
                         "severity": "critical",
                         "observables": [{"type": "ipv4", "value": "198.51.100.77"}]}}"#,
    ))
    .await
    .unwrap();
    // Community warnings: several pages of objects.
    for i in 0..7 {
        cn.submit(draft(&format!(
            r#"{{"tlp": "green", "audience": "community",
                "warning": {{"title": "Community warning {i}", "severity": "high",
                             "cves": ["CVE-2024-{}"], "recommended_actions": ["patch {i}"],
                             "observables": [{{"type": "domain", "value": "bad{i}.example"}}]}}}}"#,
            3094 + i
        )))
        .await
        .unwrap();
    }
    // A case BR → CN, acknowledged and accepted: three versions of a task.
    let receipt = br
        .submit(draft(
            r#"{"tlp": "amber", "audience": {"teams": ["CN-CNCERT"]},
                "request": {"to": "CN-CNCERT", "action": "preserve-evidence",
                            "legal_basis": "MLAT art. 18", "description": "Preserve logs",
                            "respond_by": "2030-01-01T00:00:00Z", "priority": "high"}}"#,
        ))
        .await
        .unwrap();
    cn.update_case(&receipt.id, certex::proto::CaseState::Acknowledged, "", "")
        .await
        .unwrap();
    cn.update_case(&receipt.id, certex::proto::CaseState::Accepted, "on it", "")
        .await
        .unwrap();
    // Exercise traffic for BR only.
    cn.submit(draft(
        r#"{"tlp": "green", "audience": {"teams": ["BR-CERTBR"]}, "exercise": "DRILL-7",
            "warning": {"title": "Drill warning", "severity": "medium"}}"#,
    ))
    .await
    .unwrap();

    let seen_br = tokio::task::block_in_place(|| read_as(&b, &taxii, "BR-CERTBR", 5, &[]));
    let report_of = |seen: &Value, title: &str| -> String {
        collection(seen, "real-world")["objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["type"] == "report" && o["name"] == title)
            .unwrap_or_else(|| panic!("no report {title}"))["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let retracted_report = report_of(&seen_br, "Community warning 0");
    // Collections: real traffic and BR's exercise, read-only.
    assert_eq!(
        seen_br["collections"].as_array().unwrap().len(),
        2,
        "{seen_br:#}"
    );
    for c in seen_br["collections"].as_array().unwrap() {
        assert_eq!(c["can_read"], true);
        assert_eq!(c["can_write"], false);
        assert_eq!(c["media_types"][0], "application/stix+json;version=2.1");
    }
    let real = collection(&seen_br, "real-world");
    let objects = &real["objects"];
    // Paged with `next`: several pages, every object version once, and the
    // same set as the manifest.
    assert!(
        real["pages"].as_u64().unwrap() >= 5,
        "pages: {}",
        real["pages"]
    );
    // (An SCO has no version of its own: the manifest gives its date added.)
    let of_objects = |list: &Value| -> Vec<String> {
        let mut v: Vec<String> = ids(list).into_iter().map(|(id, _)| id).collect();
        v.sort();
        v
    };
    let got = of_objects(objects);
    let mut unique = got.clone();
    unique.dedup();
    assert_eq!(got, unique, "an object came twice");
    let listed = ids(&real["manifest"]);
    let listed_ids = of_objects(&real["manifest"]);
    assert_eq!(got, listed_ids, "objects and manifest differ");
    for (id, version) in ids(objects) {
        if !version.is_empty() {
            assert!(
                listed.contains(&(id.clone(), version.clone())),
                "{id} {version} not in the manifest"
            );
        }
    }
    let text = objects.to_string();
    assert!(
        text.contains("Red title only for BR"),
        "the positive control"
    );
    assert!(text.contains("198.51.100.77"));
    assert!(
        !text.contains("Drill warning"),
        "exercise traffic in the real collection"
    );
    let red_id = objects
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "Red title only for BR")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The task: three versions, pending then ongoing; the last one served
    // by default.
    let versions = real["task_versions"].as_object().unwrap();
    assert_eq!(versions.len(), 1, "{versions:?}");
    let (task_id, task_versions) = versions.iter().next().unwrap();
    assert_eq!(
        task_versions.as_array().unwrap().len(),
        3,
        "{task_versions}"
    );
    let outcomes: Vec<&str> = real["all_versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["id"] == task_id.as_str())
        .map(|o| o["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["pending", "ongoing", "ongoing"]);
    let last: Vec<&Value> = objects
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["id"] == task_id.as_str())
        .collect();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0]["modified"], task_versions[2]);
    // added_after: exactly the manifest entries added after that time.
    let after = real["after"].as_str().unwrap();
    let mut want: Vec<(String, String)> = real["manifest"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["date_added"].as_str().unwrap() > after)
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_owned(),
                m["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    want.sort();
    let mut after_got: Vec<String> = ids(&real["added_after"])
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    after_got.sort();
    let want: Vec<String> = want.into_iter().map(|(id, _)| id).collect();
    assert!(!want.is_empty());
    assert_eq!(after_got, want, "added_after {after}");
    // The exercise collection: only the drill's objects, marked EXERCISE.
    let drill = collection(&seen_br, "DRILL-7");
    let report = drill["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["type"] == "report")
        .expect("the drill warning");
    assert_eq!(report["name"], "EXERCISE: Drill warning");
    assert_eq!(report["labels"][0], "EXERCISE");
    assert!(!drill["objects"].to_string().contains("Community warning"));
    // Read-only, TAXII media types only.
    assert_eq!(seen_br["post_status"], 403, "{}", seen_br["post_body"]);
    assert_eq!(seen_br["post_body"]["http_status"], "403");
    assert_eq!(seen_br["html_accept_status"], 406);

    // US-CISA: the same collections minus what it may not read.
    let seen_us = tokio::task::block_in_place(|| read_as(&b, &taxii, "US-CISA", 5, &[&red_id]));
    assert_eq!(
        seen_us["collections"].as_array().unwrap().len(),
        1,
        "US-CISA has no exercise traffic: {:#}",
        seen_us["collections"]
    );
    let real_us = collection(&seen_us, "real-world");
    // Everything the server sent (the probe's own request ids aside).
    let mut sent = real_us.clone();
    sent.as_object_mut().unwrap().remove("probe");
    let everything = sent.to_string();
    for secret in [
        "Red title only for BR",
        "198.51.100.77",
        red_id.as_str(),
        task_id.as_str(),
    ] {
        assert!(
            !everything.contains(secret),
            "US-CISA saw {secret:?} through TAXII"
        );
    }
    assert!(
        everything.contains("Community warning 6"),
        "US-CISA's own share"
    );
    assert_eq!(real_us["probe"][&red_id]["object"], 404);
    assert_eq!(real_us["probe"][&red_id]["versions"], 404);
    // Counts: US's manifest is BR's minus exactly the objects of records
    // US may not read (the RED report and its address, the case).
    let us_listed: std::collections::BTreeSet<_> = ids(&real_us["manifest"]).into_iter().collect();
    let br_listed: std::collections::BTreeSet<_> = listed.into_iter().collect();
    assert!(us_listed.is_subset(&br_listed));
    let hidden: Vec<_> = br_listed.difference(&us_listed).collect();
    assert!(
        hidden.iter().all(|(id, _)| {
            id == &red_id
                || id == task_id
                || id.starts_with("ipv4-addr--")
                || id.starts_with("relationship--")
                || id.starts_with("note--")
        }),
        "US misses more than the records it may not read: {hidden:?}"
    );

    // A retraction: the warning's objects leave BR's collection and the
    // report's revoked version takes their place.
    let first = cn
        .get(common::get_seq(2))
        .await
        .expect("record 2 is the first community warning");
    let body = certex::rules::canonical::decode_canonical(&first.envelope.unwrap().body).unwrap();
    cn.submit(draft(&format!(
        r#"{{"tlp": "green", "audience": "community",
            "retraction": {{"target": "{}", "reason": "wrong domain"}}}}"#,
        body.id
    )))
    .await
    .unwrap();
    let again = tokio::task::block_in_place(|| read_as(&b, &taxii, "BR-CERTBR", 50, &[]));
    let real = collection(&again, "real-world");
    let revoked: Vec<&Value> = real["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["id"] == retracted_report.as_str())
        .collect();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["revoked"], true, "{:#}", revoked[0]);
    let text = real["objects"].to_string();
    assert!(
        !text.contains("bad0.example"),
        "the retracted warning's indicator is still served"
    );
    assert!(!text.contains("Community warning 0"));
    assert!(text.contains("bad1.example"));
}
