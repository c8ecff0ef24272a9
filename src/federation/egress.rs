//! The egress policy a broker applies per peer (SPEC §12): sovereign control
//! of what leaves for another nation's broker, checked before anything is
//! sent. Allowed TLP levels, sharing groups, kinds, exercise traffic and a
//! maximum size; what it withholds is recorded with the reason, so the
//! sender sees where each record went and where it did not.

use serde::{Deserialize, Serialize};

use crate::proto::audience::Kind as AudienceKind;
use crate::proto::body::Content;
use crate::proto::{Body, Tlp};

/// What may leave for one peer. Every field left out allows everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Egress {
    /// TLP levels that may leave (`clear`, `green`, `amber`,
    /// `amber+strict`, `red`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tlp: Option<Vec<String>>,
    /// Sharing groups whose records may leave (records to a group not listed
    /// are withheld; records not addressed to a group are not affected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    /// Kinds that may leave (`incident`, `warning`, `request`,
    /// `case-update`, `retraction`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kinds: Option<Vec<String>>,
    /// Whether exercise traffic may leave (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exercise: Option<bool>,
    /// Largest envelope, in bytes, that may leave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<usize>,
}

/// The policy words of a TLP level.
pub fn tlp_word(tlp: i32) -> &'static str {
    match Tlp::try_from(tlp).unwrap_or(Tlp::Unspecified) {
        Tlp::Clear => "clear",
        Tlp::Green => "green",
        Tlp::Amber => "amber",
        Tlp::AmberStrict => "amber+strict",
        Tlp::Red => "red",
        Tlp::Unspecified => "unspecified",
    }
}

/// The policy word of a body's kind.
pub fn kind_word(body: &Body) -> &'static str {
    match &body.content {
        Some(Content::Incident(_)) => "incident",
        Some(Content::Warning(_)) => "warning",
        Some(Content::Request(_)) => "request",
        Some(Content::CaseUpdate(_)) => "case-update",
        Some(Content::Retraction(_)) => "retraction",
        None => "none",
    }
}

const TLP_WORDS: [&str; 5] = ["clear", "green", "amber", "amber+strict", "red"];
const KIND_WORDS: [&str; 5] = [
    "incident",
    "warning",
    "request",
    "case-update",
    "retraction",
];

impl Egress {
    /// Checks the words of a policy read from a configuration file.
    pub fn validate(&self, peer: &str) -> Result<(), String> {
        for t in self.tlp.iter().flatten() {
            if !TLP_WORDS.contains(&t.as_str()) {
                return Err(format!(
                    "peers.{peer}.egress.tlp: {t:?} is not one of {}",
                    TLP_WORDS.join(", ")
                ));
            }
        }
        for k in self.kinds.iter().flatten() {
            if !KIND_WORDS.contains(&k.as_str()) {
                return Err(format!(
                    "peers.{peer}.egress.kinds: {k:?} is not one of {}",
                    KIND_WORDS.join(", ")
                ));
            }
        }
        if self.max_bytes == Some(0) {
            return Err(format!("peers.{peer}.egress.max_bytes must be positive"));
        }
        Ok(())
    }

    /// `None` if the record may leave; otherwise why it is withheld, in
    /// words for the sender (no field values beyond the policy's own words).
    pub fn withholds(&self, body: &Body, envelope_bytes: usize) -> Option<String> {
        if let Some(max) = self.max_bytes
            && envelope_bytes > max
        {
            return Some(format!(
                "egress policy: {envelope_bytes} bytes is over the {max}-byte limit"
            ));
        }
        if self.exercise == Some(false) && !body.exercise.is_empty() {
            return Some("egress policy: exercise traffic does not leave for this peer".into());
        }
        if let Some(allowed) = &self.tlp {
            let w = tlp_word(body.tlp);
            if !allowed.iter().any(|a| a == w) {
                return Some(format!(
                    "egress policy: TLP:{} does not leave for this peer",
                    w.to_ascii_uppercase()
                ));
            }
        }
        if let Some(allowed) = &self.kinds {
            let w = kind_word(body);
            if !allowed.iter().any(|a| a == w) {
                return Some(format!(
                    "egress policy: kind {w} does not leave for this peer"
                ));
            }
        }
        if let Some(allowed) = &self.groups
            && let Some(AudienceKind::Group(g)) =
                body.audience.as_ref().and_then(|a| a.kind.as_ref())
            && !allowed.iter().any(|a| a == g)
        {
            return Some(format!(
                "egress policy: group {g} does not leave for this peer"
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Audience, IncidentReport};

    fn body(tlp: Tlp, exercise: &str, group: Option<&str>) -> Body {
        Body {
            id: "x".into(),
            sender: "CN-CNCERT".into(),
            tlp: tlp as i32,
            exercise: exercise.into(),
            audience: group.map(|g| Audience {
                kind: Some(AudienceKind::Group(g.into())),
            }),
            content: Some(Content::Incident(IncidentReport::default())),
            ..Default::default()
        }
    }

    #[test]
    fn an_empty_policy_withholds_nothing() {
        let e = Egress::default();
        assert_eq!(
            e.withholds(&body(Tlp::Red, "DRILL-1", Some("SCO")), 1 << 20),
            None
        );
    }

    #[test]
    fn each_rule_withholds_with_its_reason() {
        let e = Egress {
            tlp: Some(vec!["clear".into(), "green".into()]),
            groups: Some(vec!["BRICS".into()]),
            kinds: Some(vec!["incident".into()]),
            exercise: Some(false),
            max_bytes: Some(1000),
        };
        assert_eq!(e.withholds(&body(Tlp::Green, "", Some("BRICS")), 500), None);
        assert!(
            e.withholds(&body(Tlp::Green, "", None), 1001)
                .unwrap()
                .contains("1000-byte")
        );
        assert!(
            e.withholds(&body(Tlp::Green, "D1", None), 10)
                .unwrap()
                .contains("exercise")
        );
        assert!(
            e.withholds(&body(Tlp::Amber, "", None), 10)
                .unwrap()
                .contains("TLP:AMBER")
        );
        assert!(
            e.withholds(&body(Tlp::Green, "", Some("SCO")), 10)
                .unwrap()
                .contains("group SCO")
        );
        let mut w = body(Tlp::Green, "", None);
        w.content = Some(Content::Warning(Default::default()));
        assert!(e.withholds(&w, 10).unwrap().contains("kind warning"));
    }

    #[test]
    fn unknown_words_are_refused() {
        let e = Egress {
            tlp: Some(vec!["white".into()]),
            ..Default::default()
        };
        assert!(e.validate("BR").unwrap_err().contains("\"white\""));
        let e = Egress {
            kinds: Some(vec!["report".into()]),
            ..Default::default()
        };
        assert!(e.validate("BR").is_err());
    }
}
