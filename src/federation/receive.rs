//! Taking a record another broker relays (SPEC §12), checked as strictly as
//! a publish before anything is stored: the envelope exactly as logged (so
//! the leaf hash is the origin's), a canonical body, the relaying broker the
//! sender's home (or the case's authority for a case update), the author's
//! signature with a key the directory lists for the sender when the origin
//! received it, the field rules, and one of this broker's own teams a
//! reader. What passes becomes an ordinary [`Submission`] for the writer,
//! which then applies the log-dependent rules (duplicates by (sender, id),
//! retraction targets, case transitions) as for any publish.

use prost::Message;
use time::OffsetDateTime;

use crate::client::verify::check_origin_proof;
use crate::error::Error;
use crate::federation::route;
use crate::log::storage::Storage;
use crate::log::writer::{Relayed, Submission, open_record};
use crate::proto::body::Content;
use crate::proto::{self as pb, Body, Envelope};
use crate::rules::access::Distribution;
use crate::rules::canonical::decode_canonical;
use crate::rules::directory::Directory;
use crate::rules::envelope::SignatureError;
use crate::rules::signature::KeyCache;
use crate::rules::{envelope, validate};

/// The largest origin proof taken: an inclusion path in a tree of 2^64
/// leaves and a checkpoint with dozens of cosignatures fit well within it.
pub const MAX_ORIGIN_PROOF: usize = 64 * 1024;

/// Who is relaying to whom.
pub struct Hop<'a> {
    /// This broker.
    pub me: &'a str,
    /// The authenticated broker that sent the record.
    pub from: &'a str,
}

/// The home broker of the addressee of case `(requester, case_id)`, from
/// the request as this log holds it: the case's authority.
pub fn case_authority<'d>(
    storage: &Storage,
    dir: &'d Directory,
    requester: &str,
    case_id: &str,
) -> Result<Option<&'d str>, Error> {
    let Some(seq) = storage.seq_of(case_id, requester)? else {
        return Ok(None);
    };
    let Some(rec) = storage.record(seq)? else {
        return Ok(None);
    };
    let (_, body) = open_record(&rec)?;
    Ok(match &body.content {
        Some(Content::Request(r)) if body.sender == requester => dir.home_of(&r.to),
        _ => None,
    })
}

