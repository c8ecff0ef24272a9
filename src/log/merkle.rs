//! Server-side Merkle math of the transparency log (RFC 6962 / RFC 9162).
//!
//! Hashing, roots, inclusion and consistency proofs, and the right-edge
//! frontier for appends, over any storage of perfect-subtree hashes.
//!
//! Storage is abstracted by [`NodeSource`], which hands out the hash of any
//! *perfect* subtree (a power-of-two run of leaves aligned to its size). A tree
//! of `n` leaves splits into at most 64 such subtrees (one per set bit of `n`),
//! and every subtree that RFC 6962 hashes is either perfect or a right-edge
//! run that is a short chain of perfect ones. So every function here reads
//! O(log n) nodes and never walks the leaves.

use sha2::{Digest, Sha256};

/// A SHA-256 digest: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; 32];

/// Hashes one log entry as an RFC 6962 leaf: `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// Hashes two children into their parent: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Root of the empty tree: `SHA-256("")` = `e3b0c442…b855`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Storage of the hashes of *perfect* subtrees: `node(level, index)` is the
/// root of leaves `[index << level, (index + 1) << level)`; level 0 holds the
/// leaf hashes.
pub trait NodeSource {
    /// What the storage returns when it cannot produce a node.
    type Error;
    /// The hash of the perfect subtree at `level` and `index`.
    fn node(&self, level: u8, index: u64) -> Result<Hash, Self::Error>;
}

impl<S: NodeSource + ?Sized> NodeSource for &S {
    type Error = S::Error;
    fn node(&self, level: u8, index: u64) -> Result<Hash, Self::Error> {
        (**self).node(level, index)
    }
}

/// Why a root or proof could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum MerkleError<E> {
    /// The leaf asked for is not in a tree of that size.
    #[error("leaf index {index} is out of range for tree size {size}")]
    IndexOutOfRange {
        /// The leaf index asked for.
        index: u64,
        /// The tree size it was asked against.
        size: u64,
    },
    /// A consistency proof was asked from a larger tree to a smaller one.
    #[error("old tree size {old_size} is larger than new tree size {new_size}")]
    OldLargerThanNew {
        /// The earlier tree size.
        old_size: u64,
        /// The later tree size.
        new_size: u64,
    },
    /// The node storage failed or lacked a node.
    #[error("node storage failed: {0}")]
    Source(E),
}

