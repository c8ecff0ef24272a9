//! C2SP signed notes and what is built on them (SPEC §8): the note format
//! (`c2sp.org/signed-note`: text, a blank line, `— name base64(keyID‖sig)`
//! lines), verifier keys (`name+hexid+base64(type‖key)`), Ed25519 note
//! signatures (type 0x01), log checkpoints (`c2sp.org/tlog-checkpoint`:
//! origin, decimal size, base64 root) and timestamped Ed25519 cosignatures
//! (`c2sp.org/tlog-cosignature`, type 0x04). Pure functions: the broker
//! signs with them, members and the offline checker verify with them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Signature type of plain Ed25519 note signatures.
pub const TYPE_ED25519: u8 = 0x01;
/// Signature type of timestamped Ed25519 cosignatures.
pub const TYPE_COSIGNATURE: u8 = 0x04;
/// Most signature lines a note may carry (Go's `note` package cap).
pub const MAX_SIGNATURES: usize = 100;

/// Why a note, key or checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NoteError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, NoteError> {
    Err(NoteError(msg.into()))
}

/// `SHA-256(name ‖ 0x0A ‖ type ‖ key)[:4]` as a big-endian u32.
pub fn key_id(name: &str, sig_type: u8, key: &[u8]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', sig_type]);
    h.update(key);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// A key name: non-empty, no Unicode spaces, no `+`.
pub fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+') {
        return err(format!(
            "key name {name:?} must be non-empty, without spaces or '+'"
        ));
    }
    Ok(())
}

/// A verifier key: who signs, with which Ed25519 key, of which type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vkey {
    pub name: String,
    pub id: u32,
    pub sig_type: u8,
    pub key: VerifyingKey,
}

impl Vkey {
    /// The verifier of an Ed25519 key of `sig_type` (0x01 or 0x04).
    pub fn new(name: &str, sig_type: u8, key: VerifyingKey) -> Result<Self, NoteError> {
        check_name(name)?;
        Ok(Vkey {
            name: name.to_owned(),
            id: key_id(name, sig_type, key.as_bytes()),
            sig_type,
            key,
        })
    }

    /// Parses `name+hexid+base64(type‖key)`; the id must be the key's.
    pub fn parse(s: &str) -> Result<Self, NoteError> {
        let mut parts = s.trim().splitn(3, '+');
        let (Some(name), Some(hexid), Some(b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return err(format!("{s:?} is not a verifier key (name+hexid+base64)"));
        };
        check_name(name)?;
        let id = (hexid.len() == 8)
            .then(|| u32::from_str_radix(hexid, 16).ok())
            .flatten()
            .ok_or_else(|| NoteError(format!("verifier key id {hexid:?} is not 8 hex digits")))?;
        let raw = B64
            .decode(b64)
            .map_err(|_| NoteError("verifier key material is not base64".into()))?;
        let (Some(&sig_type), Ok(bytes)) =
            (raw.first(), <[u8; 32]>::try_from(&raw[1.min(raw.len())..]))
        else {
            return err("verifier key material is not a type byte and a 32-byte key");
        };
        if sig_type != TYPE_ED25519 && sig_type != TYPE_COSIGNATURE {
            return err(format!(
                "verifier key type 0x{sig_type:02x} is not Ed25519 (0x01) or a cosignature (0x04)"
            ));
        }
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| NoteError("verifier key is not an Ed25519 point".into()))?;
        if key.is_weak() {
            return err("verifier key is a small-order point");
        }
        let v = Vkey::new(name, sig_type, key)?;
        if v.id != id {
            return err(format!(
                "verifier key id {hexid} does not match its key (expected {:08x})",
                v.id
            ));
        }
        Ok(v)
    }
}

impl std::fmt::Display for Vkey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut raw = vec![self.sig_type];
        raw.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{:08x}+{}", self.name, self.id, B64.encode(raw))
    }
}

/// One signature line: `— name base64(id ‖ bytes)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigLine {
    pub name: String,
    pub id: u32,
    /// What follows the key id: an Ed25519 signature, or a cosignature's
    /// timestamp and signature.
    pub bytes: Vec<u8>,
}

