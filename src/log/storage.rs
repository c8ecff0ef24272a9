//! The only module that touches sled: the durable log of records, its indexes,
//! the Merkle nodes and the signed tree heads, with a commit that returns only
//! once everything is on the device.
//!
//! Layout: records in an append-only file of frames (`records.log`: le32
//! length, le32 CRC-32 of the payload, the [`StoredRecord`]), the Merkle nodes
//! in an append-only file of 32-byte hashes (`merkle.nodes`, see
//! [`node_position`]), and the indexes and mutable state in one sled tree,
//! keys prefixed by one byte. sled holds no record bodies: its B-tree nodes
//! stay small, so appending rewrites little and its cache holds indexes.
//!
//! | key                               | value                                 |
//! |-----------------------------------|---------------------------------------|
//! | `s`                               | be64(committed log size): the commit point |
//! | `m`                               | be64(leaves whose Merkle nodes are synced) |
//! | `r` be64(seq)                     | be64(frame offset) be32(frame length) |
//! | `i` id 0x00 sender                | be64(seq) be64(received ms) leaf hash (older logs: be64(seq)) |
//! | `l` leaf hash                     | be64(seq)                             |
//! | `h` be64(tree size)               | [`StoredHead`] (prost)                |
//! | `x` be64(target seq)              | be64(seq of the retraction)           |
//! | `k` be64(request seq)             | case state (i32, be)                  |
//! | `u` be64(request seq) be64(seq)   | empty: the case's updates, in order   |
//! | `c` team 0x00 name                | be64(seq): a durable subscription     |
//! | `o` be64(seq)                     | be64(origin seq) origin broker: a record relayed here |
//! | `e` be64(seq)                     | the origin's tlog-proof bundle of a relayed record |
//! | `p` peer                          | be64(position): relay to a peer done up to this seq |
//! | `f` be64(seq) peer                | [`RelayOutcome`]: what became of the record for a peer |
//! | `n` kind peer                     | be64(count) of relay outcomes of that kind per peer |
//!
//! Durability: sled 0.34's `flush()` ends in `sync_file_range`, which does not
//! flush the device's write cache, and its blob files (values over a segment
//! fraction) are written with no sync at all. [`Storage::commit`] therefore
//! flushes sled and then `fdatasync`s the log file and every new blob file (and
//! the blob directory) before it returns. A commit writes and syncs its record
//! frames and Merkle nodes first, then the sled batch: the sled batch (with
//! `s`) is the commit point. On open both files are cut back to the committed
//! size (frames or nodes of a commit that never reached sled), and missing
//! nodes are recomputed from the records' leaf hashes.
//!
//! Space: a 16 MiB `reserve` file (allocated, not sparse) is kept in the data
//! directory; on a device too full to open the database (sled pads its last
//! segment on open) it is released first, so the broker always starts and
//! serves reads; it is taken again once there is room.
//!
//! Merkle nodes are derived data: every leaf hash is in its (synced) record.
//! So the node file is synced only every [`NODE_SYNC_EVERY`] nodes, recording
//! in `m` how many leaves are covered; on open, nodes past `m` are recomputed
//! from the records. A commit costs two `fdatasync`s (records, sled), not three.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use prost::Message;

/// The metric of the commit's device syncs, by file (`records`,
/// `database`); described with the others in `broker::metrics`.
pub const METRIC_FDATASYNC_SECONDS: &str = "certex_fdatasync_duration_seconds";

use crate::log::merkle::{Frontier, Hash, NodeSource};

/// A storage failure; always an internal error for clients.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open database in {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("database error: {0}")]
    Sled(#[from] sled::Error),
    #[error("cannot sync {path} to the device: {source}")]
    Sync {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt database entry {key}: {message}")]
    Corrupt { key: String, message: String },
}

type Result<T> = std::result::Result<T, StorageError>;

/// A record as stored: the envelope bytes exactly as logged, plus what the
/// broker learned when accepting it.
#[derive(Clone, PartialEq, Message)]
pub struct StoredRecord {
    #[prost(uint64, tag = "1")]
    pub received_at_ms: u64,
    #[prost(bytes = "vec", tag = "2")]
    pub leaf_hash: Vec<u8>,
    /// The encoded `Envelope` (see `envelope::log_bytes`).
    #[prost(bytes = "bytes", tag = "3")]
    pub envelope: bytes::Bytes,
    /// Teams that may read the record beyond its audience (a case's requester).
    #[prost(string, repeated, tag = "4")]
    pub also_readers: Vec<String>,
}

/// A signed tree head as stored.
#[derive(Clone, PartialEq, Message)]
pub struct StoredHead {
    #[prost(uint64, tag = "1")]
    pub tree_size: u64,
    #[prost(bytes = "vec", tag = "2")]
    pub root_hash: Vec<u8>,
    #[prost(uint64, tag = "3")]
    pub timestamp_ms: u64,
    #[prost(bytes = "vec", tag = "4")]
    pub signature: Vec<u8>,
}

fn seq_key(prefix: u8, seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn id_key(id: &str, sender: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + id.len() + sender.len());
    k.push(b'i');
    k.extend_from_slice(id.as_bytes());
    k.push(0);
    k.extend_from_slice(sender.as_bytes());
    k
}

fn leaf_key(hash: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(33);
    k.push(b'l');
    k.extend_from_slice(hash);
    k
}

fn cursor_key(team: &str, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + team.len() + name.len());
    k.push(b'c');
    k.extend_from_slice(team.as_bytes());
    k.push(0);
    k.extend_from_slice(name.as_bytes());
    k
}

/// Number of perfect-subtree nodes (leaves included) in a tree of `leaves`
/// leaves: what the node file holds for that size.
fn nodes_for(leaves: u64) -> u64 {
    2 * leaves - u64::from(leaves.count_ones())
}

/// Where node `(level, index)` sits in the node file, counted in hashes.
///
/// Nodes are appended in the order [`Frontier::push`] completes them: when
/// the tree reaches `m = (index + 1) << level` leaves, the nodes of every
/// smaller tree are already there, and this push emits levels `0..=level`,
/// lowest first.
fn node_position(level: u8, index: u64) -> u64 {
    let m = (index + 1) << level;
    nodes_for(m - 1) + u64::from(level)
}

fn be64(key: &[u8], v: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(v)
        .map(u64::from_be_bytes)
        .map_err(|_| StorageError::Corrupt {
            key: hex::encode(key),
            message: format!("expected 8 bytes, found {}", v.len()),
        })
}

/// Writes gathered for one atomic commit.
#[derive(Default)]
pub struct WriteBatch {
    batch: sled::Batch,
    ops: usize,
    keys: usize,
    /// Position of the first node in `nodes`, and whether every later one
    /// followed it without a gap.
    nodes_start: Option<u64>,
    nodes_contiguous: bool,
    nodes: Vec<u8>,
    /// Leaves in the tree once this batch's nodes are in.
    leaves_after: Option<u64>,
    retractions: Vec<(u64, u64)>,
    /// Framed records, and the seq of the first.
    first_seq: Option<u64>,
    frames: Vec<u8>,
    frame_lens: Vec<u32>,
}

