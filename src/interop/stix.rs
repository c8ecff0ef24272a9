//! The one mapping of certex records to STIX 2.1 objects (SPEC §14), used by
//! `certex export` and by the broker's TAXII API alike.
//!
//! A record is mapped as its reader received it, after the access rules of
//! SPEC §5 were applied by the read path: this module never decides who sees
//! what, it only translates. Every id is deterministic (`UUIDv5`), so two
//! exports of one record name the same objects and a STIX consumer sees
//! case updates and retractions as new versions of the object they change:
//!
//! | certex | STIX 2.1 |
//! |---|---|
//! | incident report | `incident` + incident-core extension, observables as SCOs linked by `related-to` |
//! | warning | `report` of `indicator`s (patterns from the observables), `vulnerability`s (CVE ids), `course-of-action`s (`mitigates`) |
//! | assistance request | incident-suite `task` (`outcome` pending) |
//! | case update | a new version of the `task` (`outcome` from the new state) and a `note` |
//! | retraction | a new version of the target with `revoked: true` (for readers of the target) |
//! | sender | `identity` (`created_by_ref`) |
//! | TLP | the official TLP 2.0 `marking-definition`s |
//! | exercise | label and name `EXERCISE` |
//! | seq, leaf hash, signature, audience | the certex provenance property-extension |

use std::collections::{BTreeMap, HashSet};

use prost_types::Timestamp;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::interop::markings::{
    CERTEX_NAMESPACE, INCIDENT_CORE_EXTENSION, SCO_NAMESPACE, TASK_EXTENSION, tlp2_marking_id,
    tlp2_marking_objects,
};
use crate::proto::audience::Kind as AudienceKind;
use crate::proto::body::Content;
use crate::proto::{self as pb, Action, CaseState, Category, ObservableType, Severity, Tlp};
use crate::rules::vocab::Word;

/// The certex provenance extension: seq, leaf hash, sender, signature key,
/// audience and exercise of the record an object comes from.
pub const CERTEX_EXTENSION: &str = "extension-definition--3d9a6c41-5b0e-4f2c-8e7a-c1f4b2d9e860";
/// The identity that defines the certex extension.
pub const CERTEX_IDENTITY: &str = "identity--8f2c7d3e-1a4b-4c6d-9e0f-2b3a4c5d6e7f";
/// When certex's fixed objects (its identity, its extension definition and
/// the team identities) were defined.
const DEFINED: &str = "2026-11-01T00:00:00.000Z";

/// The label (and name prefix) of every object from exercise traffic.
pub const EXERCISE_LABEL: &str = "EXERCISE";

/// A timestamp in the STIX form: UTC, millisecond precision, `Z`.
pub fn stix_time(ts: &Timestamp) -> String {
    let ms =
        ts.seconds.saturating_mul(1000) + i64::from(ts.nanos.clamp(0, 999_999_999)) / 1_000_000;
    stix_time_ms(ms, None)
}

/// Milliseconds since the epoch in the STIX form; `micros` adds three more
/// digits (used to keep versions of one object apart within a millisecond).
fn stix_time_ms(ms: i64, micros: Option<u16>) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let base = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    );
    match micros {
        Some(u) => format!("{base}{:03}Z", u.min(999)),
        None => format!("{base}Z"),
    }
}

fn ts_ms(ts: Option<&Timestamp>) -> i64 {
    ts.map(|t| {
        t.seconds.saturating_mul(1000) + i64::from(t.nanos.clamp(0, 999_999_999)) / 1_000_000
    })
    .unwrap_or_default()
}

/// `<type>--<UUID>` derived from `"<type>/<key>"`: the bytes of
/// UUIDv5(certex namespace, …) in the version-4 form, which STIX requires of
/// SDO and SRO ids (their bits are a hash instead of random, so every
/// export of one record names the same objects).
fn certex_id(kind: &str, key: &str) -> String {
    let hashed = Uuid::new_v5(&CERTEX_NAMESPACE, format!("{kind}/{key}").as_bytes());
    format!(
        "{kind}--{}",
        uuid::Builder::from_random_bytes(*hashed.as_bytes()).into_uuid()
    )
}

/// The STIX id of the object a message becomes (`incident`, `report` or
/// `task`), from its sender and message id.
pub fn object_id(kind: pb::Kind, sender: &str, id: &str) -> Option<String> {
    let t = match kind {
        pb::Kind::Incident => "incident",
        pb::Kind::Warning => "report",
        pb::Kind::Request => "task",
        _ => return None,
    };
    Some(certex_id(t, &format!("{sender}/{id}")))
}

/// The `identity` id of a team.
pub fn identity_id(team: &str) -> String {
    certex_id("identity", team)
}

/// An SCO id per STIX 2.1 §2.9: UUIDv5 over the canonical JSON of the
/// id-contributing properties.
fn sco_id(kind: &str, contributing: &Value) -> String {
    // serde_json's map is sorted and compact: the canonical form (RFC 8785)
    // for these flat string/number values.
    let text = serde_json::to_string(contributing).unwrap_or_default();
    format!("{kind}--{}", Uuid::new_v5(&SCO_NAMESPACE, text.as_bytes()))
}

