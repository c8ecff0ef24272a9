//! STIX 2.1 import (SPEC §14): a parsed bundle from MISP (misp-stix) or
//! OpenCTI in, certex drafts (SPEC §11) and one report line per STIX object
//! out. Pure: no network, no clock; `certex import` signs and publishes.
//!
//! # The mapping
//!
//! - `incident` → an incident draft: title = `name`, `description`, category
//!   = the first RSIT word among the incident-core extension's
//!   `incident_types`, `incident_types` or OpenCTI's `incident_type` (else
//!   `other`), severity from incident-core `criticality` (0–37 low, 38–62
//!   medium, 63–87 high, 88–100 critical), OpenCTI's `severity`, a
//!   `severity:<word>` label, else `medium`; `detected_at` = `first_seen`.
//! - `report` and `grouping` → a warning draft: title = `name`, summary =
//!   `description` (cut to the field limit, said in the report line),
//!   severity from labels, `severity`/`x_opencti_severity`, `x_opencti_score`
//!   or `confidence` (0–100 as above), else `medium`; `expires_at` = the
//!   latest `valid_until` of its indicators; CVEs from `vulnerability`
//!   objects (`name`, or an external reference with `source_name` "cve");
//!   recommended actions from `course-of-action` (`name: description`).
//! - The members of a report, grouping or incident are its `object_refs` and
//!   every object a `relationship` links to it (either direction). Members
//!   that contribute (indicators through their patterns, SCOs, the SCOs of
//!   `observed-data`, vulnerabilities, courses of action) are reported
//!   `merged` into it, as are relationships between it and its members.
//!   Another incident, report or grouping it names becomes a certex
//!   reference to that object's own message.
//! - An `indicator` no container names becomes its own warning (title =
//!   `name`, else the pattern). Everything else (identities, markings,
//!   extension definitions, malware, attack patterns, notes, `task`s, lone
//!   SCOs, relationships between objects certex does not take) is skipped
//!   with a reason.
//! - Patterns: only `=` comparisons joined by OR (see [`pattern`]); an
//!   indicator whose pattern yields no observable is skipped with the reason.
//! - TLP: the most restrictive TLP marking among the object's
//!   `object_marking_refs` (official TLP 2.0 and 1.0 ids, white = clear, and
//!   marking-definition objects of the bundle with `definition_type` "tlp",
//!   a `TLP:<WORD>` name or the TLP 2.0 extension), else `--tlp`, else the
//!   object is refused. A member marked more restrictively than its container
//!   raises the container's TLP: an import never lowers a marking.
//! - Exercise traffic (label `EXERCISE`, or an extension naming an
//!   `exercise`) is skipped unless the import names an exercise; with one,
//!   every draft carries it.
//! - Ids: message id = UUIDv5(`IMPORT_NAMESPACE`, STIX id), so importing
//!   the same object again names the same message. Of several versions of
//!   one id in a bundle, the newest `modified` is taken.

mod pattern;

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::client::draft::{
    AudienceJson, BodyJson, IncidentJson, ObservableJson, ReferenceJson, WarningJson,
};
use crate::interop::markings::{
    IMPORT_NAMESPACE, INCIDENT_CORE_EXTENSION, TLP2_EXTENSION, tlp_of_marking,
};
use crate::proto::{Category, ObservableType, Severity};
use crate::rules::time::format_time;
use crate::rules::validate::limits;
use crate::rules::vocab::Word;

pub use pattern::{MAX_PATTERN, PatternYield, read as read_pattern};

/// What became of one STIX object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Outcome {
    /// Became a message of its own (published, or ready to be).
    Imported,
    /// Its content went into another object's message (`into`).
    Merged,
    /// Not imported, with a reason.
    Skipped,
    /// Already published by an earlier import, with the same content.
    Duplicate,
    /// Not importable as it stands (no TLP), or refused by the broker.
    Refused,
}

/// One line of the import report: one per STIX object of the input.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectReport {
    pub stix_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub result: Outcome,
    /// The certex message id, for an object that became a message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The STIX id of the object this one was merged into.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub into: Option<String>,
    /// Why the object was skipped or refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the mapping changed or left out on the way (cut text, parts of a
    /// pattern, a raised TLP, other containers it also went into).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The broker's seq, once published (or found published).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

impl ObjectReport {
    fn new(stix_id: &str, kind: &str, result: Outcome) -> Self {
        ObjectReport {
            stix_id: stix_id.to_owned(),
            kind: kind.to_owned(),
            result,
            id: None,
            into: None,
            reason: None,
            notes: Vec::new(),
            seq: None,
        }
    }

    fn skipped(stix_id: &str, kind: &str, reason: impl Into<String>) -> Self {
        let mut r = Self::new(stix_id, kind, Outcome::Skipped);
        r.reason = Some(reason.into());
        r
    }
}

