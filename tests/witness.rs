//! `certex witness serve` as a log sees it: a real process on 127.0.0.1:0
//! with a temporary state directory, real HTTP, real Merkle trees and
//! checkpoints signed with a log key made here. Every status of C2SP
//! tlog-witness, the cosignature checked by our verifier, by the
//! `signed_note` crate and by hand from the spec, atomic check-and-persist
//! under concurrent requests, state surviving a crash, no write for a
//! resent checkpoint, short refusals and log lines whatever the input, and
//! the server's limits on connections and on time to send headers.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use certex::log::merkle::{Hash, MemoryTree, consistency_path, leaf_hash, root};
use certex::rules::note::{self, Checkpoint, Note, SigLine, TYPE_COSIGNATURE, TYPE_ED25519, Vkey};
use common::witness::{Answer, Http, WitnessProcess, certex, serve_args};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ORIGIN: &str = "example.org/certex-log";
const WITNESS: &str = "witness.example.org/w1";

// === a log made in the test ===

struct Log {
    origin: String,
    key: SigningKey,
    tree: MemoryTree,
}

impl Log {
    fn new(origin: &str) -> Self {
        Log {
            origin: origin.into(),
            key: SigningKey::generate(&mut rand_core::OsRng),
            tree: MemoryTree::new(),
        }
    }

    fn vkey(&self) -> Vkey {
        Vkey::new(&self.origin, TYPE_ED25519, self.key.verifying_key()).unwrap()
    }

    /// Appends leaves up to `size`.
    fn grow_to(&mut self, size: u64) {
        while self.tree.size() < size {
            let i = self.tree.size();
            self.tree
                .push(leaf_hash(format!("{} entry {i}", self.origin).as_bytes()));
        }
    }

    fn root(&self, size: u64) -> Hash {
        root(size, &self.tree).unwrap()
    }

    fn proof(&self, old: u64, new: u64) -> Vec<Hash> {
        consistency_path(old, new, &self.tree).unwrap()
    }

    /// The checkpoint of `size` leaves with `root`, signed by `signers`.
    fn note_with(&self, size: u64, root: Hash, signers: &[(&str, &SigningKey)]) -> String {
        let text = Checkpoint {
            origin: self.origin.clone(),
            size,
            root,
            extensions: vec![],
        }
        .text();
        let sigs = signers
            .iter()
            .map(|(name, key)| note::sign(&text, name, key).unwrap())
            .collect();
        Note { text, sigs }.encode()
    }

    /// The real checkpoint of `size` leaves, signed by the log.
    fn note(&self, size: u64) -> String {
        self.note_with(size, self.root(size), &[(&self.origin, &self.key)])
    }

    /// An add-checkpoint body: `old`, the real proof from `old`, the
    /// checkpoint of `size`.
    fn add(&self, old: u64, size: u64) -> String {
        body(old, &self.proof(old, size), &self.note(size))
    }
}

fn body(old: u64, proof: &[Hash], note: &str) -> String {
    let mut b = format!("old {old}\n");
    for h in proof {
        b.push_str(&B64.encode(h));
        b.push('\n');
    }
    b.push('\n');
    b.push_str(note);
    b
}

// === a witness made in the test ===

struct Setup {
    tmp: TempDir,
    key: PathBuf,
}

impl Setup {
    /// A witness key written by `certex witness init`.
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("witness.key");
        let out = certex(&[
            "witness".into(),
            "init".into(),
            "--key".into(),
            key.display().to_string(),
            "--name".into(),
            WITNESS.into(),
        ]);
        assert!(out.status.success(), "{out:?}");
        Setup { tmp, key }
    }

    fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    fn start(&self, logs: &[&Log]) -> WitnessProcess {
        let logs: Vec<String> = logs.iter().map(|l| l.vkey().to_string()).collect();
        WitnessProcess::start(&self.state(), &self.key, WITNESS, &logs)
    }
}

fn assert_status(a: &Answer, status: u16, what: &str) {
    assert_eq!(a.status, status, "{what}: {a:?}");
}

