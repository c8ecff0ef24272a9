//! The body of a C2SP tlog-witness `add-checkpoint` request, parsed with no
//! state and no keys: an `old N` line, at most 63 base64 consistency-proof
//! hashes, an empty line, then the checkpoint as a signed note, with
//! exact duplicate signature lines dropped (each would cost a signature
//! verification and says nothing new). Whatever is wrong here is the
//! client's mistake (400), told in one short line an operator can act on:
//! any text the client sent is cut to a few dozen characters ([`quote`],
//! [`clip`]) before it reaches a refusal or a log line.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::rules::note::{Checkpoint, Note};

/// Most consistency-proof lines a request may carry (C2SP tlog-witness:
/// a client MUST NOT send more than 63).
pub const MAX_PROOF_LINES: usize = 63;

/// A well-formed `add-checkpoint` request, not yet checked against keys or
/// the witness's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// The size of the checkpoint the client believes the witness holds.
    pub old: u64,
    /// The RFC 6962 consistency proof from `old` to the checkpoint's size.
    pub proof: Vec<[u8; 32]>,
    /// The checkpoint as submitted: its text and every signature line.
    pub note: Note,
    /// The checkpoint's origin, size and root, read from the note text.
    pub checkpoint: Checkpoint,
}

/// Why a request body is malformed: one line, for the client and the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(pub String);

fn bad<T>(msg: impl Into<String>) -> Result<T, RequestError> {
    Err(RequestError(msg.into()))
}

/// Characters of client text quoted in a refusal or a log line.
pub const QUOTE_CHARS: usize = 80;
/// Bytes of a message that may quote client text (such as a `rules::note`
/// parse error, which quotes a whole line).
pub const CLIP_BYTES: usize = 160;