/// How to import.
#[derive(Debug, Clone)]
pub struct Options {
    /// The importing team (the sender of every draft, and of references).
    pub team: String,
    /// The TLP for objects that carry no TLP marking.
    pub tlp: Option<String>,
    pub audience: AudienceJson,
    /// Import exercise traffic, as this exercise's; every draft carries it.
    pub exercise: Option<String>,
}

/// A draft ready to publish, and the report line it answers to.
#[derive(Debug, Clone)]
pub struct Planned {
    /// Index into [`Import::reports`].
    pub line: usize,
    pub draft: BodyJson,
}

/// The outcome of mapping a bundle.
#[derive(Debug, Clone)]
pub struct Import {
    /// One line per input object, in input order.
    pub reports: Vec<ObjectReport>,
    /// Drafts in publishing order: incidents, then reports and groupings,
    /// then lone indicators.
    pub drafts: Vec<Planned>,
}

/// Why a whole input cannot be read as STIX.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    #[error(
        "the input is not a STIX bundle, a STIX object or a list of STIX objects (top-level JSON {0})"
    )]
    NotStix(&'static str),
}

/// The message id an imported STIX object gets.
pub fn message_id(stix_id: &str) -> String {
    Uuid::new_v5(&IMPORT_NAMESPACE, stix_id.as_bytes()).to_string()
}

// === TLP ===

const TLP_ORDER: [&str; 5] = ["clear", "green", "amber", "amber+strict", "red"];

fn tlp_rank(w: &str) -> usize {
    TLP_ORDER.iter().position(|t| *t == w).unwrap_or(0)
}

/// The more restrictive of two TLP words.
fn stricter(a: Option<&'static str>, b: &'static str) -> &'static str {
    match a {
        Some(a) if tlp_rank(a) >= tlp_rank(b) => a,
        _ => b,
    }
}

/// A TLP word as platforms write it (`TLP:AMBER`, `white`, `amber strict`).
fn tlp_word(s: &str) -> Option<&'static str> {
    let w = s.trim().to_ascii_lowercase();
    let w = w.strip_prefix("tlp:").unwrap_or(&w).trim();
    let w = w.replace([' ', '-', '_'], "+");
    match w.as_str() {
        "white" | "clear" => Some("clear"),
        "green" => Some("green"),
        "amber" => Some("amber"),
        "amber+strict" => Some("amber+strict"),
        "red" => Some("red"),
        _ => None,
    }
}

/// The TLP a marking-definition object of the bundle stands for.
fn tlp_of_definition(m: &Value) -> Option<&'static str> {
    if let Some(w) = m["id"].as_str().and_then(tlp_of_marking) {
        return Some(w);
    }
    if let Some(w) = m["extensions"][TLP2_EXTENSION]["tlp_2_0"]
        .as_str()
        .and_then(tlp_word)
    {
        return Some(w);
    }
    let is_tlp = m["definition_type"]
        .as_str()
        .is_some_and(|t| t.eq_ignore_ascii_case("tlp"));
    if is_tlp {
        if let Some(def) = m["definition"].as_object()
            && let Some(w) = def
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("tlp"))
                .and_then(|(_, v)| v.as_str())
                .and_then(tlp_word)
        {
            return Some(w);
        }
        return m["name"].as_str().and_then(tlp_word);
    }
    m["name"]
        .as_str()
        .filter(|n| n.to_ascii_uppercase().starts_with("TLP:"))
        .and_then(tlp_word)
}

/// The most restrictive TLP among the markings of `obj` (object and
/// granular markings), or `None` if it carries no TLP marking.
fn tlp_of_object(obj: &Value, bundle_tlp: &HashMap<String, &'static str>) -> Option<&'static str> {
    let refs = obj["object_marking_refs"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(
            obj["granular_markings"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|g| &g["marking_ref"]),
        )
        .filter_map(Value::as_str);
    let mut found = None;
    for r in refs {
        if let Some(w) = tlp_of_marking(r).or_else(|| bundle_tlp.get(r).copied()) {
            found = Some(stricter(found, w));
        }
    }
    found
}

// === Small readers ===

fn text<'a>(obj: &'a Value, key: &str) -> &'a str {
    obj[key].as_str().unwrap_or("")
}

fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// `s` cut to `max` characters, and whether it was cut.
fn cut(s: &str, max: usize) -> (String, bool) {
    match s.char_indices().nth(max) {
        Some((i, _)) => (s[..i].to_owned(), true),
        None => (s.to_owned(), false),
    }
}

fn is_cve(s: &str) -> bool {
    let mut parts = s.split('-');
    parts.next() == Some("CVE")
        && parts
            .next()
            .is_some_and(|y| y.len() == 4 && y.bytes().all(|b| b.is_ascii_digit()))
        && parts
            .next()
            .is_some_and(|n| (4..=19).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()))
        && parts.next().is_none()
}

