//! The case-assistance lifecycle (SPEC §6) as one pure state machine.
//!
//! `open` → `acknowledged` → `accepted` | `declined` → `in-progress` (any
//! number of progress notes) → `resolved` → `closed`. The addressee
//! acknowledges, accepts, declines, reports progress and resolves; the
//! requester closes, or withdraws before `resolved`.

use crate::proto::CaseState;
use crate::rules::vocab::Word;

/// The updater's part in a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Requester,
    Addressee,
}

impl Role {
    fn word(self) -> &'static str {
        match self {
            Role::Requester => "requester",
            Role::Addressee => "addressee",
        }
    }
}

/// Who may move a case to `to`, and from which states.
fn rule(to: CaseState) -> Option<(Role, &'static [CaseState])> {
    use CaseState::*;
    Some(match to {
        Acknowledged => (Role::Addressee, &[Open]),
        Accepted | Declined => (Role::Addressee, &[Acknowledged]),
        InProgress => (Role::Addressee, &[Accepted, InProgress]),
        Resolved => (Role::Addressee, &[Accepted, InProgress]),
        Closed => (Role::Requester, &[Resolved, Declined]),
        Withdrawn => (Role::Requester, &[Open, Acknowledged, Accepted, InProgress]),
        Open | Unspecified => return None,
    })
}

/// The state after `role` asks to move a case in `state` to `to`, or why not.
pub fn transition(state: CaseState, to: CaseState, role: Role) -> Result<CaseState, String> {
    let Some((who, from)) = rule(to) else {
        return Err(format!("{} is not a transition", to.word()));
    };
    if who != role {
        return Err(format!(
            "only the {} may move a case to {} (you are the {})",
            who.word(),
            to.word(),
            role.word()
        ));
    }
    if !from.contains(&state) {
        let allowed: Vec<_> = from.iter().map(|s| s.word()).collect();
        return Err(format!(
            "case is {}; it can move to {} only from {}",
            state.word(),
            to.word(),
            allowed.join(" or ")
        ));
    }
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use CaseState::*;

    const STATES: [CaseState; 8] = [
        Open,
        Acknowledged,
        Accepted,
        Declined,
        InProgress,
        Resolved,
        Closed,
        Withdrawn,
    ];

    /// The table of SPEC §6, written out independently of `rule`.
    fn allowed(state: CaseState, to: CaseState, role: Role) -> bool {
        use Role::*;
        matches!(
            (state, to, role),
            (Open, Acknowledged, Addressee)
                | (Acknowledged, Accepted, Addressee)
                | (Acknowledged, Declined, Addressee)
                | (Accepted, InProgress, Addressee)
                | (InProgress, InProgress, Addressee)
                | (Accepted, Resolved, Addressee)
                | (InProgress, Resolved, Addressee)
                | (Resolved, Closed, Requester)
                | (Declined, Closed, Requester)
                | (Open, Withdrawn, Requester)
                | (Acknowledged, Withdrawn, Requester)
                | (Accepted, Withdrawn, Requester)
                | (InProgress, Withdrawn, Requester)
        )
    }

    #[test]
    fn every_combination() {
        for s in STATES {
            for t in STATES {
                for r in [Role::Requester, Role::Addressee] {
                    let got = transition(s, t, r);
                    assert_eq!(
                        got.is_ok(),
                        allowed(s, t, r),
                        "{s:?} -> {t:?} by {r:?}: {got:?}"
                    );
                    if let Ok(next) = got {
                        assert_eq!(next, t);
                    }
                }
            }
        }
    }

    /// `case_views` finds a case's milestones at the ends of its history,
    /// whatever its length: `acknowledged` can only be the first update, and
    /// `resolved` only the last or the one before (only `closed` follows).
    #[test]
    fn milestones_sit_at_the_ends_of_a_history() {
        let roles = [Role::Requester, Role::Addressee];
        let can = |s: CaseState, t: CaseState| roles.iter().any(|r| transition(s, t, *r).is_ok());
        for s in STATES {
            // A case starts open and never returns there.
            assert!(!can(s, Open), "{s:?} -> open");
            assert_eq!(can(s, Acknowledged), s == Open, "{s:?} -> acknowledged");
            assert_eq!(can(Resolved, s), s == Closed, "resolved -> {s:?}");
            assert!(!can(Closed, s), "closed -> {s:?}");
        }
    }

    #[test]
    fn messages_name_the_state() {
        let e = transition(Closed, Acknowledged, Role::Addressee).unwrap_err();
        assert!(e.contains("case is closed"), "{e}");
        let e = transition(Open, Acknowledged, Role::Requester).unwrap_err();
        assert!(e.contains("only the addressee"), "{e}");
    }
}
