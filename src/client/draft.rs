//! The JSON forms of SPEC §11: drafts (what `certex submit` reads) and
//! records (what `get` and `subscribe` print), converted to and from the
//! protobuf `Body` with the lowercase words of `vocab`.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::proto::audience::Kind as AudienceKind;
use crate::proto::body::Content;
use crate::proto::{self as pb, Action, CaseState, Category, ObservableType, Severity, Tlp};
use crate::rules::time::{format_time, parse_timestamp, timestamp_text};
use crate::rules::vocab::{self, Word};

fn opt_time(ts: &Option<prost_types::Timestamp>) -> Option<String> {
    ts.as_ref().map(timestamp_text)
}

fn parse_opt_time(
    field: &str,
    s: &Option<String>,
) -> Result<Option<prost_types::Timestamp>, String> {
    s.as_deref().map(|s| parse_timestamp(field, s)).transpose()
}

fn word<T: Word + TryFrom<i32>>(raw: i32) -> String {
    T::try_from(raw)
        .map(|v| v.word().to_owned())
        .unwrap_or_else(|_| format!("unknown({raw})"))
}

fn parse_word<T: Word + Into<i32>>(field: &str, w: &str) -> Result<i32, String> {
    vocab::parse::<T>(w)
        .map(Into::into)
        .map_err(|e| format!("{field}: {e}"))
}

/// A message named by its sender and id: `{"sender": "CN-CNCERT", "id": "…"}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReferenceJson {
    pub sender: String,
    pub id: String,
}