/// A pattern string literal: `'` and `\` escaped.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A URL as a URI (RFC 3986), which STIX requires of a `url` SCO's value:
/// certex accepts what a URL parser accepts (a `"`, a space, a `|`,
/// non-ASCII), so each character a URI may not hold where it stands is
/// percent-encoded (UTF-8); the rest is kept as the sender wrote it.
fn as_uri(url: &str) -> String {
    let authority_end = url.find("://").map_or(0, |i| {
        let rest = &url[i + 3..];
        i + 3 + rest.find(['/', '?', '#']).unwrap_or(rest.len())
    });
    let bytes = url.as_bytes();
    let mut fragment = false;
    let mut out = String::with_capacity(url.len());
    for (i, c) in url.char_indices() {
        let keep = match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '-' | '.' | '_' | '~' => true,
            '!' | '$' | '&' | '\'' | '(' | ')' | '*' | '+' | ',' | ';' | '=' => true,
            ':' | '/' | '?' | '@' => true,
            // An IPv6 host literal only.
            '[' | ']' => i < authority_end,
            // The first `#` starts the fragment; a later one is data.
            '#' => !std::mem::replace(&mut fragment, true),
            '%' => bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)),
            _ => false,
        };
        if keep {
            out.push(c);
        } else {
            for b in c.encode_utf8(&mut [0; 4]).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// An observable as an SCO and a STIX pattern.
fn observable(o: &pb::Observable) -> Option<(Value, String)> {
    let v = o.value.as_str();
    let (kind, props, pattern) = match ObservableType::try_from(o.r#type).ok()? {
        ObservableType::Ipv4 => (
            "ipv4-addr",
            json!({"value": v}),
            format!("[ipv4-addr:value = {}]", quote(v)),
        ),
        ObservableType::Ipv6 => (
            "ipv6-addr",
            json!({"value": v}),
            format!("[ipv6-addr:value = {}]", quote(v)),
        ),
        ObservableType::Cidr => {
            let t = if v.contains(':') {
                "ipv6-addr"
            } else {
                "ipv4-addr"
            };
            (
                t,
                json!({"value": v}),
                format!("[{t}:value ISSUBSET {}]", quote(v)),
            )
        }
        ObservableType::Domain => (
            "domain-name",
            json!({"value": v}),
            format!("[domain-name:value = {}]", quote(v)),
        ),
        ObservableType::Url => {
            let uri = as_uri(v);
            (
                "url",
                json!({"value": uri}),
                format!("[url:value = {}]", quote(&uri)),
            )
        }
        ObservableType::Email => (
            "email-addr",
            json!({"value": v}),
            format!("[email-addr:value = {}]", quote(v)),
        ),
        ObservableType::Sha256 | ObservableType::Sha1 | ObservableType::Md5 => {
            let algo = match ObservableType::try_from(o.r#type).ok()? {
                ObservableType::Sha256 => "SHA-256",
                ObservableType::Sha1 => "SHA-1",
                _ => "MD5",
            };
            let hash = v.to_ascii_lowercase();
            (
                "file",
                json!({"hashes": {algo: hash}}),
                format!("[file:hashes.{} = {}]", quote(algo), quote(&hash)),
            )
        }
        ObservableType::Asn => {
            let n: u64 = v.strip_prefix("AS").unwrap_or(v).parse().ok()?;
            (
                "autonomous-system",
                json!({"number": n}),
                format!("[autonomous-system:number = {n}]"),
            )
        }
        ObservableType::Unspecified => return None,
    };
    let id = sco_id(kind, &props);
    let mut sco = Map::new();
    sco.insert("type".into(), kind.into());
    sco.insert("spec_version".into(), "2.1".into());
    sco.insert("id".into(), id.into());
    if let Value::Object(p) = props {
        sco.extend(p);
    }
    Some((Value::Object(sco), pattern))
}

fn word<T: Word + TryFrom<i32>>(raw: i32) -> String {
    T::try_from(raw)
        .map(|v| v.word().to_owned())
        .unwrap_or_default()
}

/// Severity (or priority) on the 0–100 scale of `criticality`/`priority`.
fn scale(severity: i32) -> u8 {
    match Severity::try_from(severity) {
        Ok(Severity::Low) => 25,
        Ok(Severity::Medium) => 50,
        Ok(Severity::High) => 75,
        Ok(Severity::Critical) => 100,
        _ => 0,
    }
}

/// incident-core's `determination` for an RSIT category: attempts that
/// failed, harm that happened, or (for reconnaissance, vulnerable systems,
/// other and test) a suspicion.
fn determination(category: i32) -> &'static str {
    match Category::try_from(category) {
        Ok(Category::IntrusionAttempts) => "failed-attempt",
        Ok(
            Category::InformationGathering
            | Category::Vulnerable
            | Category::Other
            | Category::Test
            | Category::Unspecified,
        )
        | Err(_) => "suspected",
        Ok(_) => "successful-attempt",
    }
}

