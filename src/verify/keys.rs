//! Trusted public keys (PEM SubjectPublicKeyInfo) and signature checks done the way cosign does
//! them for a key loaded with `cosign verify --key`.

use std::fmt;

use ed25519_dalek::pkcs8::DecodePublicKey as _;
use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
use rsa::traits::PublicKeyParts as _;
use rsa::{BigUint, Pkcs1v15Sign, Pss, RsaPublicKey};
use sha2::{Digest as _, Sha256};
use spki::der::Decode as _;
use spki::{ObjectIdentifier, SubjectPublicKeyInfoRef};

const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// Below 2048 bits RSA is considered breakable (NIST SP 800-131A); cosign itself refuses to generate such keys.
pub const MIN_RSA_BITS: usize = 2048;
/// The rsa crate's default ceiling is 4096; 8192-bit keys exist in the wild and are still cheap to verify with.
pub const MAX_RSA_BITS: usize = 8192;
/// A PEM public key is at most a few KiB (an 8192-bit RSA key is about 1.5 KiB); the bound keeps
/// a key path pointed at something else from being parsed, and is the key file read limit too.
pub const MAX_PEM_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("key file is larger than {MAX_PEM_BYTES} bytes")]
    TooLarge,
    #[error("key is not valid PEM: {0}")]
    Pem(String),
    #[error("{0}; {EXPECTED}")]
    NotAPublicKey(String),
    #[error(
        "PEM block is {0:?}; expected \"PUBLIC KEY\" (SubjectPublicKeyInfo, as written by `cosign generate-key-pair`)"
    )]
    WrongLabel(String),
    #[error("key is not a valid SubjectPublicKeyInfo: {0}")]
    Spki(String),
    #[error("unsupported key algorithm {0} (supported: ECDSA P-256/P-384, RSA, Ed25519)")]
    UnsupportedAlgorithm(String),
    #[error("unsupported elliptic curve {0} (supported: P-256, P-384)")]
    UnsupportedCurve(String),
    #[error("RSA key has {0} bits; at least {MIN_RSA_BITS} are required")]
    RsaTooSmall(usize),
    #[error("RSA key has {0} bits; at most {MAX_RSA_BITS} are supported")]
    RsaTooLarge(usize),
    #[error("invalid {algorithm} key: {detail}")]
    Invalid { algorithm: &'static str, detail: String },
}

const EXPECTED: &str = "expected one PEM public key (\"-----BEGIN PUBLIC KEY-----\", as `cosign generate-key-pair` \
     writes to cosign.pub)";

/// Where OpenSSH public keys start: their algorithm name.
const SSH_KEY_PREFIXES: [&str; 3] = ["ssh-", "ecdsa-sha2-", "sk-"];

/// Deliberately carries no detail: which step of a verification failed is of no use to an
/// operator and only helps someone probing with forged signatures.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
#[error("signature does not verify")]
pub struct BadSignature;

