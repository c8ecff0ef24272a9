//! Serving the transparency log (SPEC §8): inclusion and consistency proofs
//! for any signed size, from the Merkle nodes kept in storage, in O(log n).

use crate::broker::read::view;
use crate::broker::state::State;
use crate::error::Error;
use crate::log::merkle;
use crate::log::storage::Storage;
use crate::log::writer::open_record;
use crate::proto::{
    ConsistencyProof, ConsistencyProofRequest, InclusionProof, InclusionProofRequest,
    inclusion_proof_request::Leaf,
};
use crate::rules::access::TrafficScope;

/// `Transparency.GetInclusionProof` for `team`. Proofs follow the read rule:
/// a record the caller may not read, or that is not yet in a signed tree, is
/// answered exactly like a leaf that does not exist.
pub fn inclusion_for(
    state: &State,
    team: &str,
    req: &InclusionProofRequest,
) -> Result<InclusionProof, Error> {
    let storage = state.log().storage();
    let seq = leaf_seq(storage, req)?;
    let not_found = || match &req.leaf {
        Some(Leaf::LeafHash(h)) => Error::NotFound(format!("leaf {}", hex::encode(h))),
        _ => Error::NotFound(format!("record {seq}")),
    };
    let head_size = state.log().head().tree_size;
    if seq > head_size {
        return Err(not_found());
    }
    let rec = storage.record(seq)?.ok_or_else(not_found)?;
    let dir = state.directory();
    let (_, body) = open_record(&rec)?;
    let scope = if body.exercise.is_empty() {
        TrafficScope::Real
    } else {
        TrafficScope::Exercise(body.exercise.clone())
    };
    if view(state, team, seq, rec, &scope, &dir)?.is_none() {
        return Err(not_found());
    }
    inclusion(storage, seq, req.tree_size, head_size)
}

/// Resolves the leaf a request names to its seq.
fn leaf_seq(storage: &Storage, req: &InclusionProofRequest) -> Result<u64, Error> {
    match &req.leaf {
        Some(Leaf::Seq(0)) | None => Err(Error::BadRequest(
            "name the leaf by seq (from 1) or by leaf_hash".into(),
        )),
        Some(Leaf::Seq(s)) => Ok(*s),
        Some(Leaf::LeafHash(h)) if h.len() != 32 => Err(Error::BadRequest(format!(
            "leaf_hash must be a 32-byte SHA-256 hash, got {} bytes",
            h.len()
        ))),
        Some(Leaf::LeafHash(h)) => storage
            .seq_of_leaf(h)?
            .ok_or_else(|| Error::NotFound(format!("leaf {}", hex::encode(h)))),
    }
}

/// The audit path of record `seq` in the tree of `tree_size` leaves, where
/// `current` is the size of the latest signed head.
pub fn inclusion(
    storage: &Storage,
    seq: u64,
    tree_size: u64,
    current: u64,
) -> Result<InclusionProof, Error> {
    let size = if tree_size == 0 { current } else { tree_size };
    if size > current {
        return Err(Error::BadRequest(format!(
            "tree_size {size} is larger than the signed log ({current})"
        )));
    }
    if seq > size {
        return Err(Error::BadRequest(format!(
            "record {seq} is not in the tree of size {size}"
        )));
    }
    let index = seq - 1;
    let path = merkle::inclusion_path(index, size, storage)
        .map_err(|e| Error::Internal(format!("inclusion proof: {e}")))?;
    let leaf = storage
        .record(seq)?
        .ok_or_else(|| Error::Internal(format!("record {seq} is missing")))?
        .leaf_hash;
    Ok(InclusionProof {
        leaf_index: index,
        tree_size: size,
        leaf_hash: leaf,
        path: path.iter().map(|h| h.to_vec()).collect(),
    })
}

/// Proof that the tree of `first` leaves is a prefix of the tree of `second`.
pub fn consistency(
    storage: &Storage,
    req: &ConsistencyProofRequest,
    current: u64,
) -> Result<ConsistencyProof, Error> {
    let second = if req.second == 0 { current } else { req.second };
    if second > current {
        return Err(Error::BadRequest(format!(
            "second size {second} is larger than the signed log ({current})"
        )));
    }
    if req.first > second {
        return Err(Error::BadRequest(format!(
            "first size {} is larger than second size {second}",
            req.first
        )));
    }
    let path = merkle::consistency_path(req.first, second, storage)
        .map_err(|e| Error::Internal(format!("consistency proof: {e}")))?;
    Ok(ConsistencyProof {
        first: req.first,
        second,
        path: path.iter().map(|h| h.to_vec()).collect(),
    })
}

/// `Transparency.GetCheckpoint`: the current head as a signed checkpoint.
pub fn checkpoint(state: &State) -> Result<crate::proto::SignedCheckpoint, Error> {
    let signer = state.checkpoints.as_ref().ok_or_else(|| {
        Error::Precondition(
            "this broker publishes no checkpoints (no checkpoint_key in its configuration)".into(),
        )
    })?;
    let head = state.log().head();
    Ok(crate::proto::SignedCheckpoint {
        note: signer.note_for(&head)?,
        tree_size: head.tree_size,
    })
}

/// `Transparency.AddCosignature` from `team`.
pub fn add_cosignature(
    state: &State,
    team: &str,
    req: &crate::proto::AddCosignatureRequest,
) -> Result<crate::proto::AddCosignatureResponse, Error> {
    let signer = state.checkpoints.as_ref().ok_or_else(|| {
        Error::Precondition(
            "this broker publishes no checkpoints (no checkpoint_key in its configuration)".into(),
        )
    })?;
    let dir = state.directory();
    let witness = dir.team(team).and_then(|t| t.witness.as_ref());
    let now = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
    let n = signer.cosign(
        team,
        witness,
        req.tree_size,
        &req.signature_line,
        now,
        state.config.limits.clock_skew_secs,
    )?;
    Ok(crate::proto::AddCosignatureResponse {
        cosignatures: n as u32,
    })
}