/// The incident-suite `outcome` of a case state.
pub fn outcome(state: i32) -> &'static str {
    match CaseState::try_from(state) {
        Ok(CaseState::Open) => "pending",
        Ok(CaseState::Acknowledged | CaseState::Accepted | CaseState::InProgress) => "ongoing",
        Ok(CaseState::Resolved | CaseState::Closed) => "successful",
        Ok(CaseState::Declined) => "failed",
        Ok(CaseState::Withdrawn) => "cancelled",
        _ => "unknown",
    }
}

/// The record a message refers to and its mapping needs: the request of a
/// case update, the target of a retraction (sender, message id). The caller
/// looks it up with the reader's own access (a record the reader may not
/// read is simply absent).
pub fn needs(body: &pb::Body) -> Option<(String, String)> {
    match body.content.as_ref()? {
        Content::CaseUpdate(u) => Some((u.requester.clone(), u.case_id.clone())),
        Content::Retraction(r) => Some((body.sender.clone(), r.target.clone())),
        _ => None,
    }
}

/// A retracted (or about to be revoked) message: what kind it was and when
/// it was signed, from its full body or its tombstone.
#[derive(Debug, Clone)]
pub struct Target {
    pub kind: pb::Kind,
    pub sender: String,
    pub id: String,
    pub created_at: Option<Timestamp>,
}

impl Target {
    /// From a record as the reader received it (full or tombstone).
    pub fn of(rec: &pb::Record, body: Option<&pb::Body>) -> Option<Target> {
        if let Some(b) = body {
            return Some(Target {
                kind: crate::rules::validate::Kind::of(b)?.proto(),
                sender: b.sender.clone(),
                id: b.id.clone(),
                created_at: b.created_at,
            });
        }
        let t = rec.retracted.as_ref()?;
        Some(Target {
            kind: pb::Kind::try_from(t.kind).ok()?,
            sender: t.sender.clone(),
            id: t.id.clone(),
            created_at: t.created_at,
        })
    }
}

/// What a record's mapping needs besides the record: the related record of
/// [`needs`] as the reader sees it, and team names for identities.
#[derive(Default)]
pub struct Related<'a> {
    /// For a case update: the case's request, when the reader may read it.
    pub request: Option<&'a pb::Body>,
    /// For a retraction: its target, when the reader may read it.
    pub target: Option<Target>,
    /// Display names of teams (from the directory), by team id.
    pub names: Option<&'a BTreeMap<String, String>>,
}

/// The `identity` object of a team.
pub fn identity(team: &str, names: Option<&BTreeMap<String, String>>) -> Value {
    let name = names
        .and_then(|n| n.get(team))
        .filter(|n| !n.is_empty())
        .cloned()
        .unwrap_or_else(|| team.to_owned());
    json!({
        "type": "identity",
        "spec_version": "2.1",
        "id": identity_id(team),
        "created": DEFINED,
        "modified": DEFINED,
        "name": name,
        "description": format!("certex team {team}"),
        "identity_class": "organization",
        "sectors": ["government-national"],
        "created_by_ref": CERTEX_IDENTITY,
    })
}

/// certex's own identity and the definition of its provenance extension,
/// carried by every bundle.
pub fn certex_objects() -> Vec<Value> {
    vec![
        json!({
            "type": "identity",
            "spec_version": "2.1",
            "id": CERTEX_IDENTITY,
            "created": DEFINED,
            "modified": DEFINED,
            "name": "certex",
            "description": "The certex broker for national CERT cooperation.",
            "identity_class": "system",
        }),
        json!({
            "type": "extension-definition",
            "spec_version": "2.1",
            "id": CERTEX_EXTENSION,
            "created_by_ref": CERTEX_IDENTITY,
            "created": DEFINED,
            "modified": DEFINED,
            "name": "certex provenance",
            "description": "Where a STIX object comes from in a certex transparency log: the record's seq and leaf hash, the signed message's sender, id, signing key and signature, its TLP, audience and exercise. The signature covers the certex envelope, not the STIX object.",
            "schema": "docs/interop.md#the-certex-provenance-extension (in the certex repository)",
            "version": "1.0.0",
            "extension_types": ["property-extension"],
        }),
    ]
}

/// The fixed objects every bundle carries: certex's identity and extension
/// definition, and the five TLP 2.0 marking definitions.
pub fn fixed_objects() -> Vec<Value> {
    let mut v = certex_objects();
    v.extend(tlp2_marking_objects());
    v
}

fn audience_json(a: Option<&pb::Audience>) -> Value {
    match a.and_then(|a| a.kind.as_ref()) {
        Some(AudienceKind::Teams(l)) => json!({"teams": l.teams}),
        Some(AudienceKind::Group(g)) => json!({"group": g}),
        Some(AudienceKind::Community(_)) => json!("community"),
        None => json!("none"),
    }
}

