//! The signature and hash primitives sigstore-rust runs on, implemented over the RustCrypto
//! crates pullgate already links (p256, p384, ed25519-dalek, rsa, sha2), and over ring for
//! ECDSA on a whole message.
//!
//! Why ring there: a keyless signature costs four or five ECDSA verifications (the certificate
//! chain, the SCT, the SET or checkpoint, the signature itself), and RustCrypto's portable P-256
//! spends about 0.3 ms on each on our nodes, most of a keyless check. ring, already linked for
//! TLS (rustls and rustls-webpki use it), verifies the same signatures several times faster with
//! its assembly field arithmetic. It only verifies whole messages, so a prehashed signature (an
//! artifact known by its digest) stays with RustCrypto; a test checks both agree.
//!
//! sigstore-crypto's own provider is aws-lc-rs, a C and assembly build we keep off every node.
//! Its X.509 path validation (rustls-webpki) and its SCT, checkpoint, SET and RFC 3161 checks all
//! call back into the provider installed here, so this one module is the whole cryptographic
//! trust base of keyless verification. It only verifies: key generation and signing keep
//! sigstore-crypto's defaults, which refuse.

use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
use rsa::{BigUint, Pkcs1v15Sign, Pss, RsaPublicKey};
use sha2::Digest as _;
use sigstore_verify::crypto::provider::{CryptoProvider, HashContext};
use sigstore_verify::crypto::{Error, SigningScheme};
use sigstore_verify::types::HashAlgorithm;

/// The largest RSA modulus sigstore accepts (sigstore-crypto's `validate_raw_public_key` bound);
/// the rsa crate's own default stops at 4096.
const MAX_RSA_BITS: usize = 8192;

/// Makes the RustCrypto provider sigstore-crypto's process-wide default. Idempotent: the daemon,
/// the CLI and every test may call it; the first call wins and later ones find it in place.
pub fn install() {
    // Err only means a provider is already installed, which is this one: pullgate installs no
    // other and sigstore-crypto's aws-lc-rs fallback is compiled out.
    let _ = sigstore_verify::crypto::provider::install_default_provider(&RUST_CRYPTO);
}

static RUST_CRYPTO: RustCrypto = RustCrypto;

#[derive(Debug)]
struct RustCrypto;

impl CryptoProvider for RustCrypto {
    fn hash(&self, algorithm: HashAlgorithm) -> Result<Box<dyn HashContext>, Error> {
        match algorithm {
            HashAlgorithm::Sha2256 => Ok(Box::new(Hasher(sha2::Sha256::new()))),
            HashAlgorithm::Sha2384 => Ok(Box::new(Hasher(sha2::Sha384::new()))),
            HashAlgorithm::Sha2512 => Ok(Box::new(Hasher(sha2::Sha512::new()))),
            other => Err(Error::UnsupportedAlgorithm(format!("{other:?} is not supported by pullgate"))),
        }
    }

    // The trait's defaults go through `hash` with `expect`; these cannot fail.
    fn sha256(&self, data: &[u8]) -> [u8; 32] {
        sha2::Sha256::digest(data).into()
    }

    fn sha384(&self, data: &[u8]) -> [u8; 48] {
        sha2::Sha384::digest(data).into()
    }

    fn sha512(&self, data: &[u8]) -> [u8; 64] {
        sha2::Sha512::digest(data).into()
    }

    fn verify_raw(&self, scheme: SigningScheme, key: &[u8], data: &[u8], signature: &[u8]) -> Result<(), Error> {
        if scheme == SigningScheme::Ed25519 {
            return verify_ed25519(key, data, signature);
        }
        if let Some(algorithm) = ring_ecdsa(scheme, key) {
            return ring::signature::UnparsedPublicKey::new(algorithm, key)
                .verify(data, signature)
                .map_err(|_| Error::Verification(format!("{} signature invalid", scheme.name())));
        }
        let digest = match scheme.hash_algorithm() {
            Some(HashAlgorithm::Sha2256) => sha2::Sha256::digest(data).to_vec(),
            Some(HashAlgorithm::Sha2384) => sha2::Sha384::digest(data).to_vec(),
            Some(HashAlgorithm::Sha2512) => sha2::Sha512::digest(data).to_vec(),
            _ => return Err(unsupported(scheme)),
        };
        self.verify_prehashed(scheme, key, &digest, signature)
    }