/// A refusal reason: one line of plain text.
fn assert_reason(a: &Answer, status: u16, words: &str) {
    assert_status(a, status, words);
    assert!(a.content_type.starts_with("text/plain"), "{a:?}");
    assert!(
        a.body.ends_with('\n') && a.body.trim_end().lines().count() == 1,
        "{a:?}"
    );
    assert!(a.body.contains(words), "expected {words:?} in {a:?}");
}

fn assert_size_conflict(a: &Answer, kept: u64) {
    assert_status(a, 409, "old size conflict");
    assert_eq!(a.content_type, "text/x.tlog.size");
    assert_eq!(a.body, format!("{kept}\n"));
}

// === cosignature/v1 written from c2sp.org/tlog-cosignature, for signed_note ===

/// An Ed25519 cosignature/v1 verifier for the `signed_note` crate, written
/// from the spec alone: key id `SHA-256(name ‖ "\n" ‖ 0x04 ‖ key)[:4]`,
/// signature `u64 timestamp ‖ Ed25519 signature` over
/// `"cosignature/v1\ntime T\n" ‖ checkpoint text`.
struct CosignatureV1 {
    name: String,
    key: VerifyingKey,
}

impl CosignatureV1 {
    fn from_vkey(vkey: &str) -> Self {
        let mut parts = vkey.splitn(3, '+');
        let name = parts.next().unwrap().to_owned();
        let _id = parts.next().unwrap();
        let raw = B64.decode(parts.next().unwrap()).unwrap();
        assert_eq!(raw[0], 0x04, "a cosignature vkey has type 0x04");
        let key = VerifyingKey::from_bytes(&raw[1..].try_into().unwrap()).unwrap();
        CosignatureV1 { name, key }
    }
}