/// Largest power of two strictly below `n`; `n` must be at least 2.
fn split_point(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// RFC 6962 hash of leaves `[start, end)`, for a range that is a subtree of
/// the RFC tree: perfect, or a right edge whose start is aligned to the
/// largest perfect subtree in it. Reads one node per set bit of `end - start`
/// and folds them from the right.
fn range_hash<S: NodeSource>(start: u64, end: u64, src: &S) -> Result<Hash, MerkleError<S::Error>> {
    let width = end.saturating_sub(start);
    let mut pos = end;
    let mut acc: Option<Hash> = None;
    for level in 0u8..64 {
        let chunk = 1u64 << level;
        if width & chunk == 0 {
            continue;
        }
        pos -= chunk;
        let hash = src.node(level, pos >> level).map_err(MerkleError::Source)?;
        acc = Some(match acc {
            None => hash,
            Some(right) => node_hash(&hash, &right),
        });
    }
    Ok(acc.unwrap_or_else(empty_root))
}

/// Root hash (RFC 6962 MTH) of the first `size` leaves; the empty root for 0.
pub fn root<S: NodeSource>(size: u64, src: &S) -> Result<Hash, MerkleError<S::Error>> {
    range_hash(0, size, src)
}

/// Inclusion proof (RFC 9162 §2.1.3.1 PATH) of leaf `leaf_index` in the tree
/// of the first `size` leaves, ordered from the leaf's sibling up to the
/// root's child.
pub fn inclusion_path<S: NodeSource>(
    leaf_index: u64,
    size: u64,
    src: &S,
) -> Result<Vec<Hash>, MerkleError<S::Error>> {
    if leaf_index >= size {
        return Err(MerkleError::IndexOutOfRange {
            index: leaf_index,
            size,
        });
    }
    // Walk down from the root; only the first step to the left can leave a
    // non-perfect (right-edge) sibling, after which everything is perfect.
    let (mut lo, mut hi) = (0u64, size);
    let mut path = Vec::new();
    while hi - lo > 1 {
        let mid = lo + split_point(hi - lo);
        if leaf_index < mid {
            path.push(range_hash(mid, hi, src)?);
            hi = mid;
        } else {
            path.push(range_hash(lo, mid, src)?);
            lo = mid;
        }
    }
    path.reverse();
    Ok(path)
}

/// Consistency proof (RFC 9162 §2.1.4.1 PROOF) that the tree of `new_size`
/// leaves extends the one of `old_size` leaves. Empty when `old_size` is 0 or
/// equals `new_size`.
pub fn consistency_path<S: NodeSource>(
    old_size: u64,
    new_size: u64,
    src: &S,
) -> Result<Vec<Hash>, MerkleError<S::Error>> {
    if old_size > new_size {
        return Err(MerkleError::OldLargerThanNew { old_size, new_size });
    }
    if old_size == 0 || old_size == new_size {
        return Ok(Vec::new());
    }
    // SUBPROOF(m, D[lo:hi], whole) unrolled: `whole` stays true while the old
    // tree is a left prefix of the current range (its root then is implied).
    let (mut lo, mut hi) = (0u64, new_size);
    let mut whole = true;
    let mut path = Vec::new();
    while old_size != hi {
        let mid = lo + split_point(hi - lo);
        if old_size <= mid {
            path.push(range_hash(mid, hi, src)?);
            hi = mid;
        } else {
            path.push(range_hash(lo, mid, src)?);
            lo = mid;
            whole = false;
        }
    }
    if !whole {
        path.push(range_hash(lo, hi, src)?);
    }
    path.reverse();
    Ok(path)
}

/// Compact range of the tree's right edge: the size and the hashes of the
/// perfect subtrees it decomposes into (largest first, one per set bit of the
/// size, so at most 64). Enough to append leaves and compute the root in
/// O(log n) without storage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    hashes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuild from storage for a tree of `size` leaves by fetching its
    /// O(log n) perfect subtrees.
    pub fn load<S: NodeSource>(size: u64, src: &S) -> Result<Self, MerkleError<S::Error>> {
        let mut hashes = Vec::with_capacity(size.count_ones() as usize);
        let mut start = 0u64;
        for level in (0u8..64).rev() {
            let chunk = 1u64 << level;
            if size & chunk == 0 {
                continue;
            }
            hashes.push(
                src.node(level, start >> level)
                    .map_err(MerkleError::Source)?,
            );
            start += chunk;
        }
        Ok(Self { size, hashes })
    }

    /// Number of leaves in the tree.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash; returns every perfect node newly completed as
    /// `(level, index, hash)`, including the leaf itself at level 0, so the
    /// caller can store them. Ordered by level, lowest first.
    ///
    /// A frontier already holding `u64::MAX` leaves is full: the push is
    /// ignored and nothing is returned.
    pub fn push(&mut self, leaf: Hash) -> Vec<(u8, u64, Hash)> {
        let Some(new_size) = self.size.checked_add(1) else {
            return Vec::new();
        };
        let mut index = self.size;
        let mut level = 0u8;
        let mut hash = leaf;
        let mut done = vec![(level, index, hash)];
        // Each trailing 1 bit of the old size is a left sibling waiting for
        // exactly this right neighbour.
        while index & 1 == 1 {
            let Some(left) = self.hashes.pop() else {
                break; // unreachable: hashes.len() == size.count_ones()
            };
            hash = node_hash(&left, &hash);
            level += 1;
            index >>= 1;
            done.push((level, index, hash));
        }
        self.hashes.push(hash);
        self.size = new_size;
        done
    }

    /// Root hash of the tree; the empty root for size 0.
    pub fn root(&self) -> Hash {
        let mut iter = self.hashes.iter().rev();
        let Some(last) = iter.next() else {
            return empty_root();
        };
        iter.fold(*last, |right, left| node_hash(left, &right))
    }
}

/// A node that a [`MemoryTree`] does not hold (beyond its size, or not a
/// completed perfect subtree yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no stored node at level {level} index {index}")]
pub struct MissingNode {
    /// Level asked for.
    pub level: u8,
    /// Index asked for.
    pub index: u64,
}

/// In-memory [`NodeSource`] keeping every perfect node by level (level 0 is the
/// leaf hashes). The reference storage for tests and benchmarks; it holds the
/// whole tree, so it is not meant for a real log.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| leaves.len() as u64)
    }

    /// Appends a leaf hash and stores every perfect node it completes.
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut level = 0usize;
        loop {
            if self.levels.len() <= level {
                self.levels.push(Vec::new());
            }
            let Some(row) = self.levels.get_mut(level) else {
                return;
            };
            row.push(hash);
            match row.as_slice() {
                [.., left, right] if row.len() % 2 == 0 => hash = node_hash(left, right),
                _ => return,
            }
            level += 1;
        }
    }
}

