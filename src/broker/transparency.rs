//! Serving the transparency log (SPEC §8): inclusion and consistency proofs
//! for any signed size, from the Merkle nodes kept in storage, in O(log n).

use crate::error::Error;
use crate::log::merkle;
use crate::log::storage::Storage;
use crate::proto::{
    ConsistencyProof, ConsistencyProofRequest, InclusionProof, InclusionProofRequest,
    inclusion_proof_request::Leaf,
};

/// Resolves the leaf a request names to its seq.
pub fn leaf_seq(storage: &Storage, req: &InclusionProofRequest) -> Result<u64, Error> {
    match &req.leaf {
        Some(Leaf::Seq(0)) | None => Err(Error::BadRequest(
            "name the leaf by seq (from 1) or by leaf_hash".into(),
        )),
        Some(Leaf::Seq(s)) => Ok(*s),
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