    fn verify_prehashed(
        &self,
        scheme: SigningScheme,
        key: &[u8],
        digest: &[u8],
        signature: &[u8],
    ) -> Result<(), Error> {
        if scheme.hash_algorithm().and_then(digest_len) != Some(digest.len()) {
            return Err(Error::Verification(format!("{} digest of the wrong length", scheme.name())));
        }
        let verified = match scheme {
            SigningScheme::EcdsaP256Sha256 | SigningScheme::EcdsaP256Sha384 => verify_p256(key, digest, signature),
            SigningScheme::EcdsaP384Sha256 | SigningScheme::EcdsaP384Sha384 => verify_p384(key, digest, signature),
            SigningScheme::RsaPkcs1Sha256 => verify_rsa(key, Pkcs1v15Sign::new::<sha2::Sha256>(), digest, signature),
            SigningScheme::RsaPkcs1Sha384 => verify_rsa(key, Pkcs1v15Sign::new::<sha2::Sha384>(), digest, signature),
            SigningScheme::RsaPkcs1Sha512 => verify_rsa(key, Pkcs1v15Sign::new::<sha2::Sha512>(), digest, signature),
            // Salt as long as the digest: what Go, aws-lc and sigstore clients sign and expect.
            SigningScheme::RsaPssSha256 => verify_rsa(key, Pss::new::<sha2::Sha256>(), digest, signature),
            SigningScheme::RsaPssSha384 => verify_rsa(key, Pss::new::<sha2::Sha384>(), digest, signature),
            SigningScheme::RsaPssSha512 => verify_rsa(key, Pss::new::<sha2::Sha512>(), digest, signature),
            _ => return Err(unsupported(scheme)),
        };
        if verified { Ok(()) } else { Err(Error::Verification(format!("{} signature invalid", scheme.name()))) }
    }
}

struct Hasher<D>(D);

impl<D: sha2::Digest + Send> HashContext for Hasher<D> {
    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    fn finalize(self: Box<Self>) -> Vec<u8> {
        self.0.finalize().to_vec()
    }
}

fn digest_len(algorithm: HashAlgorithm) -> Option<usize> {
    match algorithm {
        HashAlgorithm::Sha2256 => Some(32),
        HashAlgorithm::Sha2384 => Some(48),
        HashAlgorithm::Sha2512 => Some(64),
        _ => None,
    }
}

fn unsupported(scheme: SigningScheme) -> Error {
    Error::UnsupportedAlgorithm(format!("{} is not supported by pullgate", scheme.name()))
}

/// ring's ECDSA verifier for `scheme`, when the key is an uncompressed SEC1 point (what X.509
/// and sigstore carry; ring reads no other form, so a compressed one goes to RustCrypto).
fn ring_ecdsa(scheme: SigningScheme, key: &[u8]) -> Option<&'static ring::signature::EcdsaVerificationAlgorithm> {
    use ring::signature::{
        ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA384_ASN1, ECDSA_P384_SHA256_ASN1, ECDSA_P384_SHA384_ASN1,
    };
    if key.first() != Some(&0x04) {
        return None;
    }
    match scheme {
        SigningScheme::EcdsaP256Sha256 => Some(&ECDSA_P256_SHA256_ASN1),
        SigningScheme::EcdsaP256Sha384 => Some(&ECDSA_P256_SHA384_ASN1),
        SigningScheme::EcdsaP384Sha256 => Some(&ECDSA_P384_SHA256_ASN1),
        SigningScheme::EcdsaP384Sha384 => Some(&ECDSA_P384_SHA384_ASN1),
        _ => None,
    }
}

// Keys arrive as uncompressed SEC1 points, signatures DER-encoded, as in X.509 and sigstore.
fn verify_p256(key: &[u8], digest: &[u8], signature: &[u8]) -> bool {
    let Ok(key) = p256::ecdsa::VerifyingKey::from_sec1_bytes(key) else { return false };
    p256::ecdsa::Signature::from_der(signature).is_ok_and(|sig| key.verify_prehash(digest, &sig).is_ok())
}