impl FromIterator<Hash> for MemoryTree {
    fn from_iter<I: IntoIterator<Item = Hash>>(iter: I) -> Self {
        let mut tree = Self::new();
        for leaf in iter {
            tree.push(leaf);
        }
        tree
    }
}

impl NodeSource for MemoryTree {
    type Error = MissingNode;
    fn node(&self, level: u8, index: u64) -> Result<Hash, MissingNode> {
        self.levels
            .get(usize::from(level))
            .and_then(|row| row.get(usize::try_from(index).ok()?))
            .copied()
            .ok_or(MissingNode { level, index })
    }
}

/// Domain-separation prefix of every tree-head signature (SPEC §8).
pub const TREE_HEAD_CONTEXT: &[u8] = b"certex/v1/tree-head\0";

/// The exact bytes the broker signs for a tree head (SPEC §8):
/// `b"certex/v1/tree-head\0" || be64(tree_size) || root_hash (32) || be64(timestamp_ms)`.
/// The client's verifier builds the same bytes on its own
/// (`client::verify::tree_head_message`); a unit test holds them equal.
pub fn tree_head_message(tree_size: u64, root: &Hash, timestamp_ms: u64) -> Vec<u8> {
    let mut msg = Vec::with_capacity(TREE_HEAD_CONTEXT.len() + 8 + 32 + 8);
    msg.extend_from_slice(TREE_HEAD_CONTEXT);
    msg.extend_from_slice(&tree_size.to_be_bytes());
    msg.extend_from_slice(root);
    msg.extend_from_slice(&timestamp_ms.to_be_bytes());
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn h(s: &str) -> Hash {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    // RFC 6962 reference test tree. Leaf inputs, node hashes and roots for
    // sizes 0..=8 are from transparency-dev/merkle testonly/constants.go
    // (LeafInputs, NodeHashes, RootHashes), the same data as
    // google/certificate-transparency's merkle tree tests.
    fn rfc_leaves() -> Vec<Vec<u8>> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|s| hex::decode(s).unwrap())
        .collect()
    }

    const NODE_HASHES: [&[&str]; 4] = [
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
            "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
        ],
        &[
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        ],
        &[
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
        &["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
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

    // Published proofs from transparency-dev/merkle proof/verify_test.go
    // (inclusionProofs / consistencyProofs); there the leaf is numbered from
    // 1, here it is the 0-based index.
    fn published_inclusion() -> Vec<(u64, u64, Vec<Hash>)> {
        vec![
            (0, 1, vec![]),
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
            (1, 1, vec![]),
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

    fn rfc_tree() -> MemoryTree {
        rfc_leaves().iter().map(|d| leaf_hash(d)).collect()
    }

    // --- naive reference: RFC 6962 §2.1 definitions as plain recursion ---

    fn k_of(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    fn mth(d: &[Hash]) -> Hash {
        match d.len() {
            0 => empty_root(),
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
        if m < k {
            let mut p = ref_path(m, &d[..k]);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = ref_path(m - k, &d[k..]);
            p.push(mth(&d[..k]));
            p
        }
    }

    fn ref_subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
        let n = d.len();
        if m == n {
            return if b { vec![] } else { vec![mth(d)] };
        }
        let k = k_of(n);
        if m <= k {
            let mut p = ref_subproof(m, &d[..k], b);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = ref_subproof(m - k, &d[k..], false);
            p.push(mth(&d[..k]));
            p
        }
    }

    fn ref_proof(m: usize, d: &[Hash]) -> Vec<Hash> {
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
    fn empty_root_vector() {
        assert_eq!(empty_root(), h(ROOTS[0]));
        assert_eq!(root(0, &MemoryTree::new()).unwrap(), h(ROOTS[0]));
        assert_eq!(Frontier::new().root(), h(ROOTS[0]));
    }

    #[test]
    fn rfc_node_hashes() {
        let tree = rfc_tree();
        for (level, row) in NODE_HASHES.iter().enumerate() {
            for (index, want) in row.iter().enumerate() {
                assert_eq!(
                    tree.node(level as u8, index as u64).unwrap(),
                    h(want),
                    "node {level}/{index}"
                );
            }
        }
        assert_eq!(tree.node(3, 1), Err(MissingNode { level: 3, index: 1 }));
        assert_eq!(tree.node(4, 0), Err(MissingNode { level: 4, index: 0 }));
    }

    #[test]
    fn rfc_roots_by_size() {
        let tree = rfc_tree();
        let mut frontier = Frontier::new();
        for (size, data) in rfc_leaves().iter().enumerate() {
            frontier.push(leaf_hash(data));
            let want = h(ROOTS[size + 1]);
            assert_eq!(
                root(size as u64 + 1, &tree).unwrap(),
                want,
                "size {}",
                size + 1
            );
            assert_eq!(frontier.root(), want, "frontier size {}", size + 1);
        }
    }

    #[test]
    fn rfc_published_inclusion_proofs() {
        let tree = rfc_tree();
        for (index, size, want) in published_inclusion() {
            assert_eq!(
                inclusion_path(index, size, &tree).unwrap(),
                want,
                "leaf {index} size {size}"
            );
        }
    }

    #[test]
    fn rfc_published_consistency_proofs() {
        let tree = rfc_tree();
        for (old, new, want) in published_consistency() {
            assert_eq!(
                consistency_path(old, new, &tree).unwrap(),
                want,
                "{old} -> {new}"
            );
        }
    }

    // --- exhaustive comparison with the naive reference ---

    #[test]
    fn roots_and_inclusion_match_reference_up_to_64() {
        let leaves = test_leaves(64);
        let tree: MemoryTree = leaves.iter().copied().collect();
        for n in 1..=64usize {
            let d = &leaves[..n];
            assert_eq!(root(n as u64, &tree).unwrap(), mth(d), "root {n}");
            for m in 0..n {
                assert_eq!(
                    inclusion_path(m as u64, n as u64, &tree).unwrap(),
                    ref_path(m, d),
                    "leaf {m} size {n}"
                );
            }
        }
    }

    #[test]
    fn consistency_matches_reference_up_to_64() {
        let leaves = test_leaves(64);
        let tree: MemoryTree = leaves.iter().copied().collect();
        for n in 1..=64usize {
            for m in 0..=n {
                let got = consistency_path(m as u64, n as u64, &tree).unwrap();
                assert_eq!(got, ref_proof(m, &leaves[..n]), "{m} -> {n}");
            }
        }
    }

    #[test]
    fn frontier_push_emits_exactly_the_completed_perfect_nodes() {
        let leaves = test_leaves(64);
        let mut frontier = Frontier::new();
        for (i, leaf) in leaves.iter().enumerate() {
            let got = frontier.push(*leaf);
            let new_size = i + 1;
            let want: Vec<(u8, u64, Hash)> = (0u8..8)
                .filter(|&level| new_size % (1 << level) == 0)
                .map(|level| {
                    let index = (new_size >> level) - 1;
                    let hash = mth(&leaves[index << level..(index + 1) << level]);
                    (level, index as u64, hash)
                })
                .collect();
            assert_eq!(got, want, "push #{i}");
            assert_eq!(frontier.size(), new_size as u64);
            assert_eq!(
                frontier.root(),
                mth(&leaves[..new_size]),
                "root after push #{i}"
            );
        }
    }

    #[test]
    fn frontier_load_equals_pushed() {
        let leaves = test_leaves(64);
        let tree: MemoryTree = leaves.iter().copied().collect();
        let mut pushed = Frontier::new();
        assert_eq!(Frontier::load(0, &tree).unwrap(), pushed);
        for (i, leaf) in leaves.iter().enumerate() {
            pushed.push(*leaf);
            let loaded = Frontier::load(i as u64 + 1, &tree).unwrap();
            assert_eq!(loaded, pushed, "size {}", i + 1);
        }
        // Pushing on a loaded frontier continues the same tree.
        let mut resumed = Frontier::load(37, &tree).unwrap();
        for leaf in &leaves[37..] {
            resumed.push(*leaf);
        }
        assert_eq!(resumed, pushed);
    }

    #[test]
    fn frontier_emitted_nodes_fill_a_store() {
        // What push hands out is exactly what a NodeSource needs: storing it
        // gives the same roots and proofs as the reference tree.
        #[derive(Default)]
        struct Store(std::collections::HashMap<(u8, u64), Hash>);
        impl NodeSource for Store {
            type Error = MissingNode;
            fn node(&self, level: u8, index: u64) -> Result<Hash, MissingNode> {
                self.0
                    .get(&(level, index))
                    .copied()
                    .ok_or(MissingNode { level, index })
            }
        }
        let leaves = test_leaves(300);
        let mut store = Store::default();
        let mut frontier = Frontier::new();
        for leaf in &leaves {
            for (level, index, hash) in frontier.push(*leaf) {
                assert!(
                    store.0.insert((level, index), hash).is_none(),
                    "node {level}/{index} emitted twice"
                );
            }
        }
        assert_eq!(root(300, &store).unwrap(), mth(&leaves));
        assert_eq!(frontier.root(), mth(&leaves));
        for m in [0usize, 1, 100, 255, 256, 299] {
            assert_eq!(
                inclusion_path(m as u64, 300, &store).unwrap(),
                ref_path(m, &leaves)
            );
            assert_eq!(
                consistency_path(m as u64, 300, &store).unwrap(),
                ref_proof(m, &leaves)
            );
        }
    }

    // --- errors ---

    #[test]
    fn bad_arguments_are_errors() {
        let tree = rfc_tree();
        assert!(matches!(
            inclusion_path(8, 8, &tree),
            Err(MerkleError::IndexOutOfRange { index: 8, size: 8 })
        ));
        assert!(matches!(
            inclusion_path(0, 0, &tree),
            Err(MerkleError::IndexOutOfRange { .. })
        ));
        let err = consistency_path(5, 3, &tree).unwrap_err();
        assert!(matches!(
            err,
            MerkleError::OldLargerThanNew {
                old_size: 5,
                new_size: 3
            }
        ));
        assert_eq!(
            err.to_string(),
            "old tree size 5 is larger than new tree size 3"
        );
        assert!(consistency_path(0, 8, &tree).unwrap().is_empty());
        assert!(consistency_path(8, 8, &tree).unwrap().is_empty());
    }

    #[test]
    fn missing_nodes_surface_as_source_errors() {
        let tree = rfc_tree();
        assert!(matches!(
            root(9, &tree),
            Err(MerkleError::Source(MissingNode { level: 0, index: 8 }))
        ));
        assert!(matches!(
            inclusion_path(0, 16, &tree),
            Err(MerkleError::Source(_))
        ));
        assert!(matches!(
            consistency_path(3, 12, &tree),
            Err(MerkleError::Source(_))
        ));
        let err = Frontier::load(9, &tree).unwrap_err();
        assert_eq!(
            err.to_string(),
            "node storage failed: no stored node at level 0 index 8"
        );
    }

    #[test]
    fn full_frontier_ignores_push() {
        let mut f = Frontier {
            size: u64::MAX,
            hashes: vec![[7u8; 32]; 64],
        };
        let before = f.clone();
        assert!(f.push([1u8; 32]).is_empty());
        assert_eq!(f, before);
    }

    // --- cost: O(log n) node reads, never the leaves ---

    /// Hands out made-up hashes for any node and counts the reads.
    struct Counting(Cell<u32>);
    impl NodeSource for Counting {
        type Error = std::convert::Infallible;
        fn node(&self, level: u8, index: u64) -> Result<Hash, Self::Error> {
            self.0.set(self.0.get() + 1);
            let mut data = [0u8; 9];
            data[0] = level;
            data[1..].copy_from_slice(&index.to_be_bytes());
            Ok(leaf_hash(&data))
        }
    }

    #[test]
    fn huge_trees_read_logarithmically_many_nodes() {
        let src = Counting(Cell::new(0));
        let reads = |f: &dyn Fn()| {
            src.0.set(0);
            f();
            src.0.get()
        };
        let sizes = [(1u64 << 40) + 12345, u64::MAX, (1u64 << 63) + 1, 1u64 << 50];
        for size in sizes {
            // A proof has at most 64 elements and a right-edge sibling costs
            // at most 64 more reads.
            assert!(reads(&|| drop(root(size, &src))) <= 64);
            assert!(reads(&|| drop(Frontier::load(size, &src))) <= 64);
            for index in [0, 1, size / 3, size - 2, size - 1] {
                let n = reads(&|| assert!(inclusion_path(index, size, &src).unwrap().len() <= 64));
                assert!(n <= 128, "inclusion {index}/{size}: {n} reads");
            }
            for old in [1, 2, 3, size / 2 + 1, size - 1] {
                let n = reads(&|| assert!(consistency_path(old, size, &src).unwrap().len() <= 65));
                assert!(n <= 130, "consistency {old}->{size}: {n} reads");
            }
        }
        // The frontier of a huge tree matches root() on the same source.
        let size = (1u64 << 40) + 12345;
        assert_eq!(
            Frontier::load(size, &src).unwrap().root(),
            root(size, &src).unwrap()
        );
    }

    #[test]
    fn tree_head_bytes_match_the_independent_verifier() {
        let root = [0xabu8; 32];
        for (size, ts) in [(0, 0), (1, 1_700_000_000_000), (u64::MAX, u64::MAX)] {
            assert_eq!(
                tree_head_message(size, &root, ts),
                crate::client::verify::tree_head_message(size, &root, ts)
            );
        }
    }
}