enum KeyKind {
    EcdsaP256(p256::ecdsa::VerifyingKey),
    EcdsaP384(p384::ecdsa::VerifyingKey),
    Rsa(RsaPublicKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

pub struct TrustedKey {
    kind: KeyKind,
    fingerprint: String,
}

impl TrustedKey {
    pub fn from_pem(pem: &[u8]) -> Result<TrustedKey, KeyError> {
        if pem.len() > MAX_PEM_BYTES {
            return Err(KeyError::TooLarge);
        }
        let text = std::str::from_utf8(pem).map_err(|_| KeyError::Pem("not UTF-8 text".into()))?;
        if let Some(what) = not_a_public_key(text.trim()) {
            return Err(KeyError::NotAPublicKey(what));
        }
        let (label, doc) = spki::Document::from_pem(text.trim()).map_err(|e| KeyError::Pem(e.to_string()))?;
        if label != "PUBLIC KEY" {
            return Err(KeyError::WrongLabel(label.to_string()));
        }
        TrustedKey::from_spki_der(doc.as_bytes())
    }

    pub fn from_spki_der(der: &[u8]) -> Result<TrustedKey, KeyError> {
        let spki = SubjectPublicKeyInfoRef::from_der(der).map_err(|e| KeyError::Spki(e.to_string()))?;
        let kind = match spki.algorithm.oid {
            OID_EC_PUBLIC_KEY => parse_ecdsa(&spki, der)?,
            OID_RSA => KeyKind::Rsa(parse_rsa(&spki)?),
            OID_ED25519 => KeyKind::Ed25519(
                ed25519_dalek::VerifyingKey::from_public_key_der(der).map_err(|e| invalid("Ed25519", e))?,
            ),
            other => return Err(KeyError::UnsupportedAlgorithm(other.to_string())),
        };
        let fingerprint = format!("sha256:{}", hex::encode(Sha256::digest(der)));
        Ok(TrustedKey { kind, fingerprint })
    }

    /// `Ok` only if `signature` is a valid signature over exactly `payload` by this key.
    pub fn verify(&self, payload: &[u8], signature: &[u8]) -> Result<(), BadSignature> {
        let hashed: [u8; 32] = Sha256::digest(payload).into();
        let valid = match &self.kind {
            KeyKind::EcdsaP256(key) => verify_p256(key, &hashed, signature),
            KeyKind::EcdsaP384(key) => verify_p384(key, &hashed, signature),
            KeyKind::Rsa(key) => verify_rsa(key, &hashed, signature),
            KeyKind::Ed25519(key) => verify_ed25519(key, payload, signature),
        };
        if valid { Ok(()) } else { Err(BadSignature) }
    }

    /// "sha256:<hex>" over the SPKI DER, so the same key has the same fingerprint whatever the PEM formatting.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Fingerprint short enough for log lines and error messages.
    pub fn short_fingerprint(&self) -> &str {
        self.fingerprint.get(..23).unwrap_or(&self.fingerprint)
    }

    pub fn algorithm(&self) -> &'static str {
        match self.kind {
            KeyKind::EcdsaP256(_) => "ECDSA P-256",
            KeyKind::EcdsaP384(_) => "ECDSA P-384",
            KeyKind::Rsa(_) => "RSA",
            KeyKind::Ed25519(_) => "Ed25519",
        }
    }
}

impl fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustedKey")
            .field("algorithm", &self.algorithm())
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

/// What a file that is not a public key is, for the files `keys` is pointed at by mistake; the
/// PEM decoder would only say which byte it choked on.
fn not_a_public_key(text: &str) -> Option<String> {
    if text.is_empty() {
        return Some("the file is empty".to_owned());
    }
    if SSH_KEY_PREFIXES.iter().any(|prefix| text.starts_with(prefix)) {
        return Some(
            "this is an SSH public key, which cosign does not sign with (an RSA or ECDSA one can be exported \
             with `ssh-keygen -e -m PKCS8 -f FILE`)"
                .to_owned(),
        );
    }
    let labels: Vec<&str> =
        text.lines().filter_map(|line| line.trim().strip_prefix("-----BEGIN ")?.strip_suffix("-----")).collect();
    match labels.as_slice() {
        [label] if label.contains("PRIVATE KEY") => Some(format!(
            "this is a private key ({label}), which must stay with the signer; give its public key \
             (cosign.pub, or `cosign public-key --key FILE`)"
        )),
        [label] if label.contains("CERTIFICATE") => Some(format!(
            "this is a certificate ({label}); give its public key (`openssl x509 -pubkey -noout -in FILE`)"
        )),
        [] | [_] => None,
        many => Some(format!(
            "the file holds {} PEM blocks; put each key in a file of its own and list every file in `keys`",
            many.len()
        )),
    }
}

fn invalid(algorithm: &'static str, e: impl fmt::Display) -> KeyError {
    KeyError::Invalid { algorithm, detail: e.to_string() }
}

fn parse_ecdsa(spki: &SubjectPublicKeyInfoRef<'_>, der: &[u8]) -> Result<KeyKind, KeyError> {
    let curve = spki.algorithm.parameters_oid().map_err(|e| invalid("ECDSA", e))?;
    match curve {
        OID_P256 => p256::ecdsa::VerifyingKey::from_public_key_der(der)
            .map(KeyKind::EcdsaP256)
            .map_err(|e| invalid("ECDSA P-256", e)),
        OID_P384 => p384::ecdsa::VerifyingKey::from_public_key_der(der)
            .map(KeyKind::EcdsaP384)
            .map_err(|e| invalid("ECDSA P-384", e)),
        other => Err(KeyError::UnsupportedCurve(other.to_string())),
    }
}

fn parse_rsa(spki: &SubjectPublicKeyInfoRef<'_>) -> Result<RsaPublicKey, KeyError> {
    let raw = spki.subject_public_key.as_bytes().ok_or_else(|| invalid("RSA", "unaligned bit string"))?;
    let pkcs1 = rsa::pkcs1::RsaPublicKey::from_der(raw).map_err(|e| invalid("RSA", e))?;
    let n = BigUint::from_bytes_be(pkcs1.modulus.as_bytes());
    let e = BigUint::from_bytes_be(pkcs1.public_exponent.as_bytes());
    let bits = n.bits();
    if bits < MIN_RSA_BITS {
        return Err(KeyError::RsaTooSmall(bits));
    }
    if bits > MAX_RSA_BITS {
        return Err(KeyError::RsaTooLarge(bits));
    }
    RsaPublicKey::new_with_max_size(n, e, MAX_RSA_BITS).map_err(|e| invalid("RSA", e))
}

// cosign hashes with SHA-256 for both curves (LoadPublicKey uses crypto.SHA256), so P-384 is
// verified over a SHA-256 prehash rather than the curve's customary SHA-384.
fn verify_p256(key: &p256::ecdsa::VerifyingKey, sha256: &[u8; 32], signature: &[u8]) -> bool {
    p256::ecdsa::Signature::from_der(signature).is_ok_and(|sig| key.verify_prehash(sha256, &sig).is_ok())
}

fn verify_p384(key: &p384::ecdsa::VerifyingKey, sha256: &[u8; 32], signature: &[u8]) -> bool {
    p384::ecdsa::Signature::from_der(signature).is_ok_and(|sig| key.verify_prehash(sha256, &sig).is_ok())
}

// cosign signs with PKCS#1 v1.5, other sigstore tooling with PSS. The rsa crate cannot
// auto-detect the PSS salt length, so try the two that signers actually use: the digest length
// (OpenSSL "digest", sigstore) and the maximum (Go's PSSSaltLengthAuto, OpenSSL default).
fn verify_rsa(key: &RsaPublicKey, hashed: &[u8; 32], signature: &[u8]) -> bool {
    if key.verify(Pkcs1v15Sign::new::<Sha256>(), hashed, signature).is_ok() {
        return true;
    }
    let em_len = (key.n().bits() - 1).div_ceil(8);
    let max_salt = em_len.saturating_sub(hashed.len() + 2);
    [hashed.len(), max_salt]
        .into_iter()
        .any(|salt| key.verify(Pss::new_with_salt::<Sha256>(salt), hashed, signature).is_ok())
}

// Strict verification rejects malleable signatures and small-order keys; Go's ed25519 (cosign)
// never produces either, so genuine signatures are unaffected.
fn verify_ed25519(key: &ed25519_dalek::VerifyingKey, payload: &[u8], signature: &[u8]) -> bool {
    ed25519_dalek::Signature::from_slice(signature).is_ok_and(|sig| key.verify_strict(payload, &sig).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::pkcs8::EncodePublicKey as _;
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
    use p256::ecdsa::signature::Signer as _;
    use p256::ecdsa::signature::hazmat::PrehashSigner as _;
    use rand_core::{OsRng, RngCore as _};
    use std::sync::OnceLock;

    const PAYLOAD: &[u8] = b"{\"critical\":{}}";

    fn p256_key() -> (p256::ecdsa::SigningKey, TrustedKey) {
        let sk = p256::ecdsa::SigningKey::random(&mut OsRng);
        let pem = sk.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
        (sk, TrustedKey::from_pem(pem.as_bytes()).unwrap())
    }

    fn p256_der(sk: &p256::ecdsa::SigningKey, msg: &[u8]) -> Vec<u8> {
        let sig: p256::ecdsa::Signature = sk.sign(msg);
        sig.to_der().as_bytes().to_vec()
    }

    // RSA key generation is slow; one key serves every RSA test.
    fn rsa_2048() -> &'static (rsa::RsaPrivateKey, TrustedKey) {
        static KEY: OnceLock<(rsa::RsaPrivateKey, TrustedKey)> = OnceLock::new();
        KEY.get_or_init(|| {
            let sk = rsa::RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
            let pem = sk.to_public_key().to_public_key_pem(LineEnding::LF).unwrap();
            let key = TrustedKey::from_pem(pem.as_bytes()).unwrap();
            (sk, key)
        })
    }

    #[test]
    fn p256_accepts_genuine_rejects_tampered_and_wrong_key() {
        let (sk, key) = p256_key();
        let sig = p256_der(&sk, PAYLOAD);
        assert_eq!(key.algorithm(), "ECDSA P-256");
        assert_eq!(key.verify(PAYLOAD, &sig), Ok(()));
        assert_eq!(key.verify(b"{\"critical\":{ }}", &sig), Err(BadSignature));
        let (_, other) = p256_key();
        assert_eq!(other.verify(PAYLOAD, &sig), Err(BadSignature));
    }

    #[test]
    fn p256_accepts_high_s_signatures_as_go_produces_them() {
        let (sk, key) = p256_key();
        let sig: p256::ecdsa::Signature = sk.sign(PAYLOAD);
        let (r, s) = sig.split_scalars();
        let flipped = p256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
        assert_eq!(key.verify(PAYLOAD, flipped.to_der().as_bytes()), Ok(()));
    }

    #[test]
    fn p256_rejects_raw_and_garbage_signatures() {
        let (sk, key) = p256_key();
        let sig: p256::ecdsa::Signature = sk.sign(PAYLOAD);
        assert_eq!(key.verify(PAYLOAD, &sig.to_bytes()), Err(BadSignature));
        assert_eq!(key.verify(PAYLOAD, b""), Err(BadSignature));
        assert_eq!(key.verify(PAYLOAD, &[0x30; 300]), Err(BadSignature));
    }

    #[test]
    fn p384_verifies_over_sha256_prehash() {
        let sk = p384::ecdsa::SigningKey::random(&mut OsRng);
        let pem = sk.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
        let key = TrustedKey::from_pem(pem.as_bytes()).unwrap();
        let sig: p384::ecdsa::Signature = sk.sign_prehash(&Sha256::digest(PAYLOAD)).unwrap();
        assert_eq!(key.algorithm(), "ECDSA P-384");
        assert_eq!(key.verify(PAYLOAD, sig.to_der().as_bytes()), Ok(()));
        // A SHA-384 signature is not what cosign produces for a --key verification.
        let sig384: p384::ecdsa::Signature = sk.sign(PAYLOAD);
        assert_eq!(key.verify(PAYLOAD, sig384.to_der().as_bytes()), Err(BadSignature));
    }

    #[test]
    fn rsa_pkcs1v15_and_both_pss_salt_lengths() {
        let (sk, key) = rsa_2048();
        let hashed = Sha256::digest(PAYLOAD);
        let mut rng = OsRng;
        let v15 = sk.sign(Pkcs1v15Sign::new::<Sha256>(), &hashed).unwrap();
        let pss32 = sk.sign_with_rng(&mut rng, Pss::new_with_salt::<Sha256>(32), &hashed).unwrap();
        let pss_max = sk.sign_with_rng(&mut rng, Pss::new_with_salt::<Sha256>(256 - 32 - 2), &hashed).unwrap();
        let pss_odd = sk.sign_with_rng(&mut rng, Pss::new_with_salt::<Sha256>(20), &hashed).unwrap();
        assert_eq!(key.algorithm(), "RSA");
        assert_eq!(key.verify(PAYLOAD, &v15), Ok(()));
        assert_eq!(key.verify(PAYLOAD, &pss32), Ok(()));
        assert_eq!(key.verify(PAYLOAD, &pss_max), Ok(()));
        assert_eq!(key.verify(PAYLOAD, &pss_odd), Err(BadSignature));
        assert_eq!(key.verify(b"tampered", &v15), Err(BadSignature));
        assert_eq!(key.verify(PAYLOAD, &v15[1..]), Err(BadSignature));
    }

    #[test]
    fn rsa_below_2048_bits_is_rejected_with_a_clear_error() {
        let sk = rsa::RsaPrivateKey::new(&mut OsRng, 1024).unwrap();
        let pem = sk.to_public_key().to_public_key_pem(LineEnding::LF).unwrap();
        let err = TrustedKey::from_pem(pem.as_bytes()).unwrap_err();
        assert_eq!(err, KeyError::RsaTooSmall(1024));
        assert!(err.to_string().contains("at least 2048"), "{err}");
    }

    #[test]
    fn ed25519_verifies_raw_payload() {
        let mut seed = [0u8; 32];
        OsRng.fill_bytes(&mut seed);
        let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
        let pem = sk.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
        let key = TrustedKey::from_pem(pem.as_bytes()).unwrap();
        let sig = sk.sign(PAYLOAD).to_bytes();
        assert_eq!(key.algorithm(), "Ed25519");
        assert_eq!(key.verify(PAYLOAD, &sig), Ok(()));
        assert_eq!(key.verify(b"other", &sig), Err(BadSignature));
        assert_eq!(key.verify(PAYLOAD, &sig[..63]), Err(BadSignature));
    }

    #[test]
    fn cross_algorithm_signatures_do_not_verify() {
        let (p256_sk, _) = p256_key();
        let (_, rsa_key) = rsa_2048();
        assert_eq!(rsa_key.verify(PAYLOAD, &p256_der(&p256_sk, PAYLOAD)), Err(BadSignature));
    }

    #[test]
    fn fingerprint_is_sha256_of_spki_der_and_debug_hides_key() {
        let (sk, key) = p256_key();
        let der = sk.verifying_key().to_public_key_der().unwrap();
        let expected = format!("sha256:{}", hex::encode(Sha256::digest(der.as_bytes())));
        assert_eq!(key.fingerprint(), expected);
        assert_eq!(key.short_fingerprint(), &expected[..23]);
        let debug = format!("{key:?}");
        assert_eq!(debug, format!("TrustedKey {{ algorithm: \"ECDSA P-256\", fingerprint: \"{expected}\" }}"));
    }

    #[test]
    fn pem_with_crlf_and_surrounding_whitespace_is_accepted() {
        let (sk, key) = p256_key();
        let pem = sk.verifying_key().to_public_key_pem(LineEnding::CRLF).unwrap();
        let padded = format!("\n\n{pem}\n  ");
        let again = TrustedKey::from_pem(padded.as_bytes()).unwrap();
        assert_eq!(again.fingerprint(), key.fingerprint());
    }

    #[test]
    fn malformed_inputs_give_typed_errors() {
        assert!(matches!(TrustedKey::from_pem(b"hello"), Err(KeyError::Pem(_))));
        assert!(matches!(TrustedKey::from_pem(&[0xff, 0xfe]), Err(KeyError::Pem(_))));
        assert!(matches!(TrustedKey::from_pem(&vec![b'a'; MAX_PEM_BYTES + 1]), Err(KeyError::TooLarge)));
        let wrong = "-----BEGIN RSA PUBLIC KEY-----\nMAA=\n-----END RSA PUBLIC KEY-----\n";
        assert_eq!(TrustedKey::from_pem(wrong.as_bytes()).unwrap_err(), KeyError::WrongLabel("RSA PUBLIC KEY".into()));
        let junk = "-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n";
        assert!(matches!(TrustedKey::from_pem(junk.as_bytes()), Err(KeyError::Spki(_))));
    }

    #[test]
    fn files_that_are_no_public_key_are_named_for_what_they_are() {
        let (sk, _) = p256_key();
        let public = sk.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
        let cosign_private =
            "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n";
        let cases = [
            ("".to_owned(), "the file is empty; expected one PEM public key"),
            ("\n \n".to_owned(), "the file is empty"),
            ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI op@node\n".to_owned(), "this is an SSH public key"),
            ("ecdsa-sha2-nistp256 AAAAE2VjZHNh op@node\n".to_owned(), "this is an SSH public key"),
            (format!("{public}{public}"), "the file holds 2 PEM blocks; put each key in a file of its own"),
            (cosign_private.to_owned(), "this is a private key (ENCRYPTED SIGSTORE PRIVATE KEY)"),
            ("-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n".to_owned(), "this is a certificate"),
        ];
        for (file, expected) in cases {
            let error = TrustedKey::from_pem(file.as_bytes()).expect_err(expected).to_string();
            assert!(error.starts_with(expected), "{file:?}: {error}");
            assert!(error.contains("-----BEGIN PUBLIC KEY-----"), "says what is expected: {error}");
        }
    }

    #[test]
    fn unsupported_curve_and_algorithm_are_named() {
        // SPKI for a P-521 key: the curve OID is what matters; the point is never parsed.
        let p521 = spki_der("1.2.840.10045.2.1", Some("1.3.132.0.35"), &[4; 133]);
        assert_eq!(TrustedKey::from_spki_der(&p521).unwrap_err(), KeyError::UnsupportedCurve("1.3.132.0.35".into()));
        let dsa = spki_der("1.2.840.10040.4.1", None, &[0; 8]);
        assert_eq!(
            TrustedKey::from_spki_der(&dsa).unwrap_err(),
            KeyError::UnsupportedAlgorithm("1.2.840.10040.4.1".into())
        );
    }

    #[test]
    fn invalid_ec_point_is_rejected() {
        let bad = spki_der("1.2.840.10045.2.1", Some("1.2.840.10045.3.1.7"), &[4; 65]);
        assert!(matches!(TrustedKey::from_spki_der(&bad), Err(KeyError::Invalid { algorithm: "ECDSA P-256", .. })));
    }

    fn spki_der(alg: &str, param: Option<&str>, key: &[u8]) -> Vec<u8> {
        use spki::der::Encode as _;
        use spki::der::asn1::{AnyRef, BitStringRef};
        let param_oid = param.map(ObjectIdentifier::new_unwrap);
        let info = SubjectPublicKeyInfoRef {
            algorithm: spki::AlgorithmIdentifierRef {
                oid: ObjectIdentifier::new_unwrap(alg),
                parameters: param_oid.as_ref().map(AnyRef::from),
            },
            subject_public_key: BitStringRef::from_bytes(key).unwrap(),
        };
        info.to_der().unwrap()
    }

    #[test]
    fn trusted_key_can_be_shared_across_threads() {
        fn is<T: Send + Sync>() {}
        is::<TrustedKey>();
    }
}
