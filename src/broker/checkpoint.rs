//! The broker's checkpoints (SPEC §8): each signed tree head also published
//! as a C2SP `tlog-checkpoint` signed note (origin line, decimal size,
//! base64 root) under the broker's checkpoint key, separate from its
//! tree-head key. The key must be the one the directory lists as
//! `checkpoint_vkey`, whose name is the origin. Checkpoints only grow: the
//! signer refuses a size below one it has signed, so it never signs two
//! checkpoints that are inconsistent with each other.

use std::path::Path;
use std::sync::{Arc, Mutex};

use ed25519_dalek::SigningKey;

use crate::error::Error;
use crate::proto as pb;
use crate::rules::directory::Directory;
use crate::rules::envelope;
use crate::rules::note::{self, Checkpoint, Note, Vkey};

/// Signs checkpoints, keeping the latest.
pub struct Checkpoints {
    origin: String,
    key: SigningKey,
    latest: Mutex<Option<(u64, Arc<String>)>>,
}

impl Checkpoints {
    /// Loads the checkpoint key; the directory must list its verifier key.
    pub fn open(path: &Path, dir: &Directory) -> Result<Self, String> {
        let key = envelope::read_signing_key(path)?;
        let listed = dir.checkpoint_vkey().ok_or_else(|| {
            format!(
                "a checkpoint key is configured ({}) but the directory lists no checkpoint_vkey for members to verify it with",
                path.display()
            )
        })?;
        let mine = Vkey::new(&listed.name, note::TYPE_ED25519, key.verifying_key())
            .map_err(|e| e.to_string())?;
        if &mine != listed {
            return Err(format!(
                "the checkpoint key {} is not the one the directory lists (checkpoint_vkey is {listed}, the key's is {mine})",
                path.display()
            ));
        }
        Ok(Checkpoints {
            origin: listed.name.clone(),
            key,
            latest: Mutex::new(None),
        })
    }

    /// The origin line.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The signed checkpoint of `head` (a tree head of the log).
    pub fn note_for(&self, head: &pb::SignedTreeHead) -> Result<Arc<String>, Error> {
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        match &*latest {
            Some((size, note)) if *size == head.tree_size => return Ok(note.clone()),
            Some((size, _)) if *size > head.tree_size => {
                return Err(Error::Internal(format!(
                    "refusing to sign a checkpoint of size {} after one of size {size}",
                    head.tree_size
                )));
            }
            _ => {}
        }
        let root: [u8; 32] = head
            .root_hash
            .as_slice()
            .try_into()
            .map_err(|_| Error::Internal("tree head root is not 32 bytes".into()))?;
        let text = Checkpoint {
            origin: self.origin.clone(),
            size: head.tree_size,
            root,
            extensions: vec![],
        }
        .text();
        let line = note::sign(&text, &self.origin, &self.key)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let signed = Arc::new(
            Note {
                text,
                sigs: vec![line],
            }
            .encode(),
        );
        *latest = Some((head.tree_size, signed.clone()));
        Ok(signed)
    }
}
