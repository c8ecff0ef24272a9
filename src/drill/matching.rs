//! Whether a record answers an expectation, and for how many points: pure
//! functions the control cell applies to every exercise record it sees.
//!
//! A record answers when its sender is the expected team, it came after the
//! target, and it is of the expected kind: a case update with the expected
//! transition on the target's case; a warning that references the target;
//! an incident or request (referencing the target when the expectation asks
//! so); for `any`, any message that references the target or updates its
//! case. It earns the full score when every `match` field holds, and the
//! share of fields that hold otherwise.

use serde_json::Value;

use crate::drill::scenario::{ExpectKind, Expectation};
use crate::proto::{self as pb, body::Content};
use crate::rules::vocab::Word;

/// A message the drill sent and expects answers to.
#[derive(Debug, Clone)]
pub struct TargetRef<'a> {
    pub sender: &'a str,
    pub id: &'a str,
    pub seq: u64,
}

/// An answer's worth: points and, when short of the score, why.
#[derive(Debug, Clone, PartialEq)]
pub struct Worth {
    pub points: u32,
    pub missing: Vec<String>,
}

fn references(body: &pb::Body, t: &TargetRef) -> bool {
    body.references
        .iter()
        .any(|r| r.sender == t.sender && r.id == t.id)
}

fn updates_case<'b>(body: &'b pb::Body, t: &TargetRef) -> Option<&'b pb::CaseUpdate> {
    match &body.content {
        Some(Content::CaseUpdate(u)) if u.requester == t.sender && u.case_id == t.id => Some(u),
        _ => None,
    }
}

/// Whether `body` (record `seq`) is an answer of the expected kind.
pub fn answers(exp: &Expectation, target: &TargetRef, seq: u64, body: &pb::Body) -> bool {
    if body.sender != exp.team || seq <= target.seq {
        return false;
    }
    match exp.kind {
        k if k.transition().is_some() => updates_case(body, target).is_some_and(|u| {
            pb::CaseState::try_from(u.transition).is_ok_and(|s| Some(s.word()) == k.transition())
        }),
        ExpectKind::Warning => {
            matches!(body.content, Some(Content::Warning(_))) && references(body, target)
        }
        ExpectKind::Incident => {
            matches!(body.content, Some(Content::Incident(_)))
                && (!exp.referencing || references(body, target))
        }
        ExpectKind::Request => {
            matches!(body.content, Some(Content::Request(_)))
                && (!exp.referencing || references(body, target))
        }
        _ => references(body, target) || updates_case(body, target).is_some(),
    }
}

