//! The broker's checkpoints (SPEC §8): each signed tree head also published
//! as a C2SP `tlog-checkpoint` signed note (origin line, decimal size,
//! base64 root) under the broker's checkpoint key, separate from its
//! tree-head key. The key must be the one the directory lists as
//! `checkpoint_vkey`, whose name is the origin. Checkpoints only grow: the
//! signer refuses a size below one it has signed, so it never signs two
//! checkpoints that are inconsistent with each other.
//!
//! Member teams cosign checkpoints (C2SP `tlog-cosignature`) with the
//! witness key the directory lists for them; the signer keeps the latest
//! checkpoints with every cosignature that verifies and serves them with
//! the note, and so do the standard witnesses it pushes checkpoints to
//! (`witness_push`). Cosignatures are written to the log's storage before
//! they are acknowledged and reloaded at start, for the last [`KEPT`]
//! checkpoints.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use ed25519_dalek::SigningKey;

use crate::error::Error;
use crate::log::storage::Storage;
use crate::proto as pb;
use crate::rules::directory::Directory;
use crate::rules::envelope;
use crate::rules::note::{self, Checkpoint, SigLine, Vkey};

/// How many of the latest checkpoints keep their cosignatures.
pub const KEPT: usize = 64;

/// A checkpoint as signed, with the cosignatures it has gathered.
struct Signed {
    text: String,
    lines: Vec<SigLine>,
}

/// Signs checkpoints, keeping the latest with their cosignatures.
pub struct Checkpoints {
    origin: String,
    key: SigningKey,
    signed: Mutex<BTreeMap<u64, Signed>>,
    storage: Arc<Storage>,
}

impl Checkpoints {
    /// Loads the checkpoint key; the directory must list its verifier key.
    pub fn open(path: &Path, dir: &Directory, storage: Arc<Storage>) -> Result<Self, String> {
        let key = envelope::read_signing_key(path)?;
        // A single broker's key is the directory's checkpoint_vkey; a
        // federation broker's is the checkpoint_vkey of its [[broker]].
        let own = dir
            .brokers()
            .filter_map(|b| b.checkpoint_vkey.as_ref())
            .find(|v| v.key == key.verifying_key());
        let listed = dir.checkpoint_vkey().or(own).ok_or_else(|| {
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
        let me = Checkpoints {
            origin: listed.name.clone(),
            key,
            signed: Mutex::new(BTreeMap::new()),
            storage,
        };
        let mut known: Vec<Vkey> = dir.teams().filter_map(|t| t.witness.clone()).collect();
        if let Some(p) = dir.witness_policy() {
            known.extend(p.witness_keys());
        }
        me.reload(&known)
            .map_err(|e| format!("cannot reload kept cosignatures: {e}"))?;
        Ok(me)
    }

    /// Rebuilds the kept checkpoints from the stored tree heads and
    /// cosignatures (each checkpoint is re-signed: Ed25519 is
    /// deterministic, so the bytes are the ones served before).
    fn reload(&self, known: &[Vkey]) -> Result<(), Error> {
        let stored = self
            .storage
            .cosignatures()
            .map_err(|e| Error::Internal(e.to_string()))?;
        let mut signed = self.signed.lock().unwrap_or_else(|e| e.into_inner());
        for (size, line) in stored {
            let Ok(line) = SigLine::parse(&line) else {
                tracing::warn!(size, "skipping a stored cosignature that does not parse");
                continue;
            };
            let s = match signed.entry(size) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    let Some(head) = self
                        .storage
                        .head(size)
                        .map_err(|e| Error::Internal(e.to_string()))?
                    else {
                        continue;
                    };
                    v.insert(self.sign(size, &head.root_hash)?)
                }
            };
            // Only what still verifies with a key of the directory in force.
            let ok = known
                .iter()
                .find(|v| v.name == line.name && v.id == line.id)
                .is_some_and(|v| note::verify_line(&s.text, &line, v).is_ok());
            let dup = s
                .lines
                .iter()
                .any(|l| l.name == line.name && l.id == line.id);
            if ok && !dup {
                s.lines.push(line);
            } else if !ok {
                tracing::warn!(
                    size,
                    "dropping a stored cosignature no witness key of the directory verifies"
                );
            }
        }
        while signed.len() > KEPT {
            signed.pop_first();
        }
        Ok(())
    }

    fn sign(&self, size: u64, root: &[u8]) -> Result<Signed, Error> {
        let root: [u8; 32] = root
            .try_into()
            .map_err(|_| Error::Internal("tree head root is not 32 bytes".into()))?;
        let text = Checkpoint {
            origin: self.origin.clone(),
            size,
            root,
            extensions: vec![],
        }
        .text();
        let line = note::sign(&text, &self.origin, &self.key)
            .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(Signed {
            text,
            lines: vec![line],
        })
    }