impl SigLine {
    /// Parses one signature line (with or without its final newline).
    pub fn parse(line: &str) -> Result<Self, NoteError> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        if line.contains('\n') {
            return err("one signature line expected");
        }
        let rest = line.strip_prefix("— ").ok_or_else(|| {
            NoteError(format!(
                "{line:?} is not a signature line (— name signature)"
            ))
        })?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or_else(|| NoteError(format!("signature line {line:?} has no signature")))?;
        check_name(name)?;
        let raw = B64
            .decode(b64)
            .map_err(|_| NoteError(format!("signature of {name} is not base64")))?;
        if raw.len() < 5 {
            return err(format!("signature of {name} is too short"));
        }
        Ok(SigLine {
            name: name.to_owned(),
            id: u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]),
            bytes: raw[4..].to_vec(),
        })
    }

    /// The line, ending in a newline.
    pub fn line(&self) -> String {
        let mut raw = self.id.to_be_bytes().to_vec();
        raw.extend_from_slice(&self.bytes);
        format!("— {} {}\n", self.name, B64.encode(raw))
    }
}

/// A parsed signed note: its text (with the final newline) and signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub text: String,
    pub sigs: Vec<SigLine>,
}

/// Checks a note text: ends in a newline, no control characters but
/// newlines.
fn check_text(text: &str) -> Result<(), NoteError> {
    if text.is_empty() || !text.ends_with('\n') {
        return err("a note text must end in a newline");
    }
    if text.chars().any(|c| (c as u32) < 0x20 && c != '\n') {
        return err("a note may not hold control characters other than newline");
    }
    Ok(())
}

impl Note {
    /// Parses a signed note: the text is everything up to the last blank
    /// line; every line after it must be a well-formed signature line.
    pub fn parse(s: &str) -> Result<Self, NoteError> {
        if s.chars().any(|c| (c as u32) < 0x20 && c != '\n') {
            return err("a note may not hold control characters other than newline");
        }
        let split = s.rfind("\n\n").ok_or_else(|| {
            NoteError("a signed note needs a blank line before its signatures".into())
        })?;
        let text = &s[..split + 1];
        let sigs_part = &s[split + 2..];
        if !sigs_part.ends_with('\n') {
            return err("the last signature line must end in a newline");
        }
        let mut sigs = Vec::new();
        for line in sigs_part[..sigs_part.len() - 1].split('\n') {
            sigs.push(SigLine::parse(line)?);
            if sigs.len() > MAX_SIGNATURES {
                return err(format!("more than {MAX_SIGNATURES} signatures"));
            }
        }
        if sigs.is_empty() {
            return err("a signed note needs at least one signature");
        }
        check_text(text)?;
        Ok(Note {
            text: text.to_owned(),
            sigs,
        })
    }

    /// The note as text: the text, a blank line, the signature lines.
    pub fn encode(&self) -> String {
        let mut out = self.text.clone();
        out.push('\n');
        for s in &self.sigs {
            out.push_str(&s.line());
        }
        out
    }

    /// The signature lines by keys matching `v` (name and id).
    pub fn by(&self, v: &Vkey) -> impl Iterator<Item = &SigLine> {
        self.sigs
            .iter()
            .filter(move |s| s.name == v.name && s.id == v.id)
    }
}

/// An Ed25519 note signature (type 0x01) over `text` by `name`'s key.
pub fn sign(text: &str, name: &str, key: &SigningKey) -> Result<SigLine, NoteError> {
    check_name(name)?;
    check_text(text)?;
    let sig = key.sign(text.as_bytes());
    Ok(SigLine {
        name: name.to_owned(),
        id: key_id(name, TYPE_ED25519, key.verifying_key().as_bytes()),
        bytes: sig.to_bytes().to_vec(),
    })
}

fn verify_strict(key: &VerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
    <[u8; 64]>::try_from(sig)
        .map(|b| Signature::from_bytes(&b))
        .is_ok_and(|s| key.verify_strict(msg, &s).is_ok())
}

/// The message a cosignature signs: `cosignature/v1`, `time T`, then the
/// checkpoint text.
pub fn cosigned_message(text: &str, time: u64) -> String {
    format!("cosignature/v1\ntime {time}\n{text}")
}