/// Checks one relayed record; a submission for the writer, or why not.
/// `keys` remembers which signer keys pass the key rule (the same rule as
/// a publish: no non-canonical, small-order or torsioned key).
pub fn check(
    hop: &Hop<'_>,
    dir: &Directory,
    storage: &Storage,
    rec: pb::RelayedRecord,
    max_envelope_bytes: usize,
    now: OffsetDateTime,
    keys: &mut KeyCache,
) -> Result<Submission, Error> {
    // Refused for good (not "resource exhausted", which the origin takes
    // for a passing condition and would resend for ever, holding up every
    // record after it): brokers may well have different limits.
    if rec.origin_proof.len() > MAX_ORIGIN_PROOF {
        return Err(Error::invalid(
            "origin_proof",
            format!(
                "{} bytes is over the {MAX_ORIGIN_PROOF}-byte limit of an inclusion proof",
                rec.origin_proof.len()
            ),
        ));
    }
    if rec.envelope.len() > max_envelope_bytes {
        return Err(Error::invalid(
            "envelope",
            format!(
                "{} bytes is over this broker's {max_envelope_bytes}-byte limit",
                rec.envelope.len()
            ),
        ));
    }
    let env = Envelope::decode(rec.envelope.as_slice())
        .map_err(|e| Error::invalid("envelope", format!("does not decode: {e}")))?;
    if envelope::log_bytes(&env) != rec.envelope {
        return Err(Error::invalid(
            "envelope",
            "is not the canonical encoding of an Envelope: relay the bytes exactly as logged",
        ));
    }
    let body: Body =
        decode_canonical(&env.body).map_err(|e| Error::invalid("body", e.to_string()))?;
    if body.sender.is_empty() || body.id.is_empty() {
        return Err(Error::invalid("body", "names no sender or no id"));
    }

    // Who may hand this record over.
    let mut case_authority = false;
    let sender_home = dir.home_of(&body.sender);
    if rec.origin_seq == 0 {
        // A requester's case update handed to this broker as the case's
        // authority, before anyone logged it.
        let Some(Content::CaseUpdate(u)) = &body.content else {
            return Err(Error::NotRelayable(
                "only a case update may be handed over unlogged (origin_seq 0)".into(),
            ));
        };
        route::may_relay(dir, hop.from, &body.sender).map_err(Error::NotRelayable)?;
        // Only the requester's own updates are handed over (the addressee's
        // home is the authority): asked of anyone else's case, whether it
        // exists here would show through the answer.
        if body.sender != u.requester {
            return Err(Error::NotRelayable(
                "only a requester's own case update is handed over unlogged (origin_seq 0)".into(),
            ));
        }
        // Nobody logged it yet: the signature is judged at this broker's
        // clock, never at a time the handing broker claims (which could
        // reach back before the author's key was revoked).
        if rec.origin_received_at_ms != 0 {
            return Err(Error::invalid(
                "origin_received_at_ms",
                "must be 0 for a case update handed over unlogged (origin_seq 0)",
            ));
        }
        if case_authority_of(storage, dir, u)? != Some(hop.me) {
            return Err(Error::Precondition(format!(
                "case {}: this broker is not its authority (the addressee's home broker), \
                 or its assistance request has not reached this broker yet; retry shortly",
                u.case_id
            )));
        }
    } else if sender_home != Some(hop.from) {
        // The case's authority relays every update of the case, whoever
        // sent it, so both brokers hold the case in one order.
        match &body.content {
            Some(Content::CaseUpdate(u))
                if case_authority_of(storage, dir, u)? == Some(hop.from) =>
            {
                case_authority = true;
            }
            _ => {
                return Err(Error::NotRelayable(
                    route::may_relay(dir, hop.from, &body.sender)
                        .err()
                        .unwrap_or_default(),
                ));
            }
        }
    } else if let Some(Content::CaseUpdate(u)) = &body.content {
        // A logged case update comes only from the case's authority, which
        // orders the case: a party's own broker hands its updates over
        // unlogged (origin_seq 0) and never relays them past the authority.
        match case_authority_of(storage, dir, u)? {
            Some(a) if a == hop.from => case_authority = true,
            // Only of the sender's own request (its home knows of it), so
            // the answer discloses no one else's case.
            Some(a) if body.sender == u.requester => {
                return Err(Error::NotRelayable(format!(
                    "case {}: its authority is broker {a}, not {}: only the authority \
                     relays a logged case update",
                    u.case_id, hop.from
                )));
            }
            _ => {}
        }
    }

    // The author's signature, with a key valid when the origin logged it.
    let logged_at = match rec.origin_received_at_ms {
        0 => now,
        ms => OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .map_err(|_| Error::invalid("origin_received_at_ms", "is out of range"))?,
    };
    if logged_at > now + time::Duration::minutes(10) {
        return Err(Error::invalid(
            "origin_received_at_ms",
            "is in the future by more than the skew window",
        ));
    }
    let (key, _) = dir.key_for_record(&body.sender, &env.key_id, logged_at, now)?;
    if !keys.usable(&key.public) {
        return Err(SignatureError::UnusableKey(env.key_id.clone()).into());
    }
    envelope::verify(&env, &key.public)?;
    validate::check_body(&body, dir)?;

    // Readers stored with it: a group's members, as far as the directory
    // in force still counts them in the group.
    let group_members: Vec<String> = match body.audience.as_ref().and_then(|a| a.kind.as_ref()) {
        Some(pb::audience::Kind::Group(g)) => {
            let now_in = dir.group(g);
            rec.group_members
                .into_iter()
                .filter(|t| now_in.is_some_and(|m| m.contains(t)))
                .collect()
        }
        _ => Vec::new(),
    };
    // A broker never takes a record none of its teams may read. Case
    // updates and retractions are judged by the writer: their target must be
    // here, and it was taken only if wanted.
    if !matches!(
        body.content,
        Some(Content::CaseUpdate(_)) | Some(Content::Retraction(_))
    ) {
        let dist = Distribution {
            sender: &body.sender,
            audience: body.audience.as_ref(),
            exercise: &body.exercise,
            also_readers: &group_members,
        };
        if !route::wanted_by(&dist, dir, hop.me) {
            return Err(Error::NotRelayable(format!(
                "no team homed on broker {} may read this record",
                hop.me
            )));
        }
    }
    // The origin's evidence that it logged the record, when the directory
    // gives the key to check it with.
    let origin_vkey = dir
        .broker(hop.from)
        .and_then(|b| b.checkpoint_vkey.as_ref());
    let proof = match (rec.origin_seq, origin_vkey) {
        (0, _) | (_, None) => None,
        (_, Some(_)) if rec.origin_proof.is_empty() => {
            return Err(Error::invalid(
                "origin_proof",
                format!(
                    "is required: the directory lists a checkpoint key for broker {}",
                    hop.from
                ),
            ));
        }
        (seq, Some(vkey)) => {
            check_origin_proof(&rec.origin_proof, &rec.envelope, seq, vkey)
                .map_err(|why| Error::invalid("origin_proof", why))?;
            Some(rec.origin_proof.clone())
        }
    };

    Ok(Submission {
        envelope: env,
        body,
        group_members,
        relayed: Some(Relayed {
            broker: hop.from.to_owned(),
            seq: rec.origin_seq,
            case_authority,
            proof,
        }),
    })
}

fn case_authority_of<'d>(
    storage: &Storage,
    dir: &'d Directory,
    u: &pb::CaseUpdate,
) -> Result<Option<&'d str>, Error> {
    case_authority(storage, dir, &u.requester, &u.case_id)
}