/// A 0–100 score (criticality, confidence, OpenCTI score) as a severity.
fn severity_of_score(v: &Value) -> Option<&'static str> {
    let n = v.as_f64().filter(|n| (0.0..=100.0).contains(n))?;
    Some(match n {
        n if n < 38.0 => "low",
        n if n < 63.0 => "medium",
        n if n < 88.0 => "high",
        _ => "critical",
    })
}

fn severity_word(s: &str) -> Option<&'static str> {
    let s = s.trim().to_ascii_lowercase();
    Severity::from_word(&s).map(Word::word)
}

/// The severity of an object, and where it came from.
fn severity_of(obj: &Value) -> (&'static str, Option<String>) {
    let ext = &obj["extensions"][INCIDENT_CORE_EXTENSION];
    if let Some(s) = severity_of_score(&ext["criticality"]) {
        return (s, None);
    }
    for key in ["severity", "x_opencti_severity"] {
        if let Some(s) = obj[key].as_str().and_then(severity_word) {
            return (s, None);
        }
    }
    for l in obj["labels"].as_array().into_iter().flatten() {
        let l = l.as_str().unwrap_or("").to_ascii_lowercase();
        let w = ["severity:", "severity=", "severity-"]
            .iter()
            .find_map(|p| l.strip_prefix(p))
            .unwrap_or(&l);
        if let Some(s) = severity_word(w.trim_matches('"')) {
            return (s, None);
        }
    }
    for key in ["x_opencti_score", "confidence"] {
        if let Some(s) = severity_of_score(&obj[key]) {
            return (s, Some(format!("severity {s} from {key} {}", obj[key])));
        }
    }
    ("medium", Some("no severity in the object: medium".into()))
}

/// The exercise an object belongs to: `Some("")` when it is labelled
/// `EXERCISE` without naming one, `Some(id)` when an extension names it.
fn exercise_of(obj: &Value) -> Option<String> {
    let named = obj["extensions"]
        .as_object()
        .into_iter()
        .flatten()
        .find_map(|(_, e)| e["exercise"].as_str().filter(|x| !x.is_empty()))
        .or_else(|| obj["x_certex_exercise"].as_str().filter(|x| !x.is_empty()));
    if let Some(x) = named {
        return Some(x.to_owned());
    }
    let labelled = obj["labels"].as_array().into_iter().flatten().any(|l| {
        l.as_str()
            .is_some_and(|l| l.eq_ignore_ascii_case("exercise"))
    });
    labelled.then(String::new)
}

// === Observables ===

fn obs_json((kind, value): (ObservableType, String)) -> ObservableJson {
    ObservableJson {
        kind: kind.word().to_owned(),
        value,
    }
}

/// The observables of a STIX cyber-observable object, or why it has none.
fn observables_of_sco(obj: &Value) -> Result<Vec<(ObservableType, String)>, String> {
    let kind = text(obj, "type");
    let single = |t: ObservableType, v: Option<String>| -> Result<Vec<_>, String> {
        let v = v.ok_or_else(|| format!("the {kind} has no value"))?;
        pattern::observable(t, &v)
            .map(|o| vec![o])
            .map_err(|e| format!("{kind} value {e}"))
    };
    let value = || obj["value"].as_str().map(str::to_owned);
    match kind {
        "ipv4-addr" => single(ObservableType::Ipv4, value()),
        "ipv6-addr" => single(ObservableType::Ipv6, value()),
        "domain-name" => single(ObservableType::Domain, value()),
        "url" => single(ObservableType::Url, value()),
        "email-addr" => single(ObservableType::Email, value()),
        "autonomous-system" => single(
            ObservableType::Asn,
            obj["number"].as_u64().map(|n| n.to_string()),
        ),
        "file" => {
            let mut out = Vec::new();
            let mut bad = Vec::new();
            for (k, v) in obj["hashes"].as_object().into_iter().flatten() {
                let t = match k.to_ascii_uppercase().replace('-', "").as_str() {
                    "SHA256" => ObservableType::Sha256,
                    "SHA1" => ObservableType::Sha1,
                    "MD5" => ObservableType::Md5,
                    _ => continue,
                };
                match v.as_str().map(|v| pattern::observable(t, v)) {
                    Some(Ok(o)) => out.push(o),
                    Some(Err(e)) => bad.push(format!("hash {k}: {e}")),
                    None => bad.push(format!("hash {k} is not a string")),
                }
            }
            if out.is_empty() {
                Err(if bad.is_empty() {
                    "the file has no SHA-256, SHA-1 or MD5 hash".into()
                } else {
                    bad.join("; ")
                })
            } else {
                Ok(out)
            }
        }
        other => Err(format!("certex has no observable type for {other}")),
    }
}