/// A cosignature (type 0x04) of a checkpoint text at `time` (POSIX seconds).
pub fn cosign(text: &str, name: &str, key: &SigningKey, time: u64) -> Result<SigLine, NoteError> {
    check_name(name)?;
    check_text(text)?;
    if time > i64::MAX as u64 {
        return err("a cosignature time may not exceed 2^63 - 1");
    }
    let sig = key.sign(cosigned_message(text, time).as_bytes());
    let mut bytes = time.to_be_bytes().to_vec();
    bytes.extend_from_slice(&sig.to_bytes());
    Ok(SigLine {
        name: name.to_owned(),
        id: key_id(name, TYPE_COSIGNATURE, key.verifying_key().as_bytes()),
        bytes,
    })
}

/// Checks one signature line against a known key; for a cosignature
/// returns its time.
pub fn verify_line(text: &str, line: &SigLine, v: &Vkey) -> Result<Option<u64>, NoteError> {
    if line.name != v.name || line.id != v.id {
        return err(format!(
            "signature line of {} is not by key {:08x}",
            line.name, v.id
        ));
    }
    match v.sig_type {
        TYPE_ED25519 if verify_strict(&v.key, text.as_bytes(), &line.bytes) => Ok(None),
        TYPE_COSIGNATURE if line.bytes.len() == 72 => {
            let time = u64::from_be_bytes(line.bytes[..8].try_into().unwrap_or_default());
            if time > i64::MAX as u64 {
                return err(format!(
                    "cosignature of {} has a time beyond 2^63 - 1",
                    v.name
                ));
            }
            if verify_strict(
                &v.key,
                cosigned_message(text, time).as_bytes(),
                &line.bytes[8..],
            ) {
                Ok(Some(time))
            } else {
                err(format!("cosignature of {} does not verify", v.name))
            }
        }
        _ => err(format!("signature of {} does not verify", v.name)),
    }
}

/// Opens a note as C2SP says: lines of unknown keys are ignored, a line of
/// a known key that fails rejects the whole note, and at least one known
/// key must have signed. Returns the names whose signatures verified.
pub fn open(note: &Note, known: &[Vkey]) -> Result<Vec<String>, NoteError> {
    let mut verified = Vec::new();
    for line in &note.sigs {
        let Some(v) = known
            .iter()
            .find(|v| v.name == line.name && v.id == line.id)
        else {
            continue;
        };
        verify_line(&note.text, line, v)?;
        if !verified.contains(&v.name) {
            verified.push(v.name.clone());
        }
    }
    if verified.is_empty() {
        return err("no signature of a known key");
    }
    Ok(verified)
}

/// A log checkpoint: origin, size, root hash (and extension lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: [u8; 32],
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// The note text: origin, decimal size, base64 root, extensions.
    pub fn text(&self) -> String {
        let mut t = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        );
        for e in &self.extensions {
            t.push_str(e);
            t.push('\n');
        }
        t
    }

    /// Parses a checkpoint's note text.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        check_text(text)?;
        let lines: Vec<&str> = text[..text.len() - 1].split('\n').collect();
        if lines.len() < 3 {
            return err("a checkpoint has an origin, a size and a root hash line");
        }
        let origin = lines[0];
        if origin.is_empty() {
            return err("a checkpoint's origin line is empty");
        }
        let size_line = lines[1];
        if size_line.is_empty()
            || !size_line.bytes().all(|b| b.is_ascii_digit())
            || (size_line.len() > 1 && size_line.starts_with('0'))
        {
            return err(format!(
                "checkpoint size {size_line:?} is not a decimal without leading zeros"
            ));
        }
        let size = size_line
            .parse()
            .map_err(|_| NoteError(format!("checkpoint size {size_line:?} is too large")))?;
        let root = B64
            .decode(lines[2])
            .ok()
            .and_then(|r| <[u8; 32]>::try_from(r).ok())
            .ok_or_else(|| NoteError("checkpoint root is not base64 of 32 bytes".into()))?;
        let extensions: Vec<String> = lines[3..].iter().map(|s| s.to_string()).collect();
        if extensions.iter().any(String::is_empty) {
            return err("a checkpoint's extension lines may not be empty");
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }
}

/// The first line of a C2SP `tlog-proof@v1` bundle.
pub const PROOF_HEADER: &str = "c2sp.org/tlog-proof@v1";

/// An offline-verifiable proof (C2SP `tlog-proof@v1`): a leaf index, its
/// inclusion path, and the (cosigned) checkpoint it is proved against,
/// verbatim. certex puts the record's exact logged bytes in `extra`, so the
/// bundle alone gives the leaf hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub extra: Option<Vec<u8>>,
    pub index: u64,
    pub path: Vec<[u8; 32]>,
    /// The signed checkpoint note.
    pub checkpoint: String,
}

