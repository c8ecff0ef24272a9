//! Envelope signatures checked many at a time (SPEC §3, §4): the same answer
//! as checking each with `verify_strict`, at the cost of one multiscalar
//! multiplication for the whole batch.
//!
//! What the two ed25519-dalek 2.2 checks refuse on their own (sources in
//! `~/.cargo/registry/src/*/ed25519-dalek-2.2.0`):
//! - `VerifyingKey::verify_strict` (`src/verifying.rs`) refuses s ≥ ℓ
//!   (`InternalSignature::try_from` → `check_scalar`, `Scalar::from_canonical_bytes`,
//!   `src/signature.rs`), an R that does not decompress, small-order R and A
//!   (`is_small_order`), and a non-canonical R, because it compares the
//!   canonical encoding of the recomputed R with the signature's R bytes.
//!   It does not refuse a non-canonical encoding of A: `VerifyingKey::from_bytes`
//!   decompresses without re-encoding, and the hash takes A's bytes as given.
//! - `verify_batch` (`src/batch.rs`) refuses s ≥ ℓ (same `try_from`) and an
//!   R that does not decompress (`optional_multiscalar_mul` gives `None`),
//!   but neither small-order R or A nor a non-canonical R: it decompresses R
//!   and never re-encodes it.
//!
//! So before the batch every item is checked here explicitly: the signature
//! is 64 bytes, s < ℓ, R's y coordinate is below p (an encoding with y ≥ p
//! is the only other non-canonical form, besides x = 0 with the sign bit
//! set, and both x = 0 points are of small order), R decompresses and is
//! not of small order. Keys are checked once each ([`KeyCache`]): canonical,
//! not of small order, and torsion-free, which is stricter than
//! `verify_strict` (it accepts a non-canonical A).
//!
//! The subtlety: `verify_batch` checks Σ zᵢ·(sᵢB − hᵢAᵢ − Rᵢ) = 0 with
//! 128-bit zᵢ drawn from a transcript of the batch. That pins each error
//! term Eᵢ = sᵢB − hᵢAᵢ − Rᵢ to the torsion subgroup (a prime-order part
//! survives random zᵢ only with probability ≈ 2⁻¹²⁸), not to zero: a
//! nonzero torsion Eᵢ vanishes whenever zᵢ is a multiple of its order (2, 4
//! or 8), i.e. with probability ½ to ⅛, and a signer can grind messages until
//! it does. `verify_strict` is cofactorless and wants Eᵢ = 0. When A and R
//! are both torsion-free, Eᵢ lies in the prime-order subgroup, so torsion
//! means zero and the two checks agree exactly. Keys are checked for torsion
//! (once per key, cheap). R is not: checking it costs a full scalar
//! multiplication per signature, which measured on the 2-core machine
//! (`certex bench limits`) takes more than batching saves. What that
//! admits: a signature whose R carries a torsion component can pass the
//! batch where `verify_strict` would refuse it. Making one takes the secret
//! key (Eᵢ torsion with A torsion-free means sᵢB − hᵢA = Rᵢ − Tᵢ, i.e. knowing
//! the discrete log of A), so only the key's holder can get such a record
//! logged, under its own name; a reader verifying with `verify_strict` (as
//! certex's own clients do) flags that record as not verifying, and
//! cofactored verifiers (ZIP 215) accept it. No one else's signature can be
//! forged this way.
//!
//! When the batch fails, every item is checked again on its own with
//! `verify_strict` to find the culprits: one bad signature costs its batch
//! about one batch plus one single check per item.

use std::collections::HashMap;

use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::{Signature, VerifyingKey};

use crate::rules::envelope::{SignatureError, signing_input};

/// One signature to check: the key it claims, the key's id (for messages),
/// the body bytes as they travel, and the signature bytes.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    pub key: &'a VerifyingKey,
    pub key_id: &'a str,
    pub body: &'a [u8],
    pub signature: &'a [u8],
}