/// The provenance extension of a record.
fn provenance(rec: &pb::Record, body: &pb::Body) -> Value {
    let env = rec.envelope.as_ref();
    let mut p = json!({
        "extension_type": "property-extension",
        "seq": rec.seq,
        "leaf_hash": hex::encode(&rec.leaf_hash),
        "received_at": rec.received_at.as_ref().map(stix_time).unwrap_or_default(),
        "sender": body.sender,
        "message_id": body.id,
        "key_id": env.map(|e| e.key_id.clone()).unwrap_or_default(),
        "signature": env.map(|e| hex::encode(&e.signature)).unwrap_or_default(),
        "tlp": word::<Tlp>(body.tlp),
        "audience": audience_json(body.audience.as_ref()),
    });
    if !body.exercise.is_empty() {
        p["exercise"] = body.exercise.clone().into();
    }
    if let Some(o) = &rec.origin {
        p["origin_broker"] = o.broker.clone().into();
        p["origin_seq"] = o.seq.into();
    }
    p
}

/// Properties every object of one message shares: creator, marking,
/// exercise label.
struct Common {
    creator: String,
    marking: Option<&'static str>,
    exercise: bool,
    created: String,
}

impl Common {
    fn of(body: &pb::Body) -> Common {
        Common {
            creator: identity_id(&body.sender),
            marking: tlp2_marking_id(&word::<Tlp>(body.tlp)),
            exercise: !body.exercise.is_empty(),
            created: body.created_at.as_ref().map(stix_time).unwrap_or_default(),
        }
    }

    /// An SDO/SRO skeleton: type, id, times, creator, marking, labels.
    fn sdo(&self, kind: &str, id: &str, modified: &str) -> Map<String, Value> {
        let mut o = Map::new();
        o.insert("type".into(), kind.into());
        o.insert("spec_version".into(), "2.1".into());
        o.insert("id".into(), id.into());
        o.insert("created".into(), self.created.clone().into());
        o.insert("modified".into(), modified.into());
        o.insert("created_by_ref".into(), self.creator.clone().into());
        if let Some(m) = self.marking {
            o.insert("object_marking_refs".into(), json!([m]));
        }
        if self.exercise {
            o.insert("labels".into(), json!([EXERCISE_LABEL]));
        }
        o
    }

    fn name(&self, name: &str) -> String {
        if self.exercise {
            format!("{EXERCISE_LABEL}: {name}")
        } else {
            name.to_owned()
        }
    }

    fn marked_sco(&self, mut sco: Value) -> Value {
        if let Some(m) = self.marking {
            sco["object_marking_refs"] = json!([m]);
        }
        sco
    }

    fn relationship(&self, source: &str, kind: &str, target: &str) -> Value {
        let id = certex_id("relationship", &format!("{source}/{kind}/{target}"));
        let mut r = self.sdo("relationship", &id, &self.created);
        r.insert("relationship_type".into(), kind.into());
        r.insert("source_ref".into(), source.into());
        r.insert("target_ref".into(), target.into());
        Value::Object(r)
    }
}

fn with_extensions(mut o: Map<String, Value>, ext: Vec<(&str, Value)>) -> Value {
    let mut m = Map::new();
    for (k, v) in ext {
        m.insert(k.to_owned(), v);
    }
    o.insert("extensions".into(), Value::Object(m));
    Value::Object(o)
}

/// The task object of a request, as of `modified` with `outcome`.
fn task(
    req_body: &pb::Body,
    r: &pb::AssistanceRequest,
    modified: &str,
    state_outcome: &str,
    ext: Option<Value>,
) -> Value {
    let c = Common::of(req_body);
    let id = certex_id("task", &format!("{}/{}", req_body.sender, req_body.id));
    let mut o = c.sdo("task", &id, modified);
    let action = word::<Action>(r.action);
    o.insert(
        "name".into(),
        c.name(&format!("Assistance request to {}: {action}", r.to))
            .into(),
    );
    o.insert(
        "description".into(),
        format!("{}\n\nLegal basis: {}", r.description, r.legal_basis).into(),
    );
    o.insert("task_types".into(), json!([action]));
    o.insert("outcome".into(), state_outcome.into());
    o.insert("priority".into(), scale(r.priority).into());
    if !c.created.is_empty() {
        o.insert("start_time".into(), c.created.clone().into());
    }
    let mut exts = vec![(TASK_EXTENSION, json!({"extension_type": "new-sdo"}))];
    if let Some(e) = ext {
        exts.push((CERTEX_EXTENSION, e));
    }
    with_extensions(o, exts)
}