impl signed_note::Verifier for CosignatureV1 {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        let mut h = Sha256::new();
        h.update(self.name.as_bytes());
        h.update(b"\n");
        h.update([0x04]);
        h.update(self.key.as_bytes());
        let d = h.finalize();
        u32::from_be_bytes([d[0], d[1], d[2], d[3]])
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        if sig.len() != 8 + 64 {
            return false;
        }
        let time = u64::from_be_bytes(sig[..8].try_into().unwrap());
        if time > i64::MAX as u64 {
            return false;
        }
        let mut signed = format!("cosignature/v1\ntime {time}\n").into_bytes();
        signed.extend_from_slice(msg);
        let s = Signature::from_bytes(&sig[8..].try_into().unwrap());
        self.key.verify_strict(&signed, &s).is_ok()
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Checks a 200 answer is one cosignature of `checkpoint` by the witness,
/// three ways; returns its time.
fn check_cosignature(a: &Answer, checkpoint: &str, witness_vkey: &str) -> u64 {
    assert_status(a, 200, "cosignature");
    assert!(a.content_type.starts_with("text/plain"), "{a:?}");
    assert!(a.body.starts_with("— ") && a.body.ends_with('\n'), "{a:?}");
    assert_eq!(a.body.lines().count(), 1, "{a:?}");
    let text = Note::parse(checkpoint).unwrap().text;

    // 1. Our verifier, with the key the witness printed.
    let vkey = Vkey::parse(witness_vkey).unwrap();
    assert_eq!(vkey.sig_type, TYPE_COSIGNATURE);
    assert_eq!(vkey.name, WITNESS);
    let line = SigLine::parse(&a.body).unwrap();
    let time = note::verify_line(&text, &line, &vkey).unwrap().unwrap();
    let t = now();
    assert!(
        time <= t && time + 60 >= t,
        "cosignature time {time}, now {t}"
    );

    // 2. The signed_note crate: the answer appended to the checkpoint, as
    // the spec tells clients to do, opened with the witness's key only.
    let cosigned = format!("{checkpoint}{}", a.body);
    let theirs = signed_note::Note::from_bytes(cosigned.as_bytes()).unwrap();
    let known =
        signed_note::VerifierList::new(vec![Box::new(CosignatureV1::from_vkey(witness_vkey))]);
    let (verified, unverified) = theirs.verify(&known).unwrap();
    assert_eq!(verified.len(), 1);
    assert_eq!(verified[0].name(), WITNESS);
    assert_eq!(
        unverified.len(),
        Note::parse(checkpoint).unwrap().sigs.len(),
        "the log's own signatures are unknown here"
    );

    // 3. By hand: the line's bytes are key id ‖ timestamp ‖ signature.
    let raw = B64
        .decode(a.body.trim_end().rsplit(' ').next().unwrap())
        .unwrap();
    assert_eq!(raw.len(), 4 + 8 + 64);
    let v = CosignatureV1::from_vkey(witness_vkey);
    assert_eq!(
        u32::from_be_bytes(raw[..4].try_into().unwrap()),
        signed_note::Verifier::key_id(&v)
    );
    assert_eq!(u64::from_be_bytes(raw[4..12].try_into().unwrap()), time);
    assert!(signed_note::Verifier::verify(
        &v,
        text.as_bytes(),
        &raw[4..]
    ));
    assert!(!signed_note::Verifier::verify(
        &v,
        text.replace(ORIGIN, "example.org/other").as_bytes(),
        &raw[4..]
    ));
    time
}

// === the tests ===

#[tokio::test]
async fn a_growing_log_is_cosigned_and_every_refusal_has_its_status() {
    let setup = Setup::new();
    let mut log = Log::new(ORIGIN);
    let w = setup.start(&[&log]);
    let http = Http::default();

    // First contact: old 0, no proof.
    log.grow_to(5);
    let a = http.add_checkpoint(&w.url, log.add(0, 5)).await;
    check_cosignature(&a, &log.note(5), &w.vkey);

    // Growth with a real consistency proof, several times, to sizes that
    // exercise perfect and imperfect old trees.
    for (old, new) in [(5, 8), (8, 13), (13, 32), (32, 33)] {
        log.grow_to(new);
        let a = http.add_checkpoint(&w.url, log.add(old, new)).await;
        check_cosignature(&a, &log.note(new), &w.vkey);
    }

    // The same checkpoint again is cosigned again (old = size, no proof).
    let a = http.add_checkpoint(&w.url, log.add(33, 33)).await;
    check_cosignature(&a, &log.note(33), &w.vkey);

    log.grow_to(40);
    // A wrong old: 409 with the size kept, as text/x.tlog.size.
    for old in [0, 5, 32, 34] {
        let a = http.add_checkpoint(&w.url, log.add(old, 40)).await;
        assert_size_conflict(&a, 33);
    }

    // A proof with one byte flipped: 422.
    let mut proof = log.proof(33, 40);
    proof[0][7] ^= 1;
    let a = http
        .add_checkpoint(&w.url, body(33, &proof, &log.note(40)))
        .await;
    assert_reason(&a, 422, "does not verify");
    // A proof cut short, and one for another pair of sizes: 422.
    let proof = log.proof(33, 40);
    let a = http
        .add_checkpoint(&w.url, body(33, &proof[1..], &log.note(40)))
        .await;
    assert_reason(&a, 422, "consistency proof from size 33 to 40");
    let a = http
        .add_checkpoint(&w.url, body(33, &log.proof(32, 40), &log.note(40)))
        .await;
    assert_status(&a, 422, "proof from the wrong size");
    // A checkpoint whose root is not the log's: the real proof fails.
    let forged = log.note_with(40, [7; 32], &[(ORIGIN, &log.key)]);
    let a = http
        .add_checkpoint(&w.url, body(33, &log.proof(33, 40), &forged))
        .await;
    assert_status(&a, 422, "forged root");

    // The same size with another root: 409, and not a size answer.
    let fork = log.note_with(33, [9; 32], &[(ORIGIN, &log.key)]);
    let a = http.add_checkpoint(&w.url, body(33, &[], &fork)).await;
    assert_reason(&a, 409, "another root hash");
    assert_ne!(a.content_type, "text/x.tlog.size");

    // The fork, under the log's own signature, is evidence: an error line
    // with the checkpoint. A proof that does not verify is only the
    // client's mistake (anyone can resend a genuine checkpoint with junk):
    // a warning without the checkpoint, and the four of them within 10 s
    // make one line.
    let forks = w.wait_log(&["ERROR", "(fork)", ORIGIN]);
    assert_eq!(forks.len(), 1, "{forks:?}");
    assert!(forks[0].contains(&B64.encode([9u8; 32])), "{forks:?}");
    let proofs = w.log_lines(&["a client sent a consistency proof that does not verify"]);
    assert_eq!(proofs.len(), 1, "{proofs:?}");
    assert!(
        proofs[0].contains("WARN") && proofs[0].contains(ORIGIN) && proofs[0].contains("size=40"),
        "{proofs:?}"
    );
    assert!(
        !proofs[0].contains(&B64.encode(log.root(40))) && !proofs[0].contains("checkpoint="),
        "{proofs:?}"
    );
    assert!(w.log_lines(&["ERROR", "consistency proof"]).is_empty());

    // old beyond the checkpoint's size: 400.
    let a = http
        .add_checkpoint(&w.url, body(41, &[], &log.note(40)))
        .await;
    assert_reason(&a, 400, "larger than the checkpoint's size 40");

    // None of the refusals moved the state: 33 → 40 still works.
    let a = http.add_checkpoint(&w.url, log.add(33, 40)).await;
    check_cosignature(&a, &log.note(40), &w.vkey);
    let a = http.add_checkpoint(&w.url, log.add(33, 40)).await;
    assert_size_conflict(&a, 40);
}

#[tokio::test]
async fn origins_and_keys_decide_404_and_403() {
    let setup = Setup::new();
    let mut log = Log::new(ORIGIN);
    // A second trusted key for the same origin (a key rotation).
    let rotated = SigningKey::generate(&mut rand_core::OsRng);
    let rotated_vkey = Vkey::new(ORIGIN, TYPE_ED25519, rotated.verifying_key()).unwrap();
    let w = WitnessProcess::start(
        &setup.state(),
        &setup.key,
        WITNESS,
        &[log.vkey().to_string(), rotated_vkey.to_string()],
    );
    let http = Http::default();
    log.grow_to(3);

    // An origin the witness does not follow: 404.
    let mut other = Log::new("example.org/unknown-log");
    other.grow_to(3);
    let a = http.add_checkpoint(&w.url, other.add(0, 3)).await;
    assert_reason(&a, 404, "example.org/unknown-log");

    // Signed with a key of the right name that is not trusted: 403.
    let stranger = SigningKey::generate(&mut rand_core::OsRng);
    let n = log.note_with(3, log.root(3), &[(ORIGIN, &stranger)]);
    let a = http.add_checkpoint(&w.url, body(0, &[], &n)).await;
    assert_reason(&a, 403, "not signed by a key trusted");
    // Signed by a trusted key under another name: 403 too.
    let n = log.note_with(3, log.root(3), &[("example.org/elsewhere", &log.key)]);
    let a = http.add_checkpoint(&w.url, body(0, &[], &n)).await;
    assert_status(&a, 403, "trusted key, other name");
    // A trusted key's line that does not verify (text changed after
    // signing): 403.
    let good = log.note(3);
    let tampered = good.replacen("\n3\n", "\n4\n", 1);
    let a = http.add_checkpoint(&w.url, body(0, &[], &tampered)).await;
    assert_status(&a, 403, "tampered checkpoint");

    // Unknown keys are ignored beside a trusted one; the rotated key alone
    // is enough.
    let n = log.note_with(
        3,
        log.root(3),
        &[("someone.else/key", &stranger), (ORIGIN, &log.key)],
    );
    let a = http.add_checkpoint(&w.url, body(0, &[], &n)).await;
    check_cosignature(&a, &n, &w.vkey);
    log.grow_to(6);
    let n = log.note_with(6, log.root(6), &[(ORIGIN, &rotated)]);
    let a = http
        .add_checkpoint(&w.url, body(3, &log.proof(3, 6), &n))
        .await;
    check_cosignature(&a, &n, &w.vkey);
}

#[tokio::test]
async fn malformed_requests_get_400_with_a_reason() {
    let setup = Setup::new();
    let mut log = Log::new(ORIGIN);
    let w = setup.start(&[&log]);
    let http = Http::default();
    log.grow_to(4);
    let note = log.note(4);
    let h = B64.encode([1u8; 32]);
    let too_many = format!("{h}\n").repeat(64);

    let cases: Vec<(String, &str)> = vec![
        (String::new(), "\"old <size>\" line"),
        (format!("old 01\n\n{note}"), "without leading zeros"),
        (format!("old -1\n\n{note}"), "\"old <size>\""),
        (format!("old 1\r\n\n{note}"), "\"old <size>\""),
        (format!("size 0\n\n{note}"), "\"old <size>\""),
        (
            format!("old 0\n{h}\n\n{note}"),
            "must be empty when the old size is 0",
        ),
        (
            format!("old 2\n{}\n\n{note}", B64.encode([1u8; 31])),
            "line 1 is not a base64",
        ),
        (
            format!("old 2\n{h}\nnot base64\n\n{note}"),
            "line 2 is not a base64",
        ),
        (format!("old 2\n{too_many}\n{note}"), "more than 63"),
        ("old 0\n".to_string(), "followed by an empty line"),
        (
            format!("old 0\n\n{}", Note::parse(&note).unwrap().text),
            "checkpoint:",
        ),
        (
            "old 0\n\nhello\n\n— x AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n".into(),
            "checkpoint:",
        ),
    ];
    for (b, words) in cases {
        let a = http.add_checkpoint(&w.url, b.clone()).await;
        assert_reason(&a, 400, words);
    }
    let a = http
        .add_checkpoint(
            &w.url,
            vec![b'o', b'l', b'd', b' ', b'0', b'\n', 0xff, b'\n'],
        )
        .await;
    assert_reason(&a, 400, "not UTF-8");

    // Over 64 KiB: refused without being read whole.
    let huge = format!("old 0\n\n{}", "x".repeat(70 * 1024));
    let a = http.add_checkpoint(&w.url, huge).await;
    assert_reason(&a, 413, "larger than 65536 bytes");
    // Only POST, only /add-checkpoint.
    let a = http
        .send("GET", &format!("{}/add-checkpoint", w.url), vec![])
        .await;
    assert_status(&a, 405, "GET");
    let a = http
        .send(
            "POST",
            &format!("{}/add-checkpoints", w.url),
            log.add(0, 4).into(),
        )
        .await;
    assert_status(&a, 404, "wrong path");

    // After all that, the first real request is cosigned.
    let a = http.add_checkpoint(&w.url, log.add(0, 4)).await;
    check_cosignature(&a, &log.note(4), &w.vkey);
}

#[tokio::test]
async fn racing_requests_cannot_roll_the_log_back() {
    let setup = Setup::new();
    let mut log = Log::new(ORIGIN);
    let w = setup.start(&[&log]);
    let http = Http::default();
    log.grow_to(10);
    check_cosignature(
        &http.add_checkpoint(&w.url, log.add(0, 10)).await,
        &log.note(10),
        &w.vkey,
    );
    log.grow_to(30);
    // Twenty requests from size 10, to sizes 11..=30, all at once: exactly
    // one wins; every other one is told the winner's size.
    let tasks: Vec<_> = (11..=30)
        .map(|n| {
            let (http, url, b) = (http.clone(), w.url.clone(), log.add(10, n));
            tokio::spawn(async move { (n, http.add_checkpoint(&url, b).await) })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let won: Vec<u64> = answers
        .iter()
        .filter(|(_, a)| a.status == 200)
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(won.len(), 1, "{answers:?}");
    for (n, a) in &answers {
        if *n != won[0] {
            assert_size_conflict(a, won[0]);
        }
    }
    // And the stored state is the winner's.
    let a = http.add_checkpoint(&w.url, log.add(0, 30)).await;
    assert_size_conflict(&a, won[0]);
}

#[tokio::test]
async fn state_survives_a_crash_and_is_owner_only() {
    let setup = Setup::new();
    let mut log = Log::new(ORIGIN);
    let mut other = Log::new("example.org/second-log");
    let http = Http::default();
    let mut w = setup.start(&[&log, &other]);
    let first_vkey = w.vkey.clone();
    log.grow_to(7);
    other.grow_to(2);
    assert_status(
        &http.add_checkpoint(&w.url, log.add(0, 7)).await,
        200,
        "log",
    );
    assert_status(
        &http.add_checkpoint(&w.url, other.add(0, 2)).await,
        200,
        "other",
    );
    w.kill();

    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&setup.state()), 0o700);
    let files: Vec<PathBuf> = std::fs::read_dir(setup.state())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    let name = format!("{}.json", hex::encode(Sha256::digest(ORIGIN)));
    let file = setup.state().join(&name);
    assert!(files.contains(&file), "{files:?}");
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(saved["size"], 7);
    assert_eq!(saved["root"], B64.encode(log.root(7)));
    assert_eq!(saved["checkpoint"], Note::parse(&log.note(7)).unwrap().text);

    // Restarted on the same directory: the same key, the same memory.
    let w = setup.start(&[&log, &other]);
    assert_eq!(w.vkey, first_vkey);
    log.grow_to(12);
    let a = http.add_checkpoint(&w.url, log.add(0, 12)).await;
    assert_size_conflict(&a, 7);
    let a = http.add_checkpoint(&w.url, log.add(7, 12)).await;
    check_cosignature(&a, &log.note(12), &w.vkey);
    let a = http.add_checkpoint(&w.url, other.add(0, 2)).await;
    assert_size_conflict(&a, 2);
    // A second witness process may not share the state.
    let logs = vec![log.vkey().to_string()];
    let out = certex(&serve_args(&setup.state(), &setup.key, WITNESS, &logs));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another process"), "{err}");
    drop(w);

    // A corrupt state file stops the witness at start, naming the file.
    std::fs::write(
        &file,
        "{\"origin\": \"example.org/certex-log\", \"size\": 1",
    )
    .unwrap();
    let out = certex(&serve_args(&setup.state(), &setup.key, WITNESS, &logs));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&name) && err.contains("corrupt"), "{err}");
}