impl Proof {
    pub fn encode(&self) -> String {
        let mut out = format!("{PROOF_HEADER}\n");
        if let Some(e) = &self.extra {
            out.push_str(&format!("extra {}\n", B64.encode(e)));
        }
        out.push_str(&format!("index {}\n", self.index));
        for h in &self.path {
            out.push_str(&B64.encode(h));
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.checkpoint);
        out
    }

    pub fn parse(s: &str) -> Result<Self, NoteError> {
        let rest = s
            .strip_prefix(PROOF_HEADER)
            .and_then(|r| r.strip_prefix('\n'))
            .ok_or_else(|| {
                NoteError(format!(
                    "not a tlog proof: the first line must be {PROOF_HEADER}"
                ))
            })?;
        let (head, checkpoint) = rest.split_once("\n\n").ok_or_else(|| {
            NoteError("a tlog proof needs a blank line before its checkpoint".into())
        })?;
        let mut lines = head.split('\n').peekable();
        let mut extra = None;
        if let Some(e) = lines.peek().and_then(|l| l.strip_prefix("extra ")) {
            extra = Some(
                B64.decode(e)
                    .map_err(|_| NoteError("the extra line is not base64".into()))?,
            );
            lines.next();
        }
        let index_line = lines
            .next()
            .and_then(|l| l.strip_prefix("index "))
            .ok_or_else(|| NoteError("a tlog proof needs an `index N` line".into()))?;
        if index_line.is_empty()
            || !index_line.bytes().all(|b| b.is_ascii_digit())
            || (index_line.len() > 1 && index_line.starts_with('0'))
        {
            return err(format!(
                "index {index_line:?} is not a decimal without leading zeros"
            ));
        }
        let index = index_line
            .parse()
            .map_err(|_| NoteError(format!("index {index_line:?} is too large")))?;
        let path = lines
            .map(|l| {
                B64.decode(l)
                    .ok()
                    .and_then(|h| <[u8; 32]>::try_from(h).ok())
                    .ok_or_else(|| NoteError(format!("proof line {l:?} is not base64 of 32 bytes")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Note::parse(checkpoint)?;
        Ok(Proof {
            extra,
            index,
            path,
            checkpoint: checkpoint.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go's `golang.org/x/mod/sumdb/note` example: the private key, the
    /// text, and the signature it documents.
    const GO_SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                           then you don't know what your problem is.\n";
    const GO_SIG: &str = "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=";

    fn go_key() -> SigningKey {
        let b64 = GO_SKEY.splitn(5, '+').nth(4).unwrap();
        let raw = B64.decode(b64).unwrap();
        assert_eq!(raw[0], TYPE_ED25519);
        SigningKey::from_bytes(&raw[1..].try_into().unwrap())
    }

    #[test]
    fn the_go_example_signs_to_its_documented_bytes() {
        let key = go_key();
        let line = sign(GO_TEXT, "PeterNeumann", &key).unwrap();
        assert_eq!(format!("{:08x}", line.id), "c74f20a3");
        assert_eq!(line.line(), format!("— PeterNeumann {GO_SIG}\n"));
        let v = Vkey::new("PeterNeumann", TYPE_ED25519, key.verifying_key()).unwrap();
        let again = Vkey::parse(&v.to_string()).unwrap();
        assert_eq!(again, v);
        let note = Note::parse(&format!("{GO_TEXT}\n— PeterNeumann {GO_SIG}\n")).unwrap();
        assert_eq!(open(&note, &[v]).unwrap(), vec!["PeterNeumann"]);
    }

    /// The C2SP signed-note example verifier key and note.
    #[test]
    fn the_c2sp_example_note_verifies() {
        let v =
            Vkey::parse("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k")
                .unwrap();
        let text = "This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";
        let note = Note::parse(text).unwrap();
        assert_eq!(note.text, "This is an example message.\n");
        assert_eq!(
            open(&note, std::slice::from_ref(&v)).unwrap(),
            vec!["example.com/foo"]
        );
        assert_eq!(note.encode(), text);
        // One flipped byte of the text, and the known key's failure rejects it.
        let bad = Note::parse(&text.replace("example message", "example massage")).unwrap();
        assert!(open(&bad, &[v]).is_err());
    }

    #[test]
    fn unknown_keys_are_ignored_and_a_known_bad_one_rejects() {
        let key = go_key();
        let other = SigningKey::from_bytes(&[7; 32]);
        let mut note = Note {
            text: GO_TEXT.into(),
            sigs: vec![sign(GO_TEXT, "PeterNeumann", &key).unwrap()],
        };
        let mine = Vkey::new("PeterNeumann", TYPE_ED25519, key.verifying_key()).unwrap();
        let theirs = Vkey::new("someone.example", TYPE_ED25519, other.verifying_key()).unwrap();
        // A stranger's line is ignored…
        note.sigs
            .push(sign(GO_TEXT, "stranger.example", &other).unwrap());
        assert_eq!(open(&note, std::slice::from_ref(&mine)).unwrap().len(), 1);
        // …but a known key's bad line rejects the whole note.
        let mut forged = sign(GO_TEXT, "someone.example", &other).unwrap();
        forged.bytes[0] ^= 1;
        note.sigs.push(forged);
        assert!(open(&note, &[mine.clone(), theirs]).is_err());
        // No known key at all.
        assert!(open(&Note::parse(&note.encode()).unwrap(), &[]).is_err());
    }

    #[test]
    fn checkpoints_and_cosignatures() {
        // The C2SP tlog-cosignature example checkpoint.
        let text =
            "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
        let cp = Checkpoint::parse(text).unwrap();
        assert_eq!(cp.origin, "example.com/behind-the-sofa");
        assert_eq!(cp.size, 20_852_163);
        assert_eq!(cp.text(), text);
        // The message a cosignature signs, as the spec spells it.
        assert_eq!(
            cosigned_message(text, 1_679_315_147),
            "cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
        );
        // The example witness line is 4 + 8 + 64 bytes: id, time, signature.
        let example = "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n";
        let n = Note::parse(&format!("{text}\n{example}")).unwrap();
        assert_eq!(n.sigs[0].bytes.len(), 72);
        assert_eq!(
            u64::from_be_bytes(n.sigs[0].bytes[..8].try_into().unwrap()),
            1_679_315_147
        );

        let witness = SigningKey::from_bytes(&[9; 32]);
        let line = cosign(text, "member.example/w", &witness, 1_700_000_000).unwrap();
        let v = Vkey::new(
            "member.example/w",
            TYPE_COSIGNATURE,
            witness.verifying_key(),
        )
        .unwrap();
        assert_eq!(verify_line(text, &line, &v).unwrap(), Some(1_700_000_000));
        assert!(verify_line(&text.replace("20852163", "20852164"), &line, &v).is_err());
        // A 0x01 key of the same name does not accept a cosignature.
        let plain = Vkey::new("member.example/w", TYPE_ED25519, witness.verifying_key()).unwrap();
        assert_ne!(plain.id, v.id);
    }

    #[test]
    fn malformed_notes_and_keys_are_refused() {
        for bad in [
            "no blank line\n— a AAAAAAA=\n",
            "text\n\n— a\n",
            "text\n\n- a AAAAAAAA\n",
            "text\n\n— a AAAAAAAA",
            "text\n\n— a !!!\n",
            "te\x07xt\n\n— a AAAAAAAA\n",
            "text\n\n",
        ] {
            assert!(Note::parse(bad).is_err(), "{bad:?}");
        }
        for bad in [
            "example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
            "example.com/foo+530d903a+BekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
            "example com+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
            "example.com/foo+530d903a",
        ] {
            assert!(Vkey::parse(bad).is_err(), "{bad}");
        }
        for bad in [
            "o\n007\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "o\n1\nAAA=\n",
            "o\n1\n",
        ] {
            assert!(Checkpoint::parse(bad).is_err(), "{bad:?}");
        }
    }

    /// Round trips through `signed_note` (Cloudflare's port of Go's note
    /// package), a second implementation used only here.
    #[test]
    fn a_second_implementation_reads_ours_and_we_read_its() {
        use signed_note::{StandardSigner, StandardVerifier, VerifierList};
        let key = SigningKey::from_bytes(&[42; 32]);
        let cp = Checkpoint {
            origin: "certex.example/certex/v1".into(),
            size: 7,
            root: [3; 32],
            extensions: vec![],
        };
        let ours = Note {
            text: cp.text(),
            sigs: vec![sign(&cp.text(), "certex.example/certex/v1", &key).unwrap()],
        };
        let vkey = Vkey::new(
            "certex.example/certex/v1",
            TYPE_ED25519,
            key.verifying_key(),
        )
        .unwrap();
        let theirs = signed_note::Note::from_bytes(ours.encode().as_bytes()).unwrap();
        let known = VerifierList::new(vec![Box::new(
            StandardVerifier::new(&vkey.to_string()).unwrap(),
        )]);
        let (verified, _) = theirs.verify(&known).unwrap();
        assert_eq!(verified.len(), 1);
        assert_eq!(theirs.text(), cp.text().as_bytes());
        assert_eq!(
            signed_note::new_ed25519_verifier_key("certex.example/certex/v1", &key.verifying_key()),
            vkey.to_string()
        );

        // Their signer, our verifier.
        let mut seed = [0u8; 33];
        seed[0] = TYPE_ED25519;
        seed[1..].copy_from_slice(&[5; 32]);
        let their_key = SigningKey::from_bytes(&[5; 32]);
        let id = key_id(
            "witness.example/w",
            TYPE_ED25519,
            their_key.verifying_key().as_bytes(),
        );
        let skey = format!(
            "PRIVATE+KEY+witness.example/w+{id:08x}+{}",
            B64.encode(seed)
        );
        let signer = StandardSigner::new(&skey).unwrap();
        let mut n = signed_note::Note::new(cp.text().as_bytes(), &[]).unwrap();
        n.add_sigs(&[&signer]).unwrap();
        let parsed = Note::parse(std::str::from_utf8(&n.to_bytes()).unwrap()).unwrap();
        let v = Vkey::new("witness.example/w", TYPE_ED25519, their_key.verifying_key()).unwrap();
        assert_eq!(open(&parsed, &[v]).unwrap(), vec!["witness.example/w"]);
    }

    /// A cosignature checked the way the tlog-cosignature spec spells it,
    /// with nothing of this module but the line it produced.
    #[test]
    fn cosignatures_match_the_spec_written_out() {
        use ed25519_dalek::Verifier;
        let text = "certex.example/certex/v1\n12\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
        let w = SigningKey::from_bytes(&[11; 32]);
        let line = cosign(text, "member.example/w", &w, 1_779_000_000)
            .unwrap()
            .line();
        let b64 = line.trim_end().rsplit(' ').next().unwrap();
        let raw = B64.decode(b64).unwrap();
        let mut id_input = b"member.example/w\n".to_vec();
        id_input.push(0x04);
        id_input.extend_from_slice(w.verifying_key().as_bytes());
        assert_eq!(&raw[..4], &Sha256::digest(&id_input)[..4]);
        assert_eq!(
            u64::from_be_bytes(raw[4..12].try_into().unwrap()),
            1_779_000_000
        );
        let msg = format!("cosignature/v1\ntime 1779000000\n{text}");
        let sig = Signature::from_bytes(&raw[12..76].try_into().unwrap());
        assert!(w.verifying_key().verify(msg.as_bytes(), &sig).is_ok());
    }

    #[test]
    fn proof_bundles_round_trip_and_refuse_damage() {
        let key = go_key();
        let cp = Checkpoint {
            origin: "certex.example/certex/v1".into(),
            size: 5,
            root: [1; 32],
            extensions: vec![],
        };
        let note = Note {
            text: cp.text(),
            sigs: vec![sign(&cp.text(), "certex.example/certex/v1", &key).unwrap()],
        }
        .encode();
        let p = Proof {
            extra: Some(b"bytes".to_vec()),
            index: 3,
            path: vec![[2; 32], [4; 32]],
            checkpoint: note,
        };
        let text = p.encode();
        assert!(text.starts_with("c2sp.org/tlog-proof@v1\nextra Ynl0ZXM=\nindex 3\n"));
        assert_eq!(Proof::parse(&text).unwrap(), p);
        let bare = Proof {
            extra: None,
            path: vec![],
            ..p.clone()
        };
        assert_eq!(Proof::parse(&bare.encode()).unwrap(), bare);
        for bad in [
            text.replace("tlog-proof@v1", "tlog-proof@v2"),
            text.replace("index 3", "index 03"),
            text.replace("index 3", "idx 3"),
            text.replacen("AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=", "AgIC", 1),
        ] {
            assert!(Proof::parse(&bad).is_err(), "{bad}");
        }
    }
}