/// The STIX objects of one record as its reader received it: the objects
/// themselves, the sender's identity, and any SCOs and relationships.
/// A record with neither a readable body nor a tombstone maps to nothing.
pub fn objects(rec: &pb::Record, body: Option<&pb::Body>, related: &Related<'_>) -> Vec<Value> {
    let Some(body) = body else {
        // A tombstone: the revoked version of what it was.
        return match (rec.retracted.as_ref(), Target::of(rec, None)) {
            (Some(t), Some(target)) => {
                let at = t.retracted_at.as_ref().map(stix_time).unwrap_or_default();
                revoked(&target, &at, &t.reason, &t.retracted_by, related)
            }
            _ => vec![],
        };
    };
    let c = Common::of(body);
    let mut out = vec![identity(&body.sender, related.names)];
    let prov = provenance(rec, body);
    match body.content.as_ref() {
        Some(Content::Incident(i)) => {
            let id = certex_id("incident", &format!("{}/{}", body.sender, body.id));
            let mut o = c.sdo("incident", &id, &c.created);
            o.insert("name".into(), c.name(&i.title).into());
            if !i.description.is_empty() {
                o.insert("description".into(), i.description.clone().into());
            }
            let mut prov = prov;
            if !i.sectors.is_empty() {
                prov["sectors"] = json!(i.sectors);
            }
            if let Some(d) = &i.detected_at {
                prov["detected_at"] = stix_time(d).into();
            }
            let core = json!({
                "extension_type": "property-extension",
                "determination": determination(i.category),
                "investigation_status": "open",
                "incident_types": [word::<Category>(i.category)],
                "criticality": scale(i.severity),
            });
            out.push(with_extensions(
                o,
                vec![(INCIDENT_CORE_EXTENSION, core), (CERTEX_EXTENSION, prov)],
            ));
            for obs in &i.observables {
                if let Some((sco, _)) = observable(obs) {
                    let sid = sco["id"].as_str().unwrap_or_default().to_owned();
                    out.push(c.marked_sco(sco));
                    out.push(c.relationship(&id, "related-to", &sid));
                }
            }
        }
        Some(Content::Warning(w)) => {
            let id = certex_id("report", &format!("{}/{}", body.sender, body.id));
            let key = format!("{}/{}", body.sender, body.id);
            let mut refs: Vec<String> = Vec::new();
            let mut indicators = Vec::new();
            for obs in &w.observables {
                let Some((_, pattern)) = observable(obs) else {
                    continue;
                };
                let iid = certex_id("indicator", &format!("{key}/{pattern}"));
                let mut ind = c.sdo("indicator", &iid, &c.created);
                ind.insert(
                    "name".into(),
                    c.name(&format!(
                        "{} {}",
                        word::<ObservableType>(obs.r#type),
                        obs.value
                    ))
                    .into(),
                );
                ind.insert(
                    "description".into(),
                    format!("Named in the warning \"{}\" of {}.", w.title, body.sender).into(),
                );
                ind.insert("indicator_types".into(), json!(["malicious-activity"]));
                ind.insert("pattern".into(), pattern.into());
                ind.insert("pattern_type".into(), "stix".into());
                ind.insert("pattern_version".into(), "2.1".into());
                ind.insert("valid_from".into(), c.created.clone().into());
                if let Some(exp) = &w.expires_at
                    && ts_ms(Some(exp)) > ts_ms(body.created_at.as_ref())
                {
                    ind.insert("valid_until".into(), stix_time(exp).into());
                }
                refs.push(iid.clone());
                indicators.push(iid);
                out.push(Value::Object(ind));
            }
            let mut vulns = Vec::new();
            for cve in &w.cves {
                let vid = certex_id("vulnerability", &format!("{key}/{cve}"));
                let mut v = c.sdo("vulnerability", &vid, &c.created);
                v.insert("name".into(), cve.clone().into());
                v.insert(
                    "description".into(),
                    format!("Named in the warning \"{}\" of {}.", w.title, body.sender).into(),
                );
                let source = if cve.starts_with("GCVE-") {
                    "gcve"
                } else {
                    "cve"
                };
                v.insert(
                    "external_references".into(),
                    json!([{"source_name": source, "external_id": cve}]),
                );
                refs.push(vid.clone());
                vulns.push(vid);
                out.push(Value::Object(v));
            }
            for (n, action) in w.recommended_actions.iter().enumerate() {
                let cid = certex_id("course-of-action", &format!("{key}/{n}"));
                let mut coa = c.sdo("course-of-action", &cid, &c.created);
                let short: String = action.chars().take(120).collect();
                coa.insert("name".into(), c.name(&short).into());
                coa.insert("description".into(), action.clone().into());
                refs.push(cid.clone());
                out.push(Value::Object(coa));
                let targets = if vulns.is_empty() {
                    &indicators
                } else {
                    &vulns
                };
                for t in targets {
                    let rel = c.relationship(&cid, "mitigates", t);
                    refs.push(rel["id"].as_str().unwrap_or_default().to_owned());
                    out.push(rel);
                }
            }
            if refs.is_empty() {
                refs.push(c.creator.clone());
            }
            let mut o = c.sdo("report", &id, &c.created);
            o.insert("name".into(), c.name(&w.title).into());
            if !w.summary.is_empty() {
                o.insert("description".into(), w.summary.clone().into());
            }
            o.insert("report_types".into(), json!(["threat-report"]));
            o.insert("published".into(), c.created.clone().into());
            o.insert("object_refs".into(), json!(refs));
            // A report has no severity: tools read it from a label.
            let mut labels = o
                .get("labels")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            labels.push(format!("severity:{}", word::<Severity>(w.severity)).into());
            o.insert("labels".into(), labels.into());
            let mut prov = prov;
            prov["severity"] = word::<Severity>(w.severity).into();
            if let Some(exp) = &w.expires_at {
                prov["expires_at"] = stix_time(exp).into();
            }
            out.push(with_extensions(o, vec![(CERTEX_EXTENSION, prov)]));
        }
        Some(Content::Request(r)) => {
            let mut prov = prov;
            prov["addressee"] = r.to.clone().into();
            prov["respond_by"] = r
                .respond_by
                .as_ref()
                .map(stix_time)
                .unwrap_or_default()
                .into();
            prov["legal_basis"] = r.legal_basis.clone().into();
            prov["case_state"] = "open".into();
            out.push(task(body, r, &c.created, "pending", Some(prov)));
        }
        Some(Content::CaseUpdate(u)) => {
            let received = ts_ms(rec.received_at.as_ref());
            // Versions of one task apart even within a millisecond: the
            // record's seq orders them.
            let modified = stix_time_ms(received, Some((rec.seq % 1000) as u16));
            let task_id = certex_id("task", &format!("{}/{}", u.requester, u.case_id));
            if let Some(req) = related.request
                && req.sender == u.requester
                && req.id == u.case_id
                && let Some(Content::Request(r)) = req.content.as_ref()
            {
                let mut p = prov.clone();
                p["case_state"] = word::<CaseState>(u.transition).into();
                p["updated_by"] = body.sender.clone().into();
                out.push(identity(&req.sender, related.names));
                out.push(task(req, r, &modified, outcome(u.transition), Some(p)));
            }
            let nid = certex_id("note", &format!("{}/{}", body.sender, body.id));
            let mut n = c.sdo("note", &nid, &c.created);
            let transition = word::<CaseState>(u.transition);
            n.insert(
                "abstract".into(),
                c.name(&format!("case {transition} by {}", body.sender))
                    .into(),
            );
            let content = [u.note.as_str(), u.reason.as_str()]
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect::<Vec<_>>()
                .join("\n\n");
            n.insert(
                "content".into(),
                if content.is_empty() {
                    format!("The case moved to {transition}.")
                } else {
                    content
                }
                .into(),
            );
            n.insert("object_refs".into(), json!([task_id]));
            out.push(with_extensions(n, vec![(CERTEX_EXTENSION, prov)]));
        }
        Some(Content::Retraction(r)) => {
            // Only the target the signed retraction names: a related record
            // (or an unsigned tombstone from the broker) for another message
            // must not revoke that message's object.
            if let Some(target) = &related.target
                && target.sender == body.sender
                && target.id == r.target
            {
                let at = rec.received_at.as_ref().map(stix_time).unwrap_or_default();
                out.extend(revoked(target, &at, &r.reason, &body.id, related));
            }
        }
        None => return vec![],
    }
    out
}

/// The revoked version of a retracted message's object: only what the
/// tombstone tells (kind, sender, signed time), never the withdrawn content.
fn revoked(
    target: &Target,
    at: &str,
    reason: &str,
    retracted_by: &str,
    related: &Related<'_>,
) -> Vec<Value> {
    let Some(id) = object_id(target.kind, &target.sender, &target.id) else {
        return vec![];
    };
    let kind = id.split("--").next().unwrap_or_default().to_owned();
    let created = target
        .created_at
        .as_ref()
        .map(stix_time)
        .unwrap_or_else(|| at.to_owned());
    let creator = identity_id(&target.sender);
    let mut o = Map::new();
    o.insert("type".into(), kind.clone().into());
    o.insert("spec_version".into(), "2.1".into());
    o.insert("id".into(), id.into());
    o.insert("created".into(), created.clone().into());
    o.insert("modified".into(), at.into());
    o.insert("created_by_ref".into(), creator.clone().into());
    o.insert("revoked".into(), true.into());
    o.insert("name".into(), "Retracted".into());
    o.insert(
        "description".into(),
        format!("Retracted by its sender (message {retracted_by}): {reason}").into(),
    );
    let mut out = vec![identity(&target.sender, related.names)];
    match kind.as_str() {
        "report" => {
            o.insert("report_types".into(), json!(["threat-report"]));
            o.insert("published".into(), created.into());
            o.insert("object_refs".into(), json!([creator]));
            out.push(Value::Object(o));
        }
        "task" => {
            o.insert("outcome".into(), "cancelled".into());
            out.push(with_extensions(
                o,
                vec![(TASK_EXTENSION, json!({"extension_type": "new-sdo"}))],
            ));
        }
        _ => out.push(Value::Object(o)),
    }
    out
}

/// How restrictive an object's TLP 2.0 marking is (0: none, then CLEAR to
/// RED in the order of [`crate::interop::markings::TLP2`]).
fn marking_rank(o: &Value) -> usize {
    o["object_marking_refs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            crate::interop::markings::TLP2
                .iter()
                .position(|(_, _, id)| m == *id)
        })
        .map(|i| i + 1)
        .max()
        .unwrap_or(0)
}

