//! Log audits a member runs without trusting the broker (SPEC §8): fetch and
//! verify the signed tree head, prove a record's inclusion, and check that
//! the log only grew since the head kept in a state file (rollback and fork
//! detection). `certex log head|prove|verify` and the demo use these.

use std::path::Path;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::client::connection::{Client, ClientError, record_request};
use crate::client::verify;
use crate::proto::{self as pb, inclusion_proof_request::Leaf};
use crate::rules::access::TrafficScope;
use crate::rules::envelope;

/// Reads a hex Ed25519 public key file.
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, ClientError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ClientError::Local(format!("cannot read {}: {e}", path.display())))?;
    hex::decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
        .ok_or_else(|| {
            ClientError::Local(format!(
                "{} is not a hex Ed25519 public key",
                path.display()
            ))
        })
}

/// A verified tree head as printed and kept by `log verify`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeadJson {
    pub tree_size: u64,
    pub root_hash: String,
    pub timestamp_ms: u64,
    pub signature: String,
    pub verified: bool,
    /// A checkpoint larger than the head that this member cosigned: later
    /// heads must extend it too, so a witness never cosigns both sides of
    /// a fork.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cosigned: Option<CosignedJson>,
}

/// The size and root of a checkpoint a member cosigned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CosignedJson {
    pub tree_size: u64,
    pub root_hash: String,
}

fn root_of(hex_root: &str, state: &Path) -> Result<verify::Hash, ClientError> {
    hex::decode(hex_root)
        .ok()
        .and_then(|b| verify::hash_from_slice(&b).ok())
        .ok_or_else(|| ClientError::Local(format!("state file {}: bad root_hash", state.display())))
}

/// Writes the member's state file atomically (temporary file, then rename).
fn keep_state(state: &Path, head: &HeadJson) -> Result<(), ClientError> {
    let tmp = state.with_extension("tmp");
    let text = serde_json::to_string_pretty(head).map_err(|e| ClientError::Check(e.to_string()))?;
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, state))
        .map_err(|e| {
            ClientError::Local(format!("cannot keep the head in {}: {e}", state.display()))
        })
}

