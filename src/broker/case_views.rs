//! The read side of case assistance (`Cases` service): a request plus its
//! updates, seen as one case with its derived state, deadline and history,
//! for the parties the access rule admits (requester, addressee, cc).

use crate::broker::read::view_decoded;
use crate::broker::state::State;
use crate::error::Error;
use crate::log::writer::{now_ms, open_record, timestamp};
use crate::proto::body::Content;
use crate::proto::{self as pb, CaseRole, CaseState};
use crate::rules::access::TrafficScope;

fn ms(ts: &Option<prost_types::Timestamp>) -> u64 {
    ts.as_ref()
        .map(|t| {
            (t.seconds.max(0) as u64)
                .saturating_mul(1000)
                .saturating_add(t.nanos.max(0) as u64 / 1_000_000)
        })
        .unwrap_or(0)
}

/// A case as the reader may see it.
struct Seen {
    summary: pb::CaseSummary,
    request: pb::Record,
    received_ms: u64,
}

fn role_of(team: &str, body: &pb::Body, req: &pb::AssistanceRequest) -> CaseRole {
    if team == body.sender {
        CaseRole::Requester
    } else if team == req.to {
        CaseRole::Addressee
    } else {
        CaseRole::Cc
    }
}

/// Loads case `seq` if `team` may see it in `scope`.
fn load(
    broker: &State,
    team: &str,
    seq: u64,
    state: i32,
    scope: &TrafficScope,
    now: u64,
) -> Result<Option<Seen>, Error> {
    let storage = broker.log().storage();
    let Some(rec) = storage.record(seq)? else {
        return Err(Error::Internal(format!("case record {seq} is missing")));
    };
    let received_ms = rec.received_at_ms;
    let (env, body) = open_record(&rec)?;
    let Some(Content::Request(req)) = body.content.clone() else {
        return Err(Error::Internal(format!(
            "case record {seq} is not a request"
        )));
    };
    let dir = broker.directory();
    let Some(view) = view_decoded(broker, team, seq, &rec, || env, &body, scope, &dir)? else {
        return Ok(None);
    };
    let withheld = view.envelope.is_none();
    let state = CaseState::try_from(state).unwrap_or(CaseState::Open);
    let respond_by = ms(&req.respond_by);
    let cc = match body.audience.as_ref().and_then(|a| a.kind.as_ref()) {
        Some(pb::audience::Kind::Teams(l)) => {
            l.teams.iter().filter(|t| **t != req.to).cloned().collect()
        }
        _ => vec![],
    };
    let mut summary = pb::CaseSummary {
        id: body.id.clone(),
        seq,
        state: state as i32,
        requester: body.sender.clone(),
        to: req.to.clone(),
        cc,
        action: req.action,
        priority: req.priority,
        respond_by: req.respond_by,
        overdue: state == CaseState::Open && respond_by != 0 && now > respond_by,
        my_role: role_of(team, &body, &req) as i32,
        exercise: body.exercise.clone(),
        opened_at: Some(timestamp(received_ms)),
    };
    if withheld {
        // Retracted: only what the tombstone discloses.
        summary = pb::CaseSummary {
            id: summary.id,
            seq,
            requester: summary.requester,
            my_role: summary.my_role,
            exercise: summary.exercise,
            opened_at: summary.opened_at,
            ..Default::default()
        };
    }
    Ok(Some(Seen {
        summary,
        request: view,
        received_ms,
    }))
}

/// `Cases.ListCases`.
pub fn list(
    broker: &State,
    team: &str,
    req: &pb::ListCasesRequest,
) -> Result<pb::ListCasesResponse, Error> {
    let scope = TrafficScope::from_selector(req.exercise.as_ref());
    let want_state = CaseState::try_from(req.state)
        .map_err(|_| Error::BadRequest(format!("state: unknown case state {}", req.state)))?;
    let want_role = CaseRole::try_from(req.role)
        .map_err(|_| Error::BadRequest(format!("role: unknown role {}", req.role)))?;
    let now = now_ms();
    let mut cases = Vec::new();
    let committed = broker.committed();
    for (seq, state) in broker.log().storage().cases()? {
        if seq > committed {
            break; // not yet durable
        }
        let Some(seen) = load(broker, team, seq, state, &scope, now)? else {
            continue;
        };
        let s = seen.summary;
        if (want_state == CaseState::Unspecified || s.state == want_state as i32)
            && (want_role == CaseRole::Unspecified || s.my_role == want_role as i32)
            && (!req.overdue_only || s.overdue)
        {
            cases.push(s);
        }
    }
    Ok(pb::ListCasesResponse { cases })
}

/// `Cases.GetCase`.
pub fn get(broker: &State, team: &str, req: &pb::GetCaseRequest) -> Result<pb::Case, Error> {
    let scope = TrafficScope::from_selector(req.exercise.as_ref());
    let storage = broker.log().storage();
    let not_found = || Error::NotFound(format!("case {}", req.id));
    let now = now_ms();
    let committed = broker.committed();
    // A case is (requester, request id); without a requester, the id must
    // name one case the caller may read (hidden ones are never counted).
    let mut found: Vec<(String, pb::Case)> = Vec::new();
    for (requester, seq) in storage.seqs_of_id(&req.id)? {
        if seq > committed || (!req.requester.is_empty() && requester != req.requester) {
            continue; // not yet durable, or another requester's
        }
        let Some(state) = storage.case_state(seq)? else {
            continue; // not a request
        };
        let Some(seen) = load(broker, team, seq, state, &scope, now)? else {
            continue;
        };
        let respond_by = ms(&seen.summary.respond_by);
        let mut case = pb::Case {
            summary: None,
            request: Some(seen.request),
            history: vec![],
            updates: vec![],
            time_to_acknowledge_ms: 0,
            time_to_resolve_ms: 0,
            acknowledged_late: false,
        };
        for useq in storage
            .case_updates(seq)?
            .into_iter()
            .filter(|s| *s <= committed)
        {
            let rec = storage
                .record(useq)?
                .ok_or_else(|| Error::Internal(format!("case update {useq} is missing")))?;
            let at = rec.received_at_ms;
            let (env, body) = open_record(&rec)?;
            let Some(Content::CaseUpdate(u)) = body.content.clone() else {
                continue;
            };
            let dir = broker.directory();
            let Some(view) = view_decoded(broker, team, useq, &rec, || env, &body, &scope, &dir)?
            else {
                continue;
            };
            let since = at.saturating_sub(seen.received_ms);
            match CaseState::try_from(u.transition) {
                Ok(CaseState::Acknowledged) => {
                    case.time_to_acknowledge_ms = since;
                    case.acknowledged_late = respond_by != 0 && at > respond_by;
                }
                Ok(CaseState::Resolved) => case.time_to_resolve_ms = since,
                _ => {}
            }
            if view.envelope.is_some() {
                case.history.push(pb::CaseEvent {
                    seq: useq,
                    sender: body.sender,
                    at: Some(timestamp(at)),
                    transition: u.transition,
                    note: u.note,
                    reason: u.reason,
                });
            }
            case.updates.push(view);
        }
        case.summary = Some(seen.summary);
        found.push((requester, case));
    }
    match found.len() {
        0 => Err(not_found()),
        1 => Ok(found.remove(0).1),
        _ => Err(Error::BadRequest(format!(
            "case {} names several cases you may read (requested by {}); give the requester",
            req.id,
            found
                .iter()
                .map(|(r, _)| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}