impl WriteBatch {
    /// Appends record `seq`, its `(id, sender)` and leaf-hash index entries.
    /// Records must come in seq order, continuing the log.
    pub fn put_record(&mut self, seq: u64, id: &str, sender: &str, rec: &StoredRecord) {
        let first = *self.first_seq.get_or_insert(seq);
        let payload = rec.encode_to_vec();
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        if seq == first + self.frame_lens.len() as u64 {
            self.frames.extend_from_slice(&len.to_le_bytes());
            self.frames
                .extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            self.frames.extend_from_slice(&payload);
            self.frame_lens.push(len + FRAME_HEADER as u32);
        } else {
            // Out of order: poison the batch; commit refuses it.
            self.frame_lens.push(0);
        }
        // The index answers a retry by itself: seq, time and leaf hash.
        let mut logged = Vec::with_capacity(48);
        logged.extend_from_slice(&seq.to_be_bytes());
        logged.extend_from_slice(&rec.received_at_ms.to_be_bytes());
        logged.extend_from_slice(&rec.leaf_hash);
        self.batch.insert(id_key(id, sender), logged);
        self.batch
            .insert(leaf_key(&rec.leaf_hash), &seq.to_be_bytes());
        self.ops += 1;
        self.keys += 3;
    }

    /// Appends a perfect-subtree node; nodes must come in the order
    /// [`Frontier::push`] completes them, continuing the stored tree.
    pub fn put_node(&mut self, level: u8, index: u64, hash: &Hash) {
        let pos = node_position(level, index);
        match self.nodes_start {
            None => {
                self.nodes_start = Some(pos);
                self.nodes_contiguous = true;
            }
            Some(start) => {
                self.nodes_contiguous &= pos == start + (self.nodes.len() / 32) as u64;
            }
        }
        self.nodes.extend_from_slice(hash);
        if level == 0 {
            self.leaves_after = Some(index + 1);
        }
        self.ops += 1;
    }

    pub fn put_head(&mut self, head: &StoredHead) {
        self.batch
            .insert(&seq_key(b'h', head.tree_size), head.encode_to_vec());
        self.ops += 1;
        self.keys += 1;
    }

    /// Marks record `target` as retracted by record `by`.
    pub fn put_retraction(&mut self, target: u64, by: u64) {
        self.batch.insert(&seq_key(b'x', target), &by.to_be_bytes());
        self.retractions.push((target, by));
        self.keys += 1;
    }

    /// Sets the state of the case opened by record `request`.
    pub fn put_case_state(&mut self, request: u64, state: i32) {
        self.batch
            .insert(&seq_key(b'k', request), &state.to_be_bytes());
        self.keys += 1;
    }

    /// Files update record `update` under the case opened by record `request`.
    pub fn put_case_update(&mut self, request: u64, update: u64) {
        let mut k = Vec::with_capacity(17);
        k.extend_from_slice(&seq_key(b'u', request));
        k.extend_from_slice(&update.to_be_bytes());
        self.batch.insert(k, &[]);
        self.keys += 1;
    }

    /// Sets the durable cursor `name` of `team` to `seq`.
    pub fn put_cursor(&mut self, team: &str, name: &str, seq: u64) {
        self.batch
            .insert(cursor_key(team, name), &seq.to_be_bytes());
        self.keys += 1;
    }

    /// Keeps the origin's tlog-proof bundle of relayed record `seq`.
    pub fn put_origin_proof(&mut self, seq: u64, proof: &str) {
        self.batch.insert(&seq_key(b'e', seq), proof.as_bytes());
        self.keys += 1;
    }

    /// Notes that record `seq` was relayed here by `broker`, where it is
    /// record `origin_seq`.
    pub fn put_origin(&mut self, seq: u64, broker: &str, origin_seq: u64) {
        let mut v = origin_seq.to_be_bytes().to_vec();
        v.extend_from_slice(broker.as_bytes());
        self.batch.insert(&seq_key(b'o', seq), v);
        self.keys += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.ops == 0
    }
}

/// What became of a record for one federation peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayOutcome {
    /// In the peer's log under this seq.
    Relayed(u64),
    /// Kept back by this broker's egress policy, and why.
    Withheld(String),
    /// Refused by the peer, and why.
    Refused(String),
}

impl RelayOutcome {
    fn tag(&self) -> u8 {
        match self {
            RelayOutcome::Relayed(_) => b'r',
            RelayOutcome::Withheld(_) => b'w',
            RelayOutcome::Refused(_) => b'x',
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = vec![self.tag()];
        match self {
            RelayOutcome::Relayed(seq) => v.extend_from_slice(&seq.to_be_bytes()),
            RelayOutcome::Withheld(why) | RelayOutcome::Refused(why) => {
                v.extend_from_slice(why.as_bytes())
            }
        }
        v
    }

    fn decode(key: &[u8], v: &[u8]) -> Result<Self> {
        let text = || String::from_utf8_lossy(&v[1..]).into_owned();
        match v.first() {
            Some(b'r') => Ok(RelayOutcome::Relayed(be64(key, &v[1..])?)),
            Some(b'w') => Ok(RelayOutcome::Withheld(text())),
            Some(b'x') => Ok(RelayOutcome::Refused(text())),
            _ => Err(StorageError::Corrupt {
                key: hex::encode(key),
                message: "unknown relay outcome".into(),
            }),
        }
    }
}

/// Relay outcomes counted per peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayCounts {
    pub relayed: u64,
    pub withheld: u64,
    pub refused: u64,
}

fn outcome_key(seq: u64, peer: &str) -> Vec<u8> {
    let mut k = seq_key(b'f', seq).to_vec();
    k.extend_from_slice(peer.as_bytes());
    k
}

fn count_key(tag: u8, peer: &str) -> Vec<u8> {
    let mut k = vec![b'n', tag];
    k.extend_from_slice(peer.as_bytes());
    k
}

/// What the `(id, sender)` index says about a logged message.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    pub seq: u64,
    /// When it was received and its leaf hash (absent in entries written
    /// before the index carried them).
    pub receipt: Option<(u64, Vec<u8>)>,
}

fn decode_logged(key: &[u8], v: &[u8]) -> Result<Logged> {
    match v.len() {
        8 => Ok(Logged {
            seq: be64(key, v)?,
            receipt: None,
        }),
        48 => Ok(Logged {
            seq: be64(key, &v[..8])?,
            receipt: Some((be64(key, &v[8..16])?, v[16..].to_vec())),
        }),
        n => Err(StorageError::Corrupt {
            key: hex::encode(key),
            message: format!("expected 8 or 48 bytes, found {n}"),
        }),
    }
}

/// sled's segment size: opening the database pads its last segment to this
/// size, so opening may need up to this much free space.
const SEGMENT_SIZE: usize = 8 * 1024 * 1024;

