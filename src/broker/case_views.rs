//! The read side of case assistance (`Cases` service): a request plus its
//! updates, seen as one case with its derived state, deadline and history,
//! for the parties the access rule admits (requester, addressee, cc).
//!
//! Both calls answer one page at a time (SPEC §15), so no team's traffic can
//! grow another team's answer past its client's decode limit: at most
//! [`MAX_PAGE_SIZE`] items, and none that would take the page past
//! [`PAGE_BYTES`] but the first. A page token is only the seq of the last
//! item the caller was given: it grants nothing, and every item of every
//! page still goes through [`view_decoded`]. The scans are synchronous; the
//! services run them off the async workers.

use prost::Message;

use crate::broker::read::view_decoded;
use crate::broker::state::State;
use crate::error::Error;
use crate::log::writer::{now_ms, open_record, timestamp};
use crate::proto::body::Content;
use crate::proto::{self as pb, CaseRole, CaseState};
use crate::rules::access::TrafficScope;
use crate::rules::directory::Directory;

/// Items in a page when the request leaves `page_size` at 0.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Most items in a page, whatever the request asks for.
pub const MAX_PAGE_SIZE: usize = 1000;
/// An item that would take a page's encoding past this waits for the next
/// page (a page always holds one), so a page stays well under a client's
/// 4 MiB decode limit even when its records are of the largest size.
pub const PAGE_BYTES: usize = 1024 * 1024;
/// Room kept in every page for its `next_page_token` field.
const TOKEN_BYTES: usize = 32;

/// The call a page token belongs to; a token of one is refused by the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Paged {
    /// `ListCases`: the token is the seq of the last case's request.
    Cases,
    /// `GetCase`: the token is the seq of the last update.
    Updates,
}

impl Paged {
    fn tag(self) -> char {
        match self {
            Paged::Cases => 'c',
            Paged::Updates => 'u',
        }
    }

    fn call(self) -> &'static str {
        match self {
            Paged::Cases => "ListCases",
            Paged::Updates => "GetCase",
        }
    }
}

/// Seqs of the log one `ListCases` page looks through at most.
const SCAN_WINDOW: u64 = 16_384;

/// One page being filled: how many items and bytes it has taken, and where
/// the next page resumes.
#[derive(Debug)]
struct Page {
    kind: Paged,
    size: usize,
    /// The seq this page starts after (0: from the start).
    after: u64,
    items: usize,
    bytes: usize,
    /// The seq of the last item taken.
    last: u64,
    /// An item was left for the next page.
    full: bool,
}

impl Page {
    /// The page a request asks for; `INVALID_ARGUMENT` for a token that is
    /// not one this call issues.
    fn new(kind: Paged, page_size: u32, token: &str) -> Result<Self, Error> {
        let size = match page_size as usize {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        Ok(Page {
            kind,
            size,
            after: parse_token(kind, token)?,
            items: 0,
            bytes: TOKEN_BYTES,
            last: 0,
            full: false,
        })
    }

    /// Counts what every page carries besides its items.
    fn carries(&mut self, bytes: usize) {
        self.bytes += bytes;
    }

    /// Takes the item `seq` of `bytes` encoded bytes if the page has room
    /// for it (the first item always fits); otherwise the page is full and
    /// the item waits for the next one.
    fn take(&mut self, seq: u64, bytes: usize) -> bool {
        if self.items > 0 && (self.items >= self.size || self.bytes + bytes > PAGE_BYTES) {
            self.full = true;
            return false;
        }
        self.items += 1;
        self.bytes += bytes;
        self.last = seq;
        true
    }

    /// Ends the page with a token that resumes after `seq` (the end of the
    /// stretch of log this page looked at).
    fn resume_after(&mut self, seq: u64) {
        self.full = true;
        self.last = seq;
    }

    /// `next_page_token`: empty once nothing was left for a next page.
    fn next_token(&self) -> String {
        if self.full {
            format!("{}{}", self.kind.tag(), self.last)
        } else {
            String::new()
        }
    }
}

/// The seq a page token resumes after (0 for no token).
fn parse_token(kind: Paged, token: &str) -> Result<u64, Error> {
    if token.is_empty() {
        return Ok(0);
    }
    let bad = || {
        Error::BadRequest(format!(
            "page_token: not a {} page token; send back the next_page_token of the previous page unchanged, or none for the first page",
            kind.call()
        ))
    };
    let digits = token.strip_prefix(kind.tag()).ok_or_else(bad)?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    digits.parse().map_err(|_| bad())
}

/// The bytes `m` adds to a message as one length-delimited field (numbers
/// below 16: a one-byte key).
fn field_len(m: &impl Message) -> usize {
    let len = m.encoded_len();
    1 + prost::length_delimiter_len(len) + len
}

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

/// `Cases.ListCases`: one page of the cases `team` may see, oldest first.
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
    let mut page = Page::new(Paged::Cases, req.page_size, &req.page_token)?;
    let now = now_ms();
    let mut cases = Vec::new();
    let committed = broker.committed();
    // A page looks at the cases of at most SCAN_WINDOW seqs of the log: a
    // caller who may read few of many cases gets pages (maybe empty) whose
    // token resumes at the window's end, a position that says nothing of
    // the records there, instead of one call reading every case.
    let window_end = page.after.saturating_add(SCAN_WINDOW);
    for case in broker.log().storage().cases_after(page.after) {
        let (seq, state) = case?;
        if seq > committed {
            break; // not yet durable
        }
        if seq > window_end {
            page.resume_after(window_end);
            break;
        }
        let Some(seen) = load(broker, team, seq, state, &scope, now)? else {
            continue;
        };
        let s = seen.summary;
        if (want_state == CaseState::Unspecified || s.state == want_state as i32)
            && (want_role == CaseRole::Unspecified || s.my_role == want_role as i32)
            && (!req.overdue_only || s.overdue)
        {
            if !page.take(seq, field_len(&s)) {
                break;
            }
            cases.push(s);
        }
    }
    Ok(pb::ListCasesResponse {
        cases,
        next_page_token: page.next_token(),
    })
}

