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

fn signing_input(body: &[u8]) -> Vec<u8> {
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

/// Reads an Ed25519 signing key from a PKCS#8 PEM file.
pub fn read_signing_key(path: &std::path::Path) -> Result<SigningKey, String> {
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    let pem = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read signing key {}: {e}", path.display()))?;
    SigningKey::from_pkcs8_pem(&pem)
        .map_err(|e| format!("{} is not a PKCS#8 Ed25519 key: {e}", path.display()))
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
}
