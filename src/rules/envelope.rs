//! Signed envelopes (SPEC §3): the signing rule, key ids, and decoding a body
//! from the exact bytes that were signed.
//!
//! The body is never re-encoded: signatures are made and checked over the
//! bytes as they travel, and those bytes are what the log stores.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::proto::{Body, Envelope};

/// Domain separation prefix of every envelope signature.
pub const SIGNING_CONTEXT: &[u8] = b"certex/v1/envelope\0";

/// `key_id` = lowercase hex of the first 16 bytes of SHA-256(public key).
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    hex::encode(&digest[..16])
}

/// The bytes a signature covers: the domain prefix, then the body.
pub fn signing_input(body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(SIGNING_CONTEXT.len() + body.len());
    msg.extend_from_slice(SIGNING_CONTEXT);
    msg.extend_from_slice(body);
    msg
}

/// Signs already-encoded body bytes.
pub fn seal(body: Vec<u8>, key: &SigningKey) -> Envelope {
    let signature = key.sign(&signing_input(&body));
    Envelope {
        body: body.into(),
        signature: signature.to_bytes().to_vec(),
        key_id: key_id(&key.verifying_key()),
    }
}

/// Encodes and signs a body.
pub fn seal_body(body: &Body, key: &SigningKey) -> Envelope {
    seal(body.encode_to_vec(), key)
}

/// Why an envelope's signature does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature must be 64 bytes, got {0}")]
    Length(usize),
    #[error("signature does not match the body and key {0}")]
    Mismatch(String),
    /// R or s in a form `verify_strict` refuses, named before any curve
    /// arithmetic (see the batch rule in `signature.rs`).
    #[error("signature made with key {key_id} is malformed: {problem}")]
    Malformed {
        key_id: String,
        problem: &'static str,
    },
    /// The directory's key is one no signature may be accepted under.
    #[error(
        "key {0} cannot verify signatures: its point is not canonically encoded, is of small order or has a torsion component; the team must register a new key"
    )]
    UnusableKey(String),
}

/// Checks the signature over the exact body bytes (`verify_strict`: rejects
/// malleable and small-order forms).
pub fn verify(envelope: &Envelope, key: &VerifyingKey) -> Result<(), SignatureError> {
    let sig = <[u8; 64]>::try_from(envelope.signature.as_slice())
        .map_err(|_| SignatureError::Length(envelope.signature.len()))?;
    key.verify_strict(&signing_input(&envelope.body), &Signature::from_bytes(&sig))
        .map_err(|_| SignatureError::Mismatch(envelope.key_id.clone()))
}

/// Decodes the body bytes.
pub fn decode_body(envelope: &Envelope) -> Result<Body, prost::DecodeError> {
    Body::decode(&envelope.body[..])
}

/// The bytes the transparency log hashes for a record: the Envelope with its
/// three fields in field order (the only encoding of it).
pub fn log_bytes(envelope: &Envelope) -> Vec<u8> {
    envelope.encode_to_vec()
}

/// Reads an Ed25519 signing key from a PKCS#8 PEM file
/// (`-----BEGIN PRIVATE KEY-----`): v1 (RFC 8410, what `certex pki init`,
/// OpenSSL and Python `cryptography` write) or v2 (with the public key,
/// which must match; what earlier development PKIs hold).
pub fn read_signing_key(path: &std::path::Path) -> Result<SigningKey, String> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read signing key {}: {e}", path.display()))?;
    signing_key_from_pem(&pem).map_err(|why| format!("signing key {}: {why}", path.display()))
}