    /// The origin line.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The signed checkpoint of `head` (a tree head of the log), with the
    /// cosignatures it has.
    pub fn note_for(&self, head: &pb::SignedTreeHead) -> Result<String, Error> {
        let mut signed = self.signed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = signed.get(&head.tree_size) {
            return Ok(encode(s));
        }
        if let Some((&size, _)) = signed.last_key_value()
            && size > head.tree_size
        {
            return Err(Error::Internal(format!(
                "refusing to sign a checkpoint of size {} after one of size {size}",
                head.tree_size
            )));
        }
        let s = self.sign(head.tree_size, &head.root_hash)?;
        let out = encode(&s);
        signed.insert(head.tree_size, s);
        while signed.len() > KEPT {
            signed.pop_first();
        }
        Ok(out)
    }

    /// Adds a team's cosignature (one signature line) of the checkpoint of
    /// `size`: it must verify with the team's witness key over the text the
    /// broker signed, and carry a time no later than `now` plus the skew.
    /// A key that already cosigned the checkpoint adds nothing. Returns
    /// how many cosignatures the checkpoint has.
    pub fn cosign(
        &self,
        team: &str,
        witness: Option<&Vkey>,
        size: u64,
        line: &str,
        now: u64,
        skew: u64,
    ) -> Result<usize, Error> {
        let witness = witness.ok_or_else(|| {
            Error::Precondition(format!(
                "{team} has no witness_key in the directory, so its cosignatures cannot be checked"
            ))
        })?;
        let line =
            SigLine::parse(line).map_err(|e| Error::BadRequest(format!("signature_line: {e}")))?;
        if line.name != witness.name || line.id != witness.id {
            return Err(Error::BadRequest(format!(
                "signature_line: it names key {}+{:08x}, but {team}'s witness key is {}+{:08x}",
                line.name, line.id, witness.name, witness.id
            )));
        }
        self.keep(size, line, witness, now, skew)
    }

    /// Adds a cosignature a standard witness returned for the checkpoint of
    /// `size`, if it is by one of the `known` witness keys and verifies.
    /// Returns the key's name, or why it was not kept.
    pub fn add_witnessed(
        &self,
        size: u64,
        line: &str,
        known: &[Vkey],
        now: u64,
        skew: u64,
    ) -> Result<String, Error> {
        let line = SigLine::parse(line).map_err(|e| Error::BadRequest(e.to_string()))?;
        let v = known
            .iter()
            .find(|v| {
                v.name == line.name && v.id == line.id && v.sig_type == note::TYPE_COSIGNATURE
            })
            .ok_or_else(|| {
                Error::Precondition(format!(
                    "key {}+{:08x} is not a witness the directory lists",
                    line.name, line.id
                ))
            })?;
        self.keep(size, line, v, now, skew)?;
        Ok(v.name.clone())
    }

    /// Verifies `line` by `witness` over the checkpoint of `size` and keeps
    /// it, on disk before it returns. Returns the checkpoint's cosignatures.
    fn keep(
        &self,
        size: u64,
        line: SigLine,
        witness: &Vkey,
        now: u64,
        skew: u64,
    ) -> Result<usize, Error> {
        // Verify under the lock (short), write to disk outside it, then
        // add. A key that already cosigned this checkpoint adds nothing: a
        // later time says no more, and rewriting would cost a disk sync per
        // call.
        let text = {
            let signed = self.signed.lock().unwrap_or_else(|e| e.into_inner());
            let s = signed.get(&size).ok_or_else(|| {
                Error::Precondition(format!(
                    "no checkpoint of size {size} is kept; fetch the latest checkpoint and cosign that"
                ))
            })?;
            if s.lines
                .iter()
                .skip(1)
                .any(|l| l.name == line.name && l.id == line.id)
            {
                return Ok(s.lines.len() - 1);
            }
            s.text.clone()
        };
        let time = note::verify_line(&text, &line, witness)
            .map_err(|e| {
                Error::BadRequest(format!(
                    "signature_line: {e} over the checkpoint of size {size} this broker signed"
                ))
            })?
            .unwrap_or(0);
        if time > now.saturating_add(skew) {
            return Err(Error::BadRequest(format!(
                "signature_line: the cosignature's time {time} is in the future"
            )));
        }
        self.storage
            .put_cosignature(
                size,
                &format!("{}+{:08x}", line.name, line.id),
                &line.line(),
            )
            .map_err(|e| Error::Internal(format!("cannot keep the cosignature: {e}")))?;
        let (n, oldest) = {
            let mut signed = self.signed.lock().unwrap_or_else(|e| e.into_inner());
            let oldest = signed.first_key_value().map(|(k, _)| *k);
            match signed.get_mut(&size) {
                Some(s) => {
                    if !s
                        .lines
                        .iter()
                        .skip(1)
                        .any(|l| l.name == line.name && l.id == line.id)
                    {
                        s.lines.push(line);
                    }
                    (s.lines.len() - 1, oldest)
                }
                // Dropped from memory meanwhile; it stays on disk until pruned.
                None => (0, oldest),
            }
        };
        if let Some(oldest) = oldest
            && let Err(e) = self.storage.prune_cosignatures(oldest)
        {
            tracing::warn!(error = %e, "cannot prune old cosignatures");
        }
        Ok(n)
    }
}

fn encode(s: &Signed) -> String {
    note::Note {
        text: s.text.clone(),
        sigs: s.lines.clone(),
    }
    .encode()
}