/// The values at a dotted path of a JSON value; arrays on the way are
/// searched element by element.
fn values_at<'v>(v: &'v Value, path: &[&str], out: &mut Vec<&'v Value>) {
    match (v, path.split_first()) {
        (Value::Array(items), _) => items.iter().for_each(|i| values_at(i, path, out)),
        (_, None) => out.push(v),
        (Value::Object(map), Some((head, rest))) => {
            if let Some(next) = map.get(*head) {
                values_at(next, rest, out);
            }
        }
        _ => {}
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What an answer of the right kind is worth: the full score when every
/// `match` field holds (a field holds when any value at its path equals the
/// wanted one); otherwise the kind counts as one criterion beside the
/// fields, and the answer earns the score times the share of criteria met
/// (right kind, wrong severity: half the points).
pub fn worth(exp: &Expectation, answer: &Value) -> Worth {
    if exp.matches.is_empty() {
        return Worth {
            points: exp.score,
            missing: Vec::new(),
        };
    }
    let mut held = 0u32;
    let mut missing = Vec::new();
    for (path, want) in &exp.matches {
        let parts: Vec<&str> = path.split('.').collect();
        let mut found = Vec::new();
        values_at(answer, &parts, &mut found);
        if found.iter().any(|v| text(v) == *want) {
            held += 1;
        } else if found.is_empty() {
            missing.push(format!("{path} is absent ({want} expected)"));
        } else {
            let got: Vec<String> = found.iter().map(|v| text(v)).collect();
            missing.push(format!("{path} is {} ({want} expected)", got.join(", ")));
        }
    }
    let total = exp.matches.len() as u32;
    Worth {
        points: if held == total {
            exp.score
        } else {
            exp.score * (held + 1) / (total + 1)
        },
        missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drill::scenario::Target;
    use std::time::Duration;

    fn exp(kind: ExpectKind, matches: &[(&str, &str)]) -> Expectation {
        Expectation {
            id: "E1".into(),
            target: Target::Inject("I1".into()),
            team: "BR-CERTBR".into(),
            kind,
            within: Duration::from_secs(600),
            score: 10,
            expected_score: 10,
            objective: None,
            matches: matches
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            referencing: false,
            description: String::new(),
            line: 1,
        }
    }

    const T: TargetRef = TargetRef {
        sender: "ZA-EXCON",
        id: "req-1",
        seq: 5,
    };

    fn update(sender: &str, transition: pb::CaseState) -> pb::Body {
        pb::Body {
            sender: sender.into(),
            references: vec![pb::Reference {
                sender: "ZA-EXCON".into(),
                id: "req-1".into(),
            }],
            content: Some(Content::CaseUpdate(pb::CaseUpdate {
                case_id: "req-1".into(),
                requester: "ZA-EXCON".into(),
                transition: transition as i32,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn case_answers_need_the_team_the_case_and_the_transition() {
        let e = exp(ExpectKind::Accept, &[]);
        assert!(answers(
            &e,
            &T,
            9,
            &update("BR-CERTBR", pb::CaseState::Accepted)
        ));
        assert!(!answers(
            &e,
            &T,
            9,
            &update("BR-CERTBR", pb::CaseState::Acknowledged)
        ));
        assert!(!answers(
            &e,
            &T,
            9,
            &update("IN-CERTIN", pb::CaseState::Accepted)
        ));
        assert!(
            !answers(&e, &T, 4, &update("BR-CERTBR", pb::CaseState::Accepted)),
            "before the target"
        );
        let mut other = update("BR-CERTBR", pb::CaseState::Accepted);
        if let Some(Content::CaseUpdate(u)) = &mut other.content {
            u.case_id = "req-2".into();
        }
        other.references.clear();
        assert!(!answers(&e, &T, 9, &other));
        assert!(!answers(&exp(ExpectKind::Any, &[]), &T, 9, &other));
        assert!(answers(
            &exp(ExpectKind::Any, &[]),
            &T,
            9,
            &update("BR-CERTBR", pb::CaseState::Declined)
        ));
    }

    #[test]
    fn warnings_must_reference_the_target() {
        let e = exp(ExpectKind::Warning, &[]);
        let mut w = pb::Body {
            sender: "BR-CERTBR".into(),
            content: Some(Content::Warning(pb::Warning::default())),
            ..Default::default()
        };
        assert!(!answers(&e, &T, 9, &w));
        w.references.push(pb::Reference {
            sender: "ZA-EXCON".into(),
            id: "req-1".into(),
        });
        assert!(answers(&e, &T, 9, &w));
        let mut i = exp(ExpectKind::Incident, &[]);
        let inc = pb::Body {
            sender: "BR-CERTBR".into(),
            content: Some(Content::Incident(pb::IncidentReport::default())),
            ..Default::default()
        };
        assert!(answers(&i, &T, 9, &inc));
        i.referencing = true;
        assert!(!answers(&i, &T, 9, &inc));
    }

    #[test]
    fn match_fields_earn_their_share() {
        let answer = serde_json::json!({
            "tlp": "amber",
            "warning": {"severity": "medium",
                        "observables": [{"type": "ipv4", "value": "203.0.113.7"},
                                        {"type": "domain", "value": "c2.example"}]}
        });
        let e = exp(
            ExpectKind::Warning,
            &[
                ("warning.severity", "high"),
                ("warning.observables.value", "c2.example"),
            ],
        );
        let w = worth(&e, &answer);
        assert_eq!(w.points, 6, "kind and one field of two: 2/3 of 10");
        assert_eq!(
            w.missing,
            vec!["warning.severity is medium (high expected)"]
        );
        let full = worth(&exp(ExpectKind::Warning, &[("tlp", "amber")]), &answer);
        assert_eq!(
            full,
            Worth {
                points: 10,
                missing: vec![]
            }
        );
        let absent = worth(
            &exp(ExpectKind::Warning, &[("warning.cves", "CVE-2026-1")]),
            &answer,
        );
        assert_eq!(absent.points, 5, "the right kind alone earns half");
        assert!(absent.missing[0].contains("absent"));
    }
}
