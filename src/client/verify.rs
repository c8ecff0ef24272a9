//! Client-side checks of the log's answers: proofs (RFC 9162) and signed tree heads.
//!
//! Self-contained, so it can be lifted alone into other tooling.
//!
//! Nothing here is shared with the server's Merkle code: the hashing is
//! re-implemented below, so a bug there cannot hide itself here.

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

/// A SHA-256 digest: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; 32];

/// Domain-separation prefix of every tree-head signature.
const TREE_HEAD_CONTEXT: &[u8] = b"certex/v1/tree-head\0";

/// Why a proof, a tree head or a hash was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is outside a tree of size {size}")]
    LeafIndexOutOfRange {
        /// The leaf index claimed.
        index: u64,
        /// The tree size claimed.
        size: u64,
    },
    /// The inclusion proof has too few or too many hashes for the index and size.
    #[error("inclusion proof has wrong length")]
    InclusionProofLength,
    /// The inclusion proof is well formed but yields another root.
    #[error("inclusion proof does not lead to the signed root")]
    InclusionRootMismatch,
    /// The consistency proof has too few or too many hashes for the sizes.
    #[error("consistency proof has wrong length")]
    ConsistencyProofLength,
    /// The consistency proof does not rebuild the root kept from before.
    #[error("consistency proof does not lead to the kept root")]
    ConsistencyOldRootMismatch,
    /// The consistency proof does not rebuild the new signed root.
    #[error("consistency proof does not lead to the signed root")]
    ConsistencyNewRootMismatch,
    /// The log shows fewer entries than it showed before.
    #[error("log rolled back: new size {new} is smaller than kept size {kept}")]
    Rollback {
        /// Size now shown.
        new: u64,
        /// Size kept from before.
        kept: u64,
    },
    /// The log shows two different roots for the same size.
    #[error("log forked: two different roots for tree size {size}")]
    Fork {
        /// The size with two roots.
        size: u64,
    },
    /// The signature does not match the tree head and key.
    #[error("tree head signature is invalid")]
    BadSignature,
    /// The signature is not 64 bytes long.
    #[error("tree head signature must be 64 bytes, got {len}")]
    SignatureLength {
        /// Length received.
        len: usize,
    },
    /// A hash is not 32 bytes long.
    #[error("hash must be 32 bytes, got {len}")]
    HashLength {
        /// Length received.
        len: usize,
    },
}

