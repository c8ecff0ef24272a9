//! The signing keys `certex pki init` writes are read by other tools
//! (SPEC §10): OpenSSL 3 and Python `cryptography` load each key, derive the
//! public key the directory (or `broker/signing.pub`) names, and sign with it
//! so that the signature verifies under that public key.
//!
//! The tools are found through `CERTEX_OPENSSL` and `CERTEX_PYTHON` (set by
//! `.ci/run`, where a missing or failing tool fails the test); when a variable
//! is unset, `openssl` and `python3` on the PATH are used if they work, and a
//! part whose tool is missing is skipped with a note.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use certex::rules::directory::DirectoryFile;
use ed25519_dalek::{Signature, VerifyingKey};

const MESSAGE: &[u8] = b"certex key file interoperability check";

/// Loads the key, prints its raw public key and a signature over argv[2] (hex).
const PYTHON_CHECK: &str = r#"
import sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key
with open(sys.argv[1], "rb") as f:
    key = load_pem_private_key(f.read(), password=None)
assert isinstance(key, Ed25519PrivateKey), type(key)
print(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex())
print(key.sign(bytes.fromhex(sys.argv[2])).hex())
"#;

/// The tool named by `var`, or `fallback` if it passes `probe`; `None` (with
/// a note) when the variable is unset and the fallback does not work.
fn tool(var: &str, fallback: &str, probe: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        return Some(PathBuf::from(path));
    }
    let works = Command::new(fallback)
        .args(probe)
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        Some(PathBuf::from(fallback))
    } else {
        eprintln!(
            "note: {var} is unset and `{fallback} {}` fails: skipping that check",
            probe.join(" ")
        );
        None
    }
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn verify(public_hex: &str, signature: &[u8], who: &str) {
    let bytes = <[u8; 32]>::try_from(hex::decode(public_hex).unwrap()).unwrap();
    let public = VerifyingKey::from_bytes(&bytes).unwrap();
    let signature = Signature::from_slice(signature)
        .unwrap_or_else(|e| panic!("{who}: signature of {} bytes: {e}", signature.len()));
    public
        .verify_strict(MESSAGE, &signature)
        .unwrap_or_else(|e| panic!("{who}: signature does not verify: {e}"));
}

fn check_with_python(python: &Path, key: &Path, public_hex: &str) {
    let out = run(Command::new(python)
        .args(["-c", PYTHON_CHECK])
        .arg(key)
        .arg(hex::encode(MESSAGE)));
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(
        lines[0],
        public_hex,
        "python: public key of {}",
        key.display()
    );
    verify(
        public_hex,
        &hex::decode(lines[1]).unwrap(),
        &format!("python, {}", key.display()),
    );
}

fn check_with_openssl(openssl: &Path, key: &Path, public_hex: &str, tmp: &Path) {
    run(Command::new(openssl)
        .args(["pkey", "-noout", "-in"])
        .arg(key));
    let spki = run(Command::new(openssl)
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(key));
    // SubjectPublicKeyInfo: 12 bytes of header, then the 32-byte key.
    assert_eq!(spki.len(), 44, "openssl: {}", hex::encode(&spki));
    assert_eq!(hex::encode(&spki[12..]), public_hex, "openssl: public key");
    let message = tmp.join("message");
    std::fs::write(&message, MESSAGE).unwrap();
    let signature = run(Command::new(openssl)
        .args(["pkeyutl", "-sign", "-rawin", "-inkey"])
        .arg(key)
        .arg("-in")
        .arg(&message));
    verify(
        public_hex,
        &signature,
        &format!("openssl, {}", key.display()),
    );
}

#[test]
fn pki_init_signing_keys_are_read_by_openssl_and_python_cryptography() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let out = Command::new(env!("CARGO_BIN_EXE_certex"))
        .args(["pki", "init", "--teams", "CN-CNCERT,BR-CERTBR", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let text = std::fs::read_to_string(dir.join("directory.toml")).unwrap();
    let directory: DirectoryFile = toml::from_str(&text).unwrap();
    let mut keys: Vec<(PathBuf, String)> = directory
        .teams
        .iter()
        .map(|t| {
            (
                dir.join("teams").join(&t.id).join("signing.key"),
                t.keys[0].public_key.clone(),
            )
        })
        .collect();
    assert_eq!(keys.len(), 2);
    let broker_public = std::fs::read_to_string(dir.join("broker/signing.pub")).unwrap();
    keys.push((
        dir.join("broker/signing.key"),
        broker_public.trim().to_owned(),
    ));

    for (key, _) in &keys {
        let mode = std::fs::metadata(key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", key.display());
        let pem = std::fs::read_to_string(key).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
    }

    let python = tool("CERTEX_PYTHON", "python3", &["-c", "import cryptography"]);
    let openssl = tool("CERTEX_OPENSSL", "openssl", &["version"]);
    for (key, public_hex) in &keys {
        if let Some(python) = &python {
            check_with_python(python, key, public_hex);
        }
        if let Some(openssl) = &openssl {
            check_with_openssl(openssl, key, public_hex, tmp.path());
        }
    }
}
