//! `Exchange.Publish` before the log (SPEC §4): size, body, sender, key and
//! signature, clock skew, rate budget and fields, in that order, the
//! signature on the signature pool ([`crate::broker::verifier`]) where
//! concurrent publishes are checked as a batch; the writer
//! then checks what depends on the log (duplicates, retraction targets, case
//! transitions) atomically with the append. A retry of a logged id spends
//! the team's retry budget and, with identical bytes, is answered from the
//! index alone; only new messages meet the free-disk watermark and spend
//! the message and byte budgets (SPEC §15).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;
use time::OffsetDateTime;
use tokio::sync::oneshot;

use crate::broker::config::Limits;
use crate::broker::metrics::{self, PublishResult};
use crate::broker::state::State;
use crate::error::Error;
use crate::federation::receive::case_authority;
use crate::log::merkle;
use crate::log::storage::Logged;
use crate::log::writer::{Submission, timestamp};
use crate::proto as pb;
use crate::rules::canonical::decode_canonical;
use crate::rules::directory::Directory;
use crate::rules::{envelope, time::format_time, validate};

/// Envelopes from this size on are checked on the blocking pool: decoding,
/// re-encoding and hashing a large body takes milliseconds, which would
/// hold up every other call waiting on the same async worker. Their
/// signature goes to the signature pool like any other.
const CHECK_OFF_WORKERS: usize = 64 * 1024;

/// What the checks before the signature decided.
enum Checked {
    /// Answered from the index (a retry of a durable message).
    Answered(pb::Receipt),
    /// The signature is next.
    Signature(Box<Pending>),
}

/// An envelope checked up to its signature, with what the checks after it
/// need.
struct Pending {
    env: pb::Envelope,
    body: pb::Body,
    size: usize,
    /// The sender's key to check the signature with; `None` when the key
    /// is no longer active but the bytes are those of a logged record.
    key: Option<VerifyingKey>,
    logged: Option<Logged>,
    /// The bytes are those of the durable record under this id.
    identical: bool,
    dir: Arc<Directory>,
    now: OffsetDateTime,
}

/// A publish's place in a sequence (the envelopes of one stream): its
/// checks run at once with the others', but it goes to the writer only
/// after the one before it did, so the log keeps the sender's order (a
/// retraction right after its target finds it).
#[derive(Default)]
pub struct Turn {
    /// Resolves (or is dropped) once the publish before has gone to the writer.
    pub after: Option<oneshot::Receiver<()>>,
    /// Dropped once this publish has gone to the writer or ended.
    pub done: Option<oneshot::Sender<()>>,
}

impl Turn {
    /// Waits for the publish before to reach the writer (or end).
    async fn wait(&mut self) {
        if let Some(after) = self.after.take() {
            let _ = after.await;
        }
    }

    /// Lets the publish after go on.
    fn pass(&mut self) {
        self.done.take();
    }
}

impl Drop for Turn {
    /// A publish that ends early (refused, or answered from the index) lets
    /// the next one go only once the one before it has gone: the order
    /// holds across refusals.
    fn drop(&mut self) {
        if let (Some(after), Some(done)) = (self.after.take(), self.done.take())
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                let _ = after.await;
                drop(done);
            });
        }
    }
}

/// Checks `env` as published by `team` and appends it; the receipt comes
/// back once the record is on the device. Counted in the metrics by kind
/// and result, with the time to the receipt.
pub async fn publish(
    state: &Arc<State>,
    team: &str,
    env: Option<pb::Envelope>,
) -> Result<pb::Receipt, Error> {
    publish_in_turn(state, team, env, Turn::default()).await
}

/// [`publish`] as one of a sequence: appended after the publish before it
/// in `turn` (see [`Turn`]).
pub async fn publish_in_turn(
    state: &Arc<State>,
    team: &str,
    env: Option<pb::Envelope>,
    turn: Turn,
) -> Result<pb::Receipt, Error> {
    let start = Instant::now();
    let mut kind = "unknown";
    let r = publish_checked(state, team, env, &mut kind, turn).await;
    let result = match &r {
        Ok(receipt) if receipt.duplicate => PublishResult::Duplicate,
        Ok(_) => PublishResult::Accepted,
        Err(_) => PublishResult::Refused,
    };
    metrics::publish(kind, result, start.elapsed());
    r
}