/// p = 2²⁵⁵ − 19, little-endian.
const P: [u8; 32] = {
    let mut p = [0xff; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    p
};

/// Whether an Edwards point encoding's y coordinate (sign bit cleared) is
/// below p: the canonical form, read from the bytes alone.
fn y_canonical(encoding: &[u8; 32]) -> bool {
    let mut y = *encoding;
    y[31] &= 0x7f;
    // Compared from the most significant byte down.
    y.iter().rev().lt(P.iter().rev())
}

/// Whether signatures may be accepted under `key`: canonically encoded,
/// not of small order, and torsion-free (so that a batch gives
/// `verify_strict`'s answer; see the module doc). One scalar
/// multiplication: check once per key.
pub fn usable_key(key: &VerifyingKey) -> bool {
    let point = key.to_edwards();
    y_canonical(key.as_bytes()) && !point.is_small_order() && point.is_torsion_free()
}

/// Keys already judged by [`usable_key`], by their bytes. Bounded: emptied
/// when full (a directory has far fewer keys).
#[derive(Debug, Default)]
pub struct KeyCache {
    judged: HashMap<[u8; 32], bool>,
}

/// How many keys a [`KeyCache`] remembers before starting over.
const KEY_CACHE_MAX: usize = 4096;

impl KeyCache {
    /// [`usable_key`], remembered.
    pub fn usable(&mut self, key: &VerifyingKey) -> bool {
        if let Some(ok) = self.judged.get(key.as_bytes()) {
            return *ok;
        }
        if self.judged.len() >= KEY_CACHE_MAX {
            self.judged.clear();
        }
        let ok = usable_key(key);
        self.judged.insert(*key.as_bytes(), ok);
        ok
    }
}

/// The explicit checks before any batch (module doc): the key, the length,
/// s, R's encoding and order.
fn precheck(item: &Item, keys: &mut KeyCache) -> Result<Signature, SignatureError> {
    let malformed = |problem| SignatureError::Malformed {
        key_id: item.key_id.to_owned(),
        problem,
    };
    if !keys.usable(item.key) {
        return Err(SignatureError::UnusableKey(item.key_id.to_owned()));
    }
    let bytes = <[u8; 64]>::try_from(item.signature)
        .map_err(|_| SignatureError::Length(item.signature.len()))?;
    let (r, s) = bytes.split_at(32);
    let (r, s) = (
        <[u8; 32]>::try_from(r).expect("32 bytes"),
        <[u8; 32]>::try_from(s).expect("32 bytes"),
    );
    if Scalar::from_canonical_bytes(s).is_none().into() {
        return Err(malformed("s is not below the group order"));
    }
    if !y_canonical(&r) {
        return Err(malformed("R is not canonically encoded"));
    }
    match CompressedEdwardsY(r).decompress() {
        None => Err(malformed("R is not a point of the curve")),
        Some(point) if point.is_small_order() => Err(malformed("R is of small order")),
        Some(_) => Ok(Signature::from_bytes(&bytes)),
    }
}

/// Checks every item; the answers come in the items' order, each what
/// `verify_strict` gives (with the stricter key rule and explicit reasons
/// for malformed signatures; module doc). Several items are checked as one
/// batch; when the batch fails, each is checked on its own.
pub fn verify_batch(items: &[Item], keys: &mut KeyCache) -> Vec<Result<(), SignatureError>> {
    let mut answers = Vec::with_capacity(items.len());
    let mut ready = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match precheck(item, keys) {
            Ok(sig) => {
                ready.push((i, sig));
                answers.push(Ok(()));
            }
            Err(e) => answers.push(Err(e)),
        }
    }
    let inputs: Vec<Vec<u8>> = ready
        .iter()
        .map(|(i, _)| signing_input(items[*i].body))
        .collect();
    // A batch of one is no cheaper than the single check.
    let batch_holds = ready.len() > 1 && {
        let messages: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
        let sigs: Vec<Signature> = ready.iter().map(|(_, s)| *s).collect();
        let vks: Vec<VerifyingKey> = ready.iter().map(|(i, _)| *items[*i].key).collect();
        ed25519_dalek::verify_batch(&messages, &sigs, &vks).is_ok()
    };
    if !batch_holds {
        for ((i, sig), input) in ready.iter().zip(&inputs) {
            let item = &items[*i];
            answers[*i] = item
                .key
                .verify_strict(input, sig)
                .map_err(|_| SignatureError::Mismatch(item.key_id.to_owned()));
        }
    }
    answers
}