#[tokio::test]
async fn init_writes_an_owner_only_key_once() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("w.key");
    let args = |name: &str| -> Vec<String> {
        vec![
            "witness".into(),
            "init".into(),
            "--key".into(),
            key.display().to_string(),
            "--name".into(),
            name.into(),
        ]
    };
    let out = certex(&args(WITNESS));
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    let vkey = Vkey::parse(printed.trim()).unwrap();
    assert_eq!(vkey.sig_type, TYPE_COSIGNATURE);
    assert_eq!(vkey.name, WITNESS);
    let meta = std::fs::metadata(&key).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let secret = certex::rules::envelope::read_signing_key(&key).unwrap();
    assert_eq!(secret.verifying_key(), vkey.key);

    // Never over an existing key.
    let before = std::fs::read(&key).unwrap();
    let out = certex(&args(WITNESS));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(std::fs::read(&key).unwrap(), before);

    // A name a verifier key cannot carry.
    let out = certex(&{
        let mut a = args("has space");
        a[3] = tmp.path().join("other.key").display().to_string();
        a
    });
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--name"));
}

#[tokio::test]
async fn bad_flags_are_named() {
    let setup = Setup::new();
    let log = Log::new(ORIGIN);
    let run = |key: &Path, logs: &[String]| -> String {
        let out = certex(&serve_args(&setup.state(), key, WITNESS, logs));
        assert!(!out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // A cosignature key where a log key belongs.
    let w = Vkey::new(ORIGIN, TYPE_COSIGNATURE, log.key.verifying_key()).unwrap();
    let err = run(&setup.key, &[w.to_string()]);
    assert!(err.contains("--log") && err.contains("type 0x01"), "{err}");
    // Not a verifier key at all, or one whose id does not match.
    let err = run(&setup.key, &["example.org/log".into()]);
    assert!(err.contains("--log example.org/log"), "{err}");
    let mut s = log.vkey().to_string();
    let at = ORIGIN.len() + 1;
    s.replace_range(at..at + 8, "00000000");
    let err = run(&setup.key, &[s]);
    assert!(
        err.contains("--log") && err.contains("does not match"),
        "{err}"
    );
    // A missing key file.
    let missing = setup.tmp.path().join("nope.key");
    let err = run(&missing, &[log.vkey().to_string()]);
    assert!(err.contains("--key") && err.contains("nope.key"), "{err}");
    // A key file that is not a key.
    let junk = setup.tmp.path().join("junk.key");
    std::fs::write(&junk, "hello").unwrap();
    let err = run(&junk, &[log.vkey().to_string()]);
    assert!(err.contains("--key") && err.contains("junk.key"), "{err}");
}

#[tokio::test]
async fn a_resent_checkpoint_is_cosigned_without_a_write() {
    use std::os::unix::fs::MetadataExt;
    let setup = Setup::new();
    let mut log = Log::new(ORIGIN);
    let w = setup.start(&[&log]);
    let http = Http::default();
    log.grow_to(5);
    check_cosignature(
        &http.add_checkpoint(&w.url, log.add(0, 5)).await,
        &log.note(5),
        &w.vkey,
    );
    let file = setup
        .state()
        .join(format!("{}.json", hex::encode(Sha256::digest(ORIGIN))));
    let stamp = || {
        let m = std::fs::metadata(&file).unwrap();
        (m.ino(), m.mtime(), m.mtime_nsec())
    };
    let before = stamp();
    // Anyone can resend the latest checkpoint: cosigned, nothing written.
    for _ in 0..3 {
        let a = http.add_checkpoint(&w.url, log.add(5, 5)).await;
        check_cosignature(&a, &log.note(5), &w.vkey);
    }
    assert_eq!(stamp(), before);
    // Growth is written.
    log.grow_to(8);
    check_cosignature(
        &http.add_checkpoint(&w.url, log.add(5, 8)).await,
        &log.note(8),
        &w.vkey,
    );
    assert_ne!(stamp(), before);
}

#[tokio::test]
async fn refusals_and_log_lines_quote_client_text_short() {
    let setup = Setup::new();
    let mut log = Log::new(ORIGIN);
    let w = setup.start(&[&log]);
    let http = Http::default();
    log.grow_to(3);
    let note = log.note(3);

    // One signature line of 60 KB after the log's.
    let garbage = format!("{note}— {}\n", "A".repeat(60_000));
    let a = http.add_checkpoint(&w.url, body(0, &[], &garbage)).await;
    assert_reason(&a, 400, "checkpoint:");
    assert!(a.body.len() < 300, "{} bytes", a.body.len());
    // An origin of 60 KB, signed by someone.
    let mut huge = Log::new(&format!("example.org/{}", "o".repeat(60_000)));
    huge.grow_to(1);
    let n = huge.note_with(1, huge.root(1), &[("example.org/short", &huge.key)]);
    let a = http.add_checkpoint(&w.url, body(0, &[], &n)).await;
    assert_reason(&a, 404, "does not follow");
    assert!(a.body.len() < 300, "{} bytes", a.body.len());
    // The same log signature 100 times is verified once, and cosigned.
    let parsed = Note::parse(&note).unwrap();
    let repeated = Note {
        text: parsed.text.clone(),
        sigs: vec![parsed.sigs[0].clone(); 100],
    }
    .encode();
    let a = http.add_checkpoint(&w.url, body(0, &[], &repeated)).await;
    // (The same text as the note with one line: the same cosignature.)
    check_cosignature(&a, &note, &w.vkey);

    assert_eq!(w.wait_log(&["cosigned", ORIGIN]).len(), 1);
    let longest = w.log.lock().unwrap().iter().map(String::len).max().unwrap();
    assert!(longest < 1000, "a log line of {longest} bytes");
}

/// Sends one request on `stream` and reads one answer (by its
/// Content-Length); `None` if the witness closed the connection instead.
async fn exchange(stream: &mut TcpStream, body: &str, close: bool) -> Option<(u16, String)> {
    let head = format!(
        "POST /add-checkpoint HTTP/1.1\r\nHost: witness\r\nContent-Length: {}\r\n{}\r\n",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    );
    stream.write_all(head.as_bytes()).await.ok()?;
    stream.write_all(body.as_bytes()).await.ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("no answer within 5 s")
            .ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        let Some((head, rest)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(|v| v.parse().unwrap())
            })
            .unwrap();
        if rest.len() >= len {
            let status = head[9..12].parse().unwrap();
            return Some((status, rest.to_owned()));
        }
    }
}