/// At most [`QUOTE_CHARS`] characters of what the client sent, quoted and
/// escaped (`…` marks a cut), so a refusal stays one short line whatever
/// the input.
pub fn quote(s: &str) -> String {
    let mut cut: String = s.chars().take(QUOTE_CHARS).collect();
    if cut.len() < s.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

/// At most [`CLIP_BYTES`] bytes of a message that may quote client text,
/// control characters escaped and `…` marking a cut: one short line.
pub fn clip(msg: &str) -> String {
    let mut out = String::new();
    for c in msg.chars() {
        let piece: String = if c.is_control() {
            c.escape_default().collect()
        } else {
            c.into()
        };
        if out.len() + piece.len() > CLIP_BYTES {
            out.push('…');
            break;
        }
        out.push_str(&piece);
    }
    out
}

/// Parses an `add-checkpoint` body.
pub fn parse(body: &[u8]) -> Result<AddCheckpoint, RequestError> {
    let Ok(s) = std::str::from_utf8(body) else {
        return bad("the request body is not UTF-8 text");
    };
    let Some((old_line, mut rest)) = s.split_once('\n') else {
        return bad("the request body must start with an \"old <size>\" line ending in a newline");
    };
    let old = parse_old(old_line)?;
    let mut proof = Vec::new();
    loop {
        let Some((line, after)) = rest.split_once('\n') else {
            return bad(
                "the consistency proof lines must be followed by an empty line, then the checkpoint",
            );
        };
        rest = after;
        if line.is_empty() {
            break;
        }
        if proof.len() == MAX_PROOF_LINES {
            return bad(format!(
                "more than {MAX_PROOF_LINES} consistency proof lines"
            ));
        }
        let hash = B64
            .decode(line)
            .ok()
            .and_then(|h| <[u8; 32]>::try_from(h).ok());
        let Some(hash) = hash else {
            return bad(format!(
                "consistency proof line {} is not a base64 SHA-256 hash (32 bytes): {}",
                proof.len() + 1,
                quote(line)
            ));
        };
        proof.push(hash);
    }
    if old == 0 && !proof.is_empty() {
        return bad("the consistency proof must be empty when the old size is 0");
    }
    let mut note =
        Note::parse(rest).map_err(|e| RequestError(format!("checkpoint: {}", clip(&e.0))))?;
    let checkpoint = Checkpoint::parse(&note.text)
        .map_err(|e| RequestError(format!("checkpoint: {}", clip(&e.0))))?;
    // At most MAX_SIGNATURES lines, so the quadratic scan is cheap.
    let mut sigs = Vec::with_capacity(note.sigs.len());
    for s in note.sigs {
        if !sigs.contains(&s) {
            sigs.push(s);
        }
    }
    note.sigs = sigs;
    Ok(AddCheckpoint {
        old,
        proof,
        note,
        checkpoint,
    })
}

/// `old`, one space, a decimal without leading zeros (`0` for zero).
fn parse_old(line: &str) -> Result<u64, RequestError> {
    let wrong = || {
        RequestError(format!(
            "the first line must be \"old <size>\" with a decimal size without leading zeros, got {}",
            quote(line)
        ))
    };
    let digits = line.strip_prefix("old ").ok_or_else(wrong)?;
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return Err(wrong());
    }
    digits
        .parse()
        .map_err(|_| RequestError(format!("old size {digits} is too large")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::note;
    use ed25519_dalek::SigningKey;

    const ORIGIN: &str = "example.com/log";

    fn signed(size: u64) -> String {
        let key = SigningKey::from_bytes(&[7; 32]);
        let text = Checkpoint {
            origin: ORIGIN.into(),
            size,
            root: [size as u8; 32],
            extensions: vec![],
        }
        .text();
        let sig = note::sign(&text, ORIGIN, &key).unwrap();
        Note {
            text,
            sigs: vec![sig],
        }
        .encode()
    }

    fn body(head: &str, size: u64) -> Vec<u8> {
        format!("{head}\n{}", signed(size)).into_bytes()
    }

    fn refusal(b: &[u8]) -> String {
        parse(b).unwrap_err().0
    }

    #[test]
    fn a_first_submission_has_old_zero_and_no_proof() {
        let r = parse(&body("old 0\n", 5)).unwrap();
        assert_eq!(r.old, 0);
        assert!(r.proof.is_empty());
        assert_eq!(r.checkpoint.origin, ORIGIN);
        assert_eq!(r.checkpoint.size, 5);
        assert_eq!(r.note.sigs.len(), 1);
    }

    #[test]
    fn proof_lines_are_read_in_order() {
        let a = B64.encode([1u8; 32]);
        let b = B64.encode([2u8; 32]);
        let r = parse(&body(&format!("old 3\n{a}\n{b}\n"), 9)).unwrap();
        assert_eq!(r.old, 3);
        assert_eq!(r.proof, vec![[1u8; 32], [2u8; 32]]);
    }

    #[test]
    fn the_old_line_is_strict() {
        for head in [
            "old 01\n",
            "old -1\n",
            "old  1\n",
            "old\n",
            "Old 1\n",
            "old 1 \n",
            "old +1\n",
            "old 0x1\n",
            "old 1\r\n",
            "\n",
        ] {
            let why = refusal(&body(head, 5));
            assert!(why.contains("old <size>"), "{head:?}: {why}");
        }
        assert!(refusal(&body("old 18446744073709551616\n", 5)).contains("too large"));
        assert_eq!(
            parse(&body("old 18446744073709551615\n", 5)).unwrap().old,
            u64::MAX
        );
        assert!(refusal(b"old 1").contains("ending in a newline"));
    }

    #[test]
    fn at_most_63_proof_lines() {
        let line = format!("{}\n", B64.encode([9u8; 32]));
        let ok = format!("old 1\n{}", line.repeat(63));
        assert_eq!(parse(&body(&ok, 5)).unwrap().proof.len(), 63);
        let too_many = format!("old 1\n{}", line.repeat(64));
        assert!(refusal(&body(&too_many, 5)).contains("more than 63"));
    }

    #[test]
    fn each_proof_line_is_one_32_byte_hash() {
        for line in [
            B64.encode([1u8; 31]),
            B64.encode([1u8; 33]),
            "not base64!".to_string(),
            B64.encode([1u8; 32]).trim_end_matches('=').to_string(),
            format!(" {}", B64.encode([1u8; 32])),
        ] {
            let why = refusal(&body(&format!("old 1\n{line}\n"), 5));
            assert!(why.contains("line 1 is not a base64"), "{line:?}: {why}");
        }
    }

    #[test]
    fn old_zero_takes_no_proof() {
        let line = B64.encode([1u8; 32]);
        assert!(refusal(&body(&format!("old 0\n{line}\n"), 5)).contains("must be empty"));
    }

    #[test]
    fn the_empty_line_and_a_signed_checkpoint_are_required() {
        assert!(refusal(b"old 0\n").contains("followed by an empty line"));
        assert!(refusal(b"old 0\n\n").contains("checkpoint:"));
        // A checkpoint with no signature line.
        let unsigned = format!("old 0\n\n{ORIGIN}\n1\n{}\n", B64.encode([0u8; 32]));
        assert!(refusal(unsigned.as_bytes()).starts_with("checkpoint:"));
        // A signed note that is not a checkpoint.
        let key = SigningKey::from_bytes(&[7; 32]);
        let sig = note::sign("hello\n", ORIGIN, &key).unwrap();
        let n = Note {
            text: "hello\n".into(),
            sigs: vec![sig],
        };
        let why = refusal(format!("old 0\n\n{}", n.encode()).as_bytes());
        assert!(why.contains("checkpoint:"), "{why}");
        assert!(refusal(&[b'o', b'l', b'd', b' ', b'0', b'\n', 0xff]).contains("UTF-8"));
    }

    #[test]
    fn refusals_stay_one_short_line() {
        let long = "x".repeat(10_000);
        let why = refusal(format!("old {long}\n").as_bytes());
        assert!(why.len() < 200 && !why.contains('\n'), "{why}");
        let why = refusal(format!("old 1\n{long}\n\n").as_bytes());
        assert!(why.len() < 200 && !why.contains('\n'), "{why}");
    }

    #[test]
    fn a_huge_bad_signature_line_is_quoted_short() {
        // One signature line of 60 KB: the note parser quotes it whole.
        let garbage = "A".repeat(60_000);
        let b = format!(
            "old 0\n\n{}\n— {garbage}\n",
            Note::parse(&signed(3)).unwrap().text
        );
        let why = refusal(b.as_bytes());
        assert!(why.starts_with("checkpoint:"), "{why}");
        assert!(why.len() < 200 && !why.contains('\n'), "{why}");
        assert!(why.ends_with('…'), "{why}");
        // Unclipped text stays as it is; control characters are escaped.
        assert_eq!(clip("short"), "short");
        assert_eq!(clip("a\u{7}b"), "a\\u{7}b");
        assert!(clip(&"é".repeat(1000)).len() <= CLIP_BYTES + '…'.len_utf8());
        assert_eq!(quote(&"x".repeat(1000)).chars().count(), QUOTE_CHARS + 3);
    }

    #[test]
    fn duplicate_signature_lines_are_dropped() {
        let n = Note::parse(&signed(5)).unwrap();
        let line = n.sigs[0].line();
        let other = note::sign(
            &n.text,
            "example.com/other",
            &SigningKey::from_bytes(&[8; 32]),
        )
        .unwrap()
        .line();
        let b = format!(
            "old 0\n\n{}\n{}{other}{}",
            n.text,
            line.repeat(60),
            line.repeat(39)
        );
        let r = parse(b.as_bytes()).unwrap();
        assert_eq!(r.note.sigs.len(), 2);
        assert_eq!(r.note.sigs[0].line(), line);
        assert_eq!(r.note.sigs[1].line(), other);
    }
}