fn is_sco(kind: &str) -> bool {
    matches!(
        kind,
        "ipv4-addr"
            | "ipv6-addr"
            | "domain-name"
            | "url"
            | "email-addr"
            | "autonomous-system"
            | "file"
            | "mac-addr"
            | "network-traffic"
            | "x509-certificate"
            | "artifact"
            | "directory"
            | "email-message"
            | "mutex"
            | "process"
            | "software"
            | "user-account"
            | "windows-registry-key"
    )
}

fn is_container(kind: &str) -> bool {
    matches!(kind, "incident" | "report" | "grouping")
}

// === The content a container gathers ===

/// What the members of one container gave it.
#[derive(Default)]
struct Gathered {
    observables: Vec<(ObservableType, String)>,
    /// The observables already gathered (a hostile bundle can hold
    /// hundreds of thousands: no quadratic scan of `observables`).
    seen: HashSet<(ObservableType, String)>,
    cves: Vec<String>,
    actions: Vec<String>,
    expires: Option<OffsetDateTime>,
    references: Vec<String>,
    /// The most restrictive TLP among contributing members.
    member_tlp: Option<&'static str>,
}

/// What one member gave to one container: `Ok(notes)` if it contributed,
/// `Err(reason)` if it could not.
type Contribution = Result<Vec<String>, String>;

struct Mapper<'a> {
    by_id: HashMap<&'a str, &'a Value>,
    bundle_tlp: HashMap<String, &'static str>,
    /// Relationships (newest versions) by the ids they link, in input order.
    relationships_of: HashMap<&'a str, Vec<&'a Value>>,
}

impl<'a> Mapper<'a> {
    /// The ids of a container's members, in order, without repeats, and
    /// the relationships that link them to it.
    fn members(&self, c: &'a Value) -> (Vec<&'a str>, Vec<&'a str>) {
        let cid = text(c, "id");
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut links = Vec::new();
        for r in c["object_refs"].as_array().into_iter().flatten() {
            if let Some((id, _)) = r.as_str().and_then(|r| self.by_id.get_key_value(r))
                && *id != cid
                && seen.insert(*id)
            {
                out.push(*id);
            }
        }
        for rel in self
            .relationships_of
            .get(cid)
            .into_iter()
            .flatten()
            .copied()
        {
            let (s, t) = (text(rel, "source_ref"), text(rel, "target_ref"));
            let other = if s == cid { t } else { s };
            links.push(text(rel, "id"));
            if let Some((id, _)) = self.by_id.get_key_value(other)
                && *id != cid
                && seen.insert(*id)
            {
                out.push(*id);
            }
        }
        (out, links)
    }

