//! Relaying this broker's records to its peers (SPEC §12): one task per
//! peer reads the log from the peer's durable position, picks the records
//! that must go there (its home teams' records with a reader homed on the
//! peer, and every update of a case this broker is the authority of), applies
//! the egress policy, sends them in log order and, on the peer's answer,
//! records per record what became of it (relayed under the peer's seq,
//! withheld and why, refused and why) together with the new position, in one
//! synced write. A peer that is down costs the publish path nothing: its task
//! backs off and resumes from the position, so nothing is lost and, the
//! receiver being idempotent by (sender, id), nothing is duplicated.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use tokio::sync::watch;
use tonic::Code;
use tonic::transport::Channel;

use crate::client::connection::tls_endpoint;
use crate::error::Error;
use crate::federation::egress::Egress;
use crate::federation::receive::case_authority;
use crate::federation::route;
use crate::log::storage::{RelayOutcome, Storage, StoredRecord};
use crate::log::writer::{Log, open_record};
use crate::proto::body::Content;
use crate::proto::federation_client::FederationClient;
use crate::proto::{self as pb, Body};
use crate::rules::access::Distribution;
use crate::rules::directory::Directory;

/// Most records sent in one relay call.
const BATCH_RECORDS: usize = 512;
/// Most envelope bytes sent in one relay call.
const BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Most records examined in one round (most are not for a given peer).
const SCAN_RECORDS: u64 = 4096;
/// Largest relay message, either way.
pub const MAX_RELAY_MESSAGE: usize = 2 * BATCH_BYTES + 1024 * 1024;
/// Backoff after a failed call: from the first to the most.
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MOST: Duration = Duration::from_secs(30);

/// Most characters of a peer's words (refusals, errors) kept or shown.
const PEER_WORDS: usize = 512;