/// [`verify_batch`] of one item.
pub fn verify_one(item: &Item, keys: &mut KeyCache) -> Result<(), SignatureError> {
    verify_batch(std::slice::from_ref(item), keys)
        .pop()
        .expect("one answer per item")
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
    use curve25519_dalek::edwards::EdwardsPoint;
    use ed25519_dalek::{Signer, SigningKey};
    use sha2::{Digest, Sha512};

    /// The group order ℓ, little-endian.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];

    struct Signed {
        key: VerifyingKey,
        id: String,
        body: Vec<u8>,
        sig: Vec<u8>,
    }

    fn signed(seed: u8, body: &[u8]) -> Signed {
        let k = SigningKey::from_bytes(&[seed; 32]);
        Signed {
            key: k.verifying_key(),
            id: format!("key{seed}"),
            body: body.to_vec(),
            sig: k.sign(&signing_input(body)).to_bytes().to_vec(),
        }
    }

    fn item(s: &Signed) -> Item<'_> {
        Item {
            key: &s.key,
            key_id: &s.id,
            body: &s.body,
            signature: &s.sig,
        }
    }

    fn check(all: &[Signed]) -> Vec<Result<(), SignatureError>> {
        let items: Vec<Item> = all.iter().map(item).collect();
        verify_batch(&items, &mut KeyCache::default())
    }

    fn malformed(r: &Result<(), SignatureError>, what: &str) -> bool {
        matches!(r, Err(SignatureError::Malformed { problem, .. }) if problem.contains(what))
    }

    /// A signature by `seed`'s key whose nonce point is R = rB + `torsion`:
    /// what only the key's holder can make (module doc).
    fn sign_with_r(seed: u8, body: &[u8], torsion: EdwardsPoint) -> Signed {
        let k = SigningKey::from_bytes(&[seed; 32]);
        // The secret scalar as RFC 8032 derives it: SHA-512 of the seed,
        // first half, clamped.
        let mut a = [0u8; 32];
        a.copy_from_slice(&Sha512::digest(k.to_bytes())[..32]);
        a[0] &= 248;
        a[31] &= 127;
        a[31] |= 64;
        let a = Scalar::from_bytes_mod_order(a);
        let r = Scalar::from_bytes_mod_order([seed.wrapping_add(99); 32]);
        let big_r = (r * ED25519_BASEPOINT_POINT + torsion).compress();
        let input = signing_input(body);
        let h = Sha512::new()
            .chain_update(big_r.as_bytes())
            .chain_update(k.verifying_key().as_bytes())
            .chain_update(&input)
            .finalize();
        let h = Scalar::from_bytes_mod_order_wide(&h.into());
        let s = r + h * a;
        let mut sig = big_r.to_bytes().to_vec();
        sig.extend_from_slice(s.as_bytes());
        Signed {
            key: k.verifying_key(),
            id: format!("key{seed}"),
            body: body.to_vec(),
            sig,
        }
    }

    #[test]
    fn a_valid_batch_holds() {
        let all: Vec<Signed> = (0..64u8).map(|i| signed(i % 5, &[i; 300])).collect();
        assert!(check(&all).iter().all(Result::is_ok));
        // The same signatures under the batch and one by one.
        for s in &all {
            assert!(
                s.key
                    .verify_strict(
                        &signing_input(&s.body),
                        &Signature::from_slice(&s.sig).unwrap()
                    )
                    .is_ok()
            );
        }
    }

    #[test]
    fn one_tampered_message_among_64_is_the_only_one_refused() {
        let mut all: Vec<Signed> = (0..64u8).map(|i| signed(i % 3, &[i; 100])).collect();
        all[37].body[5] ^= 1;
        let answers = check(&all);
        for (i, a) in answers.iter().enumerate() {
            match i {
                37 => assert_eq!(*a, Err(SignatureError::Mismatch("key1".into()))),
                _ => assert_eq!(*a, Ok(()), "item {i}"),
            }
        }
    }

    #[test]
    fn empty_batch_and_batch_of_one() {
        assert!(check(&[]).is_empty());
        assert_eq!(check(&[signed(1, b"one")]), vec![Ok(())]);
        let mut bad = signed(1, b"one");
        bad.sig[10] ^= 1;
        assert!(check(&[bad])[0].is_err());
        let mut keys = KeyCache::default();
        let s = signed(2, b"two");
        assert_eq!(verify_one(&item(&s), &mut keys), Ok(()));
    }

    #[test]
    fn wrong_length_is_named() {
        let mut s = signed(1, b"x");
        s.sig.truncate(63);
        assert_eq!(
            check(&[s, signed(2, b"y")])[0],
            Err(SignatureError::Length(63))
        );
    }

    #[test]
    fn small_order_keys_are_unusable() {
        // Every small-order point as a key (the identity among them): with
        // R = identity and s = 0, the small-order key "signs" anything
        // whose hash kills it; refused before any equation.
        for t in EIGHT_TORSION {
            let key = VerifyingKey::from_bytes(t.compress().as_bytes()).unwrap();
            assert!(!usable_key(&key));
            let mut sig = EdwardsPoint::default().compress().to_bytes().to_vec();
            sig.extend_from_slice(&[0; 32]);
            let s = Signed {
                key,
                id: "weak".into(),
                body: b"anything".to_vec(),
                sig,
            };
            let answers = check(&[s, signed(3, b"fine")]);
            assert_eq!(answers[0], Err(SignatureError::UnusableKey("weak".into())));
            assert_eq!(answers[1], Ok(()));
        }
    }

    #[test]
    fn keys_with_a_torsion_component_are_unusable() {
        let good = SigningKey::from_bytes(&[4; 32]).verifying_key();
        assert!(usable_key(&good));
        let mixed = (good.to_edwards() + EIGHT_TORSION[1]).compress();
        let mixed = VerifyingKey::from_bytes(mixed.as_bytes()).unwrap();
        // verify_strict's small-order check does not see it.
        assert!(!mixed.is_weak());
        assert!(!usable_key(&mixed));
        let mut keys = KeyCache::default();
        assert!(!keys.usable(&mixed));
        assert!(keys.usable(&good));
    }

    #[test]
    fn small_order_r_is_refused() {
        for t in EIGHT_TORSION {
            // R itself of small order, any s.
            let mut s = signed(5, b"small R");
            s.sig[..32].copy_from_slice(t.compress().as_bytes());
            let answers = check(&[s, signed(6, b"other")]);
            assert!(malformed(&answers[0], "small order"), "{:?}", answers[0]);
            assert_eq!(answers[1], Ok(()));
        }
    }

    #[test]
    fn non_canonical_s_is_refused() {
        // s + ℓ: the same signature modulo ℓ, the classic malleable form.
        let mut s = signed(7, b"malleable");
        let mut carry = 0u16;
        for (b, l) in s.sig[32..].iter_mut().zip(L) {
            let v = u16::from(*b) + u16::from(l) + carry;
            *b = v as u8;
            carry = v >> 8;
        }
        assert_eq!(carry, 0, "s + ℓ fits 256 bits");
        let answers = check(&[s, signed(8, b"other")]);
        assert!(malformed(&answers[0], "s is not below"), "{:?}", answers[0]);
        assert_eq!(answers[1], Ok(()));
    }

    /// The points whose y is below 19 can also be written with y + p ≥ p;
    /// those that decompress are the non-canonical encodings to refuse.
    fn non_canonical_points() -> Vec<[u8; 32]> {
        (0u8..19)
            .map(|k| {
                let mut b = P;
                b[0] = b[0].wrapping_add(k);
                b
            })
            .filter(|b| CompressedEdwardsY(*b).decompress().is_some())
            .collect()
    }

    #[test]
    fn non_canonical_r_and_a_are_refused() {
        let encodings = non_canonical_points();
        assert!(!encodings.is_empty());
        assert!(encodings.iter().all(|b| !y_canonical(b)));
        let mut large = 0;
        for b in &encodings {
            let point = CompressedEdwardsY(*b).decompress().unwrap();
            // Decompression accepts it; re-encoding gives other bytes.
            assert_ne!(point.compress().to_bytes(), *b);
            large += usize::from(!point.is_small_order());
            // As R.
            let mut s = signed(9, b"non-canonical R");
            s.sig[..32].copy_from_slice(b);
            let answers = check(&[s, signed(10, b"other")]);
            assert!(malformed(&answers[0], "canonically"), "{:?}", answers[0]);
            assert_eq!(answers[1], Ok(()));
            // As A: ed25519-dalek takes it as a key; certex does not.
            let key = VerifyingKey::from_bytes(b).unwrap();
            assert!(!usable_key(&key));
        }
        assert!(large > 0, "some non-canonical encodings are of large order");
        // The sign bit set on x = 0 (the identity): small order anyway.
        let mut neg_zero = EdwardsPoint::default().compress().to_bytes();
        neg_zero[31] |= 0x80;
        assert!(y_canonical(&neg_zero));
        let mut s = signed(9, b"negative zero");
        s.sig[..32].copy_from_slice(&neg_zero);
        assert!(malformed(&check(&[s])[0], "small order"));
    }

    #[test]
    fn r_not_on_the_curve_is_refused() {
        let off = (0u8..=255)
            .map(|k| {
                let mut b = [0u8; 32];
                b[0] = k;
                b[1] = 1;
                b
            })
            .find(|b| CompressedEdwardsY(*b).decompress().is_none())
            .unwrap();
        let mut s = signed(11, b"off the curve");
        s.sig[..32].copy_from_slice(&off);
        assert!(malformed(&check(&[s])[0], "not a point"));
    }

    #[test]
    fn torsion_in_r_is_what_verify_strict_refuses() {
        // The case the module doc admits: R = rB + T, signed by the key's
        // holder. verify_strict refuses it; the batch alone may pass it,
        // and the fallback then decides, so a batch containing it is
        // answered exactly when the batch fails.
        let t = EIGHT_TORSION[2]; // order 4
        let s = sign_with_r(12, b"torsion R", t);
        let sig = Signature::from_slice(&s.sig).unwrap();
        assert!(s.key.verify_strict(&signing_input(&s.body), &sig).is_err());
        let clean = sign_with_r(12, b"clean R", EdwardsPoint::default());
        assert!(
            s.key
                .verify_strict(
                    &signing_input(&clean.body),
                    &Signature::from_slice(&clean.sig).unwrap()
                )
                .is_ok()
        );
        // Alone, it is checked with verify_strict.
        assert!(matches!(check(&[s])[0], Err(SignatureError::Mismatch(_))));
    }

    #[test]
    fn y_canonical_reads_the_bytes() {
        assert!(y_canonical(&[0; 32]));
        let mut below = P;
        below[0] -= 1;
        assert!(y_canonical(&below));
        assert!(!y_canonical(&P));
        let mut signed_p = P;
        signed_p[31] |= 0x80;
        assert!(!y_canonical(&signed_p));
        assert!(!y_canonical(&[0xff; 32]));
    }
}
