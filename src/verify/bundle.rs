//! A sigstore bundle as cosign v3 signs an image with a key: a DSSE envelope over an in-toto
//! statement whose predicate type says "cosign signature" and whose subject is the image digest.
//!
//! A bundle holding a message signature (what `cosign sign-blob` writes) never counts: it signs
//! bytes, not an image, so it cannot be told apart from the key's every other blob signature. A
//! legacy `.sig` signature is one too (over its payload's SHA-256), and served as a "manifest"
//! its payload would make the key approve an image it never signed. cosign signs images with a
//! DSSE envelope, whose statement says what it is.
//!
//! The bundle model (v0.1–v0.3, the DSSE envelope and its PAE, in-toto statements) is
//! sigstore-rust's `sigstore-types`; the signature is checked with the rule's keys
//! (`keys::TrustedKey`, RustCrypto), as for `.sig` signatures. Keyless bundles (a Fulcio
//! certificate instead of a key hint) are verified by sigstore-verify (`certificate`) against
//! the rule's trusted roots and identities, over the image digest.

use sigstore_types::bundle::VerificationMaterialContent;
use sigstore_types::{Bundle, DsseEnvelope, SignatureContent, Statement};
use sigstore_verify::types::{Artifact, Sha256Hash};

use super::referrers::MAX_BUNDLE_BYTES;
use super::{Checked, Shortfall, certificate, plural};
use crate::policy::{IdentityRule, KeyRef, Rule};
use crate::reference::Digest;

/// The payload type of a DSSE envelope holding an in-toto statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The predicate type of `cosign sign`'s statement; any other (SLSA provenance, SBOM, …) is
/// an attestation about the image, not a signature of it.
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

/// Every refusal of a bundle says so, so a reason never leaves the format to be guessed.
const PREFIX: &str = "sigstore bundle: ";

/// The signature is checked before what it signs is read: until then it is anybody's text.
pub(super) fn check_bundle<'k>(
    digest: &Digest,
    rule: &Rule,
    keys: &[&'k KeyRef],
    layer: &Digest,
    bytes: &[u8],
) -> Checked<'k> {
    let (bundle, keyless) = match parse(layer, bytes) {
        Ok(parsed) => parsed,
        Err((kind, text)) => return refused(None, kind, text),
    };
    let envelope = match envelope(&bundle) {
        Ok(envelope) => envelope,
        Err((kind, text)) => return refused(None, kind, text),
    };
    if keyless { check_keyless(digest, rule, &bundle, envelope) } else { check_dsse(digest, rule, keys, envelope) }
}

/// sigstore-verify checks the certificate, the log entry, the signature, and that what was
/// signed is `digest` (the DSSE statement's subject); what remains is what the statement it
/// vouched for says.
fn check_keyless<'k>(digest: &Digest, rule: &Rule, bundle: &Bundle, envelope: &DsseEnvelope) -> Checked<'k> {
    let signer = match check_certificate(digest, rule, bundle) {
        Ok(signer) => signer,
        Err((kind, text)) => return refused(None, kind, format!("{PREFIX}{text}")),
    };
    Checked {
        key: None,
        signer: Some(signer),
        signed_name: None,
        problem: check_statement(digest, rule, envelope).err(),
    }
}

fn check_certificate(
    digest: &Digest,
    rule: &Rule,
    bundle: &Bundle,
) -> Result<certificate::Signer, (Shortfall, String)> {
    let hash = (digest.algorithm() == "sha256").then(|| Sha256Hash::from_hex(digest.hex()).ok()).flatten();
    let hash = hash.ok_or_else(|| (Shortfall::DigestMismatch, format!("{digest} is not a sha256 digest")))?;
    certificate::check(rule, bundle, || Artifact::from_digest(hash))
}

fn check_dsse<'k>(digest: &Digest, rule: &Rule, keys: &[&'k KeyRef], envelope: &DsseEnvelope) -> Checked<'k> {
    let signature = envelope.signature.sig.as_bytes();
    let pae = envelope.pae();
    let Some(key) = keys.iter().copied().find(|k| k.key.verify(&pae, signature).is_ok()) else {
        let n = keys.len();
        let text = format!("{PREFIX}signature does not verify with any of the {n} trusted {}", plural(n, "key"));
        return refused(None, Shortfall::UntrustedKey, text);
    };
    match check_statement(digest, rule, envelope) {
        Ok(()) => Checked { key: Some(key), signer: None, signed_name: None, problem: None },
        Err((kind, text)) => refused(Some(key), kind, text),
    }
}

fn refused(key: Option<&KeyRef>, kind: Shortfall, text: String) -> Checked<'_> {
    Checked { key, signer: None, signed_name: None, problem: Some((kind, text)) }
}