fn verify_p384(key: &[u8], digest: &[u8], signature: &[u8]) -> bool {
    let Ok(key) = p384::ecdsa::VerifyingKey::from_sec1_bytes(key) else { return false };
    p384::ecdsa::Signature::from_der(signature).is_ok_and(|sig| key.verify_prehash(digest, &sig).is_ok())
}

/// `key` is a PKCS#1 RSAPublicKey.
fn verify_rsa(key: &[u8], scheme: impl rsa::traits::SignatureScheme, digest: &[u8], signature: &[u8]) -> bool {
    use rsa::pkcs1::der::Decode as _;
    let Ok(pkcs1) = rsa::pkcs1::RsaPublicKey::from_der(key) else { return false };
    let n = BigUint::from_bytes_be(pkcs1.modulus.as_bytes());
    let e = BigUint::from_bytes_be(pkcs1.public_exponent.as_bytes());
    let Ok(key) = RsaPublicKey::new_with_max_size(n, e, MAX_RSA_BITS) else { return false };
    key.verify(scheme, digest, signature).is_ok()
}

// Strict verification, as for keys (src/verify/keys.rs): no malleable signatures, no small-order keys.
fn verify_ed25519(key: &[u8], data: &[u8], signature: &[u8]) -> Result<(), Error> {
    let invalid = || Error::Verification("Ed25519 signature invalid".into());
    let key: &[u8; 32] = key.try_into().map_err(|_| invalid())?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(key).map_err(|_| invalid())?;
    let signature = ed25519_dalek::Signature::from_slice(signature).map_err(|_| invalid())?;
    key.verify_strict(data, &signature).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use p256::ecdsa::signature::Signer as _;
    use rand_core::{OsRng, RngCore as _};
    use rsa::pkcs1::EncodeRsaPublicKey as _;
    use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _};

    use super::*;

    const MESSAGE: &[u8] = b"hashedrekord entry";

    fn check(scheme: SigningScheme, key: &[u8], signature: &[u8]) {
        let verified = RUST_CRYPTO.verify_raw(scheme, key, MESSAGE, signature);
        assert!(verified.is_ok(), "{scheme:?}: {verified:?}");
        let mut tampered = signature.to_vec();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(RUST_CRYPTO.verify_raw(scheme, key, MESSAGE, &tampered).is_err(), "{scheme:?} tampered");
        assert!(RUST_CRYPTO.verify_raw(scheme, key, b"another message", signature).is_err(), "{scheme:?} message");
    }

    /// ring (whole messages) and RustCrypto (prehashed) must give the same answer on the same
    /// signatures, whichever of the two S values a signer chose, and on tampered ones.
    #[test]
    fn ring_and_rustcrypto_agree_on_ecdsa() {
        for round in 0..32u8 {
            let key = p256::ecdsa::SigningKey::random(&mut OsRng);
            let point = key.verifying_key().to_encoded_point(false);
            let message = [MESSAGE, &[round]].concat();
            let signature: p256::ecdsa::Signature = key.sign(&message);
            let (r, s) = signature.split_scalars();
            let other_s = p256::ecdsa::Signature::from_scalars(r, -s).expect("negated s");
            let mut tampered = signature.to_der().as_bytes().to_vec();
            let last = tampered.len() - 1;
            tampered[last] ^= 1;
            let digest = sha2::Sha256::digest(&message);
            for (der, valid) in [
                (signature.to_der().as_bytes().to_vec(), true),
                (other_s.to_der().as_bytes().to_vec(), true),
                (tampered, false),
            ] {
                let raw = RUST_CRYPTO.verify_raw(SigningScheme::EcdsaP256Sha256, point.as_bytes(), &message, &der);
                let prehashed =
                    RUST_CRYPTO.verify_prehashed(SigningScheme::EcdsaP256Sha256, point.as_bytes(), &digest, &der);
                assert_eq!(raw.is_ok(), valid, "ring: {raw:?}");
                assert_eq!(prehashed.is_ok(), valid, "RustCrypto: {prehashed:?}");
            }
        }
    }

    #[test]
    fn ecdsa_signatures_verify_raw_and_prehashed() {
        let p256 = p256::ecdsa::SigningKey::random(&mut OsRng);
        let p256_key = p256.verifying_key().to_encoded_point(false);
        let signature: p256::ecdsa::Signature = p256.sign(MESSAGE);
        check(SigningScheme::EcdsaP256Sha256, p256_key.as_bytes(), signature.to_der().as_bytes());
        let digest = sha2::Sha256::digest(MESSAGE);
        let prehashed = RUST_CRYPTO.verify_prehashed(
            SigningScheme::EcdsaP256Sha256,
            p256_key.as_bytes(),
            &digest,
            signature.to_der().as_bytes(),
        );
        assert!(prehashed.is_ok(), "{prehashed:?}");

        let p384 = p384::ecdsa::SigningKey::random(&mut OsRng);
        let p384_key = p384.verifying_key().to_encoded_point(false);
        let signature: p384::ecdsa::Signature = p384.sign(MESSAGE);
        check(SigningScheme::EcdsaP384Sha384, p384_key.as_bytes(), signature.to_der().as_bytes());
        // A key of the other curve is not the signer.
        assert!(
            RUST_CRYPTO
                .verify_raw(
                    SigningScheme::EcdsaP256Sha256,
                    p384_key.as_bytes(),
                    MESSAGE,
                    &signature.to_der().to_bytes()
                )
                .is_err()
        );
    }

    #[test]
    fn ed25519_signatures_verify() {
        let mut seed = [0u8; 32];
        OsRng.fill_bytes(&mut seed);
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let signature = key.sign(MESSAGE);
        check(SigningScheme::Ed25519, key.verifying_key().as_bytes(), &signature.to_bytes());
    }

    #[test]
    fn rsa_pkcs1_and_pss_signatures_verify() {
        let private = rsa::RsaPrivateKey::new(&mut OsRng, 2048).expect("RSA key");
        let public = private.to_public_key().to_pkcs1_der().expect("PKCS#1");
        let pkcs1 = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(private.clone());
        check(SigningScheme::RsaPkcs1Sha256, public.as_bytes(), &pkcs1.sign(MESSAGE).to_vec());
        let pss = rsa::pss::SigningKey::<sha2::Sha384>::new(private);
        check(SigningScheme::RsaPssSha384, public.as_bytes(), &pss.sign_with_rng(&mut OsRng, MESSAGE).to_vec());
    }

    #[test]
    fn a_digest_of_the_wrong_length_or_an_unknown_scheme_is_refused() {
        let key = p256::ecdsa::SigningKey::random(&mut OsRng);
        let point = key.verifying_key().to_encoded_point(false);
        let signature: p256::ecdsa::Signature = key.sign(MESSAGE);
        // ECDSA truncates a long digest to the curve size, so the right digest with bytes
        // appended would verify if the length were not checked.
        let mut padded = sha2::Sha256::digest(MESSAGE).to_vec();
        padded.extend_from_slice(&[0; 16]);
        let wrong_length = RUST_CRYPTO.verify_prehashed(
            SigningScheme::EcdsaP256Sha256,
            point.as_bytes(),
            &padded,
            signature.to_der().as_bytes(),
        );
        assert!(matches!(&wrong_length, Err(Error::Verification(m)) if m.contains("wrong length")), "{wrong_length:?}");
        let ml_dsa = RUST_CRYPTO.verify_raw(SigningScheme::MlDsa44, &[0; 1312], MESSAGE, &[0; 2420]);
        assert!(matches!(ml_dsa, Err(Error::UnsupportedAlgorithm(_))), "{ml_dsa:?}");
    }

    #[test]
    fn hashes_are_sha2() {
        assert_eq!(RUST_CRYPTO.sha256(b"abc").to_vec(), sha2::Sha256::digest(b"abc").to_vec());
        let mut context = RUST_CRYPTO.hash(HashAlgorithm::Sha2512).expect("SHA-512");
        context.update(b"a");
        context.update(b"bc");
        assert_eq!(context.finalize(), sha2::Sha512::digest(b"abc").to_vec());
    }
}