/// The key in a PKCS#8 PEM text, or what is wrong with it.
fn signing_key_from_pem(pem: &str) -> Result<SigningKey, String> {
    use ed25519_dalek::pkcs8::{self, PrivateKeyInfo, SecretDocument};
    const NOT_PKCS8: &str = "expected an unencrypted PKCS#8 Ed25519 key \
                             (-----BEGIN PRIVATE KEY-----)";
    let (label, der) =
        SecretDocument::from_pem(pem).map_err(|_| format!("not PEM; {NOT_PKCS8}"))?;
    match label {
        "PRIVATE KEY" => {}
        "ENCRYPTED PRIVATE KEY" => {
            return Err("the key is encrypted; certex reads unencrypted keys \
                        (decrypt it with `openssl pkey`)"
                .into());
        }
        other => return Err(format!("a PEM {other:?} block; {NOT_PKCS8}")),
    }
    let info = PrivateKeyInfo::try_from(der.as_bytes())
        .map_err(|e| format!("not a PKCS#8 private key ({e}); {NOT_PKCS8}"))?;
    if info.algorithm.oid != pkcs8::ALGORITHM_OID {
        return Err(format!(
            "not an Ed25519 key (algorithm {}, expected {})",
            info.algorithm.oid,
            pkcs8::ALGORITHM_OID
        ));
    }
    let has_public = info.public_key.is_some();
    SigningKey::try_from(info).map_err(|e| {
        if has_public {
            format!("malformed Ed25519 key, or its public key does not match its private key ({e})")
        } else {
            format!("malformed Ed25519 key ({e})")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    #[test]
    fn sign_and_verify_exact_bytes() {
        let k = key();
        let env = seal(b"\x0a\x03abc".to_vec(), &k);
        assert_eq!(env.key_id.len(), 32);
        verify(&env, &k.verifying_key()).unwrap();
        let mut tampered = env.clone();
        tampered.body = [&env.body[..], &[0]].concat().into();
        assert!(matches!(
            verify(&tampered, &k.verifying_key()),
            Err(SignatureError::Mismatch(_))
        ));
        let mut short = env;
        short.signature.truncate(10);
        assert_eq!(
            verify(&short, &k.verifying_key()),
            Err(SignatureError::Length(10))
        );
    }

    #[test]
    fn signature_is_domain_separated() {
        let k = key();
        let body = b"hello".to_vec();
        let plain = k.sign(&body);
        let env = Envelope {
            body: body.into(),
            signature: plain.to_bytes().to_vec(),
            key_id: key_id(&k.verifying_key()),
        };
        assert!(verify(&env, &k.verifying_key()).is_err());
    }

    /// RFC 8410 §10.3's example key, v1 and v2 (with an attribute and the
    /// public key); OpenSSL 3 derives public key 19bf44…66e1 from both.
    const RFC8410_V1: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC
-----END PRIVATE KEY-----
";
    const RFC8410_V2: &str = "-----BEGIN PRIVATE KEY-----
MHICAQEwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC
oB8wHQYKKoZIhvcNAQkJFDEPDA1DdXJkbGUgQ2hhaXJzgSEAGb9ECWmEzf6FQbrB
Z9w7lshQhqowtrbLDFw4rXAxZuE=
-----END PRIVATE KEY-----
";
    const RFC8410_PUBLIC: &str = "19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1";

    fn read_text(text: &str) -> Result<SigningKey, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        std::fs::write(&path, text).unwrap();
        read_signing_key(&path)
    }

    #[test]
    fn reads_pkcs8_v1_and_v2_keys() {
        for pem in [RFC8410_V1, RFC8410_V2] {
            let k = read_text(pem).unwrap();
            assert_eq!(hex::encode(k.verifying_key().as_bytes()), RFC8410_PUBLIC);
        }
        // What ed25519-dalek's own encoder writes (and earlier `pki init`
        // wrote): v2, the public key embedded.
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let v2 = key().to_pkcs8_pem(Default::default()).unwrap();
        let der = ed25519_dalek::pkcs8::SecretDocument::from_pem(&v2)
            .unwrap()
            .1;
        assert_eq!(&der.as_bytes()[2..5], [0x02, 0x01, 0x01], "version 1 (v2)");
        assert_eq!(read_text(&v2).unwrap().to_bytes(), key().to_bytes());
    }

    #[test]
    fn unreadable_keys_are_refused_naming_the_file_and_the_problem() {
        use ed25519_dalek::pkcs8::{EncodePrivateKey, KeypairBytes, PublicKeyBytes};
        let other = SigningKey::from_bytes(&[8u8; 32]).verifying_key();
        let mismatched = KeypairBytes {
            secret_key: key().to_bytes(),
            public_key: Some(PublicKeyBytes(other.to_bytes())),
        }
        .to_pkcs8_pem(Default::default())
        .unwrap();
        // An ECDSA P-256 key from `openssl genpkey -algorithm EC`.
        let p256 = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgyNn13g/4MeZ9pokc
XKjokOhLAdP1dGiEe/m+IOVykYShRANCAAQcajhbNU3B5GZflZxRQa0cC4vFNjgd
pOuq0wrss725KjqxQ8aCUssk6+Mzi2FXYHeSBbwUBEdtVOHFuPKsShaG
-----END PRIVATE KEY-----
";
        let cases: [(&str, &str); 5] = [
            (mismatched.as_str(), "does not match"),
            (p256, "not an Ed25519 key (algorithm 1.2.840.10045.2.1"),
            ("ed25519 seed 0707…", "not PEM"),
            (
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n",
                "encrypted",
            ),
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----\nMAA=\n-----END OPENSSH PRIVATE KEY-----\n",
                "\"OPENSSH PRIVATE KEY\" block",
            ),
        ];
        for (text, why) in cases {
            let e = read_text(text).unwrap_err();
            assert!(e.contains("signing.key"), "{e}");
            assert!(e.contains(why), "{why:?} not in {e:?}");
        }
        let e = read_signing_key(std::path::Path::new("/nonexistent/signing.key")).unwrap_err();
        assert!(
            e.contains("cannot read signing key /nonexistent/signing.key"),
            "{e}"
        );
    }
}