/// Most bytes read from the record file at once when scanning.
const SPAN_BYTES: usize = 256 * 1024;

/// The reserve file: space held back so the broker can always open, even
/// on a device something else filled up.
const RESERVE_FILE: &str = "reserve";
const RESERVE_BYTES: u64 = 2 * SEGMENT_SIZE as u64;

fn free_in(dir: &Path) -> Option<u64> {
    rustix::fs::statvfs(dir)
        .ok()
        .map(|st| st.f_bavail.saturating_mul(st.f_frsize))
}

/// Before opening: on a device too full to open the database (sled pads
/// its last segment), give back the reserve.
fn release_reserve_if_full(dir: &Path) {
    let reserve = dir.join(RESERVE_FILE);
    if reserve.exists() && free_in(dir).is_some_and(|f| f < RESERVE_BYTES) {
        match fs::remove_file(&reserve) {
            Ok(()) => tracing::warn!(
                path = %reserve.display(),
                bytes = RESERVE_BYTES,
                "the disk is full: released the space reserve so the broker can open; \
                 publishing stays refused until space is freed"
            ),
            Err(e) => {
                tracing::warn!(path = %reserve.display(), error = %e, "cannot release the space reserve")
            }
        }
    }
}

/// After opening: hold the reserve again if there is ample room for it.
fn keep_reserve(dir: &Path) {
    let reserve = dir.join(RESERVE_FILE);
    if reserve.exists() || free_in(dir).is_none_or(|f| f < 2 * RESERVE_BYTES) {
        return;
    }
    let made = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&reserve)
        .and_then(|f| {
            // Allocated, not sparse: the space is really held.
            rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, RESERVE_BYTES)?;
            f.sync_all()
        });
    if let Err(e) = made {
        let _ = fs::remove_file(&reserve);
        tracing::warn!(path = %reserve.display(), error = %e, "cannot hold a space reserve");
    }
}

/// Merkle nodes written between two syncs of the node file (about half as
/// many leaves): what recovery may have to recompute.
const NODE_SYNC_EVERY: u64 = 8192;

/// Frame header: le32 payload length, le32 CRC-32 of the payload.
const FRAME_HEADER: usize = 8;

/// The append-only file of record frames.
struct RecordFile {
    path: PathBuf,
    file: File,
    /// Committed log size and the end of its last frame.
    end: Mutex<(u64, u64)>,
}

/// The append-only file of Merkle node hashes.
struct NodeFile {
    path: PathBuf,
    file: File,
    /// Hashes written and covered by a sled commit.
    count: AtomicU64,
    /// Hashes known to be on the device.
    synced: AtomicU64,
}

/// The broker's database.
pub struct Storage {
    dir: PathBuf,
    db: sled::Db,
    log_file: File,
    records: RecordFile,
    nodes: NodeFile,
    /// Every retraction mark (`x` keys), in memory: each delivered record
    /// asks, and there are few.
    retractions: RwLock<HashMap<u64, u64>>,
    synced_blobs: Mutex<HashSet<std::ffi::OsString>>,
}