/// `"community"`, `{"teams": [...]}` or `{"group": "SCO"}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum AudienceJson {
    Word(String),
    Teams { teams: Vec<String> },
    Group { group: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ObservableJson {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct IncidentJson {
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub category: String,
    pub severity: String,
    #[serde(default)]
    pub sectors: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_at: Option<String>,
    #[serde(default)]
    pub observables: Vec<ObservableJson>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct WarningJson {
    pub title: String,
    #[serde(default)]
    pub summary: String,
    pub severity: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub cves: Vec<String>,
    #[serde(default)]
    pub observables: Vec<ObservableJson>,
    #[serde(default)]
    pub recommended_actions: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct RequestJson {
    pub to: String,
    pub action: String,
    pub legal_basis: String,
    pub description: String,
    pub respond_by: String,
    pub priority: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct CaseUpdateJson {
    pub case_id: String,
    /// The request's sender (a case is requester + request id).
    pub requester: String,
    pub transition: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct RetractionJson {
    pub target: String,
    pub reason: String,
}

/// A draft, or a record's body: the `Body` in JSON.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BodyJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    pub tlp: String,
    pub audience: AudienceJson,
    #[serde(default)]
    pub exercise: String,
    #[serde(default)]
    pub references: Vec<ReferenceJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<IncidentJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<WarningJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_update: Option<CaseUpdateJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retraction: Option<RetractionJson>,
}

fn observables_in(field: &str, list: &[ObservableJson]) -> Result<Vec<pb::Observable>, String> {
    list.iter()
        .enumerate()
        .map(|(i, o)| {
            let field = format!("{field}[{i}].type");
            let kind =
                vocab::parse::<ObservableType>(&o.kind).map_err(|e| format!("{field}: {e}"))?;
            Ok(pb::Observable {
                r#type: kind.into(),
                value: crate::rules::validate::normalise_observable(kind, &o.value),
            })
        })
        .collect()
}

fn observables_out(list: &[pb::Observable]) -> Vec<ObservableJson> {
    list.iter()
        .map(|o| ObservableJson {
            kind: word::<ObservableType>(o.r#type),
            value: o.value.clone(),
        })
        .collect()
}

/// Converts an audience to its wire form.
pub fn audience_in(a: &AudienceJson) -> Result<pb::Audience, String> {
    let kind = match a {
        AudienceJson::Word(w) if w == "community" => AudienceKind::Community(true),
        AudienceJson::Word(w) => {
            return Err(format!(
                "audience: {w:?} is not an audience (use \"community\", {{\"teams\": [...]}} or {{\"group\": \"NAME\"}})"
            ));
        }
        AudienceJson::Teams { teams } => AudienceKind::Teams(pb::TeamList {
            teams: teams.clone(),
        }),
        AudienceJson::Group { group } => AudienceKind::Group(group.clone()),
    };
    Ok(pb::Audience { kind: Some(kind) })
}

pub fn audience_out(a: Option<&pb::Audience>) -> AudienceJson {
    match a.and_then(|a| a.kind.as_ref()) {
        Some(AudienceKind::Teams(l)) => AudienceJson::Teams {
            teams: l.teams.clone(),
        },
        Some(AudienceKind::Group(g)) => AudienceJson::Group { group: g.clone() },
        Some(AudienceKind::Community(_)) => AudienceJson::Word("community".into()),
        None => AudienceJson::Word("none".into()),
    }
}

impl BodyJson {
    /// Builds the wire body; `id`, `sender` and `created_at` must be set by
    /// then (see [`BodyJson::fill`]).
    pub fn to_body(&self) -> Result<pb::Body, String> {
        let contents = [
            self.incident.is_some(),
            self.warning.is_some(),
            self.request.is_some(),
            self.case_update.is_some(),
            self.retraction.is_some(),
        ];
        if contents.iter().filter(|c| **c).count() != 1 {
            return Err(
                "a draft holds exactly one of incident, warning, request, case_update, retraction"
                    .into(),
            );
        }
        let content = if let Some(r) = &self.incident {
            Content::Incident(pb::IncidentReport {
                title: r.title.clone(),
                description: r.description.clone(),
                category: parse_word::<Category>("incident.category", &r.category)?,
                severity: parse_word::<Severity>("incident.severity", &r.severity)?,
                sectors: r.sectors.clone(),
                detected_at: parse_opt_time("incident.detected_at", &r.detected_at)?,
                observables: observables_in("incident.observables", &r.observables)?,
            })
        } else if let Some(w) = &self.warning {
            Content::Warning(pb::Warning {
                title: w.title.clone(),
                summary: w.summary.clone(),
                severity: parse_word::<Severity>("warning.severity", &w.severity)?,
                expires_at: parse_opt_time("warning.expires_at", &w.expires_at)?,
                cves: w.cves.clone(),
                observables: observables_in("warning.observables", &w.observables)?,
                recommended_actions: w.recommended_actions.clone(),
            })
        } else if let Some(r) = &self.request {
            Content::Request(pb::AssistanceRequest {
                to: r.to.clone(),
                action: parse_word::<Action>("request.action", &r.action)?,
                legal_basis: r.legal_basis.clone(),
                description: r.description.clone(),
                respond_by: Some(parse_timestamp("request.respond_by", &r.respond_by)?),
                priority: parse_word::<Severity>("request.priority", &r.priority)?,
            })
        } else if let Some(u) = &self.case_update {
            Content::CaseUpdate(pb::CaseUpdate {
                case_id: u.case_id.clone(),
                requester: u.requester.clone(),
                transition: parse_word::<CaseState>("case_update.transition", &u.transition)?,
                note: u.note.clone(),
                reason: u.reason.clone(),
            })
        } else if let Some(r) = &self.retraction {
            Content::Retraction(pb::Retraction {
                target: r.target.clone(),
                reason: r.reason.clone(),
            })
        } else {
            unreachable!("exactly one content checked above")
        };
        Ok(pb::Body {
            id: self.id.clone().unwrap_or_default(),
            sender: self.sender.clone().unwrap_or_default(),
            created_at: parse_opt_time("created_at", &self.created_at)?,
            tlp: parse_word::<Tlp>("tlp", &self.tlp)?,
            audience: Some(audience_in(&self.audience)?),
            exercise: self.exercise.clone(),
            references: self
                .references
                .iter()
                .map(|r| pb::Reference {
                    sender: r.sender.clone(),
                    id: r.id.clone(),
                })
                .collect(),
            content: Some(content),
        })
    }

    /// Fills what `submit` adds: a fresh UUID if `id` is absent, the sender,
    /// and `created_at` = now if absent. A draft naming another sender is
    /// refused.
    pub fn fill(&mut self, sender: &str, now: OffsetDateTime) -> Result<(), String> {
        if let Some(s) = &self.sender
            && s != sender
        {
            return Err(format!(
                "the draft names sender {s} but you submit as {sender}"
            ));
        }
        self.sender = Some(sender.to_owned());
        if self.id.as_deref().is_none_or(str::is_empty) {
            self.id = Some(uuid::Uuid::new_v4().to_string());
        }
        if self.created_at.is_none() {
            self.created_at = Some(format_time(now));
        }
        Ok(())
    }

    /// The JSON form of a wire body.
    pub fn from_body(b: &pb::Body) -> Self {
        let mut j = BodyJson {
            id: Some(b.id.clone()),
            sender: Some(b.sender.clone()),
            created_at: opt_time(&b.created_at),
            tlp: word::<Tlp>(b.tlp),
            audience: audience_out(b.audience.as_ref()),
            exercise: b.exercise.clone(),
            references: b
                .references
                .iter()
                .map(|r| ReferenceJson {
                    sender: r.sender.clone(),
                    id: r.id.clone(),
                })
                .collect(),
            incident: None,
            warning: None,
            request: None,
            case_update: None,
            retraction: None,
        };
        match &b.content {
            Some(Content::Incident(r)) => {
                j.incident = Some(IncidentJson {
                    title: r.title.clone(),
                    description: r.description.clone(),
                    category: word::<Category>(r.category),
                    severity: word::<Severity>(r.severity),
                    sectors: r.sectors.clone(),
                    detected_at: opt_time(&r.detected_at),
                    observables: observables_out(&r.observables),
                })
            }
            Some(Content::Warning(w)) => {
                j.warning = Some(WarningJson {
                    title: w.title.clone(),
                    summary: w.summary.clone(),
                    severity: word::<Severity>(w.severity),
                    expires_at: opt_time(&w.expires_at),
                    cves: w.cves.clone(),
                    observables: observables_out(&w.observables),
                    recommended_actions: w.recommended_actions.clone(),
                })
            }
            Some(Content::Request(r)) => {
                j.request = Some(RequestJson {
                    to: r.to.clone(),
                    action: word::<Action>(r.action),
                    legal_basis: r.legal_basis.clone(),
                    description: r.description.clone(),
                    respond_by: opt_time(&r.respond_by).unwrap_or_default(),
                    priority: word::<Severity>(r.priority),
                })
            }
            Some(Content::CaseUpdate(u)) => {
                j.case_update = Some(CaseUpdateJson {
                    case_id: u.case_id.clone(),
                    requester: u.requester.clone(),
                    transition: word::<CaseState>(u.transition),
                    note: u.note.clone(),
                    reason: u.reason.clone(),
                })
            }
            Some(Content::Retraction(r)) => {
                j.retraction = Some(RetractionJson {
                    target: r.target.clone(),
                    reason: r.reason.clone(),
                })
            }
            None => {}
        }
        j
    }
}

/// A receipt as `submit` prints it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReceiptJson {
    pub seq: u64,
    pub id: String,
    pub received_at: String,
    pub leaf_hash: String,
    pub tree_size: u64,
    pub duplicate: bool,
}

impl From<&pb::Receipt> for ReceiptJson {
    fn from(r: &pb::Receipt) -> Self {
        ReceiptJson {
            seq: r.seq,
            id: r.id.clone(),
            received_at: opt_time(&r.received_at).unwrap_or_default(),
            leaf_hash: hex::encode(&r.leaf_hash),
            tree_size: r.tree_size,
            duplicate: r.duplicate,
        }
    }
}

/// A tombstone as printed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TombstoneJson {
    pub id: String,
    pub seq: u64,
    pub retracted_by: String,
    pub reason: String,
}

/// A record as `get` and `subscribe` print it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecordJson {
    pub seq: u64,
    pub id: String,
    pub sender: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tlp: Option<String>,
    pub exercise: String,
    /// `"EXERCISE"` on every exercise record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub marking: Option<String>,
    pub received_at: String,
    pub leaf_hash: String,
    pub verified: bool,
    /// For a verified record: `active`, `expired` or `revoked-after-signing`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_status: Option<String>,
    /// For a record that does not verify: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<BodyJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retracted: Option<TombstoneJson>,
    /// In a federation, for the sender: where its home broker relayed the
    /// record, withheld it or has yet to relay it (SPEC §12).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relays: Vec<RelayJson>,
    /// In a federation: the broker that relayed the record here, and its
    /// seq there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<OriginJson>,
}

/// Where a record went for one peer broker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RelayJson {
    pub broker: String,
    /// `relayed`, `withheld`, `refused` or `pending`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// The broker a record was relayed from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OriginJson {
    pub broker: String,
    pub seq: u64,
    /// Whether the origin broker's proof that it logged the record verifies
    /// (with its checkpoint key in the local directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logged_at_origin: Option<bool>,
    /// The size of the origin checkpoint the proof is against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_checkpoint_size: Option<u64>,
    /// Why the origin proof does not verify, or is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_proof_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_example_round_trips() {
        let text = r#"{"tlp": "amber", "audience": {"teams": ["US-CISA"]}, "exercise": "", "references": [],
 "incident": {"title": "t", "description": "d", "category": "intrusions", "severity": "high",
              "sectors": ["energy"], "detected_at": "2026-11-25T10:00:00Z",
              "observables": [{"type": "ipv4", "value": "203.0.113.7"}]}}"#;
        let mut d: BodyJson = serde_json::from_str(text).unwrap();
        d.fill("CN-CNCERT", OffsetDateTime::now_utc()).unwrap();
        let body = d.to_body().unwrap();
        assert_eq!(body.tlp, Tlp::Amber as i32);
        let back = BodyJson::from_body(&body);
        assert_eq!(back.to_body().unwrap(), body);
        assert_eq!(
            back.incident.unwrap().detected_at.unwrap(),
            "2026-11-25T10:00:00.000Z"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let d: BodyJson = serde_json::from_str(
            r#"{"tlp":"purple","audience":"community","warning":{"title":"x","severity":"high"}}"#,
        )
        .unwrap();
        let e = d.to_body().unwrap_err();
        assert!(e.starts_with("tlp: unknown tlp \"purple\""), "{e}");
        let e =
            serde_json::from_str::<BodyJson>(r#"{"tlp":"red","audience":"community","colour":1}"#)
                .unwrap_err();
        assert!(e.to_string().contains("colour"));
    }
}
