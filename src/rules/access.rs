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
use crate::rules::directory::Directory;

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
    /// Teams admitted beyond the audience (an assistance case's requester).
    pub also_readers: &'a [String],
}

/// Whether an audience admits `team` under the current directory.
pub fn audience_admits(audience: Option<&Audience>, team: &str, dir: &Directory) -> bool {
    match audience.and_then(|a| a.kind.as_ref()) {
        Some(AudienceKind::Community(true)) => true,
        Some(AudienceKind::Teams(list)) => list.teams.iter().any(|t| t == team),
        Some(AudienceKind::Group(name)) => dir.group(name).is_some_and(|g| g.contains(team)),
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
    dir: &Directory,
) -> Visibility {
    if !scope.includes(record.exercise) {
        return Visibility::Hidden;
    }
    if reader == record.sender {
        return Visibility::Full;
    }
    let admitted = record.also_readers.iter().any(|t| t == reader)
        || audience_admits(record.audience, reader, dir);
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
    use crate::rules::directory::DirectoryFile;

    fn dir() -> Directory {
        // A directory with groups only needs teams; anchors are checked for
        // teams, so build a file whose teams' countries have anchors is not
        // possible without certificates: use no teams and an empty group set.
        Directory::from_file(DirectoryFile::default(), std::path::Path::new(".")).unwrap()
    }

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
        let dir = dir();
        let real = TrafficScope::Real;
        assert_eq!(
            visibility("CN-CNCERT", &d, true, &real, &dir),
            Visibility::Full
        );
        assert_eq!(
            visibility("BR-CERTBR", &d, true, &real, &dir),
            Visibility::Tombstone
        );
        assert_eq!(
            visibility("BR-CERTBR", &d, false, &real, &dir),
            Visibility::Full
        );
        assert_eq!(
            visibility("US-CISA", &d, false, &real, &dir),
            Visibility::Hidden
        );
        assert_eq!(
            visibility("US-CISA", &d, true, &real, &dir),
            Visibility::Hidden
        );
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
        let dir = dir();
        let r = TrafficScope::Real;
        let e = TrafficScope::Exercise("CYBER-STORM-1".into());
        let other = TrafficScope::Exercise("OTHER".into());
        let all = TrafficScope::AllExercises;
        assert_eq!(
            visibility("BR-CERTBR", &drill, false, &r, &dir),
            Visibility::Hidden
        );
        assert_eq!(
            visibility("CN-CNCERT", &drill, false, &r, &dir),
            Visibility::Hidden
        );
        assert_eq!(
            visibility("BR-CERTBR", &drill, false, &e, &dir),
            Visibility::Full
        );
        assert_eq!(
            visibility("BR-CERTBR", &drill, false, &other, &dir),
            Visibility::Hidden
        );
        assert_eq!(
            visibility("BR-CERTBR", &drill, false, &all, &dir),
            Visibility::Full
        );
        assert_eq!(
            visibility("BR-CERTBR", &real, false, &e, &dir),
            Visibility::Hidden
        );
        assert_eq!(
            visibility("BR-CERTBR", &real, false, &all, &dir),
            Visibility::Hidden
        );
        assert_eq!(
            visibility("BR-CERTBR", &real, false, &r, &dir),
            Visibility::Full
        );
    }

    #[test]
    fn unknown_group_and_missing_audience_admit_nobody() {
        let dir = dir();
        let g = Audience {
            kind: Some(AudienceKind::Group("SCO".into())),
        };
        assert!(!audience_admits(Some(&g), "CN-CNCERT", &dir));
        assert!(!audience_admits(None, "CN-CNCERT", &dir));
        let also = vec!["US-CISA".to_string()];
        let d = Distribution {
            sender: "CN-CNCERT",
            audience: None,
            exercise: "",
            also_readers: &also,
        };
        assert_eq!(
            visibility("US-CISA", &d, false, &TrafficScope::Real, &dir),
            Visibility::Full
        );
    }
}