/// Reads until the witness closes the connection (within `limit`) and
/// returns when that was and what it sent first.
async fn closed_within(
    stream: &mut TcpStream,
    limit: std::time::Duration,
) -> (std::time::Instant, Vec<u8>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Err(_) => panic!("the connection is still open after {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return (std::time::Instant::now(), got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once() {
    let setup = Setup::new();
    let mut log = Log::new(ORIGIN);
    let logs = vec![log.vkey().to_string()];
    let w = WitnessProcess::start_with(
        &setup.state(),
        &setup.key,
        WITNESS,
        &logs,
        &["--max-connections", "4"],
    );
    let addr = w.url.strip_prefix("http://").unwrap().to_owned();
    log.grow_to(3);

    // Four idle connections fill the witness (headers may take 10 s).
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(&addr).await.unwrap());
    }
    // A fifth is closed at once, unanswered, even with a whole request.
    let mut fifth = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(exchange(&mut fifth, &log.add(0, 3), true).await, None);
    let (_, sent) = closed_within(&mut fifth, std::time::Duration::from_secs(3)).await;
    assert!(sent.is_empty());
    assert!(!w.wait_log(&["WARN", "connection limit reached"]).is_empty());

    // One idle connection gone, a log's request is served again.
    drop(idle.pop());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let answer = loop {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        if let Some(a) = exchange(&mut s, &log.add(0, 3), true).await {
            break a;
        }
        assert!(std::time::Instant::now() < deadline, "never served again");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(answer.0, 200, "{answer:?}");
    assert!(answer.1.starts_with("— "), "{answer:?}");
}