/// A peer's free text as this broker keeps, shows and logs it: at most
/// [`PEER_WORDS`] characters, control characters blanked, so a peer can
/// neither grow this broker's storage nor forge lines in its logs.
fn peer_words(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(PEER_WORDS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().nth(PEER_WORDS).is_some() {
        out.push_str("...");
    }
    out
}

/// How long a relay call of `bytes` may take, connection included: a peer
/// that accepts connections but never answers must not hold relay up.
fn call_timeout(bytes: usize) -> Duration {
    Duration::from_secs(10 + (bytes / (256 * 1024)) as u64)
}

/// The origin's evidence for records of this log: for each seq, a C2SP
/// tlog-proof@v1 bundle (no `extra` line) against its latest signed
/// checkpoint; empty strings when the broker signs no checkpoints.
pub type Prover = Arc<dyn Fn(&[u64]) -> Result<Vec<String>, String> + Send + Sync>;

/// The directory in force, however the broker keeps it.
pub type DirectorySource = Arc<dyn Fn() -> Arc<Directory> + Send + Sync>;

/// One peer as this broker sees it.
pub struct PeerLink {
    pub id: String,
    pub url: String,
    pub egress: Egress,
    client: FederationClient<Channel>,
    status: Mutex<LinkStatus>,
}

#[derive(Default)]
struct LinkStatus {
    connected: bool,
    last_error: String,
}

/// This broker's place in the federation: its id and its peers.
pub struct Federation {
    pub me: String,
    links: BTreeMap<String, Arc<PeerLink>>,
}

/// A peer from the local configuration: id, URL, egress policy.
pub struct PeerSpec {
    pub id: String,
    pub url: String,
    pub egress: Egress,
}

fn pem_of(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

impl Federation {
    /// Prepares a lazily connected mTLS channel to each peer, presenting
    /// this broker's certificate and trusting for each peer only the anchor
    /// of that peer's country.
    pub fn new(
        me: &str,
        peers: Vec<PeerSpec>,
        dir: &Directory,
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Self, String> {
        let mut links = BTreeMap::new();
        for p in peers {
            let broker = dir
                .broker(&p.id)
                .ok_or_else(|| format!("peer {}: not a [[broker]] of the directory", p.id))?;
            let ca: String = dir
                .anchors()
                .get(&broker.country)
                .map(|certs| certs.iter().map(|c| pem_of(c)).collect())
                .ok_or_else(|| {
                    format!(
                        "peer {}: the directory has no anchor for its country {}",
                        p.id, broker.country
                    )
                })?;
            let channel = tls_endpoint(&p.url, ca.as_bytes(), cert_pem, key_pem)
                .map_err(|e| format!("peer {}: {e}", p.id))?
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(60))
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(10))
                .connect_lazy();
            let client = FederationClient::new(channel)
                .max_decoding_message_size(MAX_RELAY_MESSAGE)
                .max_encoding_message_size(MAX_RELAY_MESSAGE);
            links.insert(
                p.id.clone(),
                Arc::new(PeerLink {
                    id: p.id,
                    url: p.url,
                    egress: p.egress,
                    client,
                    status: Mutex::new(LinkStatus::default()),
                }),
            );
        }
        Ok(Federation {
            me: me.to_owned(),
            links,
        })
    }

    /// Starts one relay task per peer; each stops when `closing` turns true.
    pub fn spawn(
        &self,
        log: Log,
        dir: DirectorySource,
        prover: Prover,
        closing: watch::Receiver<bool>,
    ) {
        for link in self.links.values() {
            let task = RelayTask {
                me: self.me.clone(),
                link: link.clone(),
                log: log.clone(),
                dir: dir.clone(),
                prover: prover.clone(),
            };
            let closing = closing.clone();
            tokio::spawn(async move { task.run(closing).await });
        }
    }

    /// Hands a requester's case update to the case's authority (another
    /// broker), which orders it against the case: its receipt there, or its
    /// refusal as the authority gave it. The egress policy toward the
    /// authority applies as to anything else that leaves.
    pub async fn hand_to_authority(
        &self,
        authority: &str,
        body: &Body,
        envelope: Vec<u8>,
    ) -> Result<pb::Receipt, Error> {
        let link = self.links.get(authority).ok_or_else(|| Error::Peer {
            code: Code::FailedPrecondition,
            message: format!(
                "the case's authority is broker {authority}, which this broker does not peer with"
            ),
        })?;
        if let Some(why) = link.egress.withholds(body, envelope.len()) {
            return Err(Error::Peer {
                code: Code::FailedPrecondition,
                message: format!(
                    "the case's authority is broker {authority}, and this broker's {why}: \
                     the update cannot reach it"
                ),
            });
        }
        let batch = pb::RelayBatch {
            records: vec![pb::RelayedRecord {
                origin_seq: 0,
                envelope,
                origin_received_at_ms: 0,
                group_members: vec![],
                origin_proof: String::new(),
            }],
        };
        let ack = tokio::time::timeout(call_timeout(0), link.client.clone().relay(batch))
            .await
            .map_err(|_| Error::Peer {
                code: Code::Unavailable,
                message: format!(
                    "the case's authority, broker {authority}, did not answer within {} s; retry",
                    call_timeout(0).as_secs()
                ),
            })?
            .map_err(|s| Error::Peer {
                code: Code::Unavailable,
                message: format!(
                    "the case's authority, broker {authority}, did not answer ({}: {}); retry",
                    s.code(),
                    peer_words(s.message())
                ),
            })?
            .into_inner();
        let r = ack.results.into_iter().next().ok_or_else(|| Error::Peer {
            code: Code::Unavailable,
            message: format!("broker {authority} gave no answer for the case update; retry"),
        })?;
        match r.receipt {
            Some(receipt) => Ok(receipt),
            None => Err(Error::Peer {
                code: Code::from_i32(r.code),
                message: format!("case authority {authority}: {}", peer_words(&r.message)),
            }),
        }
    }

    /// Per-peer relay state for `Federation.Status`.
    pub fn status(&self, storage: &Storage, log_size: u64) -> Result<pb::FederationStatus, Error> {
        let mut peers = Vec::new();
        for link in self.links.values() {
            let position = storage.relay_position(&link.id)?;
            let counts = storage.relay_counts(&link.id)?;
            let st = link.status.lock().unwrap_or_else(|p| p.into_inner());
            peers.push(pb::PeerStatus {
                broker: link.id.clone(),
                url: link.url.clone(),
                connected: st.connected,
                position,
                lag: log_size.saturating_sub(position),
                relayed: counts.relayed,
                withheld: counts.withheld,
                refused: counts.refused,
                last_error: st.last_error.clone(),
            });
        }
        Ok(pb::FederationStatus {
            broker: self.me.clone(),
            log_size,
            peers,
        })
    }
}

/// What one round decided before sending.
struct Round {
    /// Records to send, with their seq.
    send: Vec<(u64, pb::RelayedRecord)>,
    /// Outcomes decided here (withheld by policy).
    decided: Vec<(u64, RelayOutcome)>,
    /// The last seq examined.
    last: u64,
}

struct RelayTask {
    me: String,
    link: Arc<PeerLink>,
    log: Log,
    dir: DirectorySource,
    prover: Prover,
}

/// Refusals a later attempt may overcome: the record stays at the head of
/// the queue and is sent again.
fn transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::ResourceExhausted
            | Code::Internal
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Aborted
            | Code::Cancelled
            // A key the peer's directory does not list yet (operators reload
            // at their own pace): the origin checked the signature already.
            | Code::Unauthenticated
    )
}

