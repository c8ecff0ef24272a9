//! The witness's durable memory: for each log origin, the latest checkpoint
//! it cosigned and the time of its last cosignature. One small JSON file
//! per origin in the state directory, named by the hex SHA-256 of the
//! origin (`<hex>.json`: origin, size, base64 root, checkpoint text,
//! `cosigned_at`, read as 0 from files written before it existed),
//! replaced atomically (temporary file, fsync, rename, fsync of the
//! directory) so a crash leaves the old state or the new one, never a torn
//! file. The directory is owner-only (0700), the files 0600, and a `.lock`
//! file held with `flock` keeps a second witness process off the same
//! state. A file that does not read back whole and consistent stops the
//! witness at start, naming the file: cosigning from a guessed state could
//! roll a log back.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::rules::note::Checkpoint;

/// The latest checkpoint cosigned for one origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Latest {
    /// Its tree size.
    pub size: u64,
    /// Its root hash.
    pub root: [u8; 32],
    /// Its note text (origin, size, root, extension lines), as cosigned.
    pub checkpoint: String,
    /// The time (POSIX seconds) of the last cosignature for this origin
    /// when the state was written, so cosignature times do not go
    /// backwards across restarts; 0 when unknown.
    pub cosigned_at: u64,
}

/// The file's form.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    origin: String,
    size: u64,
    root: String,
    checkpoint: String,
    /// Missing from files written before it existed.
    #[serde(default)]
    cosigned_at: u64,
}

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The state directory could not be created or listed.
    #[error("cannot open witness state directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the state directory.
    #[error("witness state directory is in use by another process (lock {path} is held)")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A state file could not be read.
    #[error("cannot read witness state file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A state file does not hold a consistent latest checkpoint.
    #[error("witness state file {path} is corrupt: {why}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A new state could not be made durable.
    #[error("cannot write witness state file {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
}

/// The state directory, locked for this process: two witnesses sharing
/// one state would each check against their own memory and could cosign a
/// rollback.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
    _lock: std::sync::Arc<fs::File>,
}

impl StateDir {
    /// Opens (creating it owner-only if missing) the state directory and
    /// reads every origin's latest checkpoint from it.
    pub fn open(dir: &Path) -> Result<(Self, HashMap<String, Latest>), StateError> {
        let dir_err = |source| StateError::Dir {
            path: dir.to_owned(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(dir_err)?;
        let lock_path = dir.join(".lock");
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(dir_err)?;
        if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            return Err(StateError::Locked { path: lock_path });
        }
        let mut latest = HashMap::new();
        for entry in fs::read_dir(dir).map_err(dir_err)? {
            let path = entry.map_err(dir_err)?.path();
            let is_state = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .is_some_and(|stem| {
                    stem.len() == 64 && stem.bytes().all(|b| b.is_ascii_hexdigit())
                });
            if !is_state {
                // The lock, temporary files of an interrupted write, or
                // anything else.
                continue;
            }
            let (origin, l) = read_file(&path)?;
            latest.insert(origin, l);
        }
        Ok((
            StateDir {
                dir: dir.to_owned(),
                _lock: std::sync::Arc::new(lock),
            },
            latest,
        ))
    }

    /// The file of an origin: `<hex SHA-256 of the origin>.json`.
    pub fn file_of(&self, origin: &str) -> PathBuf {
        self.dir
            .join(format!("{}.json", hex::encode(Sha256::digest(origin))))
    }

    /// Makes `latest` the durable state of `origin`, atomically: written to
    /// a temporary file and synced, renamed over the old file, and the
    /// directory synced. Blocking; call it off the async threads.
    pub fn save(&self, origin: &str, latest: &Latest) -> Result<(), StateError> {
        let path = self.file_of(origin);
        let json = serde_json::to_vec_pretty(&StateFile {
            origin: origin.to_owned(),
            size: latest.size,
            root: B64.encode(latest.root),
            checkpoint: latest.checkpoint.clone(),
            cosigned_at: latest.cosigned_at,
        })
        .map_err(|e| StateError::Write {
            path: path.clone(),
            source: e.into(),
        })?;
        let tmp = path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&json)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|source| StateError::Write {
            path: path.clone(),
            source,
        })
    }
}