#[tokio::test]
async fn idle_and_slow_connections_are_closed_after_the_header_timeout() {
    let setup = Setup::new();
    let mut log = Log::new(ORIGIN);
    let logs = vec![log.vkey().to_string()];
    let w = WitnessProcess::start_with(
        &setup.state(),
        &setup.key,
        WITNESS,
        &logs,
        &["--header-read-timeout-ms", "500"],
    );
    let addr = w.url.strip_prefix("http://").unwrap().to_owned();
    log.grow_to(3);
    let five = std::time::Duration::from_secs(5);
    let at_least = std::time::Duration::from_millis(400);

    // Silent from the start.
    let opened = std::time::Instant::now();
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    // Half a request head, then nothing.
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"POST /add-checkpoint HTTP/1.1\r\nHost: witness\r\n")
        .await
        .unwrap();
    // A whole request on a keep-alive connection, answered, then silence.
    let mut kept = TcpStream::connect(&addr).await.unwrap();
    let a = exchange(&mut kept, &log.add(0, 3), false).await.unwrap();
    assert_eq!(a.0, 200, "{a:?}");

    for (what, s) in [
        ("silent", &mut silent),
        ("slow", &mut slow),
        ("kept alive", &mut kept),
    ] {
        let (closed, sent) = closed_within(s, five).await;
        let took = closed - opened;
        assert!(took >= at_least, "{what}: closed after {took:?}");
        let sent = String::from_utf8_lossy(&sent);
        assert!(
            sent.is_empty() || sent.starts_with("HTTP/1.1 408"),
            "{what}: {sent}"
        );
    }
    // The witness still serves.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let a = exchange(&mut s, &log.add(3, 3), true).await.unwrap();
    assert_eq!(a.0, 200, "{a:?}");
}