impl RelayTask {
    async fn run(self, mut closing: watch::Receiver<bool>) {
        let mut committed = self.log.committed();
        let mut backoff = BACKOFF_FIRST;
        loop {
            if *closing.borrow() {
                return;
            }
            let storage = self.log.storage_arc();
            let size = *committed.borrow_and_update();
            let position = match storage.relay_position(&self.link.id) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(peer = %self.link.id, error = %e, "cannot read the relay position");
                    return;
                }
            };
            if position >= size {
                tokio::select! {
                    r = committed.changed() => if r.is_err() { return },
                    _ = closing.changed() => {}
                }
                continue;
            }
            match self.round(position, size).await {
                Ok(()) => backoff = BACKOFF_FIRST,
                Err(why) => {
                    {
                        let mut st = self.link.status.lock().unwrap_or_else(|p| p.into_inner());
                        if st.connected || st.last_error != why {
                            tracing::warn!(peer = %self.link.id, error = %why, "relay to peer failed; retrying with backoff");
                        }
                        st.connected = false;
                        st.last_error = why;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = closing.changed() => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MOST);
                }
            }
        }
    }

    /// Examines records after `position` up to `size`, sends what is for
    /// the peer and records the outcome.
    async fn round(&self, position: u64, size: u64) -> Result<(), String> {
        let storage = self.log.storage_arc();
        let (me, peer, egress, dir) = (
            self.me.clone(),
            self.link.id.clone(),
            self.link.egress.clone(),
            (self.dir)(),
        );
        let st = storage.clone();
        let prover = self.prover.clone();
        let round = tokio::task::spawn_blocking(move || {
            let mut round = gather(&st, &dir, &me, &peer, &egress, position, size)
                .map_err(|e| format!("cannot read the log: {e}"))?;
            if !round.send.is_empty() {
                let seqs: Vec<u64> = round.send.iter().map(|(s, _)| *s).collect();
                let proofs = prover(&seqs).map_err(|e| format!("cannot prove records: {e}"))?;
                for ((_, r), p) in round.send.iter_mut().zip(proofs) {
                    r.origin_proof = p;
                }
            }
            Ok::<Round, String>(round)
        })
        .await
        .map_err(|e| format!("relay task failed: {e}"))??;
        let mut outcomes = round.decided;
        let mut last = round.last;
        if !round.send.is_empty() {
            let seqs: Vec<u64> = round.send.iter().map(|(s, _)| *s).collect();
            let bytes: usize = round.send.iter().map(|(_, r)| r.envelope.len()).sum();
            let batch = pb::RelayBatch {
                records: round.send.into_iter().map(|(_, r)| r).collect(),
            };
            let ack =
                tokio::time::timeout(call_timeout(bytes), self.link.client.clone().relay(batch))
                    .await
                    .map_err(|_| {
                        format!(
                            "no answer within {} s (the peer is down or hung)",
                            call_timeout(bytes).as_secs()
                        )
                    })?
                    .map_err(|s| format!("{}: {}", s.code(), peer_words(s.message())))?
                    .into_inner();
            {
                let mut st = self.link.status.lock().unwrap_or_else(|p| p.into_inner());
                st.connected = true;
                st.last_error.clear();
            }
            let mut results = ack.results.into_iter();
            for seq in seqs {
                // An answer cut short or out of step: resend from here.
                let Some(r) = results.next().filter(|r| r.origin_seq == seq) else {
                    last = seq - 1;
                    break;
                };
                match r.receipt {
                    Some(receipt) => outcomes.push((seq, RelayOutcome::Relayed(receipt.seq))),
                    None if transient(Code::from_i32(r.code)) => {
                        tracing::info!(peer = %self.link.id, seq, code = ?Code::from_i32(r.code), "peer deferred a relayed record; resending later");
                        last = seq - 1;
                        break;
                    }
                    None => {
                        tracing::warn!(peer = %self.link.id, seq, code = ?Code::from_i32(r.code), "peer refused a relayed record");
                        outcomes.push((
                            seq,
                            RelayOutcome::Refused(format!(
                                "{:?}: {}",
                                Code::from_i32(r.code),
                                peer_words(&r.message)
                            )),
                        ));
                    }
                }
            }
            outcomes.retain(|(s, _)| *s <= last);
        }
        let peer = self.link.id.clone();
        let deferred = last < position + 1;
        tokio::task::spawn_blocking(move || storage.put_relay_outcomes(&peer, &outcomes, last))
            .await
            .map_err(|e| format!("relay task failed: {e}"))?
            .map_err(|e| format!("cannot record relay outcomes: {e}"))?;
        if deferred {
            return Err("the peer deferred the next record".into());
        }
        Ok(())
    }
}