    /// Adds one member's content to `g`.
    fn contribute(
        &self,
        warning: bool,
        member: &Value,
        g: &mut Gathered,
        merged_scos: &mut Vec<&'a str>,
    ) -> Contribution {
        let kind = text(member, "type");
        let mut notes = Vec::new();
        let add = |g: &mut Gathered, list: Vec<(ObservableType, String)>| {
            for o in list {
                if g.seen.insert(o.clone()) {
                    g.observables.push(o);
                }
            }
        };
        match kind {
            "indicator" => {
                let pattern_type = member["pattern_type"].as_str().unwrap_or("stix");
                if pattern_type != "stix" {
                    return Err(format!(
                        "a {pattern_type} pattern is not imported (only STIX patterns)"
                    ));
                }
                let y = pattern::read(text(member, "pattern"))
                    .map_err(|e| format!("pattern not imported: {e}"))?;
                if y.observables.is_empty() {
                    return Err(format!(
                        "pattern not imported: no supported comparison ({})",
                        y.skipped.join("; ")
                    ));
                }
                notes.extend(
                    y.skipped
                        .iter()
                        .map(|s| format!("pattern part left out: {s}")),
                );
                add(g, y.observables);
                if let Some(t) = member["valid_until"].as_str().and_then(parse_time) {
                    g.expires = Some(g.expires.map_or(t, |e| e.max(t)));
                }
            }
            "observed-data" => {
                let mut any = false;
                let mut why = Vec::new();
                for r in member["object_refs"].as_array().into_iter().flatten() {
                    let Some((id, sco)) = r.as_str().and_then(|r| self.by_id.get_key_value(r))
                    else {
                        why.push(format!("{r} is not in the bundle"));
                        continue;
                    };
                    match observables_of_sco(sco) {
                        Ok(list) => {
                            any = true;
                            add(g, list);
                            merged_scos.push(*id);
                        }
                        Err(e) => why.push(e),
                    }
                }
                // STIX 2.0 style: the observed objects inline.
                for (_, sco) in member["objects"].as_object().into_iter().flatten() {
                    match observables_of_sco(sco) {
                        Ok(list) => {
                            any = true;
                            add(g, list);
                        }
                        Err(e) => why.push(e),
                    }
                }
                if !any {
                    return Err(format!("no observable certex takes ({})", why.join("; ")));
                }
                notes.extend(why.into_iter().map(|w| format!("left out: {w}")));
            }
            k if is_sco(k) => add(g, observables_of_sco(member)?),
            "vulnerability" if warning => {
                let name = text(member, "name").trim().to_ascii_uppercase();
                let cve = if is_cve(&name) {
                    Some(name)
                } else {
                    member["external_references"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|r| {
                            r["source_name"]
                                .as_str()
                                .is_some_and(|s| s.eq_ignore_ascii_case("cve"))
                        })
                        .filter_map(|r| r["external_id"].as_str())
                        .map(|s| s.trim().to_ascii_uppercase())
                        .find(|s| is_cve(s))
                };
                let cve = cve.ok_or("the vulnerability names no CVE id")?;
                if !g.cves.contains(&cve) {
                    g.cves.push(cve);
                }
            }
            "course-of-action" if warning => {
                let (name, desc) = (
                    text(member, "name").trim(),
                    text(member, "description").trim(),
                );
                let action = match (name.is_empty(), desc.is_empty()) {
                    (true, true) => return Err("the course of action has no name".into()),
                    (false, true) => name.to_owned(),
                    (true, false) => desc.to_owned(),
                    // certex's own export names an action by its first
                    // words: the description is the whole action.
                    (false, false) if desc.starts_with(name) => desc.to_owned(),
                    (false, false) => format!("{name}: {desc}"),
                };
                let (action, was_cut) = cut(&action, limits::SHORT_TEXT);
                if was_cut {
                    notes.push(format!(
                        "recommended action cut to {} characters",
                        limits::SHORT_TEXT
                    ));
                }
                if !g.actions.contains(&action) {
                    g.actions.push(action);
                }
            }
            "vulnerability" | "course-of-action" => {
                return Err(format!("an incident report has no field for a {kind}"));
            }
            _ => return Err(skip_reason(kind)),
        }
        Ok(notes)
    }
}

/// Records that `member` went into container `cid` (once).
fn merge<'a>(merged_into: &mut HashMap<&'a str, Vec<&'a str>>, member: &'a str, cid: &'a str) {
    let into = merged_into.entry(member).or_default();
    if !into.contains(&cid) {
        into.push(cid);
    }
}

/// Why an object of this type is not imported on its own.
fn skip_reason(kind: &str) -> String {
    match kind {
        "task" => "assistance requests are not imported from STIX tasks (a request needs an addressee team and a legal basis); publish one with certex submit".into(),
        "relationship" => "links objects certex does not import together".into(),
        "marking-definition" => "a marking definition: read for the TLP of the objects that refer to it".into(),
        "identity" => "the sender of every imported message is the importing team".into(),
        "extension-definition" | "language-content" => format!("{kind} objects describe other objects; nothing to import"),
        "vulnerability" | "course-of-action" => format!("a {kind} is imported only as part of a report or grouping that names it"),
        "observed-data" => "observed data is imported only as part of a report, grouping or incident that names it".into(),
        k if is_sco(k) => format!("a {k} is imported only as part of a report, grouping or incident that names it"),
        k => format!("certex has no message for STIX type {k}"),
    }
}

const SUPERSEDED: &str =
    "another version of this object in the bundle is as new or newer, and is the one read";