/// An update of a case as the reader may see it.
struct SeenUpdate {
    /// The signed update, or its tombstone.
    record: pb::Record,
    /// Its history entry; `None` when withheld.
    event: Option<pb::CaseEvent>,
    transition: i32,
    received_ms: u64,
}

/// Loads update `useq` if `team` may see it in `scope`.
fn load_update(
    broker: &State,
    team: &str,
    useq: u64,
    scope: &TrafficScope,
    dir: &Directory,
) -> Result<Option<SeenUpdate>, Error> {
    let rec = broker
        .log()
        .storage()
        .record(useq)?
        .ok_or_else(|| Error::Internal(format!("case update {useq} is missing")))?;
    let at = rec.received_at_ms;
    let (env, body) = open_record(&rec)?;
    let Some(Content::CaseUpdate(u)) = body.content.as_ref() else {
        return Ok(None);
    };
    let Some(record) = view_decoded(broker, team, useq, &rec, || env, &body, scope, dir)? else {
        return Ok(None);
    };
    let event = record.envelope.is_some().then(|| pb::CaseEvent {
        seq: useq,
        sender: body.sender.clone(),
        at: Some(timestamp(at)),
        transition: u.transition,
        note: u.note.clone(),
        reason: u.reason.clone(),
    });
    Ok(Some(SeenUpdate {
        record,
        event,
        transition: u.transition,
        received_ms: at,
    }))
}

/// The case's milestones for `Case`: time to acknowledge, time to resolve,
/// and whether the acknowledgement came after `respond_by`. The state
/// machine (`rules::cases`) lets `acknowledged` be only a case's first
/// update and `resolved` only its last or the one before, so they are
/// looked for there: every page reports them at the same small cost,
/// however long the history.
fn milestones(
    broker: &State,
    team: &str,
    request: u64,
    seen: &Seen,
    scope: &TrafficScope,
    dir: &Directory,
    committed: u64,
) -> Result<(u64, u64, bool), Error> {
    let storage = broker.log().storage();
    let durable = |s: &Result<u64, _>| !matches!(s, Ok(s) if *s > committed);
    let mut ends = Vec::with_capacity(3);
    for s in storage
        .case_updates_after(request, 0)
        .filter(durable)
        .take(1)
        .chain(
            storage
                .case_updates_after(request, 0)
                .rev()
                .filter(durable)
                .take(2),
        )
    {
        let s = s?;
        if !ends.contains(&s) {
            ends.push(s);
        }
    }
    ends.sort_unstable();
    let respond_by = ms(&seen.summary.respond_by);
    let (mut to_ack, mut to_resolve, mut late) = (0, 0, false);
    for useq in ends {
        let Some(u) = load_update(broker, team, useq, scope, dir)? else {
            continue;
        };
        let since = u.received_ms.saturating_sub(seen.received_ms);
        match CaseState::try_from(u.transition) {
            Ok(CaseState::Acknowledged) => {
                to_ack = since;
                late = respond_by != 0 && u.received_ms > respond_by;
            }
            Ok(CaseState::Resolved) => to_resolve = since,
            _ => {}
        }
    }
    Ok((to_ack, to_resolve, late))
}