/// A STIX bundle built from records in log order: each object version
/// (id, modified) once, the fixed objects first.
pub struct Bundle {
    objects: Vec<Value>,
    seen: HashSet<(String, String)>,
}

impl Default for Bundle {
    fn default() -> Self {
        Self::new()
    }
}

impl Bundle {
    pub fn new() -> Bundle {
        let mut b = Bundle {
            objects: Vec::new(),
            seen: HashSet::new(),
        };
        b.extend(fixed_objects());
        b
    }

    /// Adds objects, skipping versions already in the bundle.
    /// An SCO (no versions) named by records of different TLPs keeps the
    /// most restrictive of their markings.
    pub fn extend(&mut self, objects: Vec<Value>) {
        for o in objects {
            let key = (
                o["id"].as_str().unwrap_or_default().to_owned(),
                o["modified"].as_str().unwrap_or_default().to_owned(),
            );
            if self.seen.insert(key.clone()) {
                self.objects.push(o);
            } else if key.1.is_empty()
                && let Some(kept) = self.objects.iter_mut().find(|k| k["id"] == key.0.as_str())
                && marking_rank(&o) > marking_rank(kept)
            {
                kept["object_marking_refs"] = o["object_marking_refs"].clone();
            }
        }
    }

    /// The number of objects, the fixed ones included.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// The bundle object.
    pub fn finish(self) -> Value {
        json!({
            "type": "bundle",
            "id": format!("bundle--{}", Uuid::new_v4()),
            "objects": self.objects,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_case_update_shows_only_the_request_it_signs() {
        let req_body = |id: &str| pb::Body {
            id: id.into(),
            sender: "BR-CERTBR".into(),
            created_at: Some(Timestamp {
                seconds: 1_790_000_000,
                nanos: 0,
            }),
            tlp: pb::Tlp::Amber as i32,
            content: Some(Content::Request(pb::AssistanceRequest {
                to: "CN-CNCERT".into(),
                description: format!("request {id}"),
                legal_basis: "MLAT".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let update = pb::Body {
            id: "u1".into(),
            sender: "CN-CNCERT".into(),
            created_at: Some(Timestamp {
                seconds: 1_790_000_100,
                nanos: 0,
            }),
            tlp: pb::Tlp::Amber as i32,
            content: Some(Content::CaseUpdate(pb::CaseUpdate {
                requester: "BR-CERTBR".into(),
                case_id: "case-a".into(),
                transition: CaseState::Declined as i32,
                reason: "no".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let rec = pb::Record {
            seq: 12,
            received_at: Some(Timestamp {
                seconds: 1_790_000_101,
                nanos: 0,
            }),
            ..Default::default()
        };
        // Another request handed over as "the case's request".
        let other = req_body("case-b");
        let related = Related {
            request: Some(&other),
            ..Related::default()
        };
        let wrong = certex_id("task", "BR-CERTBR/case-b");
        let objs = objects(&rec, Some(&update), &related);
        assert!(
            objs.iter().all(|o| o["id"] != wrong.as_str()),
            "a decline of case-a was shown as a version of case-b's task"
        );
        let right_body = req_body("case-a");
        let related = Related {
            request: Some(&right_body),
            ..Related::default()
        };
        let right = certex_id("task", "BR-CERTBR/case-a");
        let objs = objects(&rec, Some(&update), &related);
        assert!(objs.iter().any(|o| o["id"] == right.as_str()));
    }

    #[test]
    fn a_retraction_revokes_only_the_target_it_signs() {
        let body = pb::Body {
            id: "r1".into(),
            sender: "CN-CNCERT".into(),
            created_at: Some(Timestamp {
                seconds: 1_790_000_000,
                nanos: 0,
            }),
            tlp: pb::Tlp::Green as i32,
            content: Some(Content::Retraction(pb::Retraction {
                target: "m1".into(),
                reason: "wrong".into(),
            })),
            ..Default::default()
        };
        let rec = pb::Record {
            seq: 9,
            received_at: Some(Timestamp {
                seconds: 1_790_000_001,
                nanos: 0,
            }),
            ..Default::default()
        };
        // What an (untrusted) broker handed back as the target: another
        // team's message.
        let forged = Target {
            kind: pb::Kind::Incident,
            sender: "US-CISA".into(),
            id: "someone-elses".into(),
            created_at: None,
        };
        let related = Related {
            target: Some(forged),
            ..Related::default()
        };
        let victim = object_id(pb::Kind::Incident, "US-CISA", "someone-elses").unwrap();
        let objs = objects(&rec, Some(&body), &related);
        assert!(
            objs.iter().all(|o| o["id"] != victim.as_str()),
            "a retraction of CN-CNCERT/m1 revoked {victim}: {objs:#?}"
        );
        // The genuine target is still revoked.
        let related = Related {
            target: Some(Target {
                kind: pb::Kind::Incident,
                sender: "CN-CNCERT".into(),
                id: "m1".into(),
                created_at: None,
            }),
            ..Related::default()
        };
        let own = object_id(pb::Kind::Incident, "CN-CNCERT", "m1").unwrap();
        let objs = objects(&rec, Some(&body), &related);
        assert!(
            objs.iter()
                .any(|o| o["id"] == own.as_str() && o["revoked"] == true)
        );
    }

    #[test]
    fn sco_ids_follow_the_stix_rule() {
        // STIX 2.1 §2.9 gives this example for ipv4-addr "198.51.100.3"…
        // computed here with the spec's namespace and canonical JSON.
        let id = sco_id("ipv4-addr", &json!({"value": "198.51.100.3"}));
        let want = Uuid::new_v5(&SCO_NAMESPACE, br#"{"value":"198.51.100.3"}"#);
        assert_eq!(id, format!("ipv4-addr--{want}"));
        // …and one id per value, whatever the record.
        assert_eq!(id, sco_id("ipv4-addr", &json!({"value": "198.51.100.3"})));
    }

    #[test]
    fn patterns_quote_and_escape() {
        let (sco, p) = observable(&pb::Observable {
            r#type: ObservableType::Url as i32,
            value: "http://x.example/a'b\\c".into(),
        })
        .unwrap();
        assert_eq!(p, r"[url:value = 'http://x.example/a\'b%5Cc']");
        assert_eq!(sco["type"], "url");
        assert_eq!(quote(r"a\b'c"), r"'a\\b\'c'");
        let (sco, p) = observable(&pb::Observable {
            r#type: ObservableType::Sha256 as i32,
            value: "AB".repeat(32),
        })
        .unwrap();
        assert_eq!(sco["hashes"]["SHA-256"], "ab".repeat(32));
        assert!(p.starts_with("[file:hashes.'SHA-256' = 'abab"));
        let (sco, p) = observable(&pb::Observable {
            r#type: ObservableType::Asn as i32,
            value: "AS64500".into(),
        })
        .unwrap();
        assert_eq!(sco["number"], 64500);
        assert_eq!(p, "[autonomous-system:number = 64500]");
        let (_, p) = observable(&pb::Observable {
            r#type: ObservableType::Cidr as i32,
            value: "2001:db8::/32".into(),
        })
        .unwrap();
        assert_eq!(p, "[ipv6-addr:value ISSUBSET '2001:db8::/32']");
    }

    #[test]
    fn url_values_are_uris() {
        // Each output was checked with the `uri` format of Python
        // `jsonschema` (rfc3987-syntax), which stix2-validator applies.
        for (url, uri) in [
            (
                "http://c.example/g.php?id='7'&ua=\"x\"",
                "http://c.example/g.php?id='7'&ua=%22x%22",
            ),
            (
                "http://[2001:db8::1]:8080/a|b",
                "http://[2001:db8::1]:8080/a%7Cb",
            ),
            (
                "http://x.example/a[1]#f#g",
                "http://x.example/a%5B1%5D#f%23g",
            ),
            (
                "http://bücher.example/ä b",
                "http://b%C3%BCcher.example/%C3%A4%20b",
            ),
            ("http://x.example/%zz%2F", "http://x.example/%25zz%2F"),
            (
                "https://user@x.example:8443/p;q=1?a=b&c=(d)*+,!$~",
                "https://user@x.example:8443/p;q=1?a=b&c=(d)*+,!$~",
            ),
        ] {
            assert_eq!(as_uri(url), uri, "{url}");
        }
    }

    #[test]
    fn times_and_outcomes() {
        let ts = Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_456_789,
        };
        assert_eq!(stix_time(&ts), "2023-11-14T22:13:20.123Z");
        assert_eq!(
            stix_time_ms(1_700_000_000_123, Some(7)),
            "2023-11-14T22:13:20.123007Z"
        );
        assert_eq!(outcome(CaseState::Open as i32), "pending");
        assert_eq!(outcome(CaseState::InProgress as i32), "ongoing");
        assert_eq!(outcome(CaseState::Closed as i32), "successful");
        assert_eq!(outcome(CaseState::Declined as i32), "failed");
        assert_eq!(outcome(CaseState::Withdrawn as i32), "cancelled");
    }

    #[test]
    fn a_shared_sco_keeps_the_most_restrictive_marking() {
        let green = tlp2_marking_id("green").unwrap();
        let red = tlp2_marking_id("red").unwrap();
        let sco = |m: &str| json!({"id": "ipv4-addr--1", "type": "ipv4-addr", "object_marking_refs": [m]});
        let mut b = Bundle::new();
        b.extend(vec![sco(green), sco(red), sco(green)]);
        let kept: Vec<&Value> = b
            .objects
            .iter()
            .filter(|o| o["id"] == "ipv4-addr--1")
            .collect();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0]["object_marking_refs"][0], red);
    }

    #[test]
    fn bundle_keeps_each_version_once() {
        let mut b = Bundle::new();
        let fixed = b.len();
        let o = json!({"id": "x--1", "modified": "t1"});
        b.extend(vec![
            o.clone(),
            o.clone(),
            json!({"id": "x--1", "modified": "t2"}),
        ]);
        assert_eq!(b.len(), fixed + 2);
    }
}