/// Maps a parsed STIX input (a bundle, one object or a list of objects).
pub fn import(input: &Value, opts: &Options) -> Result<Import, ImportError> {
    let objects: Vec<&Value> = match input {
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("bundle") => {
            input["objects"]
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default()
        }
        Value::Object(o) if o.contains_key("type") => vec![input],
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => return Err(ImportError::NotStix("an object without a type")),
        Value::String(_) => return Err(ImportError::NotStix("a string")),
        Value::Number(_) => return Err(ImportError::NotStix("a number")),
        Value::Bool(_) => return Err(ImportError::NotStix("a boolean")),
        Value::Null => return Err(ImportError::NotStix("null")),
    };

    // One line per object; the newest version of each id is the one read.
    let mut reports: Vec<ObjectReport> = Vec::with_capacity(objects.len());
    let mut newest: HashMap<&str, usize> = HashMap::new();
    for (i, obj) in objects.iter().enumerate() {
        let (id, kind) = (obj["id"].as_str(), obj["type"].as_str());
        let (Some(id), Some(kind)) = (id, kind) else {
            reports.push(ObjectReport::skipped(
                id.unwrap_or(""),
                kind.unwrap_or(""),
                "not a STIX object (no string id and type)",
            ));
            continue;
        };
        reports.push(ObjectReport::new(id, kind, Outcome::Skipped));
        let version = |o: &Value| {
            o["modified"]
                .as_str()
                .or(o["created"].as_str())
                .and_then(parse_time)
        };
        match newest.get(id) {
            Some(&j) if version(objects[j]) >= version(obj) => {
                reports[i].reason = Some(SUPERSEDED.into());
            }
            Some(&j) => {
                reports[j].reason = Some(SUPERSEDED.into());
                newest.insert(id, i);
            }
            None => {
                newest.insert(id, i);
            }
        }
    }
    let line_of: HashMap<&str, usize> = newest.clone();
    let current: Vec<usize> = {
        let mut v: Vec<usize> = newest.values().copied().collect();
        v.sort_unstable();
        v
    };
    let mapper = Mapper {
        by_id: current
            .iter()
            .map(|&i| (text(objects[i], "id"), objects[i]))
            .collect(),
        bundle_tlp: current
            .iter()
            .map(|&i| objects[i])
            .filter(|o| text(o, "type") == "marking-definition")
            .filter_map(|o| tlp_of_definition(o).map(|w| (text(o, "id").to_owned(), w)))
            .collect(),
        relationships_of: {
            let mut m: HashMap<&str, Vec<&Value>> = HashMap::new();
            for &i in &current {
                let rel = objects[i];
                if text(rel, "type") != "relationship" {
                    continue;
                }
                let (s, t) = (text(rel, "source_ref"), text(rel, "target_ref"));
                m.entry(s).or_default().push(rel);
                if t != s {
                    m.entry(t).or_default().push(rel);
                }
            }
            m
        },
    };

    // Which containers become messages, and at what TLP (before members).
    let mut fate: HashMap<&str, Result<&'static str, String>> = HashMap::new();
    for &i in &current {
        let o = objects[i];
        if !is_container(text(o, "type")) {
            continue;
        }
        fate.insert(text(o, "id"), admit(o, &mapper.bundle_tlp, opts));
    }

    // Containers gather their members' content.
    let mut gathered: HashMap<&str, Gathered> = HashMap::new();
    let mut merged_into: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut member_notes: HashMap<&str, Vec<String>> = HashMap::new();
    let mut member_why: HashMap<&str, String> = HashMap::new();
    for &i in &current {
        let c = objects[i];
        let (cid, ckind) = (text(c, "id"), text(c, "type"));
        if !is_container(ckind) {
            continue;
        }
        let admitted = fate.get(cid).is_some_and(Result::is_ok);
        let (members, links) = mapper.members(c);
        let mut g = Gathered::default();
        let mut contributed: HashSet<&str> = HashSet::new();
        for &m in &members {
            let member = mapper.by_id[m];
            let mkind = text(member, "type");
            if mkind == "relationship" {
                continue;
            }
            if is_container(mkind) {
                if fate.get(m).is_some_and(Result::is_ok) && admitted {
                    g.references.push(m.to_owned());
                }
                continue;
            }
            if !admitted {
                member_why
                    .entry(m)
                    .or_insert_with(|| format!("part of {cid}, which is not imported"));
                continue;
            }
            let mut scos = Vec::new();
            match mapper.contribute(ckind != "incident", member, &mut g, &mut scos) {
                Ok(notes) => {
                    contributed.insert(m);
                    if let Some(w) = tlp_of_object(member, &mapper.bundle_tlp) {
                        g.member_tlp = Some(stricter(g.member_tlp, w));
                    }
                    merge(&mut merged_into, m, cid);
                    member_notes.entry(m).or_default().extend(notes);
                    for s in scos {
                        if let Some(w) = tlp_of_object(mapper.by_id[s], &mapper.bundle_tlp) {
                            g.member_tlp = Some(stricter(g.member_tlp, w));
                        }
                        contributed.insert(s);
                        merge(&mut merged_into, s, cid);
                    }
                }
                Err(why) => {
                    member_why.entry(m).or_insert(why);
                }
            }
        }
        if admitted {
            // Relationships between the container and what it took count
            // as merged; so do relationships among its members.
            let listed = members
                .iter()
                .filter(|m| text(mapper.by_id[**m], "type") == "relationship");
            for &rid in links.iter().chain(listed) {
                let rel = mapper.by_id[rid];
                let (s, t) = (text(rel, "source_ref"), text(rel, "target_ref"));
                let inside = |x: &str| x == cid || contributed.contains(x);
                if inside(s) && inside(t) {
                    // The link is information too: its marking counts.
                    if let Some(w) = tlp_of_object(rel, &mapper.bundle_tlp) {
                        g.member_tlp = Some(stricter(g.member_tlp, w));
                    }
                    merge(&mut merged_into, rid, cid);
                }
            }
        }
        gathered.insert(cid, g);
    }

    // Lines and drafts, container by container, in publishing order.
    let mut drafts: Vec<Planned> = Vec::new();
    let mut later: Vec<Planned> = Vec::new();
    let mut last: Vec<Planned> = Vec::new();
    for &i in &current {
        let o = objects[i];
        let (id, kind) = (text(o, "id"), text(o, "type"));
        let line = &mut reports[line_of[id]];
        if is_container(kind) {
            match &fate[id] {
                Err(why) => {
                    line.result = if why.starts_with("no TLP") {
                        Outcome::Refused
                    } else {
                        Outcome::Skipped
                    };
                    line.reason = Some(why.clone());
                }
                Ok(tlp) => {
                    let g = gathered.remove(id).unwrap_or_default();
                    let draft = if kind == "incident" {
                        incident_draft(o, tlp, g, opts, line)
                    } else {
                        warning_draft(o, tlp, g, opts, line)
                    };
                    line.result = Outcome::Imported;
                    line.id = draft.id.clone();
                    let planned = Planned {
                        line: line_of[id],
                        draft,
                    };
                    if kind == "incident" {
                        drafts.push(planned);
                    } else {
                        later.push(planned);
                    }
                }
            }
            continue;
        }
        if let Some(into) = merged_into.get(id) {
            line.result = Outcome::Merged;
            line.into = Some(into[0].to_owned());
            line.reason = None;
            if into.len() > 1 {
                line.notes
                    .push(format!("also merged into {}", into[1..].join(", ")));
            }
            line.notes
                .extend(member_notes.remove(id).unwrap_or_default());
            continue;
        }
        if let Some(why) = member_why.remove(id) {
            line.result = Outcome::Skipped;
            line.reason = Some(why);
            continue;
        }
        if kind == "indicator" {
            match admit(o, &mapper.bundle_tlp, opts) {
                Err(why) => {
                    line.result = if why.starts_with("no TLP") {
                        Outcome::Refused
                    } else {
                        Outcome::Skipped
                    };
                    line.reason = Some(why);
                }
                Ok(tlp) => {
                    let mut g = Gathered::default();
                    let mut scos = Vec::new();
                    match mapper.contribute(true, o, &mut g, &mut scos) {
                        Err(why) => {
                            line.result = Outcome::Skipped;
                            line.reason = Some(why);
                        }
                        Ok(notes) => {
                            line.notes.extend(notes);
                            let draft = warning_draft(o, tlp, g, opts, line);
                            line.result = Outcome::Imported;
                            line.id = draft.id.clone();
                            last.push(Planned {
                                line: line_of[id],
                                draft,
                            });
                        }
                    }
                }
            }
            continue;
        }
        line.result = Outcome::Skipped;
        line.reason = Some(skip_reason(kind));
    }
    drafts.append(&mut later);
    drafts.append(&mut last);
    Ok(Import { reports, drafts })
}