impl Storage {
    /// Opens (or creates, owner-only) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StorageError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        restrict(dir, 0o700);
        release_reserve_if_full(dir);
        let db = sled::Config::new()
            .path(dir)
            // sled holds only small index entries now; 8 MiB segments keep
            // the occasional large case-state or head value out of blob files.
            .segment_size(SEGMENT_SIZE)
            // sled counts its cache by serialized size; nodes of many small
            // keys take several times that in memory (64 MiB measured as
            // ~250 MiB RSS after 350k records, 16 MiB plateaus near 110 MiB).
            .cache_capacity(16 * 1024 * 1024)
            .flush_every_ms(None)
            .open()
            .map_err(|source| StorageError::Open {
                path: dir.to_owned(),
                source,
            })?;
        let log_path = dir.join("db");
        let log_file = File::open(&log_path).map_err(|source| StorageError::Sync {
            path: log_path.clone(),
            source,
        })?;
        let open_file = |name: &str| {
            let path = dir.join(name);
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map(|f| (path.clone(), f))
                .map_err(|source| StorageError::Io { path, source })
        };
        let (nodes_path, nodes_file) = open_file("merkle.nodes")?;
        let (records_path, records_file) = open_file("records.log")?;
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            let mode = if entry.path().is_dir() { 0o700 } else { 0o600 };
            restrict(&entry.path(), mode);
        }
        sync_dir(dir)?;
        let storage = Storage {
            dir: dir.to_owned(),
            db,
            log_file,
            records: RecordFile {
                path: records_path,
                file: records_file,
                end: Mutex::new((0, 0)),
            },
            nodes: NodeFile {
                path: nodes_path,
                file: nodes_file,
                count: AtomicU64::new(0),
                synced: AtomicU64::new(0),
            },
            synced_blobs: Mutex::new(HashSet::new()),
            retractions: RwLock::new(HashMap::new()),
        };
        storage.recover_records()?;
        storage.recover_nodes()?;
        keep_reserve(dir);
        let marks = storage
            .db
            .scan_prefix([b'x'])
            .map(|kv| {
                let (k, v) = kv?;
                Ok((be64(&k, &k[1..])?, be64(&k, &v)?))
            })
            .collect::<Result<HashMap<u64, u64>>>()?;
        *storage
            .retractions
            .write()
            .unwrap_or_else(|p| p.into_inner()) = marks;
        Ok(storage)
    }

    /// Cuts the record file back to the committed log: frames of a commit
    /// that never reached sled are dropped.
    fn recover_records(&self) -> Result<()> {
        if self.db.get(b"s")?.is_none() && self.db.scan_prefix([b'r']).next().is_some() {
            return Err(StorageError::Corrupt {
                key: "s".into(),
                message: format!(
                    "{} holds records in the format of an earlier certex (inside sled); \
                     start from a new data directory",
                    self.dir.display()
                ),
            });
        }
        let size = self.stored_size()?;
        let end = if size == 0 {
            0
        } else {
            let (offset, len) = self.frame_of(size)?.ok_or_else(|| StorageError::Corrupt {
                key: format!("record {size}"),
                message: "the last committed record has no index entry".into(),
            })?;
            offset + u64::from(len)
        };
        let io = |source| StorageError::Io {
            path: self.records.path.clone(),
            source,
        };
        let have = self.records.file.metadata().map_err(io)?.len();
        if have < end {
            return Err(StorageError::Corrupt {
                key: "records.log".into(),
                message: format!(
                    "{have} bytes, but the committed log of {size} records ends at byte {end}"
                ),
            });
        }
        if have > end {
            tracing::warn!(
                bytes = have - end,
                "dropping record frames of a commit that did not complete"
            );
            self.records.file.set_len(end).map_err(io)?;
            self.records
                .file
                .sync_data()
                .map_err(|source| StorageError::Sync {
                    path: self.records.path.clone(),
                    source,
                })?;
        }
        *self.records.end.lock().unwrap_or_else(|p| p.into_inner()) = (size, end);
        Ok(())
    }

    fn stored_size(&self) -> Result<u64> {
        Ok(self
            .db
            .get(b"s")?
            .map(|v| be64(b"s", &v))
            .transpose()?
            .unwrap_or(0))
    }

    /// Offset and length of record `seq`'s frame.
    fn frame_of(&self, seq: u64) -> Result<Option<(u64, u32)>> {
        let key = seq_key(b'r', seq);
        match self.db.get(key)? {
            None => Ok(None),
            Some(v) if v.len() == 12 => Ok(Some((
                u64::from_be_bytes(v[..8].try_into().unwrap_or_default()),
                u32::from_be_bytes(v[8..].try_into().unwrap_or_default()),
            ))),
            Some(v) => Err(StorageError::Corrupt {
                key: format!("record {seq}"),
                message: format!("index entry of {} bytes, expected 12", v.len()),
            }),
        }
    }

    /// Appends a batch's record frames, indexes them in the batch, and syncs
    /// the file; returns the new (size, end) to publish once sled committed.
    fn write_records(&self, batch: &mut WriteBatch) -> Result<Option<(u64, u64)>> {
        let Some(first) = batch.first_seq else {
            return Ok(None);
        };
        let (size, end) = *self.records.end.lock().unwrap_or_else(|p| p.into_inner());
        if first != size + 1 || batch.frame_lens.contains(&0) {
            return Err(StorageError::Corrupt {
                key: "records.log".into(),
                message: format!(
                    "records must continue the log: {size} stored, batch starts at {first}"
                ),
            });
        }
        self.records
            .file
            .write_all_at(&batch.frames, end)
            .and_then(|()| {
                let start = std::time::Instant::now();
                let r = self.records.file.sync_data();
                metrics::histogram!(METRIC_FDATASYNC_SECONDS, "file" => "records")
                    .record(start.elapsed().as_secs_f64());
                r
            })
            .map_err(|source| StorageError::Sync {
                path: self.records.path.clone(),
                source,
            })?;
        let mut offset = end;
        for (i, len) in batch.frame_lens.iter().enumerate() {
            let mut v = [0u8; 12];
            v[..8].copy_from_slice(&offset.to_be_bytes());
            v[8..].copy_from_slice(&len.to_be_bytes());
            batch.batch.insert(&seq_key(b'r', first + i as u64), &v);
            offset += u64::from(*len);
        }
        let new_size = first + batch.frame_lens.len() as u64 - 1;
        batch.batch.insert(b"s", &new_size.to_be_bytes());
        Ok(Some((new_size, offset)))
    }

    /// Records `first..=last` (all committed) with one read.
    /// The last seq of a span from `first` of at most [`SPAN_BYTES`] (at
    /// least `first` itself), not past `last`.
    fn span_end(&self, first: u64, last: u64) -> Result<u64> {
        let mut bytes = 0u64;
        let mut end = first;
        for seq in first..=last {
            let Some((_, len)) = self.frame_of(seq)? else {
                break;
            };
            bytes += u64::from(len);
            if bytes > SPAN_BYTES as u64 && seq > first {
                break;
            }
            end = seq;
        }
        Ok(end)
    }

    /// Reads records `first..=last` with one read. Each record of a span of
    /// several gets its own copy of its bytes, so a record kept (in a
    /// subscriber's queue, say) never pins the whole span.
    fn read_span(&self, first: u64, last: u64) -> Result<Vec<Result<(u64, StoredRecord)>>> {
        let missing = |seq: u64| StorageError::Corrupt {
            key: format!("record {seq}"),
            message: "committed but not indexed".into(),
        };
        let (start, _) = self.frame_of(first)?.ok_or_else(|| missing(first))?;
        let (end, len) = self.frame_of(last)?.ok_or_else(|| missing(last))?;
        let mut buf = vec![0u8; (end + u64::from(len)).saturating_sub(start) as usize];
        self.records
            .file
            .read_exact_at(&mut buf, start)
            .map_err(|source| StorageError::Io {
                path: self.records.path.clone(),
                source,
            })?;
        let buf = bytes::Bytes::from(buf);
        let mut out = Vec::with_capacity((last - first + 1) as usize);
        let mut at = 0usize;
        for seq in first..=last {
            match decode_frame(seq, &buf.slice(at.min(buf.len())..)) {
                Ok((mut rec, used)) => {
                    at += used;
                    if first != last {
                        rec.envelope = bytes::Bytes::copy_from_slice(&rec.envelope);
                    }
                    out.push(Ok((seq, rec)));
                }
                Err(e) => {
                    out.push(Err(e));
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Brings the node file to exactly the committed tree: nodes written by
    /// a commit that never reached sled are cut off; missing ones (a file
    /// lost, or a database from before the node file) are recomputed from
    /// the leaf hashes in the records.
    fn recover_nodes(&self) -> Result<()> {
        let size = self.last_seq()?;
        let want = nodes_for(size);
        let io = |source| StorageError::Io {
            path: self.nodes.path.clone(),
            source,
        };
        let have = self.nodes.file.metadata().map_err(io)?.len() / 32;
        let synced = self
            .db
            .get(b"m")?
            .map(|v| be64(b"m", &v))
            .transpose()?
            .unwrap_or(0);
        // The largest tree whose nodes are all in the file and were synced.
        let (mut lo, mut hi) = (0u64, size.min(synced));
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if nodes_for(mid) <= have {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let complete = lo;
        if have != nodes_for(complete) || complete < size || have > want {
            self.nodes
                .file
                .set_len(nodes_for(complete) * 32)
                .map_err(io)?;
        }
        self.nodes
            .count
            .store(nodes_for(complete), Ordering::Release);
        if complete < size {
            if complete >= size.min(synced) {
                // Nodes written after the last sync of the node file: a
                // process that stopped without closing the log (a crash, a
                // kill) leaves these, by design.
                tracing::info!(
                    from = complete,
                    to = size,
                    "completing the Merkle nodes written since their last sync"
                );
            } else {
                tracing::warn!(
                    from = complete,
                    to = size,
                    synced,
                    "Merkle nodes recorded as synced are missing; recomputing them from the records' leaf hashes"
                );
            }
            let mut frontier =
                Frontier::load(complete, self).map_err(|e| StorageError::Corrupt {
                    key: "merkle.nodes".into(),
                    message: e.to_string(),
                })?;
            let mut batch = WriteBatch::default();
            for seq in complete + 1..=size {
                let rec = self.record(seq)?.ok_or_else(|| StorageError::Corrupt {
                    key: format!("record {seq}"),
                    message: "missing below the log size".into(),
                })?;
                let leaf = Hash::try_from(rec.leaf_hash.as_slice()).map_err(|_| {
                    StorageError::Corrupt {
                        key: format!("record {seq}"),
                        message: "leaf hash is not 32 bytes".into(),
                    }
                })?;
                for (level, index, hash) in frontier.push(leaf) {
                    batch.put_node(level, index, &hash);
                }
                if batch.nodes.len() >= 1 << 20 || seq == size {
                    self.write_nodes(&mut std::mem::take(&mut batch))?;
                }
            }
        }
        self.mark_nodes_synced(size, synced != size)
    }

    /// Syncs the node file, which holds exactly the nodes of a tree of
    /// `size` leaves, and, if `record`, notes in `m` that they are synced.
    fn mark_nodes_synced(&self, size: u64, record: bool) -> Result<()> {
        self.nodes
            .file
            .sync_data()
            .map_err(|source| StorageError::Sync {
                path: self.nodes.path.clone(),
                source,
            })?;
        if record {
            self.db.insert(b"m", &size.to_be_bytes())?;
            self.sync()?;
        }
        self.nodes.synced.store(nodes_for(size), Ordering::Release);
        Ok(())
    }

    /// Syncs the Merkle node file and records that it covers the whole
    /// committed tree, so the next open has nothing to recompute: the last
    /// step of a clean shutdown, run by the log writer after its last group.
    pub fn sync_nodes(&self) -> Result<()> {
        let size = self.last_seq()?;
        let count = self.nodes.count.load(Ordering::Acquire);
        if count != nodes_for(size) {
            return Err(StorageError::Corrupt {
                key: "merkle.nodes".into(),
                message: format!("{count} nodes for a tree of {size} leaves"),
            });
        }
        self.mark_nodes_synced(size, true)
    }

    /// Appends a batch's nodes to the node file, syncing it (and noting that
    /// in the batch) once [`NODE_SYNC_EVERY`] nodes are unsynced; they count
    /// as committed from here on (the caller commits the sled batch next, or
    /// stops the process if it cannot).
    fn write_nodes(&self, batch: &mut WriteBatch) -> Result<()> {
        let Some(start) = batch.nodes_start else {
            return Ok(());
        };
        let count = self.nodes.count.load(Ordering::Acquire);
        if start != count || !batch.nodes_contiguous {
            return Err(StorageError::Corrupt {
                key: "merkle.nodes".into(),
                message: format!(
                    "nodes must continue the stored tree: {count} stored, batch starts at {start}"
                ),
            });
        }
        let end = start + (batch.nodes.len() / 32) as u64;
        let sync = end - self.nodes.synced.load(Ordering::Acquire) >= NODE_SYNC_EVERY;
        self.nodes
            .file
            .write_all_at(&batch.nodes, start * 32)
            .and_then(|()| {
                if sync {
                    self.nodes.file.sync_data()
                } else {
                    Ok(())
                }
            })
            .map_err(|source| StorageError::Sync {
                path: self.nodes.path.clone(),
                source,
            })?;
        if let (true, Some(leaves)) = (sync, batch.leaves_after) {
            batch.batch.insert(b"m", &leaves.to_be_bytes());
            self.nodes.synced.store(end, Ordering::Release);
        }
        self.nodes.count.store(end, Ordering::Release);
        Ok(())
    }

    /// Applies a batch atomically and returns once it is on the device.
    pub fn commit(&self, mut batch: WriteBatch) -> Result<()> {
        let appended = self.write_records(&mut batch)?;
        self.write_nodes(&mut batch)?;
        let keys = batch.keys;
        self.db.apply_batch(batch.batch)?;
        drain_deferred_frees(keys);
        self.sync()?;
        if let Some(end) = appended {
            *self.records.end.lock().unwrap_or_else(|p| p.into_inner()) = end;
        }
        if !batch.retractions.is_empty() {
            self.retractions
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .extend(batch.retractions);
        }
        Ok(())
    }

    /// Moves the durable cursor `name` of `team` forward to `seq` (never
    /// back) and returns its position once that is on the device.
    pub fn advance_cursor(&self, team: &str, name: &str, seq: u64) -> Result<u64> {
        let key = cursor_key(team, name);
        let stored = self.db.update_and_fetch(&key, |old| {
            let old = old
                .and_then(|v| <[u8; 8]>::try_from(v).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            Some(old.max(seq).to_be_bytes().to_vec())
        })?;
        self.sync()?;
        stored
            .map(|v| be64(&key, &v))
            .transpose()
            .map(|v| v.unwrap_or(seq))
    }

    /// How many durable cursors `team` has, and whether `name` is one of them.
    pub fn cursor_names(&self, team: &str, name: &str) -> Result<(usize, bool)> {
        let prefix = cursor_key(team, "");
        let mut count = 0;
        for kv in self.db.scan_prefix(&prefix) {
            let (k, _) = kv?;
            if &k[prefix.len()..] == name.as_bytes() {
                return Ok((count, true));
            }
            count += 1;
        }
        Ok((count, false))
    }

    /// Free bytes on the device holding the data directory, for an
    /// unprivileged writer.
    pub fn free_bytes(&self) -> std::io::Result<u64> {
        let st = rustix::fs::statvfs(&self.dir)?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }

    /// The position of the durable cursor `name` of `team` (0 if never committed).
    pub fn cursor(&self, team: &str, name: &str) -> Result<u64> {
        let key = cursor_key(team, name);
        Ok(self
            .db
            .get(&key)?
            .map(|v| be64(&key, &v))
            .transpose()?
            .unwrap_or(0))
    }

    /// Flushes sled and syncs its files to the device.
    fn sync(&self) -> Result<()> {
        let start = std::time::Instant::now();
        let r = self.sync_database();
        metrics::histogram!(METRIC_FDATASYNC_SECONDS, "file" => "database")
            .record(start.elapsed().as_secs_f64());
        r
    }

    /// Flushes sled and fdatasyncs its log file and new blob files.
    fn sync_database(&self) -> Result<()> {
        self.db.flush()?;
        self.log_file
            .sync_data()
            .map_err(|source| StorageError::Sync {
                path: self.dir.join("db"),
                source,
            })?;
        self.sync_new_blobs()
    }

    /// fdatasyncs blob files sled wrote since the last commit (sled writes
    /// them without any sync), then the blob directory itself.
    fn sync_new_blobs(&self) -> Result<()> {
        let blobs = self.dir.join("blobs");
        let Ok(entries) = fs::read_dir(&blobs) else {
            return Ok(());
        };
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut present = HashSet::new();
        let mut any_new = false;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !synced.contains(&name) {
                let path = entry.path();
                let f = File::open(&path).map_err(|source| StorageError::Sync {
                    path: path.clone(),
                    source,
                })?;
                f.sync_data()
                    .map_err(|source| StorageError::Sync { path, source })?;
                any_new = true;
            }
            present.insert(name);
        }
        if any_new {
            sync_dir(&blobs)?;
        }
        *synced = present;
        Ok(())
    }

    /// The highest seq in the log (0 when empty).
    pub fn last_seq(&self) -> Result<u64> {
        Ok(self.records.end.lock().unwrap_or_else(|p| p.into_inner()).0)
    }

    pub fn record(&self, seq: u64) -> Result<Option<StoredRecord>> {
        if seq == 0 || seq > self.last_seq()? {
            return Ok(None);
        }
        let mut span = self.read_span(seq, seq)?;
        match span.pop() {
            Some(r) => r.map(|(_, rec)| Some(rec)),
            None => Ok(None),
        }
    }

    /// Committed records in `[from, to]` in seq order, read in spans of at
    /// most 256 records and [`SPAN_BYTES`] (one record when it is larger).
    pub fn records(
        &self,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = Result<(u64, StoredRecord)>> + '_ {
        let to = to.min(self.last_seq().unwrap_or(0));
        let mut next = from.max(1);
        let mut pending: std::vec::IntoIter<Result<(u64, StoredRecord)>> = Vec::new().into_iter();
        let mut failed = false;
        std::iter::from_fn(move || {
            loop {
                if let Some(item) = pending.next() {
                    failed |= item.is_err();
                    return Some(item);
                }
                if failed || next > to {
                    return None;
                }
                let last = match self.span_end(next, to.min(next + 255)) {
                    Ok(last) => last,
                    Err(e) => {
                        failed = true;
                        return Some(Err(e));
                    }
                };
                pending = self
                    .read_span(next, last)
                    .unwrap_or_else(|e| vec![Err(e)])
                    .into_iter();
                next = last + 1;
            }
        })
    }

    /// The seq of `sender`'s message `id`.
    pub fn seq_of(&self, id: &str, sender: &str) -> Result<Option<u64>> {
        Ok(self.logged(id, sender)?.map(|l| l.seq))
    }

    /// What the index holds for `sender`'s message `id`: enough to answer a
    /// retry without reading the record.
    pub fn logged(&self, id: &str, sender: &str) -> Result<Option<Logged>> {
        let key = id_key(id, sender);
        self.db
            .get(&key)?
            .map(|v| decode_logged(&key, &v))
            .transpose()
    }

    /// Every `(sender, seq)` holding message id `id`, in sender order.
    pub fn seqs_of_id(&self, id: &str) -> Result<Vec<(String, u64)>> {
        let prefix = id_key(id, "");
        let plen = prefix.len();
        self.db
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, v) = kv?;
                let sender = String::from_utf8_lossy(&k[plen..]).into_owned();
                Ok((sender, decode_logged(&k, &v)?.seq))
            })
            .collect()
    }

    pub fn seq_of_leaf(&self, leaf_hash: &[u8]) -> Result<Option<u64>> {
        let key = leaf_key(leaf_hash);
        self.db.get(&key)?.map(|v| be64(&key, &v)).transpose()
    }

    /// The seq of the retraction of record `seq`, if it was retracted.
    pub fn retraction_of(&self, seq: u64) -> Result<Option<u64>> {
        Ok(self
            .retractions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&seq)
            .copied())
    }

    /// The stored state of the case opened by record `request` (`None`: open).
    pub fn case_state(&self, request: u64) -> Result<Option<i32>> {
        let key = seq_key(b'k', request);
        match self.db.get(key)? {
            None => Ok(None),
            Some(v) => <[u8; 4]>::try_from(v.as_ref())
                .map(|b| Some(i32::from_be_bytes(b)))
                .map_err(|_| StorageError::Corrupt {
                    key: format!("case state {request}"),
                    message: format!("expected 4 bytes, found {}", v.len()),
                }),
        }
    }

    /// Every case opened after record `after` as (request seq, state), oldest
    /// first, read lazily: a page of cases stops reading where it stops.
    pub fn cases_after(&self, after: u64) -> impl Iterator<Item = Result<(u64, i32)>> + '_ {
        let from = after.checked_add(1).map(|s| seq_key(b'k', s));
        from.map(|from| self.db.range(from..=seq_key(b'k', u64::MAX)))
            .into_iter()
            .flatten()
            .map(|kv| {
                let (k, v) = kv?;
                let seq = be64(&k, &k[1..])?;
                let state = <[u8; 4]>::try_from(v.as_ref())
                    .map(i32::from_be_bytes)
                    .map_err(|_| StorageError::Corrupt {
                        key: format!("case state {seq}"),
                        message: format!("expected 4 bytes, found {}", v.len()),
                    })?;
                Ok((seq, state))
            })
    }

    /// Seqs of the updates of the case opened by record `request` that come
    /// after record `after`, in order, read lazily from either end.
    pub fn case_updates_after(
        &self,
        request: u64,
        after: u64,
    ) -> impl DoubleEndedIterator<Item = Result<u64>> + '_ {
        let key = |update: u64| {
            let mut k = [0u8; 17];
            k[..9].copy_from_slice(&seq_key(b'u', request));
            k[9..].copy_from_slice(&update.to_be_bytes());
            k
        };
        after
            .checked_add(1)
            .map(|from| self.db.range(key(from)..=key(u64::MAX)))
            .into_iter()
            .flatten()
            .map(|kv| {
                let (k, _) = kv?;
                be64(&k, &k[9..])
            })
    }

    pub fn head(&self, tree_size: u64) -> Result<Option<StoredHead>> {
        self.db
            .get(seq_key(b'h', tree_size))?
            .map(|v| decode_head(&v))
            .transpose()
    }

    /// The head of the largest signed tree.
    pub fn latest_head(&self) -> Result<Option<StoredHead>> {
        match self.db.scan_prefix([b'h']).next_back() {
            None => Ok(None),
            Some(kv) => decode_head(&kv?.1).map(Some),
        }
    }

    /// Keeps a witness's cosignature line of the checkpoint of `size` under
    /// `key` (the witness key's name and id): one per key and checkpoint, a
    /// later one replacing it. On the device when this returns.
    pub fn put_cosignature(&self, size: u64, key: &str, line: &str) -> Result<()> {
        let mut k = seq_key(b'w', size).to_vec();
        k.extend_from_slice(key.as_bytes());
        self.db.insert(k, line.as_bytes())?;
        self.sync()
    }

    /// Forgets the cosignatures of checkpoints smaller than `size`.
    pub fn prune_cosignatures(&self, size: u64) -> Result<()> {
        let old: Vec<sled::IVec> = self
            .db
            .range(seq_key(b'w', 0)..seq_key(b'w', size))
            .keys()
            .collect::<std::result::Result<_, _>>()?;
        for k in old {
            self.db.remove(k)?;
        }
        Ok(())
    }

    /// Every kept cosignature line, by checkpoint size (ascending).
    pub fn cosignatures(&self) -> Result<Vec<(u64, String)>> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix([b'w']) {
            let (k, v) = kv?;
            let size = be64(&k, &k[1..9])?;
            out.push((size, String::from_utf8_lossy(&v).into_owned()));
        }
        Ok(out)
    }

    /// The broker that relayed record `seq` here and its seq there.
    pub fn origin_of(&self, seq: u64) -> Result<Option<(String, u64)>> {
        let key = seq_key(b'o', seq);
        match self.db.get(key)? {
            None => Ok(None),
            Some(v) if v.len() >= 8 => Ok(Some((
                String::from_utf8_lossy(&v[8..]).into_owned(),
                be64(&key, &v[..8])?,
            ))),
            Some(_) => Err(StorageError::Corrupt {
                key: hex::encode(key),
                message: "short origin".into(),
            }),
        }
    }

    /// The origin's tlog-proof bundle of relayed record `seq`, if it came with one.
    pub fn origin_proof(&self, seq: u64) -> Result<Option<String>> {
        Ok(self
            .db
            .get(seq_key(b'e', seq))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Up to which seq of this log relay to `peer` is done (0 at first).
    pub fn relay_position(&self, peer: &str) -> Result<u64> {
        let mut key = vec![b'p'];
        key.extend_from_slice(peer.as_bytes());
        Ok(self
            .db
            .get(&key)?
            .map(|v| be64(&key, &v))
            .transpose()?
            .unwrap_or(0))
    }

    /// Records what became of records for `peer` and moves its relay
    /// position to `position` (never back), atomically; on the device when
    /// this returns. An outcome already recorded is not counted twice.
    pub fn put_relay_outcomes(
        &self,
        peer: &str,
        outcomes: &[(u64, RelayOutcome)],
        position: u64,
    ) -> Result<()> {
        let mut key = vec![b'p'];
        key.extend_from_slice(peer.as_bytes());
        let position = position.max(self.relay_position(peer)?);
        if outcomes.is_empty() {
            // Only records not meant for the peer: losing this position
            // costs a rescan, never a record, so it rides with a later sync.
            self.db.insert(key, &position.to_be_bytes())?;
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        let mut counts = self.relay_counts(peer)?;
        for (seq, outcome) in outcomes {
            let key = outcome_key(*seq, peer);
            if let Some(old) = self.db.get(&key)? {
                match RelayOutcome::decode(&key, &old)? {
                    RelayOutcome::Relayed(_) => counts.relayed -= 1,
                    RelayOutcome::Withheld(_) => counts.withheld -= 1,
                    RelayOutcome::Refused(_) => counts.refused -= 1,
                }
            }
            match outcome {
                RelayOutcome::Relayed(_) => counts.relayed += 1,
                RelayOutcome::Withheld(_) => counts.withheld += 1,
                RelayOutcome::Refused(_) => counts.refused += 1,
            }
            batch.insert(key, outcome.encode());
        }
        for (tag, n) in [
            (b'r', counts.relayed),
            (b'w', counts.withheld),
            (b'x', counts.refused),
        ] {
            batch.insert(count_key(tag, peer), &n.to_be_bytes());
        }
        batch.insert(key, &position.to_be_bytes());
        let keys = outcomes.len() + 4;
        self.db.apply_batch(batch)?;
        drain_deferred_frees(keys);
        self.sync()
    }

    /// What became of record `seq` for each peer it was meant for.
    pub fn relay_outcomes(&self, seq: u64) -> Result<Vec<(String, RelayOutcome)>> {
        let prefix = seq_key(b'f', seq);
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(prefix) {
            let (k, v) = kv?;
            let peer = String::from_utf8_lossy(&k[9..]).into_owned();
            out.push((peer, RelayOutcome::decode(&k, &v)?));
        }
        Ok(out)
    }

    /// What became of record `seq` for `peer`, if it was meant for it.
    pub fn relay_outcome(&self, seq: u64, peer: &str) -> Result<Option<RelayOutcome>> {
        let key = outcome_key(seq, peer);
        self.db
            .get(&key)?
            .map(|v| RelayOutcome::decode(&key, &v))
            .transpose()
    }

    /// Relay outcomes so far for `peer`, by kind.
    pub fn relay_counts(&self, peer: &str) -> Result<RelayCounts> {
        let get = |tag: u8| -> Result<u64> {
            let key = count_key(tag, peer);
            Ok(self
                .db
                .get(&key)?
                .map(|v| be64(&key, &v))
                .transpose()?
                .unwrap_or(0))
        };
        Ok(RelayCounts {
            relayed: get(b'r')?,
            withheld: get(b'w')?,
            refused: get(b'x')?,
        })
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        let records = self.records.end.lock().unwrap_or_else(|p| p.into_inner()).1;
        Ok(self.db.size_on_disk()? + records + self.nodes.count.load(Ordering::Acquire) * 32)
    }
}

/// Frees what sled deferred while applying a batch of `keys` writes.
///
/// sled 0.34 hands every replaced tree node to crossbeam-epoch's global
/// collector, which frees at most a few bags of garbage each time a thread
/// pins. `apply_batch` holds one pin across the whole batch, so a batch of
/// more than ~512 writes defers more than later pins ever reclaim and the
/// backlog grows for as long as the process lives: 1.8 KiB per written key
/// measured with batches of 1,024 (5.9 GiB after 10^6 Merkle leaves), against
/// ~140 B per key once drained. Each pin-and-flush collects up to eight bags of
/// 64 deferred frees, so a handful per 128 keys drains the batch's garbage.
fn drain_deferred_frees(keys: usize) {
    for _ in 0..keys / 128 + 2 {
        crossbeam_epoch::pin().flush();
    }
}

/// Decodes the frame at the start of `buf`; returns the record and the
/// frame's length.
fn decode_frame(seq: u64, buf: &bytes::Bytes) -> Result<(StoredRecord, usize)> {
    let corrupt = |message: String| StorageError::Corrupt {
        key: format!("record {seq}"),
        message,
    };
    let header: [u8; FRAME_HEADER] = buf
        .get(..FRAME_HEADER)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| corrupt("truncated frame header".into()))?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if buf.len() < FRAME_HEADER + len {
        return Err(corrupt(format!("frame of {len} bytes is truncated")));
    }
    // A view of the read buffer: the envelope is not copied.
    let payload = buf.slice(FRAME_HEADER..FRAME_HEADER + len);
    if crc32fast::hash(&payload) != crc {
        return Err(corrupt(
            "checksum mismatch: the record file is damaged".into(),
        ));
    }
    let rec = StoredRecord::decode(payload).map_err(|e| corrupt(e.to_string()))?;
    Ok((rec, FRAME_HEADER + len))
}

fn decode_head(v: &[u8]) -> Result<StoredHead> {
    StoredHead::decode(v).map_err(|e| StorageError::Corrupt {
        key: "tree head".into(),
        message: e.to_string(),
    })
}

impl NodeSource for Storage {
    type Error = StorageError;

    fn node(&self, level: u8, index: u64) -> Result<Hash> {
        let pos = node_position(level, index);
        if level >= 64 || pos >= self.nodes.count.load(Ordering::Acquire) {
            return Err(StorageError::Corrupt {
                key: format!("merkle node {level}/{index}"),
                message: "missing".into(),
            });
        }
        let mut hash = [0u8; 32];
        self.nodes
            .file
            .read_exact_at(&mut hash, pos * 32)
            .map_err(|source| StorageError::Io {
                path: self.nodes.path.clone(),
                source,
            })?;
        Ok(hash)
    }
}

fn restrict(path: &Path, mode: u32) {
    if let Err(e) = fs::set_permissions(path, fs::Permissions::from_mode(mode)) {
        tracing::warn!(path = %path.display(), error = %e, "cannot restrict permissions");
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StorageError::Sync {
            path: dir.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::merkle::{Frontier, leaf_hash};

    #[test]
    fn node_positions_follow_push_order() {
        let mut frontier = Frontier::new();
        let mut next = 0u64;
        for i in 0..1000u64 {
            for (level, index, _) in frontier.push(leaf_hash(&i.to_be_bytes())) {
                assert_eq!(node_position(level, index), next, "node {level}/{index}");
                next += 1;
            }
            assert_eq!(nodes_for(i + 1), next);
        }
    }

    /// Commits record `seq` with its Merkle nodes; returns the new root.
    fn append(storage: &Storage, frontier: &mut Frontier, seq: u64) -> Hash {
        let leaf = leaf_hash(&seq.to_be_bytes());
        let mut batch = WriteBatch::default();
        for (level, index, hash) in frontier.push(leaf) {
            batch.put_node(level, index, &hash);
        }
        let rec = StoredRecord {
            received_at_ms: seq,
            leaf_hash: leaf.to_vec(),
            envelope: Default::default(),
            also_readers: vec![],
        };
        batch.put_record(seq, &format!("id-{seq}"), "XX-TEST", &rec);
        storage.commit(batch).unwrap();
        crate::log::merkle::root(seq, storage).unwrap()
    }

    #[test]
    fn cases_and_their_updates_are_read_from_a_position() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = Storage::open(&tmp.path().join("db")).unwrap();
        let mut batch = WriteBatch::default();
        for (request, state) in [(3, 1), (5, 2), (9, 0)] {
            batch.put_case_state(request, state);
        }
        for (request, update) in [(5, 6), (5, 7), (5, 8), (9, 10)] {
            batch.put_case_update(request, update);
        }
        storage.commit(batch).unwrap();
        let cases = |after| {
            storage
                .cases_after(after)
                .collect::<Result<Vec<_>>>()
                .unwrap()
        };
        assert_eq!(cases(0), [(3, 1), (5, 2), (9, 0)]);
        assert_eq!(cases(5), [(9, 0)]);
        assert!(cases(9).is_empty());
        assert!(cases(u64::MAX).is_empty());
        let updates = |request, after| {
            storage
                .case_updates_after(request, after)
                .collect::<Result<Vec<_>>>()
                .unwrap()
        };
        assert_eq!(updates(5, 0), [6, 7, 8]);
        assert_eq!(updates(5, 6), [7, 8]);
        assert!(updates(5, u64::MAX).is_empty());
        assert!(updates(3, 0).is_empty());
        assert_eq!(updates(9, 0), [10]);
        let last_two: Vec<u64> = storage
            .case_updates_after(5, 0)
            .rev()
            .take(2)
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(last_two, [8, 7]);
    }

    #[test]
    fn files_are_cut_back_and_rebuilt_to_the_committed_size() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        let mut frontier = Frontier::new();
        let roots: Vec<Hash> = {
            let storage = Storage::open(&dir).unwrap();
            let mut roots = vec![];
            for seq in 1..=37u64 {
                roots.push(append(&storage, &mut frontier, seq));
            }
            // Nodes that do not continue the stored tree are refused before
            // anything is written.
            let mut stray = WriteBatch::default();
            stray.put_node(0, 99, &[7; 32]);
            assert!(storage.commit(stray).is_err());
            roots
        };
        let nodes = dir.join("merkle.nodes");
        // Nodes beyond the committed tree (a crash between the two writes).
        let mut extra = fs::read(&nodes).unwrap();
        extra.extend_from_slice(&[9u8; 96]);
        fs::write(&nodes, &extra).unwrap();
        {
            let storage = Storage::open(&dir).unwrap();
            assert_eq!(fs::metadata(&nodes).unwrap().len(), nodes_for(37) * 32);
            assert_eq!(crate::log::merkle::root(37, &storage).unwrap(), roots[36]);
        }
        // Frames of a commit that never reached sled are cut off on open;
        // a damaged frame is reported, never decoded.
        let log = dir.join("records.log");
        let committed = fs::read(&log).unwrap();
        let mut torn = committed.clone();
        torn.extend_from_slice(&[1, 0, 0, 0, 9, 9]);
        fs::write(&log, &torn).unwrap();
        {
            let storage = Storage::open(&dir).unwrap();
            assert_eq!(fs::read(&log).unwrap(), committed);
            assert_eq!(storage.last_seq().unwrap(), 37);
            let all: Vec<_> = storage.records(1, 100).map(|r| r.unwrap().0).collect();
            assert_eq!(all, (1..=37).collect::<Vec<_>>());
            assert_eq!(storage.record(37).unwrap().unwrap().received_at_ms, 37);
            assert!(storage.record(38).unwrap().is_none());
        }
        let mut damaged = committed.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        fs::write(&log, &damaged).unwrap();
        {
            let storage = Storage::open(&dir).unwrap();
            let err = storage.record(37).unwrap_err().to_string();
            assert!(err.contains("checksum"), "{err}");
            assert!(storage.records(30, 37).any(|r| r.is_err()));
        }
        fs::write(&log, &committed).unwrap();
        // Opening synced the node file up to 37 leaves (`m`). Nodes written
        // since (fewer than NODE_SYNC_EVERY) may hold anything after a
        // crash: they are recomputed from the records.
        let mut roots = roots;
        {
            let storage = Storage::open(&dir).unwrap();
            for seq in 38..=40u64 {
                roots.push(append(&storage, &mut frontier, seq));
            }
        }
        let mut bytes = fs::read(&nodes).unwrap();
        let synced = nodes_for(37) as usize * 32;
        bytes[synced..].fill(0);
        fs::write(&nodes, &bytes).unwrap();
        {
            let storage = Storage::open(&dir).unwrap();
            for size in [20, 37, 38, 40] {
                assert_eq!(
                    crate::log::merkle::root(size, &storage).unwrap(),
                    roots[size as usize - 1]
                );
            }
        }
        // A short file (lost, or a database from before the node file).
        let f = OpenOptions::new().write(true).open(&nodes).unwrap();
        f.set_len(5 * 32).unwrap();
        drop(f);
        let storage = Storage::open(&dir).unwrap();
        assert_eq!(fs::metadata(&nodes).unwrap().len(), nodes_for(40) * 32);
        for size in 1..=40u64 {
            assert_eq!(
                crate::log::merkle::root(size, &storage).unwrap(),
                roots[size as usize - 1]
            );
        }
        for file in [&nodes, &log] {
            assert_eq!(
                fs::metadata(file).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }
}