/// [`publish`], noting the body's kind in `kind` once it decodes.
async fn publish_checked(
    state: &Arc<State>,
    team: &str,
    env: Option<pb::Envelope>,
    kind: &mut &'static str,
    mut turn: Turn,
) -> Result<pb::Receipt, Error> {
    let env = env.ok_or_else(|| Error::invalid("envelope", "is required"))?;
    let limits = &state.config.limits;
    let size = prost::Message::encoded_len(&env);
    if size > limits.max_envelope_bytes {
        return Err(Error::TooLarge {
            size,
            limit: limits.max_envelope_bytes,
        });
    }
    let off_workers = size >= CHECK_OFF_WORKERS;
    let checked = if off_workers {
        let (state, team) = (state.clone(), team.to_owned());
        let (k, r) = blocking(move || {
            let mut k = "unknown";
            let r = check_before_signature(&state, &team, env, size, &mut k);
            (k, r)
        })
        .await?;
        *kind = k;
        r?
    } else {
        check_before_signature(state, team, env, size, kind)?
    };
    let pending = match checked {
        Checked::Answered(receipt) => return Ok(receipt),
        Checked::Signature(pending) => pending,
    };
    if let Some(key) = pending.key {
        let env = &pending.env;
        state
            .signatures
            .verify(key, &env.key_id, env.body.clone(), &env.signature)
            .await??;
    }
    let sub = if off_workers {
        let (state, team) = (state.clone(), team.to_owned());
        blocking(move || check_after_signature(&state, &team, *pending)).await??
    } else {
        check_after_signature(state, team, *pending)?
    };
    let authority = foreign_case_authority(state, &sub)?;
    turn.wait().await;
    match authority {
        Some(authority) => {
            turn.pass();
            hand_to_authority(state, &authority, sub).await
        }
        None => {
            let reply = state.log().enqueue(sub).await;
            turn.pass();
            reply?.await.map_err(|_| Error::Unavailable)?
        }
    }
}

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("publish check task failed: {e}")))
}

/// How long a requester's case update waits for the case authority's copy
/// to come back by relay before the publisher is told to retry.
const AUTHORITY_WAIT: Duration = Duration::from_secs(10);

/// In a federation, the case authority (the addressee's home broker) of a
/// case update, when that is another broker (SPEC §12).
fn foreign_case_authority(state: &State, sub: &Submission) -> Result<Option<String>, Error> {
    let (Some(fed), Some(pb::body::Content::CaseUpdate(u))) =
        (state.federation.as_ref(), sub.body.content.as_ref())
    else {
        return Ok(None);
    };
    let dir = state.directory();
    Ok(
        case_authority(state.log().storage(), &dir, &u.requester, &u.case_id)?
            .filter(|a| *a != fed.me)
            .map(str::to_owned),
    )
}

/// Hands a case update to the case's authority, which orders it against the
/// case atomically; once accepted it comes back here by relay, in the
/// authority's order, and the publisher gets this broker's receipt. Nothing
/// is logged here that the authority refused.
async fn hand_to_authority(
    state: &Arc<State>,
    authority: &str,
    sub: Submission,
) -> Result<pb::Receipt, Error> {
    let fed = state
        .federation
        .as_ref()
        .ok_or_else(|| Error::Internal("no federation".into()))?;
    let (id, sender) = (sub.body.id.clone(), sub.body.sender.clone());
    let theirs = fed
        .hand_to_authority(authority, &sub.body, envelope::log_bytes(&sub.envelope))
        .await?;
    let mut committed = state.log().committed();
    let deadline = tokio::time::Instant::now() + AUTHORITY_WAIT;
    loop {
        let size = *committed.borrow_and_update();
        if let Some(l) = state.log().storage().logged(&id, &sender)?
            && l.seq <= size
            && let Some((received_ms, leaf)) = l.receipt
        {
            return Ok(pb::Receipt {
                seq: l.seq,
                id,
                received_at: Some(timestamp(received_ms)),
                leaf_hash: leaf,
                tree_size: size,
                duplicate: theirs.duplicate,
            });
        }
        tokio::select! {
            r = committed.changed() => if r.is_err() { return Err(Error::Unavailable) },
            _ = tokio::time::sleep_until(deadline) => {
                return Err(Error::Peer {
                    code: tonic::Code::Unavailable,
                    message: format!(
                        "case authority {authority} accepted the update (its record {}), but it has not \
                         come back to this broker yet; publish the same message again to get this broker's receipt",
                        theirs.seq
                    ),
                });
            }
        }
    }
}

