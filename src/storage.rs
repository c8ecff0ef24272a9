//! The only module that touches sled: the durable log of records, its indexes,
//! the Merkle nodes and the signed tree heads, with a commit that returns only
//! once everything is on the device.
//!
//! Layout: one sled tree, keys prefixed by one byte.
//!
//! | key                               | value                                 |
//! |-----------------------------------|---------------------------------------|
//! | `r` be64(seq)                     | [`StoredRecord`] (prost)              |
//! | `i` id 0x00 sender                | be64(seq)                             |
//! | `l` leaf hash                     | be64(seq)                             |
//! | `n` level be64(index)             | hash of a perfect Merkle subtree      |
//! | `h` be64(tree size)               | [`StoredHead`] (prost)                |
//! | `x` be64(target seq)              | be64(seq of the retraction)           |
//! | `k` be64(request seq)             | case state (i32, be)                  |
//! | `u` be64(request seq) be64(seq)   | empty: the case's updates, in order   |
//! | `c` team 0x00 name                | be64(seq): a durable subscription     |
//!
//! Durability: sled 0.34's `flush()` ends in `sync_file_range`, which does not
//! flush the device's write cache, and its blob files (values over a segment
//! fraction) are written with no sync at all. [`Storage::commit`] therefore
//! flushes sled and then `fdatasync`s the log file and every new blob file (and
//! the blob directory) before it returns.

use std::collections::HashSet;
use std::fs::{self, File};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use prost::Message;

use crate::merkle::{Hash, NodeSource};

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
    #[prost(bytes = "vec", tag = "3")]
    pub envelope: Vec<u8>,
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

fn node_key(level: u8, index: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[0] = b'n';
    k[1] = level;
    k[2..].copy_from_slice(&index.to_be_bytes());
    k
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
}

impl WriteBatch {
    /// Appends record `seq`, its `(id, sender)` and leaf-hash index entries.
    pub fn put_record(&mut self, seq: u64, id: &str, sender: &str, rec: &StoredRecord) {
        self.batch.insert(&seq_key(b'r', seq), rec.encode_to_vec());
        self.batch.insert(id_key(id, sender), &seq.to_be_bytes());
        self.batch
            .insert(leaf_key(&rec.leaf_hash), &seq.to_be_bytes());
        self.ops += 1;
    }

    pub fn put_node(&mut self, level: u8, index: u64, hash: &Hash) {
        self.batch.insert(&node_key(level, index), hash);
    }

    pub fn put_head(&mut self, head: &StoredHead) {
        self.batch
            .insert(&seq_key(b'h', head.tree_size), head.encode_to_vec());
        self.ops += 1;
    }

    /// Marks record `target` as retracted by record `by`.
    pub fn put_retraction(&mut self, target: u64, by: u64) {
        self.batch.insert(&seq_key(b'x', target), &by.to_be_bytes());
    }

    /// Sets the state of the case opened by record `request`.
    pub fn put_case_state(&mut self, request: u64, state: i32) {
        self.batch
            .insert(&seq_key(b'k', request), &state.to_be_bytes());
    }

    /// Files update record `update` under the case opened by record `request`.
    pub fn put_case_update(&mut self, request: u64, update: u64) {
        let mut k = Vec::with_capacity(17);
        k.extend_from_slice(&seq_key(b'u', request));
        k.extend_from_slice(&update.to_be_bytes());
        self.batch.insert(k, &[]);
    }

    pub fn is_empty(&self) -> bool {
        self.ops == 0
    }
}

/// The broker's database.
pub struct Storage {
    dir: PathBuf,
    db: sled::Db,
    log_file: File,
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
        let db = sled::Config::new()
            .path(dir)
            // Large segments keep envelopes up to several MiB inline in the
            // log instead of in separate blob files.
            .segment_size(8 * 1024 * 1024)
            .cache_capacity(64 * 1024 * 1024)
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
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            let mode = if entry.path().is_dir() { 0o700 } else { 0o600 };
            restrict(&entry.path(), mode);
        }
        sync_dir(dir)?;
        Ok(Storage {
            dir: dir.to_owned(),
            db,
            log_file,
            synced_blobs: Mutex::new(HashSet::new()),
        })
    }

    /// Applies a batch atomically and returns once it is on the device.
    pub fn commit(&self, batch: WriteBatch) -> Result<()> {
        self.db.apply_batch(batch.batch)?;
        self.sync()
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
        match self.db.scan_prefix([b'r']).next_back() {
            None => Ok(0),
            Some(kv) => {
                let (k, _) = kv?;
                be64(&k, &k[1..])
            }
        }
    }

    pub fn record(&self, seq: u64) -> Result<Option<StoredRecord>> {
        let key = seq_key(b'r', seq);
        match self.db.get(key)? {
            None => Ok(None),
            Some(v) => {
                StoredRecord::decode(v.as_ref())
                    .map(Some)
                    .map_err(|e| StorageError::Corrupt {
                        key: format!("record {seq}"),
                        message: e.to_string(),
                    })
            }
        }
    }

    /// Records in `[from, to]` in seq order.
    pub fn records(
        &self,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = Result<(u64, StoredRecord)>> + '_ {
        self.db
            .range(seq_key(b'r', from)..=seq_key(b'r', to))
            .map(|kv| {
                let (k, v) = kv?;
                let seq = be64(&k, &k[1..])?;
                let rec = StoredRecord::decode(v.as_ref()).map_err(|e| StorageError::Corrupt {
                    key: format!("record {seq}"),
                    message: e.to_string(),
                })?;
                Ok((seq, rec))
            })
    }

    /// The seq of `sender`'s message `id`.
    pub fn seq_of(&self, id: &str, sender: &str) -> Result<Option<u64>> {
        let key = id_key(id, sender);
        self.db.get(&key)?.map(|v| be64(&key, &v)).transpose()
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
                Ok((sender, be64(&k, &v)?))
            })
            .collect()
    }

    pub fn seq_of_leaf(&self, leaf_hash: &[u8]) -> Result<Option<u64>> {
        let key = leaf_key(leaf_hash);
        self.db.get(&key)?.map(|v| be64(&key, &v)).transpose()
    }

    /// The seq of the retraction of record `seq`, if it was retracted.
    pub fn retraction_of(&self, seq: u64) -> Result<Option<u64>> {
        let key = seq_key(b'x', seq);
        self.db.get(key)?.map(|v| be64(&key, &v)).transpose()
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

    /// Every case as (request seq, state), oldest first.
    pub fn cases(&self) -> Result<Vec<(u64, i32)>> {
        self.db
            .scan_prefix([b'k'])
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
            .collect()
    }

    /// Seqs of the updates of the case opened by record `request`, in order.
    pub fn case_updates(&self, request: u64) -> Result<Vec<u64>> {
        self.db
            .scan_prefix(seq_key(b'u', request))
            .map(|kv| {
                let (k, _) = kv?;
                be64(&k, &k[9..])
            })
            .collect()
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

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.db.size_on_disk()?)
    }
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
        let key = node_key(level, index);
        let v = self.db.get(key)?.ok_or_else(|| StorageError::Corrupt {
            key: format!("merkle node {level}/{index}"),
            message: "missing".into(),
        })?;
        <Hash>::try_from(v.as_ref()).map_err(|_| StorageError::Corrupt {
            key: format!("merkle node {level}/{index}"),
            message: format!("expected 32 bytes, found {}", v.len()),
        })
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