/// The bundle in a layer, bounded and matching its digest (sigstore-verify reads the same
/// type, so it is parsed once), and whether it is signed with a certificate (keyless) rather
/// than a key.
fn parse(layer: &Digest, bytes: &[u8]) -> Result<(Bundle, bool), (Shortfall, String)> {
    let unusable = |text: &str| (Shortfall::UnusablePayload, format!("{PREFIX}{text}"));
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err(unusable(&format!("{} bytes, more than the {MAX_BUNDLE_BYTES}-byte limit", bytes.len())));
    }
    if !layer.verify(bytes) {
        return Err(unusable("blob does not match the layer digest"));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| unusable("not UTF-8 JSON"))?;
    let bundle = Bundle::from_json(text).map_err(|e| unusable(&format!("not a valid bundle: {}", truncated(&e))))?;
    let keyless = match bundle.verification_material.content {
        VerificationMaterialContent::PublicKey(_) => false,
        VerificationMaterialContent::Certificate(_) | VerificationMaterialContent::X509CertificateChain { .. } => true,
        _ => return Err(unusable("verification material of an unknown kind")),
    };
    Ok((bundle, keyless))
}

/// The bundle's DSSE envelope: cosign signs images with nothing else.
fn envelope(bundle: &Bundle) -> Result<&DsseEnvelope, (Shortfall, String)> {
    let unusable = |text: &str| (Shortfall::UnusablePayload, format!("{PREFIX}{text}"));
    match &bundle.content {
        SignatureContent::DsseEnvelope(envelope) => Ok(envelope),
        SignatureContent::MessageSignature(_) => Err(unusable(
            "holds a message signature, which signs bytes, not an image (cosign signs images with a DSSE envelope)",
        )),
        _ => Err(unusable("content of an unknown kind")),
    }
}

/// What a trusted key signed must be cosign's signature statement for exactly `digest`, and
/// the rule must accept a signature that names no image.
fn check_statement(digest: &Digest, rule: &Rule, envelope: &DsseEnvelope) -> Result<(), (Shortfall, String)> {
    let unusable = |text: String| (Shortfall::UnusablePayload, format!("{PREFIX}{text}"));
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(unusable(format!(
            "payload type {:?}, not an in-toto statement",
            truncated(&envelope.payload_type)
        )));
    }
    let statement: Statement = serde_json::from_slice(envelope.payload.as_bytes())
        .map_err(|e| unusable(format!("payload is not an in-toto statement: {}", truncated(&e))))?;
    // The predicate first: an attestation (cosign still writes those as in-toto v0.1) is told
    // apart as one, whatever its statement version.
    if statement.predicate_type != COSIGN_SIGN_PREDICATE {
        let text = format!(
            "an attestation (predicate type {:?}), not a cosign signature",
            truncated(&statement.predicate_type)
        );
        return Err(unusable(text));
    }
    if statement.type_ != Statement::TYPE_V1 {
        return Err(unusable(format!("statement type {:?}, not in-toto v1", truncated(&statement.type_))));
    }
    if !names_digest(&statement, digest) {
        let text = format!("signed statement names {}, not {digest}", subjects(&statement));
        return Err((Shortfall::DigestMismatch, format!("{PREFIX}{text}")));
    }
    digest_only(rule)
}

/// A bundle names no image, only its digest: it counts only where the rule says it may.
fn digest_only(rule: &Rule) -> Result<(), (Shortfall, String)> {
    if rule.identity == IdentityRule::Ignore {
        return Ok(());
    }
    let text = format!(
        "names no image, only its digest, and the rule's identity {} needs one \
         (identity = \"ignore\" accepts digest-only signatures)",
        rule.identity.name()
    );
    Err((Shortfall::IdentityMismatch, format!("{PREFIX}{text}")))
}

fn names_digest(statement: &Statement, digest: &Digest) -> bool {
    if digest.algorithm() != "sha256" {
        return false;
    }
    sigstore_types::Sha256Hash::from_hex(digest.hex()).is_ok_and(|hash| statement.matches_sha256(&hash))
}

/// The statement's sha256 subjects, a few at most: they end up in CRI error messages.
fn subjects(statement: &Statement) -> String {
    const MAX: usize = 3;
    let named: Vec<String> = statement
        .subject
        .iter()
        .filter_map(|s| s.digest.sha256.as_ref())
        .take(MAX)
        .map(|hash| format!("sha256:{}", hash.to_hex()))
        .collect();
    if named.is_empty() { "no sha256 digest".to_owned() } else { named.join(", ") }
}

fn truncated(text: &dyn std::fmt::Display) -> String {
    text.to_string().chars().take(100).collect()
}