/// SPEC §4 in order up to the signature, for an envelope of `size` bytes
/// within the limit; notes the body's kind in `kind` once it decodes.
fn check_before_signature(
    state: &State,
    team: &str,
    env: pb::Envelope,
    size: usize,
    kind: &mut &'static str,
) -> Result<Checked, Error> {
    if env.body.is_empty() {
        return Err(Error::invalid("body", "is required"));
    }
    let body = decode_canonical(&env.body).map_err(|e| Error::invalid("body", e.to_string()))?;
    *kind = metrics::kind_label(body.content.as_ref());
    if body.sender.is_empty() {
        return Err(Error::invalid("sender", "is required"));
    }
    if env.key_id.is_empty() {
        return Err(Error::invalid("key_id", "is required"));
    }
    if env.signature.is_empty() {
        return Err(Error::invalid("signature", "is required"));
    }
    if body.sender != team {
        return Err(Error::NotSender {
            claimed: body.sender,
            team: team.to_owned(),
        });
    }
    let dir = state.directory();
    let now = OffsetDateTime::now_utc();
    let storage = state.log().storage();
    let logged = match body.id.is_empty() {
        true => None,
        false => storage.logged(&body.id, team)?,
    };
    // A retry of a logged id spends the (cheaper) retry budget; identical
    // bytes, once durable, are answered from the index alone: no record
    // read, no signature check (they were checked when logged), no writer.
    let mut identical = false;
    if let Some(l) = &logged {
        metrics::publish_retry(team);
        state.budgets.retry(team, size)?;
        let leaf = merkle::leaf_hash(&envelope::log_bytes(&env));
        if let Some((received_ms, stored)) = &l.receipt {
            identical = *stored == leaf;
            if identical && l.seq <= state.committed() {
                return Ok(Checked::Answered(pb::Receipt {
                    seq: l.seq,
                    id: body.id,
                    received_at: Some(timestamp(*received_ms)),
                    leaf_hash: leaf.to_vec(),
                    tree_size: state.committed(),
                    duplicate: true,
                }));
            }
        }
    }
    let key = match dir.active_key(team, &env.key_id, now) {
        Ok(key) => Some(key.public),
        // The exact bytes of a record logged while its key was valid: the
        // retry gets its original receipt even after a revocation.
        Err(problem) => {
            let same = match &logged {
                Some(l) if l.receipt.is_some() => identical,
                Some(l) => storage
                    .record(l.seq)?
                    .is_some_and(|r| r.envelope == envelope::log_bytes(&env)),
                None => false,
            };
            if !same {
                return Err(problem.into());
            }
            None
        }
    };
    Ok(Checked::Signature(Box::new(Pending {
        env,
        body,
        size,
        key,
        logged,
        identical,
        dir,
        now,
    })))
}

/// SPEC §4 in order after the signature held: what is left for the writer.
fn check_after_signature(state: &State, team: &str, p: Pending) -> Result<Submission, Error> {
    let Pending {
        env,
        body,
        size,
        logged,
        identical,
        dir,
        now,
        ..
    } = p;
    let storage = state.log().storage();
    // Other bytes under a durable id, properly signed: ALREADY_EXISTS from
    // the index, without the writer or a record read.
    if let Some(l) = &logged
        && l.receipt.is_some()
        && !identical
        && l.seq <= state.committed()
    {
        return Err(Error::AlreadyExists {
            sender: team.to_owned(),
            id: body.id,
            seq: l.seq,
        });
    }
    // A retry of a logged message not yet durable, or indexed before the
    // index carried receipts, is answered by the writer (original receipt
    // or ALREADY_EXISTS) even when its created_at is now old.
    if logged.is_none() {
        // Only new messages take room on disk and spend the team's rate
        // budgets: a retry after a timeout gets its original receipt.
        state.disk.check(storage)?;
        state.budgets.new_message(team, size)?;
        check_skew(&body, now, &state.config.limits)?;
        validate::check_body(&body, &dir)?;
    }
    Ok(Submission {
        group_members: group_members(&body, &dir),
        relayed: None,
        envelope: env,
        body,
    })
}

/// The members of a `group` audience now, to be stored with the record.
fn group_members(body: &pb::Body, dir: &Directory) -> Vec<String> {
    match body.audience.as_ref().and_then(|a| a.kind.as_ref()) {
        Some(pb::audience::Kind::Group(name)) => dir
            .group(name)
            .map(|g| g.iter().cloned().collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn check_skew(body: &pb::Body, now: OffsetDateTime, limits: &Limits) -> Result<(), Error> {
    let Some(ts) = &body.created_at else {
        return Err(Error::invalid("created_at", "is required"));
    };
    let created = OffsetDateTime::from_unix_timestamp(ts.seconds)
        .ok()
        .filter(|_| (0..1_000_000_000).contains(&ts.nanos))
        .ok_or_else(|| Error::invalid("created_at", "is not a valid timestamp"))?;
    let skew = (created - now).whole_seconds();
    if skew.unsigned_abs() > limits.clock_skew_secs {
        return Err(Error::Skew {
            created_at: format_time(created),
            now: format_time(now),
            skew_secs: skew,
            window_secs: limits.clock_skew_secs,
        });
    }
    Ok(())
}
