//! Reading one stored record as a team may see it (SPEC §5): the access rule
//! applied to a committed record, giving the full record, a tombstone, or
//! nothing. Every read path (get, subscribe, cases, inclusion proofs) goes
//! through [`view_decoded`], so "not yours" and "does not exist" look alike
//! everywhere.

use crate::broker::state::State;
use crate::error::Error;
use crate::federation::route;
use crate::log::storage::{RelayOutcome, StoredRecord};
use crate::log::writer::{open_record, timestamp};
use crate::proto::body::Content;
use crate::proto::{self as pb, get_request::Selector};
use crate::rules::access::{self, Distribution, TrafficScope, Visibility};
use crate::rules::directory::Directory;

/// A record as `reader` may see it, or `None` when hidden.
pub fn view(
    state: &State,
    reader: &str,
    seq: u64,
    rec: StoredRecord,
    scope: &TrafficScope,
    dir: &Directory,
) -> Result<Option<pb::Record>, Error> {
    let (env, body) = open_record(&rec)?;
    view_decoded(state, reader, seq, &rec, || env, &body, scope, dir)
}

/// [`view`] for a record whose envelope is already decoded; `env` hands over
/// the envelope (moved or copied) only if the reader receives it.
#[allow(clippy::too_many_arguments)]
pub fn view_decoded(
    state: &State,
    reader: &str,
    seq: u64,
    rec: &StoredRecord,
    env: impl FnOnce() -> pb::Envelope,
    body: &pb::Body,
    scope: &TrafficScope,
    dir: &Directory,
) -> Result<Option<pb::Record>, Error> {
    let dist = Distribution {
        sender: &body.sender,
        audience: body.audience.as_ref(),
        exercise: &body.exercise,
        also_readers: &rec.also_readers,
    };
    // Who may see it at all is decided before any storage read.
    // A reader absent from the directory reads nothing (retirement, which
    // needs the clock, is checked once per call and per subscription batch).
    if !scope.includes(&body.exercise)
        || dir.team(reader).is_none()
        || access::visibility(reader, &dist, false, scope) == Visibility::Hidden
    {
        return Ok(None);
    }
    let storage = state.log().storage();
    let retraction = storage.retraction_of(seq)?;
    let mut record = pb::Record {
        seq,
        received_at: Some(timestamp(rec.received_at_ms)),
        leaf_hash: rec.leaf_hash.clone(),
        envelope: None,
        retracted: None,
        relays: vec![],
        origin: None,
    };
    if let Some(me) = state.config.broker.as_deref() {
        record.origin = match storage.origin_of(seq)? {
            Some((broker, origin_seq)) => Some(pb::RecordOrigin {
                broker,
                seq: origin_seq,
                proof: storage.origin_proof(seq)?.unwrap_or_default(),
            }),
            None => None,
        };
        if reader == body.sender && record.origin.is_none() {
            record.relays = relays(state, me, seq, &dist, dir)?;
        }
    }
    match access::visibility(reader, &dist, retraction.is_some(), scope) {
        Visibility::Hidden => return Ok(None),
        Visibility::Full => record.envelope = Some(env()),
        Visibility::Tombstone => {
            let by = retraction.unwrap_or_default();
            let stored = storage
                .record(by)?
                .ok_or_else(|| Error::Internal(format!("retraction {by} is missing")))?;
            let (_, rbody) = open_record(&stored)?;
            let reason = match rbody.content {
                Some(Content::Retraction(r)) => r.reason,
                _ => String::new(),
            };
            record.retracted = Some(pb::Tombstone {
                id: body.id.clone(),
                sender: body.sender.clone(),
                seq,
                retracted_by: rbody.id,
                reason,
                kind: crate::rules::validate::Kind::of(body)
                    .map(|k| k.proto() as i32)
                    .unwrap_or_default(),
                created_at: body.created_at,
                retracted_at: Some(timestamp(stored.received_at_ms)),
            });
        }
    }
    Ok(Some(record))
}

/// Where record `seq` went for each peer that homes one of its readers:
/// relayed, withheld or refused with the reason, or still pending.
fn relays(
    state: &State,
    me: &str,
    seq: u64,
    dist: &Distribution<'_>,
    dir: &Directory,
) -> Result<Vec<pb::RelayStatus>, Error> {
    let storage = state.log().storage();
    let mut known: std::collections::BTreeMap<String, RelayOutcome> =
        storage.relay_outcomes(seq)?.into_iter().collect();
    let mut out = Vec::new();
    for peer in route::destinations(dist, dir, me) {
        let status = match known.remove(&peer) {
            Some(RelayOutcome::Relayed(peer_seq)) => pb::RelayStatus {
                broker: peer,
                state: "relayed".into(),
                peer_seq,
                reason: String::new(),
            },
            Some(RelayOutcome::Withheld(reason)) => pb::RelayStatus {
                broker: peer,
                state: "withheld".into(),
                peer_seq: 0,
                reason,
            },
            Some(RelayOutcome::Refused(reason)) => pb::RelayStatus {
                broker: peer,
                state: "refused".into(),
                peer_seq: 0,
                reason,
            },
            None => pb::RelayStatus {
                broker: peer,
                state: "pending".into(),
                peer_seq: 0,
                reason: String::new(),
            },
        };
        out.push(status);
    }
    Ok(out)
}

/// `Exchange.Get`: a record by seq, or by id (optionally of one sender).
pub fn get(state: &State, reader: &str, req: pb::GetRequest) -> Result<pb::Record, Error> {
    let scope = TrafficScope::from_selector(req.exercise.as_ref());
    let dir = state.directory();
    let storage = state.log().storage();
    let (what, mut seqs) = match &req.selector {
        Some(Selector::Seq(seq)) => (format!("record {seq}"), vec![(String::new(), *seq)]),
        Some(Selector::Id(id)) => {
            let mut seqs: Vec<(String, u64)> = storage
                .seqs_of_id(id)?
                .into_iter()
                .filter(|(s, _)| req.sender.is_empty() || *s == req.sender)
                .collect();
            seqs.sort_unstable_by_key(|(_, seq)| *seq);
            (format!("message {id}"), seqs)
        }
        None => return Err(Error::BadRequest("name a record by seq or by id".into())),
    };
    // Ids are unique per sender only: an id alone may name several visible
    // records, and the caller must say whose it means. Records it may not
    // read are never counted, so nothing hidden is disclosed.
    let committed = state.committed();
    let mut found: Vec<(String, pb::Record)> = Vec::new();
    for (sender, seq) in seqs.drain(..).filter(|(_, s)| *s <= committed) {
        if let Some(rec) = storage.record(seq)?
            && let Some(view) = view(state, reader, seq, rec, &scope, &dir)?
        {
            found.push((sender, view));
        }
    }
    match found.len() {
        0 => Err(Error::NotFound(what)),
        1 => Ok(found.remove(0).1),
        _ => Err(Error::BadRequest(format!(
            "{what} names several records you may read (from {}); give the sender",
            found
                .iter()
                .map(|(s, _)| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}