/// Whether an object that would become a message may: its TLP, or why not
/// (a reason starting "no TLP" is a refusal, any other a skip).
fn admit(
    o: &Value,
    bundle_tlp: &HashMap<String, &'static str>,
    opts: &Options,
) -> Result<&'static str, String> {
    if o["revoked"].as_bool() == Some(true) {
        return Err("revoked by its producer".into());
    }
    match (exercise_of(o), &opts.exercise) {
        (Some(x), None) => {
            return Err(if x.is_empty() {
                "exercise traffic (labelled EXERCISE); give --exercise ID to import it into that exercise".into()
            } else {
                format!("exercise traffic of exercise {x}; give --exercise {x} to import it")
            });
        }
        (Some(x), Some(want)) if !x.is_empty() && x != *want => {
            return Err(format!("traffic of exercise {x}, not of {want}"));
        }
        _ => {}
    }
    match tlp_of_object(o, bundle_tlp) {
        Some(w) => Ok(w),
        None => opts.tlp.as_deref().and_then(tlp_word).ok_or_else(|| {
            "no TLP marking on the object and no --tlp given: certex does not guess a TLP".into()
        }),
    }
}

/// The fields every draft shares; `tlp` raised to the members' if stricter.
fn base_draft(
    o: &Value,
    tlp: &'static str,
    g: &Gathered,
    opts: &Options,
    line: &mut ObjectReport,
) -> BodyJson {
    let mut tlp = tlp;
    if let Some(m) = g.member_tlp
        && tlp_rank(m) > tlp_rank(tlp)
    {
        line.notes.push(format!(
            "TLP raised from {tlp} to {m}, the marking of a merged object"
        ));
        tlp = m;
    }
    let mut references: Vec<ReferenceJson> = g
        .references
        .iter()
        .map(|r| ReferenceJson {
            sender: opts.team.clone(),
            id: message_id(r),
        })
        .collect();
    if references.len() > limits::REFERENCES {
        line.notes.push(format!(
            "only the first {} of {} references kept",
            limits::REFERENCES,
            references.len()
        ));
        references.truncate(limits::REFERENCES);
    }
    BodyJson {
        id: Some(message_id(text(o, "id"))),
        sender: None,
        created_at: None,
        tlp: tlp.to_owned(),
        audience: opts.audience.clone(),
        exercise: opts.exercise.clone().unwrap_or_default(),
        references,
        incident: None,
        warning: None,
        request: None,
        case_update: None,
        retraction: None,
    }
}