/// Hashes one log entry as an RFC 6962 leaf: `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Checks that `path` proves the leaf with hash `leaf_hash` sits at
/// `leaf_index` in the tree of `tree_size` leaves whose root is `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf_hash: &Hash,
    leaf_index: u64,
    tree_size: u64,
    path: &[Hash],
    root: &Hash,
) -> Result<(), VerifyError> {
    if leaf_index >= tree_size {
        return Err(VerifyError::LeafIndexOutOfRange {
            index: leaf_index,
            size: tree_size,
        });
    }
    let mut fnode = leaf_index;
    let mut snode = tree_size - 1;
    let mut r = *leaf_hash;
    for p in path {
        if snode == 0 {
            return Err(VerifyError::InclusionProofLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            // On the right edge: skip the levels where this node has no sibling.
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(VerifyError::InclusionProofLength);
    }
    if r != *root {
        return Err(VerifyError::InclusionRootMismatch);
    }
    Ok(())
}

/// Checks that `path` proves the tree of `new_size` leaves with root
/// `new_root` extends the tree of `old_size` leaves with root `old_root`
/// (RFC 9162 §2.1.4.2).
///
/// Equal sizes need an empty path and equal roots; `old_size` 0 accepts an
/// empty path (any tree extends the empty one); `old_size > new_size` is a
/// rollback.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    path: &[Hash],
) -> Result<(), VerifyError> {
    if old_size > new_size {
        return Err(VerifyError::Rollback {
            new: new_size,
            kept: old_size,
        });
    }
    if old_size == new_size {
        if !path.is_empty() {
            return Err(VerifyError::ConsistencyProofLength);
        }
        if old_root != new_root {
            return Err(VerifyError::Fork { size: old_size });
        }
        return Ok(());
    }
    if old_size == 0 {
        if !path.is_empty() {
            return Err(VerifyError::ConsistencyProofLength);
        }
        return Ok(());
    }
    // 0 < old_size < new_size. When the old tree is perfect its root is the
    // implied first element of the proof.
    let (first, rest) = if old_size.is_power_of_two() {
        (old_root, path)
    } else {
        path.split_first()
            .ok_or(VerifyError::ConsistencyProofLength)?
    };
    let mut fnode = old_size - 1;
    let mut snode = new_size - 1;
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let mut fr = *first;
    let mut sr = *first;
    for c in rest {
        if snode == 0 {
            return Err(VerifyError::ConsistencyProofLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(VerifyError::ConsistencyProofLength);
    }
    if fr != *old_root {
        return Err(VerifyError::ConsistencyOldRootMismatch);
    }
    if sr != *new_root {
        return Err(VerifyError::ConsistencyNewRootMismatch);
    }
    Ok(())
}

/// The exact bytes the broker signs for a tree head:
/// `b"certex/v1/tree-head\0" || be64(tree_size) || root_hash (32) || be64(timestamp_ms)`.
pub fn tree_head_message(tree_size: u64, root: &Hash, timestamp_ms: u64) -> Vec<u8> {
    let mut msg = Vec::with_capacity(TREE_HEAD_CONTEXT.len() + 8 + 32 + 8);
    msg.extend_from_slice(TREE_HEAD_CONTEXT);
    msg.extend_from_slice(&tree_size.to_be_bytes());
    msg.extend_from_slice(root);
    msg.extend_from_slice(&timestamp_ms.to_be_bytes());
    msg
}

/// Checks the broker's Ed25519 signature over a tree head (`verify_strict`:
/// rejects malleable and small-order forms). A signature that is not 64
/// bytes is an error, not a panic.
pub fn verify_tree_head(
    key: &VerifyingKey,
    tree_size: u64,
    root: &Hash,
    timestamp_ms: u64,
    signature: &[u8],
) -> Result<(), VerifyError> {
    let bytes = <[u8; 64]>::try_from(signature).map_err(|_| VerifyError::SignatureLength {
        len: signature.len(),
    })?;
    key.verify_strict(
        &tree_head_message(tree_size, root, timestamp_ms),
        &Signature::from_bytes(&bytes),
    )
    .map_err(|_| VerifyError::BadSignature)
}

/// Checks that `new` (size, root) extends `kept` (size, root) given a
/// consistency proof; errors on rollback (smaller size) or fork (same size,
/// different root).
pub fn check_extends(
    kept: (u64, &Hash),
    new: (u64, &Hash),
    path: &[Hash],
) -> Result<(), VerifyError> {
    let (kept_size, kept_root) = kept;
    let (new_size, new_root) = new;
    if new_size < kept_size {
        return Err(VerifyError::Rollback {
            new: new_size,
            kept: kept_size,
        });
    }
    if new_size == kept_size && new_root != kept_root {
        return Err(VerifyError::Fork { size: new_size });
    }
    verify_consistency(kept_size, new_size, kept_root, new_root, path)
}

/// Reads a hash off the wire: exactly 32 bytes, or an error.
pub fn hash_from_slice(bytes: &[u8]) -> Result<Hash, VerifyError> {
    Hash::try_from(bytes).map_err(|_| VerifyError::HashLength { len: bytes.len() })
}

/// Checks an origin broker's evidence that it logged a relayed record
/// (SPEC §12): a C2SP tlog-proof@v1 bundle (its `extra` line, if present,
/// must be the record's bytes) whose index is the record's seq there minus
/// one, whose checkpoint is signed by `vkey` (the origin's checkpoint key in
/// the local directory) and names its log, and whose inclusion path leads
/// from the record's leaf hash to the checkpoint's root. Returns the
/// checkpoint's size.
pub fn check_origin_proof(
    proof: &str,
    record_bytes: &[u8],
    origin_seq: u64,
    vkey: &crate::rules::note::Vkey,
) -> Result<u64, String> {
    use crate::rules::note::{Checkpoint, Note, Proof, open};
    let p = Proof::parse(proof).map_err(|e| format!("origin proof: {e}"))?;
    if p.extra.as_deref().is_some_and(|e| e != record_bytes) {
        return Err("origin proof: its extra bytes are not this record".into());
    }
    if p.index.checked_add(1) != Some(origin_seq) {
        return Err(format!(
            "origin proof: index {} is not the record's seq {origin_seq} at the origin",
            p.index
        ));
    }
    let note = Note::parse(&p.checkpoint).map_err(|e| format!("origin checkpoint: {e}"))?;
    open(&note, std::slice::from_ref(vkey))
        .map_err(|e| format!("origin checkpoint is NOT signed by {}: {e}", vkey.name))?;
    let cp = Checkpoint::parse(&note.text).map_err(|e| format!("origin checkpoint: {e}"))?;
    if cp.origin != vkey.name {
        return Err(format!(
            "origin checkpoint names the log {:?}, not {:?}",
            cp.origin, vkey.name
        ));
    }
    verify_inclusion(
        &leaf_hash(record_bytes),
        p.index,
        cp.size,
        &p.path,
        &cp.root,
    )
    .map_err(|e| format!("the record is NOT in the origin's checkpoint: {e}"))?;
    Ok(cp.size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};
    use proptest::prelude::*;
    use rand_core::OsRng;

    fn h(s: &str) -> Hash {
        hash_from_slice(&hex::decode(s).unwrap()).unwrap()
    }

    // RFC 6962 reference test tree: leaf inputs and roots for sizes 0..=8 from
    // transparency-dev/merkle testonly/constants.go (LeafInputs, RootHashes).
    const RFC_LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];

    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn rfc_leaf_hashes() -> Vec<Hash> {
        RFC_LEAVES
            .iter()
            .map(|s| leaf_hash(&hex::decode(s).unwrap()))
            .collect()
    }

    // Published proofs from transparency-dev/merkle proof/verify_test.go
    // (inclusionProofs / consistencyProofs); there the leaf is numbered from
    // 1, here it is the 0-based index.
    fn published_inclusion() -> Vec<(u64, u64, Vec<Hash>)> {
        vec![
            (
                0,
                8,
                vec![
                    h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                    h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                    h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
                ],
            ),
            (
                5,
                8,
                vec![
                    h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
                    h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
                ],
            ),
            (
                2,
                3,
                vec![h(
                    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
                )],
            ),
            (
                1,
                5,
                vec![
                    h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
                    h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                    h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
                ],
            ),
        ]
    }

    fn published_consistency() -> Vec<(u64, u64, Vec<Hash>)> {
        vec![
            (
                1,
                8,
                vec![
                    h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                    h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                    h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
                ],
            ),
            (
                6,
                8,
                vec![
                    h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                    h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
                ],
            ),
            (
                2,
                5,
                vec![
                    h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                    h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
                ],
            ),
            (
                6,
                7,
                vec![
                    h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                    h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
                    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
                ],
            ),
        ]
    }

    // --- naive reference prover: RFC 6962 §2.1 definitions as recursion ---

    fn k_of(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    fn mth(d: &[Hash]) -> Hash {
        match d.len() {
            0 => Sha256::digest([]).into(),
            1 => d[0],
            n => {
                let k = k_of(n);
                node_hash(&mth(&d[..k]), &mth(&d[k..]))
            }
        }
    }

    fn ref_path(m: usize, d: &[Hash]) -> Vec<Hash> {
        let n = d.len();
        if n <= 1 {
            return vec![];
        }
        let k = k_of(n);
        let (mut p, sibling) = if m < k {
            (ref_path(m, &d[..k]), mth(&d[k..]))
        } else {
            (ref_path(m - k, &d[k..]), mth(&d[..k]))
        };
        p.push(sibling);
        p
    }

    fn ref_subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
        let n = d.len();
        if m == n {
            return if b { vec![] } else { vec![mth(d)] };
        }
        let k = k_of(n);
        let (mut p, sibling) = if m <= k {
            (ref_subproof(m, &d[..k], b), mth(&d[k..]))
        } else {
            (ref_subproof(m - k, &d[k..], false), mth(&d[..k]))
        };
        p.push(sibling);
        p
    }

    fn ref_consistency(m: usize, d: &[Hash]) -> Vec<Hash> {
        if m == 0 || m == d.len() {
            vec![]
        } else {
            ref_subproof(m, d, true)
        }
    }

    fn test_leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(format!("entry {i}").as_bytes()))
            .collect()
    }

    // --- known vectors ---

    #[test]
    fn empty_root_and_rfc_roots() {
        assert_eq!(mth(&[]), h(ROOTS[0]));
        let leaves = rfc_leaf_hashes();
        for n in 1..=8 {
            assert_eq!(mth(&leaves[..n]), h(ROOTS[n]), "size {n}");
        }
    }

    #[test]
    fn published_inclusion_proofs_verify_and_resist_tampering() {
        let leaves = rfc_leaf_hashes();
        for (index, size, path) in published_inclusion() {
            let root = h(ROOTS[size as usize]);
            let leaf = leaves[index as usize];
            assert_eq!(
                verify_inclusion(&leaf, index, size, &path, &root),
                Ok(()),
                "leaf {index} size {size}"
            );
            // Probes after transparency-dev's corruptInclusionProof.
            assert!(verify_inclusion(&leaf, index + 1, size, &path, &root).is_err());
            assert!(verify_inclusion(&leaf, index ^ 2, size, &path, &root).is_err());
            assert!(verify_inclusion(&leaf, index, size * 2, &path, &root).is_err());
            assert!(verify_inclusion(&leaf, index, size / 2, &path, &root).is_err());
            assert!(verify_inclusion(&leaf_hash(b"WrongLeaf"), index, size, &path, &root).is_err());
            assert!(verify_inclusion(&leaf, index, size, &path, &h(ROOTS[0])).is_err());
            let mut longer = path.clone();
            longer.push(root);
            assert_eq!(
                verify_inclusion(&leaf, index, size, &longer, &root),
                Err(VerifyError::InclusionProofLength)
            );
            let mut front = vec![root];
            front.extend_from_slice(&path);
            assert!(verify_inclusion(&leaf, index, size, &front, &root).is_err());
            assert_eq!(
                verify_inclusion(&leaf, index, size, &path[..path.len() - 1], &root),
                Err(VerifyError::InclusionProofLength)
            );
        }
        // One-leaf tree: the root is the leaf hash and the proof is empty.
        assert_eq!(
            verify_inclusion(&leaves[0], 0, 1, &[], &h(ROOTS[1])),
            Ok(())
        );
    }

    #[test]
    fn published_consistency_proofs_verify_and_resist_tampering() {
        for (old, new, path) in published_consistency() {
            let (r1, r2) = (h(ROOTS[old as usize]), h(ROOTS[new as usize]));
            assert_eq!(
                verify_consistency(old, new, &r1, &r2, &path),
                Ok(()),
                "{old} -> {new}"
            );
            assert_eq!(check_extends((old, &r1), (new, &r2), &path), Ok(()));
            // Probes after transparency-dev's corruptConsistencyProof.
            assert!(verify_consistency(old - 1, new, &r1, &r2, &path).is_err());
            assert!(verify_consistency(old + 1, new, &r1, &r2, &path).is_err());
            assert!(verify_consistency(old ^ 2, new, &r1, &r2, &path).is_err());
            assert!(verify_consistency(old, new * 2, &r1, &r2, &path).is_err());
            assert!(verify_consistency(old, new / 2, &r1, &r2, &path).is_err());
            assert!(verify_consistency(old, new, &r2, &r1, &path).is_err());
            assert!(verify_consistency(old, new, &r1, &r2, &[]).is_err());
            assert!(verify_consistency(old, new, &r1, &r2, &path[..path.len() - 1]).is_err());
            for extra in [r1, r2, path[0]] {
                let mut longer = path.clone();
                longer.push(extra);
                assert!(verify_consistency(old, new, &r1, &r2, &longer).is_err());
                let mut front = vec![extra];
                front.extend_from_slice(&path);
                assert!(verify_consistency(old, new, &r1, &r2, &front).is_err());
            }
        }
    }

    #[test]
    fn trivial_consistency_cases() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert_eq!(verify_consistency(0, 0, &a, &a, &[]), Ok(()));
        assert_eq!(verify_consistency(0, 5, &a, &b, &[]), Ok(()));
        assert_eq!(verify_consistency(3, 3, &b, &b, &[]), Ok(()));
        assert_eq!(
            verify_consistency(3, 3, &a, &b, &[]),
            Err(VerifyError::Fork { size: 3 })
        );
        assert_eq!(
            verify_consistency(3, 3, &a, &a, &[a]),
            Err(VerifyError::ConsistencyProofLength)
        );
        assert_eq!(
            verify_consistency(0, 5, &a, &b, &[a]),
            Err(VerifyError::ConsistencyProofLength)
        );
        assert_eq!(
            verify_consistency(1, 2, &a, &b, &[]),
            Err(VerifyError::ConsistencyProofLength)
        );
        assert_eq!(
            verify_consistency(2, 1, &a, &b, &[]),
            Err(VerifyError::Rollback { new: 1, kept: 2 })
        );
    }

    #[test]
    fn size_only_binds_through_the_root() {
        // Leaf 0 has the same hashing schedule in trees of 3 and 4 leaves, so
        // the size-4 proof also checks out under a claimed size of 3 against
        // the size-4 root. Harmless: the signed tree head binds size and root,
        // and against the real size-3 root it fails.
        let leaves = test_leaves(4);
        let path = ref_path(0, &leaves);
        assert_eq!(
            verify_inclusion(&leaves[0], 0, 3, &path, &mth(&leaves)),
            Ok(())
        );
        assert!(verify_inclusion(&leaves[0], 0, 3, &path, &mth(&leaves[..3])).is_err());
    }

    // --- exhaustive: reference proofs verify, sizes 1..=64 ---

    #[test]
    fn reference_inclusion_proofs_verify_up_to_64() {
        let leaves = test_leaves(64);
        for n in 1..=64usize {
            let root = mth(&leaves[..n]);
            for m in 0..n {
                let path = ref_path(m, &leaves[..n]);
                assert_eq!(
                    verify_inclusion(&leaves[m], m as u64, n as u64, &path, &root),
                    Ok(()),
                    "{m}/{n}"
                );
            }
            assert_eq!(
                verify_inclusion(&leaves[0], n as u64, n as u64, &[], &root),
                Err(VerifyError::LeafIndexOutOfRange {
                    index: n as u64,
                    size: n as u64
                })
            );
        }
    }

    #[test]
    fn reference_consistency_proofs_verify_up_to_64() {
        let leaves = test_leaves(64);
        let roots: Vec<Hash> = (0..=64).map(|n| mth(&leaves[..n])).collect();
        for n in 1..=64usize {
            for m in 0..=n {
                let path = ref_consistency(m, &leaves[..n]);
                assert_eq!(
                    verify_consistency(m as u64, n as u64, &roots[m], &roots[n], &path),
                    Ok(()),
                    "{m}->{n}"
                );
                assert_eq!(
                    check_extends((m as u64, &roots[m]), (n as u64, &roots[n]), &path),
                    Ok(())
                );
            }
        }
    }

    // --- proptest: tampering fails ---

    fn flip(path: &mut [Hash], element: usize, bit: usize) {
        let i = element % path.len();
        path[i][(bit / 8) % 32] ^= 1 << (bit % 8);
    }

    proptest! {
        #[test]
        fn inclusion_rejects_bit_flips(n in 2usize..=64, m in any::<usize>(), e in any::<usize>(), bit in 0usize..256) {
            let leaves = test_leaves(n);
            let m = m % n;
            let mut path = ref_path(m, &leaves);
            flip(&mut path, e, bit);
            prop_assert!(verify_inclusion(&leaves[m], m as u64, n as u64, &path, &mth(&leaves)).is_err());
        }

        #[test]
        fn inclusion_rejects_wrong_index(n in 1usize..=64, m in any::<usize>(), other in any::<u64>()) {
            let leaves = test_leaves(n);
            let m = m % n;
            let other = other % 70;
            prop_assume!(other != m as u64);
            let path = ref_path(m, &leaves);
            prop_assert!(verify_inclusion(&leaves[m], other, n as u64, &path, &mth(&leaves)).is_err());
        }

        // The RFC 9162 verifier only sees the size through the hashing
        // schedule it implies, so a proof can still fit the *claimed* root
        // under another size of the same shape (e.g. leaf 0 in sizes 3 and
        // 4). A signed root binds its size, so what must fail is a proof for
        // one size against the root of another.
        #[test]
        fn inclusion_rejects_wrong_size(n in 1usize..=64, m in any::<usize>(), other in 1usize..=64) {
            prop_assume!(other != n);
            let leaves = test_leaves(64);
            let m = m % n;
            let path = ref_path(m, &leaves[..n]);
            let other_root = mth(&leaves[..other]);
            prop_assert!(verify_inclusion(&leaves[m], m as u64, other as u64, &path, &other_root).is_err());
            prop_assert!(verify_inclusion(&leaves[m], m as u64, n as u64, &path, &other_root).is_err());
        }

        #[test]
        fn inclusion_rejects_changed_leaf(n in 2usize..=64, m in any::<usize>(), j in any::<usize>()) {
            let mut leaves = test_leaves(n);
            let m = m % n;
            let j = j % n;
            let (leaf, path) = (leaves[m], ref_path(m, &leaves));
            leaves[j] = leaf_hash(b"rewritten");
            // The leaf and proof from before do not fit the rewritten tree.
            prop_assert!(verify_inclusion(&leaf, m as u64, n as u64, &path, &mth(&leaves)).is_err());
        }

        #[test]
        fn consistency_rejects_bit_flips(n in 2usize..=64, m in any::<usize>(), e in any::<usize>(), bit in 0usize..256) {
            let leaves = test_leaves(n);
            let m = 1 + m % (n - 1);
            let mut path = ref_consistency(m, &leaves);
            flip(&mut path, e, bit);
            prop_assert!(verify_consistency(m as u64, n as u64, &mth(&leaves[..m]), &mth(&leaves), &path).is_err());
        }

        #[test]
        fn consistency_rejects_wrong_sizes(n in 2usize..=64, m in any::<usize>(), wrong in 1usize..=64, which in any::<bool>()) {
            let leaves = test_leaves(64);
            let m = 1 + m % (n - 1);
            let path = ref_consistency(m, &leaves[..n]);
            let (m2, n2) = if which { (wrong, n) } else { (m, wrong) };
            prop_assume!((m2, n2) != (m, n));
            // Roots of the sizes claimed: a proof for m -> n cannot link them.
            let r = verify_consistency(m2 as u64, n2 as u64, &mth(&leaves[..m2]), &mth(&leaves[..n2]), &path);
            prop_assert!(r.is_err());
        }

        #[test]
        fn consistency_rejects_rewritten_history(n in 2usize..=64, m in any::<usize>(), j in any::<usize>()) {
            let leaves = test_leaves(n);
            let m = 1 + m % (n - 1);
            let j = j % m; // an entry the old tree already had
            let mut forged = leaves.clone();
            forged[j] = leaf_hash(b"rewritten");
            // Honest new tree, client kept a root that differs at entry j.
            let path = ref_consistency(m, &leaves);
            prop_assert!(verify_consistency(m as u64, n as u64, &mth(&forged[..m]), &mth(&leaves), &path).is_err());
            // Client kept the honest root, the log rewrote entry j and proves from the forged tree.
            let forged_path = ref_consistency(m, &forged);
            prop_assert!(check_extends((m as u64, &mth(&leaves[..m])), (n as u64, &mth(&forged)), &forged_path).is_err());
        }
    }

    // --- tree heads ---

    #[test]
    fn tree_head_message_layout() {
        let root = [0xabu8; 32];
        let msg = tree_head_message(0x0102030405060708, &root, 0x1112131415161718);
        let mut want = b"certex/v1/tree-head\0".to_vec();
        want.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        want.extend_from_slice(&root);
        want.extend_from_slice(&[0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]);
        assert_eq!(msg, want);
        assert_eq!(msg.len(), 68);
    }

    #[test]
    fn tree_head_signatures() {
        let key = SigningKey::generate(&mut OsRng);
        let vk = key.verifying_key();
        let root = h(ROOTS[8]);
        let (size, ts) = (8u64, 1_700_000_000_000u64);
        let sig = key.sign(&tree_head_message(size, &root, ts)).to_bytes();
        assert_eq!(verify_tree_head(&vk, size, &root, ts, &sig), Ok(()));

        let bad = Err(VerifyError::BadSignature);
        assert_eq!(verify_tree_head(&vk, size + 1, &root, ts, &sig), bad);
        assert_eq!(verify_tree_head(&vk, size, &h(ROOTS[7]), ts, &sig), bad);
        assert_eq!(verify_tree_head(&vk, size, &root, ts + 1, &sig), bad);
        for i in [0, 31, 32, 63] {
            let mut s = sig;
            s[i] ^= 0x01;
            assert_eq!(verify_tree_head(&vk, size, &root, ts, &s), bad, "byte {i}");
        }
        let other = SigningKey::generate(&mut OsRng).verifying_key();
        assert_eq!(verify_tree_head(&other, size, &root, ts, &sig), bad);

        let e = verify_tree_head(&vk, size, &root, ts, &sig[..63]).unwrap_err();
        assert_eq!(e, VerifyError::SignatureLength { len: 63 });
        assert_eq!(
            e.to_string(),
            "tree head signature must be 64 bytes, got 63"
        );
        assert!(verify_tree_head(&vk, size, &root, ts, &[]).is_err());
        assert_eq!(
            VerifyError::BadSignature.to_string(),
            "tree head signature is invalid"
        );
    }

    // --- check_extends ---

    #[test]
    fn check_extends_rejects_rollback_and_fork() {
        let leaves = test_leaves(16);
        let r9 = mth(&leaves[..9]);
        let r5 = mth(&leaves[..5]);
        let e = check_extends((9, &r9), (5, &r5), &[]).unwrap_err();
        assert_eq!(e, VerifyError::Rollback { new: 5, kept: 9 });
        assert_eq!(
            e.to_string(),
            "log rolled back: new size 5 is smaller than kept size 9"
        );

        let mut forked = leaves.clone();
        forked[3] = leaf_hash(b"other");
        let e = check_extends((9, &r9), (9, &mth(&forked[..9])), &[]).unwrap_err();
        assert_eq!(e, VerifyError::Fork { size: 9 });
        assert_eq!(
            e.to_string(),
            "log forked: two different roots for tree size 9"
        );

        assert_eq!(check_extends((9, &r9), (9, &r9), &[]), Ok(()));
        let path = ref_consistency(9, &leaves);
        assert_eq!(check_extends((9, &r9), (16, &mth(&leaves)), &path), Ok(()));
        assert_eq!(
            check_extends((9, &r9), (16, &mth(&forked)), &path),
            Err(VerifyError::ConsistencyNewRootMismatch)
        );
        assert_eq!(
            check_extends((9, &mth(&forked[..9])), (16, &mth(&leaves)), &path),
            Err(VerifyError::ConsistencyOldRootMismatch)
        );
        assert_eq!(
            check_extends((9, &r9), (16, &mth(&leaves)), &path[1..]),
            Err(VerifyError::ConsistencyProofLength)
        );
    }

    #[test]
    fn hash_from_slice_checks_length() {
        assert_eq!(hash_from_slice(&[7u8; 32]), Ok([7u8; 32]));
        assert_eq!(
            hash_from_slice(&[7u8; 31]),
            Err(VerifyError::HashLength { len: 31 })
        );
        assert_eq!(
            hash_from_slice(&[7u8; 33]),
            Err(VerifyError::HashLength { len: 33 })
        );
        assert_eq!(
            hash_from_slice(&[]).unwrap_err().to_string(),
            "hash must be 32 bytes, got 0"
        );
    }
}