/// `Cases.GetCase`: one case `team` may see, with one page of its updates.
pub fn get(broker: &State, team: &str, req: &pb::GetCaseRequest) -> Result<pb::Case, Error> {
    let scope = TrafficScope::from_selector(req.exercise.as_ref());
    let mut page = Page::new(Paged::Updates, req.page_size, &req.page_token)?;
    let storage = broker.log().storage();
    let now = now_ms();
    let committed = broker.committed();
    // A case is (requester, request id); without a requester, the id must
    // name one case the caller may read (hidden ones are never counted).
    let mut found: Vec<(String, u64, Seen)> = Vec::new();
    for (requester, seq) in storage.seqs_of_id(&req.id)? {
        if seq > committed || (!req.requester.is_empty() && requester != req.requester) {
            continue; // not yet durable, or another requester's
        }
        let Some(state) = storage.case_state(seq)? else {
            continue; // not a request
        };
        if let Some(seen) = load(broker, team, seq, state, &scope, now)? {
            found.push((requester, seq, seen));
        }
    }
    let (seq, seen) = match found.len() {
        0 => return Err(Error::NotFound(format!("case {}", req.id))),
        1 => {
            let (_, seq, seen) = found.remove(0);
            (seq, seen)
        }
        _ => {
            return Err(Error::BadRequest(format!(
                "case {} names several cases you may read (requested by {}); give the requester",
                req.id,
                found
                    .iter()
                    .map(|(r, _, _)| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    };
    let dir = broker.directory();
    let (time_to_acknowledge_ms, time_to_resolve_ms, acknowledged_late) =
        milestones(broker, team, seq, &seen, &scope, &dir, committed)?;
    let mut case = pb::Case {
        summary: Some(seen.summary),
        request: Some(seen.request),
        history: vec![],
        updates: vec![],
        time_to_acknowledge_ms,
        time_to_resolve_ms,
        acknowledged_late,
        next_page_token: String::new(),
    };
    page.carries(case.encoded_len());
    for useq in storage.case_updates_after(seq, page.after) {
        let useq = useq?;
        if useq > committed {
            break; // not yet durable
        }
        let Some(u) = load_update(broker, team, useq, &scope, &dir)? else {
            continue;
        };
        let bytes = field_len(&u.record) + u.event.as_ref().map_or(0, field_len);
        if !page.take(useq, bytes) {
            break;
        }
        case.history.extend(u.event);
        case.updates.push(u.record);
    }
    case.next_page_token = page.next_token();
    Ok(case)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_default_and_clamp() {
        let size = |n| Page::new(Paged::Cases, n, "").unwrap().size;
        assert_eq!(size(0), DEFAULT_PAGE_SIZE);
        assert_eq!(size(1), 1);
        assert_eq!(size(1000), 1000);
        assert_eq!(size(1001), MAX_PAGE_SIZE);
        assert_eq!(size(u32::MAX), MAX_PAGE_SIZE);
    }

    #[test]
    fn tokens_resume_after_the_last_item_of_their_own_call() {
        let mut page = Page::new(Paged::Cases, 2, "").unwrap();
        assert_eq!(page.after, 0);
        assert!(page.take(7, 10) && page.take(9, 10));
        assert_eq!(page.next_token(), "", "nothing left over yet");
        assert!(!page.take(12, 10), "the third item waits");
        let token = page.next_token();
        assert_eq!(Page::new(Paged::Cases, 2, &token).unwrap().after, 9);
        let (code, msg) = match Page::new(Paged::Updates, 2, &token) {
            Err(e) => (e.code(), e.to_string()),
            Ok(_) => panic!("a ListCases token resumed GetCase"),
        };
        assert_eq!(code, tonic::Code::InvalidArgument);
        assert!(
            msg.starts_with("page_token: not a GetCase page token"),
            "{msg}"
        );
        assert_eq!(
            Page::new(Paged::Updates, 0, &format!("u{}", u64::MAX))
                .unwrap()
                .after,
            u64::MAX
        );
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for token in [
            "c",
            "c0",
            "c007",
            "c+5",
            "c-5",
            "c5x",
            " c5",
            "c18446744073709551616",
            "5",
            "x5",
            "c٣",
        ] {
            assert!(
                matches!(parse_token(Paged::Cases, token), Err(Error::BadRequest(_))),
                "{token:?}"
            );
        }
    }

    #[test]
    fn a_page_stops_before_its_byte_budget_but_never_empty() {
        let mut page = Page::new(Paged::Updates, 1000, "").unwrap();
        page.carries(PAGE_BYTES); // a request of the largest size
        assert!(page.take(3, PAGE_BYTES), "the first item always fits");
        assert!(!page.take(4, 1));
        assert_eq!(page.next_token(), "u3");

        let mut page = Page::new(Paged::Cases, 1000, "").unwrap();
        let item = 300 * 1024;
        assert!(page.take(1, item) && page.take(2, item) && page.take(3, item));
        assert!(
            !page.take(4, item),
            "a fourth would pass {PAGE_BYTES} bytes"
        );
        assert!(page.bytes <= PAGE_BYTES);
        assert_eq!(page.next_token(), "c3");
    }
}