/// The readers' distribution of a stored record.
fn distribution<'a>(body: &'a Body, rec: &'a StoredRecord) -> Distribution<'a> {
    Distribution {
        sender: &body.sender,
        audience: body.audience.as_ref(),
        exercise: &body.exercise,
        also_readers: &rec.also_readers,
    }
}

/// Decides, for records `position+1 ..= size` (at most [`SCAN_RECORDS`]),
/// which go to `peer`, which the egress policy withholds, and which are not
/// for it at all.
fn gather(
    storage: &Storage,
    dir: &Directory,
    me: &str,
    peer: &str,
    egress: &Egress,
    position: u64,
    size: u64,
) -> Result<Round, Error> {
    let to = size.min(position + SCAN_RECORDS);
    let mut round = Round {
        send: Vec::new(),
        decided: Vec::new(),
        last: position,
    };
    let mut bytes = 0usize;
    let now = time::OffsetDateTime::now_utc();
    for item in storage.records(position + 1, to) {
        let (seq, rec) = item?;
        if round.send.len() >= BATCH_RECORDS || bytes >= BATCH_BYTES {
            break;
        }
        round.last = seq;
        // Records relayed here are never relayed on.
        if storage.origin_of(seq)?.is_some() {
            continue;
        }
        let (env, body) = open_record(&rec)?;
        let ours = dir.home_of(&body.sender) == Some(me)
            || match &body.content {
                Some(Content::CaseUpdate(u)) => {
                    case_authority(storage, dir, &u.requester, &u.case_id)? == Some(me)
                }
                _ => false,
            };
        if !ours {
            continue;
        }
        if !route::destinations(&distribution(&body, &rec), dir, me).contains(peer) {
            continue;
        }
        // Retractions and case updates follow their target.
        let target = match &body.content {
            Some(Content::Retraction(r)) => storage.seq_of(&r.target, &body.sender)?,
            Some(Content::CaseUpdate(u)) => storage.seq_of(&u.case_id, &u.requester)?,
            _ => None,
        };
        if let Some(t) = target
            && let Some(RelayOutcome::Withheld(_) | RelayOutcome::Refused(_)) =
                storage.relay_outcome(t, peer)?
        {
            round.decided.push((
                seq,
                RelayOutcome::Withheld(format!(
                    "its target (record {t}) did not go to broker {peer}"
                )),
            ));
            continue;
        }
        if let Some(why) = egress.withholds(&body, rec.envelope.len()) {
            round.decided.push((seq, RelayOutcome::Withheld(why)));
            continue;
        }
        // A signing key revoked (or a team retired) back to before this
        // broker logged the record: every peer refuses it as unauthenticated,
        // which it takes for a key it does not list yet and would resend
        // for ever, holding up everything after it.
        let logged_at = time::OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(rec.received_at_ms) * 1_000_000,
        )
        .unwrap_or(now);
        if let Err(problem) = dir.key_for_record(&body.sender, &env.key_id, logged_at, now) {
            round.decided.push((
                seq,
                RelayOutcome::Withheld(format!(
                    "by the directory in force its signing key was not valid when it was logged: {problem}"
                )),
            ));
            continue;
        }
        let group_members = match body.audience.as_ref().and_then(|a| a.kind.as_ref()) {
            Some(pb::audience::Kind::Group(_)) => rec.also_readers.clone(),
            _ => Vec::new(),
        };
        bytes += rec.envelope.len();
        round.send.push((
            seq,
            pb::RelayedRecord {
                origin_seq: seq,
                envelope: rec.envelope.to_vec(),
                origin_received_at_ms: rec.received_at_ms,
                group_members,
                origin_proof: String::new(),
            },
        ));
    }
    Ok(round)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peers_words_are_bounded_and_on_one_line() {
        let long = "x".repeat(1 << 20);
        let kept = peer_words(&long);
        assert!(kept.len() <= PEER_WORDS + 3, "{}", kept.len());
        assert!(kept.ends_with("..."));
        let forged = peer_words("refused\n2026-01-01T00:00:00Z ERROR forged line\r");
        assert!(!forged.contains('\n') && !forged.contains('\r'), "{forged}");
        assert_eq!(
            peer_words("FailedPrecondition: no"),
            "FailedPrecondition: no"
        );
    }
}