fn read_state(state: &Path) -> Result<Option<HeadJson>, ClientError> {
    match std::fs::read_to_string(state) {
        Ok(text) => Ok(Some(serde_json::from_str(&text).map_err(|e| {
            ClientError::Local(format!("state file {} is not valid: {e}", state.display()))
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ClientError::Local(format!(
            "cannot read state {}: {e}",
            state.display()
        ))),
    }
}

/// Whether the tree `(a_size, a_root)` and the tree `(b_size, b_root)` are
/// one log: same root at the same size, else a consistency proof from the
/// smaller to the larger checks out.
pub async fn agrees(
    client: &Client,
    a: (u64, &verify::Hash),
    b: (u64, &verify::Hash),
) -> Result<bool, ClientError> {
    if a.0 == b.0 {
        return Ok(a.1 == b.1);
    }
    let (small, large) = if a.0 < b.0 { (a, b) } else { (b, a) };
    let path = client.consistency_proof(small.0, large.0).await?;
    Ok(verify::check_extends(small, large, &path).is_ok())
}

/// Fetches the current head and checks its signature.
pub async fn fetch_head(
    client: &Client,
    key: &VerifyingKey,
) -> Result<(pb::SignedTreeHead, verify::Hash), ClientError> {
    let head = client
        .transparency()
        .get_head(pb::GetHeadRequest {})
        .await
        .map_err(ClientError::from)?
        .into_inner();
    let root =
        verify::hash_from_slice(&head.root_hash).map_err(|e| ClientError::Check(e.to_string()))?;
    verify::verify_tree_head(
        key,
        head.tree_size,
        &root,
        head.timestamp_ms,
        &head.signature,
    )
    .map_err(|e| {
        ClientError::Check(format!(
            "tree head of size {} does not verify: {e}",
            head.tree_size
        ))
    })?;
    Ok((head, root))
}

/// The printed and kept form of a verified head.
pub fn head_json(h: &pb::SignedTreeHead) -> HeadJson {
    HeadJson {
        tree_size: h.tree_size,
        root_hash: hex::encode(&h.root_hash),
        timestamp_ms: h.timestamp_ms,
        signature: hex::encode(&h.signature),
        verified: true,
        cosigned: None,
    }
}

/// What `log prove` prints.
#[derive(Debug, Serialize)]
pub struct ProofJson {
    pub seq: u64,
    pub leaf_hash: String,
    pub tree_size: u64,
    pub root_hash: String,
    pub path_len: usize,
    pub verified: bool,
}

/// Proves that a record (seq or id) is in the log under the current signed head.
pub async fn prove(
    client: &Client,
    key: &VerifyingKey,
    what: &str,
    scope: &TrafficScope,
) -> Result<ProofJson, ClientError> {
    let rec = client.get(record_request(what, None, scope)).await?;
    // The leaf hash is recomputed from the envelope, not taken from the broker.
    let leaf = match &rec.envelope {
        Some(env) => verify::leaf_hash(&envelope::log_bytes(env)),
        None => verify::hash_from_slice(&rec.leaf_hash)
            .map_err(|e| ClientError::Check(e.to_string()))?,
    };
    let (head, root) = fetch_head(client, key).await?;
    let path = proven_path(client, &leaf, rec.seq, head.tree_size, &root).await?;
    Ok(ProofJson {
        seq: rec.seq,
        leaf_hash: hex::encode(leaf),
        tree_size: head.tree_size,
        root_hash: hex::encode(root),
        path_len: path.len(),
        verified: true,
    })
}

/// The broker's inclusion path of record `seq` in the tree of `size`
/// leaves, checked against `root` with the leaf hash the caller computed.
async fn proven_path(
    client: &Client,
    leaf: &verify::Hash,
    seq: u64,
    size: u64,
    root: &verify::Hash,
) -> Result<Vec<verify::Hash>, ClientError> {
    let proof = client
        .transparency()
        .get_inclusion_proof(pb::InclusionProofRequest {
            leaf: Some(Leaf::Seq(seq)),
            tree_size: size,
        })
        .await?
        .into_inner();
    let path = proof
        .path
        .iter()
        .map(|h| verify::hash_from_slice(h))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClientError::Check(e.to_string()))?;
    verify::verify_inclusion(leaf, seq - 1, size, &path, root).map_err(|e| {
        ClientError::Check(format!(
            "record {seq} is NOT proven in the tree of size {size}: {e}"
        ))
    })?;
    Ok(path)
}

/// The witnesses whose cosignature of `note` verifies: teams (by id) with
/// the witness key the directory lists for them, then witnesses of the
/// directory's policy (by policy name) that are not a team's key.
fn cosigners(
    note: &crate::rules::note::Note,
    dir: &crate::rules::directory::Directory,
) -> Vec<String> {
    let signed = |w: &crate::rules::note::Vkey| {
        note.by(w)
            .any(|l| crate::rules::note::verify_line(&note.text, l, w).is_ok())
    };
    let mut out: Vec<String> = dir
        .teams()
        .filter(|t| t.witness.as_ref().is_some_and(signed))
        .map(|t| t.id.clone())
        .collect();
    if let Some(p) = dir.witness_policy() {
        for w in &p.witnesses {
            let a_team = dir
                .teams()
                .any(|t| t.witness.as_ref().is_some_and(|k| k.key == w.vkey.key));
            if !a_team && signed(&w.vkey) && !out.contains(&w.name) {
                out.push(w.name.clone());
            }
        }
    }
    out
}

/// A checkpoint's cosignatures under the directory's witness policy.
#[derive(Debug, Clone, Serialize)]
pub struct QuorumJson {
    /// The policy's quorum (a witness or group name, or `none`).
    pub quorum: String,
    pub met: bool,
    /// Policy names of the witnesses whose cosignature verified.
    pub cosigned: Vec<String>,
    /// Each group's count, e.g. `members: 1 cosigned, 2 needed (A)`.
    pub groups: Vec<String>,
}

/// Applies the directory's witness policy to a checkpoint note; `None`
/// when the directory has none. A cosignature by a listed witness that
/// does not verify is an error.
pub fn quorum_of(
    note: &crate::rules::note::Note,
    dir: &crate::rules::directory::Directory,
) -> Result<Option<QuorumJson>, String> {
    let Some(p) = dir.witness_policy() else {
        return Ok(None);
    };
    let o = p
        .evaluate(note)
        .map_err(|e| format!("the checkpoint carries a bad cosignature: {e}"))?;
    Ok(Some(QuorumJson {
        quorum: p.quorum_name().to_owned(),
        met: o.met,
        cosigned: o.cosigned,
        groups: o.groups,
    }))
}

/// When the witnesses attest the checkpoint existed (POSIX seconds): with
/// a policy, the earliest cosignature time by which the quorum had
/// cosigned; without one, the latest cosignature by a team's witness key.
/// `None` when the cosignatures prove no time.
pub fn attested_at(
    note: &crate::rules::note::Note,
    dir: &crate::rules::directory::Directory,
) -> Option<u64> {
    use crate::rules::note::verify_line;
    let timed = |name: &str, w: &crate::rules::note::Vkey| {
        note.by(w)
            .filter_map(|l| verify_line(&note.text, l, w).ok().flatten())
            .min()
            .map(|t| (name.to_owned(), t))
    };
    match dir.witness_policy() {
        Some(p) => {
            let mut times: Vec<(String, u64)> = p
                .witnesses
                .iter()
                .filter_map(|w| timed(&w.name, &w.vkey))
                .collect();
            times.sort_by_key(|(_, t)| *t);
            (0..times.len()).find_map(|i| {
                let names = times[..=i].iter().map(|(n, _)| n.clone()).collect();
                (p.quorum.is_some() && p.outcome(names).met).then_some(times[i].1)
            })
        }
        None => dir
            .teams()
            .filter_map(|t| t.witness.as_ref().and_then(|w| timed(&t.id, w)))
            .map(|(_, t)| t)
            .max(),
    }
}

/// Fails unless `q` shows the quorum met, naming what is missing.
pub fn require_quorum(q: Option<&QuorumJson>) -> Result<(), String> {
    match q {
        None => Err(
            "--require-quorum: the directory has no witness_policy to decide a quorum with".into(),
        ),
        Some(q) if q.met => Ok(()),
        Some(q) => Err(format!(
            "QUORUM NOT MET: the checkpoint is cosigned by [{}], which does not meet quorum {} ({})",
            q.cosigned.join(", "),
            q.quorum,
            q.groups.join("; ")
        )),
    }
}

/// What `log verify` prints.
#[derive(Debug, Serialize)]
pub struct AuditJson {
    pub previous_size: Option<u64>,
    pub tree_size: u64,
    pub root_hash: String,
    pub consistent: bool,
}

/// Checks the current head against the one kept in `state`, then keeps it.
pub async fn verify_state(
    client: &Client,
    key: &VerifyingKey,
    state: &Path,
) -> Result<AuditJson, ClientError> {
    let (head, root) = fetch_head(client, key).await?;
    let kept = read_state(state)?;
    if let Some(k) = &kept {
        let kept_root = root_of(&k.root_hash, state)?;
        if head.tree_size < k.tree_size {
            return Err(ClientError::Check(format!(
                "LOG ROLLBACK: the broker's head has {} records but {} were seen before",
                head.tree_size, k.tree_size
            )));
        }
        if head.timestamp_ms < k.timestamp_ms {
            return Err(ClientError::Check(
                "LOG INCONSISTENT: the new head's timestamp is older than the kept one".into(),
            ));
        }
        let path = client
            .consistency_proof(k.tree_size, head.tree_size)
            .await?;
        verify::check_extends((k.tree_size, &kept_root), (head.tree_size, &root), &path).map_err(
            |e| {
                ClientError::Check(format!(
                    "LOG INCONSISTENT: head {} does not extend the kept head {}: {e}",
                    head.tree_size, k.tree_size
                ))
            },
        )?;
    }
    if let Some(c) = kept.as_ref().and_then(|k| k.cosigned.as_ref()) {
        let c_root = root_of(&c.root_hash, state)?;
        if head.tree_size < c.tree_size {
            return Err(ClientError::Check(format!(
                "LOG ROLLBACK: the broker's head has {} records but this member cosigned a checkpoint of {}",
                head.tree_size, c.tree_size
            )));
        }
        if !agrees(client, (c.tree_size, &c_root), (head.tree_size, &root)).await? {
            return Err(ClientError::Check(format!(
                "LOG INCONSISTENT: head {} does not extend the checkpoint of {} this member cosigned",
                head.tree_size, c.tree_size
            )));
        }
    }
    keep_state(state, &head_json(&head))?;
    Ok(AuditJson {
        previous_size: kept.map(|k| k.tree_size),
        tree_size: head.tree_size,
        root_hash: hex::encode(root),
        consistent: true,
    })
}

/// What `log checkpoint` prints.
#[derive(Debug, Serialize)]
pub struct CheckpointJson {
    pub origin: String,
    pub tree_size: u64,
    pub root_hash: String,
    /// The signed note as served.
    pub note: String,
    /// Verified with the directory's `checkpoint_vkey`.
    pub verified: bool,
    /// Witnesses whose cosignature verifies: teams with their directory
    /// witness key, and other witnesses of the directory's policy.
    pub cosigners: Vec<String>,
    /// The directory's witness policy applied, when it has one.
    pub quorum: Option<QuorumJson>,
}

/// Fetches the broker's latest checkpoint and opens it with the verifier
/// key of the local directory (never one the broker sends).
pub async fn fetch_checkpoint(
    client: &Client,
) -> Result<(crate::rules::note::Checkpoint, CheckpointJson), ClientError> {
    use crate::rules::note::{Checkpoint, Note, open};
    let vkey = client
        .local_directory()
        .and_then(|d| d.log_vkey_for(client.team()))
        .ok_or_else(|| {
            ClientError::Local(
                "the local directory lists no checkpoint_vkey to verify checkpoints with".into(),
            )
        })?
        .clone();
    let got = client
        .transparency()
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await?
        .into_inner();
    let note = Note::parse(&got.note)
        .map_err(|e| ClientError::Check(format!("the checkpoint is not a signed note: {e}")))?;
    open(&note, std::slice::from_ref(&vkey)).map_err(|e| {
        ClientError::Check(format!(
            "the checkpoint is NOT signed by {} ({e})",
            vkey.name
        ))
    })?;
    let cp = Checkpoint::parse(&note.text)
        .map_err(|e| ClientError::Check(format!("the checkpoint text is not valid: {e}")))?;
    if cp.origin != vkey.name {
        return Err(ClientError::Check(format!(
            "the checkpoint's origin {:?} is not the log's ({:?})",
            cp.origin, vkey.name
        )));
    }
    let dir = client.local_directory();
    let cosigners = dir.map(|d| cosigners(&note, d)).unwrap_or_default();
    let quorum = match dir {
        Some(d) => quorum_of(&note, d).map_err(ClientError::Check)?,
        None => None,
    };
    let json = CheckpointJson {
        origin: cp.origin.clone(),
        tree_size: cp.size,
        root_hash: hex::encode(cp.root),
        note: got.note,
        verified: true,
        cosigners,
        quorum,
    };
    Ok((cp, json))
}

/// What `log verify --cosign` adds to its line.
#[derive(Debug, Serialize)]
pub struct CosignJson {
    pub cosigned_size: u64,
    pub witness: String,
    /// Cosignatures the checkpoint has now, ours included.
    pub cosignatures: u32,
}

/// Cosigns the broker's latest checkpoint as `client`'s team, but only once
/// it agrees with `head`, a tree head already verified against the member's
/// own history (same root at the same size, or a consistency proof either
/// way). The witness key must be the one the local directory lists for the
/// team.
pub async fn cosign_latest(
    client: &Client,
    head: (u64, &verify::Hash),
    witness_key: &ed25519_dalek::SigningKey,
    state: &Path,
) -> Result<CosignJson, ClientError> {
    use crate::rules::note::{self, Note, TYPE_COSIGNATURE, Vkey};
    let listed = client
        .local_directory()
        .and_then(|d| d.team(client.team()))
        .and_then(|t| t.witness.clone())
        .ok_or_else(|| {
            ClientError::Local(format!(
                "the local directory lists no witness_key for {}",
                client.team()
            ))
        })?;
    let mine = Vkey::new(&listed.name, TYPE_COSIGNATURE, witness_key.verifying_key())
        .map_err(|e| ClientError::Local(e.to_string()))?;
    if mine != listed {
        return Err(ClientError::Local(format!(
            "the witness key file is not {}'s witness key in the directory ({listed})",
            client.team()
        )));
    }
    let (cp, json) = fetch_checkpoint(client).await?;
    let (size, root) = head;
    if cp.size < size {
        return Err(ClientError::Check(format!(
            "refusing to cosign: the checkpoint (size {}) is older than the verified tree head (size {size}); a cosignature vouches for the largest tree seen",
            cp.size
        )));
    }
    if !agrees(client, (size, root), (cp.size, &cp.root)).await? {
        return Err(ClientError::Check(format!(
            "LOG INCONSISTENT: refusing to cosign: the checkpoint of size {} does not agree with the verified tree head of size {size} (a split view?)",
            cp.size
        )));
    }
    // Remember a larger checkpoint before vouching for it: from now on
    // every head must extend it.
    if cp.size > size {
        let mut kept = read_state(state)?.ok_or_else(|| {
            ClientError::Local(format!("state file {} vanished", state.display()))
        })?;
        kept.cosigned = Some(CosignedJson {
            tree_size: cp.size,
            root_hash: hex::encode(cp.root),
        });
        keep_state(state, &kept)?;
    }
    let note = Note::parse(&json.note).map_err(|e| ClientError::Check(e.to_string()))?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
    let line = note::cosign(&note.text, &listed.name, witness_key, now)
        .map_err(|e| ClientError::Local(e.to_string()))?;
    let answer = client
        .transparency()
        .add_cosignature(pb::AddCosignatureRequest {
            tree_size: cp.size,
            signature_line: line.line(),
        })
        .await?
        .into_inner();
    Ok(CosignJson {
        cosigned_size: cp.size,
        witness: listed.name,
        cosignatures: answer.cosignatures,
    })
}

/// The C2SP `tlog-proof@v1` bundle of a record the team may read: its exact
/// logged bytes (as `extra`), its index, its inclusion path, and the
/// latest checkpoint with every cosignature, all checked before writing.
pub async fn tlog_proof(
    client: &Client,
    what: &str,
    scope: &TrafficScope,
) -> Result<String, ClientError> {
    use crate::rules::note::Proof;
    let rec = client.get(record_request(what, None, scope)).await?;
    let env = rec.envelope.as_ref().ok_or_else(|| {
        ClientError::Local(format!(
            "record {} is withheld (retracted); only its sender can prove its bytes",
            rec.seq
        ))
    })?;
    let bytes = envelope::log_bytes(env);
    let leaf = verify::leaf_hash(&bytes);
    let mut checkpoint = fetch_checkpoint(client).await?;
    if checkpoint.0.size < rec.seq {
        // Just committed: the next checkpoint covers it.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        checkpoint = fetch_checkpoint(client).await?;
    }
    let (cp, json) = checkpoint;
    let path = proven_path(client, &leaf, rec.seq, cp.size, &cp.root).await?;
    Ok(Proof {
        extra: Some(bytes),
        index: rec.seq - 1,
        path,
        checkpoint: json.note,
    }
    .encode())
}

/// What `log check-proof` prints.
#[derive(Debug, Serialize)]
pub struct ProofCheckJson {
    pub verified: bool,
    pub seq: u64,
    pub id: String,
    pub sender: String,
    pub kind: String,
    pub exercise: String,
    pub origin: String,
    pub tree_size: u64,
    pub root_hash: String,
    /// Witnesses whose cosignature of the checkpoint verifies.
    pub cosigners: Vec<String>,
    /// The directory's witness policy applied, when it has one.
    pub quorum: Option<QuorumJson>,
    /// The record's signature verified with the sender's key of that id.
    pub signature_key: String,
    /// What has happened to that key since (active, expired,
    /// revoked-after-signing), judged at `attested_at`.
    pub key_status: String,
    /// When the witnesses attest the record was in the log (RFC 3339), if
    /// their cosignatures prove it; otherwise the key must be valid now.
    pub attested_at: Option<String>,
}

/// Verifies a `tlog-proof@v1` bundle with no broker: the record bytes in
/// `extra` → leaf hash → inclusion path → checkpoint signed with the
/// directory's `checkpoint_vkey` → cosignatures by directory witness keys;
/// and the record's own signature by a key the directory lists for its
/// sender. With `record`, that JSON record (as `get` prints it) must be the
/// one the bundle proves.
pub fn check_proof(
    text: &str,
    dir: &crate::rules::directory::Directory,
    record: Option<&crate::client::draft::RecordJson>,
) -> Result<ProofCheckJson, String> {
    use crate::rules::note::{Checkpoint, Note, Proof, open};
    use prost::Message;
    let p = Proof::parse(text).map_err(|e| format!("the bundle is not a tlog proof: {e}"))?;
    let note = Note::parse(&p.checkpoint).map_err(|e| format!("checkpoint: {e}"))?;
    // The log is named by the checkpoint's origin line; its key comes from
    // the local directory (the single broker's, or a federation broker's).
    let claimed = note.text.split('\n').next().unwrap_or_default();
    let vkey = dir.checkpoint_vkey_named(claimed).ok_or_else(|| {
        format!("the directory lists no checkpoint key for the log {claimed:?} to verify the checkpoint with")
    })?;
    open(&note, std::slice::from_ref(vkey))
        .map_err(|e| format!("the checkpoint is NOT signed by {}: {e}", vkey.name))?;
    let cp = Checkpoint::parse(&note.text).map_err(|e| format!("checkpoint: {e}"))?;
    if cp.origin != vkey.name {
        return Err(format!(
            "the checkpoint's origin {:?} is not the log's",
            cp.origin
        ));
    }
    let bytes = p
        .extra
        .as_ref()
        .ok_or("the bundle carries no record bytes (extra)")?;
    let leaf = verify::leaf_hash(bytes);
    verify::verify_inclusion(&leaf, p.index, cp.size, &p.path, &cp.root)
        .map_err(|e| format!("the record is NOT included in the checkpoint: {e}"))?;
    let env = pb::Envelope::decode(bytes.as_slice())
        .map_err(|e| format!("the record bytes are not an envelope: {e}"))?;
    let body = crate::rules::canonical::decode_canonical(&env.body)
        .map_err(|e| format!("the record's body is not canonical: {e}"))?;
    // The key must have been valid when the record was logged; offline,
    // the witnesses' cosignature times are the evidence of when that was.
    let now = time::OffsetDateTime::now_utc();
    let attested = attested_at(&note, dir)
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t as i64).ok());
    let (key, status) = dir
        .key_for_record(&body.sender, &env.key_id, attested.unwrap_or(now), now)
        .map_err(|e| match attested {
            Some(t) => format!(
                "the record's key is not valid: {e} (as of {}, when the witnesses attest it was logged)",
                crate::rules::time::format_time(t)
            ),
            None => format!(
                "the record's key is not valid now: {e} (no quorum of cosignatures proves it was logged earlier)"
            ),
        })?;
    envelope::verify(&env, &key.public)
        .map_err(|e| format!("the record's signature does NOT verify: {e}"))?;
    let cosigners = cosigners(&note, dir);
    let quorum = quorum_of(&note, dir)?;
    let seq = p.index + 1;
    if let Some(r) = record {
        let want = crate::client::draft::BodyJson::from_body(&body);
        if r.seq != seq
            || r.id != body.id
            || r.sender != body.sender
            || r.body.as_ref() != Some(&want)
        {
            return Err(format!(
                "the record file is not the record the bundle proves (seq {seq}, id {}, sender {})",
                body.id, body.sender
            ));
        }
    }
    Ok(ProofCheckJson {
        verified: true,
        seq,
        id: body.id.clone(),
        sender: body.sender.clone(),
        kind: crate::rules::validate::Kind::of(&body)
            .map(|k| k.word().to_owned())
            .unwrap_or_default(),
        exercise: body.exercise.clone(),
        origin: cp.origin,
        tree_size: cp.size,
        root_hash: hex::encode(cp.root),
        cosigners,
        quorum,
        signature_key: env.key_id,
        key_status: status.word().to_owned(),
        attested_at: attested.map(crate::rules::time::format_time),
    })
}
