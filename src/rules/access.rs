//! Who may read what (SPEC §5), as pure functions used by every read path.
//!
//! Deny by default: a team reads a record iff it sent it, or the record's
//! audience admits it (community, listed team, member of the named group, or a
//! case's requester), and the record is in the traffic the reader asked for
//! (real world, one exercise, or all exercises). A retracted record is shown
//! in full only to its sender; others get a tombstone. What a team may not read
//! is answered exactly like what does not exist.

use crate::proto::audience::Kind as AudienceKind;
use crate::proto::{Audience, ExerciseSelector, exercise_selector::Scope};

/// What a reader asked for: real-world traffic, one drill, or every drill.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TrafficScope {
    #[default]
    Real,
    Exercise(String),
    AllExercises,
}

impl TrafficScope {
    /// From the wire selector; unset means real-world traffic.
    pub fn from_selector(sel: Option<&ExerciseSelector>) -> Self {
        match sel.and_then(|s| s.scope.as_ref()) {
            None | Some(Scope::Real(_)) => TrafficScope::Real,
            Some(Scope::Exercise(e)) if e.is_empty() => TrafficScope::Real,
            Some(Scope::Exercise(e)) => TrafficScope::Exercise(e.clone()),
            Some(Scope::AllExercises(_)) => TrafficScope::AllExercises,
        }
    }

    pub fn to_selector(&self) -> ExerciseSelector {
        ExerciseSelector {
            scope: Some(match self {
                TrafficScope::Real => Scope::Real(true),
                TrafficScope::Exercise(e) => Scope::Exercise(e.clone()),
                TrafficScope::AllExercises => Scope::AllExercises(true),
            }),
        }
    }

    /// Whether a record with this `exercise` field belongs to the scope.
    pub fn includes(&self, exercise: &str) -> bool {
        match self {
            TrafficScope::Real => exercise.is_empty(),
            TrafficScope::Exercise(e) => exercise == e,
            TrafficScope::AllExercises => !exercise.is_empty(),
        }
    }
}

/// The facts about a record that decide who reads it.
#[derive(Debug, Clone, Copy)]
pub struct Distribution<'a> {
    pub sender: &'a str,
    pub audience: Option<&'a Audience>,
    pub exercise: &'a str,
    /// Teams admitted beyond the audience: a group's members when the record
    /// was accepted, an assistance case's requester.
    pub also_readers: &'a [String],
}

/// Whether an audience admits `team` by itself. A `group` audience admits
/// nobody here: its members *as they were when the record was accepted* are
/// stored with the record and admitted through [`Distribution::also_readers`],
/// so a team that joins the group later does not read its history.
pub fn audience_admits(audience: Option<&Audience>, team: &str) -> bool {
    match audience.and_then(|a| a.kind.as_ref()) {
        Some(AudienceKind::Community(true)) => true,
        Some(AudienceKind::Teams(list)) => list.teams.iter().any(|t| t == team),
        _ => false,
    }
}

/// What `reader` gets of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// The signed message.
    Full,
    /// A tombstone: the record was retracted.
    Tombstone,
    /// Nothing: answered as if it did not exist.
    Hidden,
}

/// The §5 rule for one reader and one record.
pub fn visibility(
    reader: &str,
    record: &Distribution<'_>,
    retracted: bool,
    scope: &TrafficScope,
) -> Visibility {
    if !scope.includes(record.exercise) {
        return Visibility::Hidden;
    }
    if reader == record.sender {
        return Visibility::Full;
    }
    let admitted =
        record.also_readers.iter().any(|t| t == reader) || audience_admits(record.audience, reader);
    match (admitted, retracted) {
        (false, _) => Visibility::Hidden,
        (true, false) => Visibility::Full,
        (true, true) => Visibility::Tombstone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::TeamList;

    fn teams(list: &[&str]) -> Audience {
        Audience {
            kind: Some(AudienceKind::Teams(TeamList {
                teams: list.iter().map(|s| s.to_string()).collect(),
            })),
        }
    }

    #[test]
    fn sender_always_reads_full_even_retracted() {
        let aud = teams(&["BR-CERTBR"]);
        let d = Distribution {
            sender: "CN-CNCERT",
            audience: Some(&aud),
            exercise: "",
            also_readers: &[],
        };
        let real = TrafficScope::Real;
        assert_eq!(visibility("CN-CNCERT", &d, true, &real), Visibility::Full);
        assert_eq!(
            visibility("BR-CERTBR", &d, true, &real),
            Visibility::Tombstone
        );
        assert_eq!(visibility("BR-CERTBR", &d, false, &real), Visibility::Full);
        assert_eq!(visibility("US-CISA", &d, false, &real), Visibility::Hidden);
        assert_eq!(visibility("US-CISA", &d, true, &real), Visibility::Hidden);
    }

    #[test]
    fn exercise_isolation_both_ways() {
        let aud = Audience {
            kind: Some(AudienceKind::Community(true)),
        };
        let drill = Distribution {
            sender: "CN-CNCERT",
            audience: Some(&aud),
            exercise: "CYBER-STORM-1",
            also_readers: &[],
        };
        let real = Distribution {
            exercise: "",
            ..drill
        };
        let r = TrafficScope::Real;
        let e = TrafficScope::Exercise("CYBER-STORM-1".into());
        let other = TrafficScope::Exercise("OTHER".into());
        let all = TrafficScope::AllExercises;
        assert_eq!(
            visibility("BR-CERTBR", &drill, false, &r),
            Visibility::Hidden
        );
        assert_eq!(
            visibility("CN-CNCERT", &drill, false, &r),
            Visibility::Hidden
        );
        assert_eq!(visibility("BR-CERTBR", &drill, false, &e), Visibility::Full);
        assert_eq!(
            visibility("BR-CERTBR", &drill, false, &other),
            Visibility::Hidden
        );
        assert_eq!(
            visibility("BR-CERTBR", &drill, false, &all),
            Visibility::Full
        );
        assert_eq!(
            visibility("BR-CERTBR", &real, false, &e),
            Visibility::Hidden
        );
        assert_eq!(
            visibility("BR-CERTBR", &real, false, &all),
            Visibility::Hidden
        );
        assert_eq!(visibility("BR-CERTBR", &real, false, &r), Visibility::Full);
    }

    #[test]
    fn groups_admit_their_members_when_accepted_only() {
        let g = Audience {
            kind: Some(AudienceKind::Group("SCO".into())),
        };
        assert!(!audience_admits(Some(&g), "CN-CNCERT"));
        assert!(!audience_admits(None, "CN-CNCERT"));
        let members = vec!["CN-CNCERT".to_string(), "RU-GOVCERT".to_string()];
        let d = Distribution {
            sender: "RU-GOVCERT",
            audience: Some(&g),
            exercise: "",
            also_readers: &members,
        };
        let real = TrafficScope::Real;
        assert_eq!(visibility("CN-CNCERT", &d, false, &real), Visibility::Full);
        assert_eq!(
            visibility("IN-CERTIN", &d, false, &real),
            Visibility::Hidden
        );
        let also = vec!["US-CISA".to_string()];
        let d = Distribution {
            sender: "CN-CNCERT",
            audience: None,
            exercise: "",
            also_readers: &also,
        };
        assert_eq!(
            visibility("US-CISA", &d, false, &TrafficScope::Real),
            Visibility::Full
        );
    }
}