/// A title from `name`, else a fallback, cut to the field limit.
fn title_of(o: &Value, fallback: impl FnOnce() -> String, line: &mut ObjectReport) -> String {
    let name = text(o, "name").trim();
    let name = if name.is_empty() {
        let f = fallback();
        line.notes
            .push("no name: title made from the object".into());
        f
    } else {
        name.to_owned()
    };
    let (title, was_cut) = cut(&name, limits::TITLE);
    if was_cut {
        line.notes
            .push(format!("title cut to {} characters", limits::TITLE));
    }
    title
}

fn observables_field(g: &mut Gathered, line: &mut ObjectReport) -> Vec<ObservableJson> {
    if g.observables.len() > limits::LIST {
        line.notes.push(format!(
            "only the first {} of {} observables kept",
            limits::LIST,
            g.observables.len()
        ));
        g.observables.truncate(limits::LIST);
    }
    std::mem::take(&mut g.observables)
        .into_iter()
        .map(obs_json)
        .collect()
}

fn incident_draft(
    o: &Value,
    tlp: &'static str,
    mut g: Gathered,
    opts: &Options,
    line: &mut ObjectReport,
) -> BodyJson {
    let mut draft = base_draft(o, tlp, &g, opts, line);
    let ext = &o["extensions"][INCIDENT_CORE_EXTENSION];
    let types: Vec<&str> = ext["incident_types"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(o["incident_types"].as_array().into_iter().flatten())
        .chain(std::iter::once(&o["incident_type"]))
        .filter_map(Value::as_str)
        .collect();
    let category = types
        .iter()
        .map(|t| t.trim().to_ascii_lowercase().replace([' ', '_'], "-"))
        .find_map(|t| Category::from_word(&t).map(|c| c.word()));
    let category = match category {
        Some(c) => c,
        None => {
            if !types.is_empty() {
                line.notes.push(format!(
                    "incident types {types:?} are not RSIT classes: category other"
                ));
            }
            "other"
        }
    };
    let (severity, how) = severity_of(o);
    line.notes.extend(how);
    let (description, was_cut) = cut(text(o, "description"), limits::LONG_TEXT);
    if was_cut {
        line.notes.push(format!(
            "description cut to {} characters",
            limits::LONG_TEXT
        ));
    }
    let detected_at = o["first_seen"]
        .as_str()
        .or(ext["first_seen"].as_str())
        .and_then(parse_time)
        .map(format_time);
    draft.incident = Some(IncidentJson {
        title: title_of(o, || format!("Incident {}", text(o, "id")), line),
        description,
        category: category.to_owned(),
        severity: severity.to_owned(),
        sectors: Vec::new(),
        detected_at,
        observables: observables_field(&mut g, line),
    });
    draft
}

fn warning_draft(
    o: &Value,
    tlp: &'static str,
    mut g: Gathered,
    opts: &Options,
    line: &mut ObjectReport,
) -> BodyJson {
    let mut draft = base_draft(o, tlp, &g, opts, line);
    let (severity, how) = severity_of(o);
    line.notes.extend(how);
    let (summary, was_cut) = cut(text(o, "description"), limits::SUMMARY);
    if was_cut {
        line.notes
            .push(format!("summary cut to {} characters", limits::SUMMARY));
    }
    let mut actions = std::mem::take(&mut g.actions);
    if actions.len() > limits::REFERENCES {
        line.notes.push(format!(
            "only the first {} of {} recommended actions kept",
            limits::REFERENCES,
            actions.len()
        ));
        actions.truncate(limits::REFERENCES);
    }
    let title = title_of(
        o,
        || match o["pattern"].as_str() {
            Some(p) => p.to_owned(),
            None => format!("{} {}", text(o, "type"), text(o, "id")),
        },
        line,
    );
    draft.warning = Some(WarningJson {
        title,
        summary,
        severity: severity.to_owned(),
        expires_at: g.expires.map(format_time),
        cves: std::mem::take(&mut g.cves),
        observables: observables_field(&mut g, line),
        recommended_actions: actions,
    });
    draft
}

#[cfg(test)]
mod tests;