/// Reads one state file and checks it is whole: the name is the origin's,
/// and size and root are those of the checkpoint text.
fn read_file(path: &Path) -> Result<(String, Latest), StateError> {
    let corrupt = |why: String| StateError::Corrupt {
        path: path.to_owned(),
        why,
    };
    let bytes = fs::read(path).map_err(|source| StateError::Read {
        path: path.to_owned(),
        source,
    })?;
    let f: StateFile = serde_json::from_slice(&bytes)
        .map_err(|e| corrupt(format!("not the expected JSON: {e}")))?;
    let root = B64
        .decode(&f.root)
        .ok()
        .and_then(|r| <[u8; 32]>::try_from(r).ok())
        .ok_or_else(|| corrupt("root is not base64 of 32 bytes".into()))?;
    let cp = Checkpoint::parse(&f.checkpoint).map_err(|e| corrupt(format!("checkpoint: {e}")))?;
    if cp.origin != f.origin || cp.size != f.size || cp.root != root {
        return Err(corrupt(
            "origin, size or root differ from the checkpoint text".into(),
        ));
    }
    if f.cosigned_at > i64::MAX as u64 {
        return Err(corrupt("cosigned_at is beyond 2^63 - 1".into()));
    }
    let expected = format!("{}.json", hex::encode(Sha256::digest(&f.origin)));
    if path.file_name().and_then(|n| n.to_str()) != Some(expected.as_str()) {
        return Err(corrupt(format!(
            "it holds origin {:?}, whose file is {expected}",
            f.origin
        )));
    }
    Ok((
        f.origin,
        Latest {
            size: f.size,
            root,
            checkpoint: f.checkpoint,
            cosigned_at: f.cosigned_at,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn latest(origin: &str, size: u64) -> Latest {
        let cp = Checkpoint {
            origin: origin.into(),
            size,
            root: [size as u8; 32],
            extensions: vec![],
        };
        Latest {
            size,
            root: cp.root,
            checkpoint: cp.text(),
            cosigned_at: 1_700_000_000 + size,
        }
    }

    #[test]
    fn saved_state_reads_back_owner_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let (s, empty) = StateDir::open(&dir).unwrap();
        assert!(empty.is_empty());
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        s.save("example.com/a", &latest("example.com/a", 3))
            .unwrap();
        s.save("example.com/a", &latest("example.com/a", 7))
            .unwrap();
        s.save("example.com/b", &latest("example.com/b", 1))
            .unwrap();
        assert_eq!(mode(&s.file_of("example.com/a")), 0o600);
        drop(s);
        let (_, got) = StateDir::open(&dir).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got["example.com/a"], latest("example.com/a", 7));
        assert_eq!(got["example.com/b"], latest("example.com/b", 1));
        // No temporary file is left behind (the two states and the lock).
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 3);
    }

    #[test]
    fn a_corrupt_file_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let (s, _) = StateDir::open(tmp.path()).unwrap();
        s.save("example.com/a", &latest("example.com/a", 3))
            .unwrap();
        let file = s.file_of("example.com/a");
        let good = fs::read_to_string(&file).unwrap();
        drop(s);

        for bad in [
            good[..good.len() / 2].to_string(),
            good.replace("\"size\": 3", "\"size\": 4"),
            good.replace("example.com/a", "example.com/z"),
        ] {
            fs::write(&file, &bad).unwrap();
            let e = StateDir::open(tmp.path()).unwrap_err().to_string();
            assert!(e.contains(&file.display().to_string()), "{e}");
            assert!(e.contains("corrupt"), "{e}");
        }
    }

    #[test]
    fn one_process_at_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let held = StateDir::open(tmp.path()).unwrap();
        let e = StateDir::open(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("in use by another process"), "{e}");
        drop(held);
        StateDir::open(tmp.path()).unwrap();
    }

    #[test]
    fn leftover_temporary_files_are_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let (s, _) = StateDir::open(tmp.path()).unwrap();
        s.save("example.com/a", &latest("example.com/a", 3))
            .unwrap();
        let file = s.file_of("example.com/a");
        fs::write(file.with_extension("json.tmp"), "half a fi").unwrap();
        drop(s);
        let (_, got) = StateDir::open(tmp.path()).unwrap();
        assert_eq!(got["example.com/a"].size, 3);
    }

    #[test]
    fn a_file_without_cosigned_at_reads_as_zero() {
        let tmp = tempfile::tempdir().unwrap();
        let (s, _) = StateDir::open(tmp.path()).unwrap();
        let l = latest("example.com/a", 3);
        s.save("example.com/a", &l).unwrap();
        let file = s.file_of("example.com/a");
        let saved = fs::read_to_string(&file).unwrap();
        assert!(saved.contains("\"cosigned_at\": 1700000003"), "{saved}");
        drop(s);
        // As written before the field existed.
        let mut old: serde_json::Value = serde_json::from_str(&saved).unwrap();
        old.as_object_mut().unwrap().remove("cosigned_at");
        fs::write(&file, serde_json::to_vec(&old).unwrap()).unwrap();
        let (s, got) = StateDir::open(tmp.path()).unwrap();
        assert_eq!(
            got["example.com/a"],
            Latest {
                cosigned_at: 0,
                ..l.clone()
            }
        );
        drop(s);
        // A time no cosignature can carry is corruption, not a clock.
        let mut bad: serde_json::Value = serde_json::from_str(&saved).unwrap();
        bad["cosigned_at"] = serde_json::json!(u64::MAX);
        fs::write(&file, serde_json::to_vec(&bad).unwrap()).unwrap();
        let e = StateDir::open(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("cosigned_at"), "{e}");
    }
}
