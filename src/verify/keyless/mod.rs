//! Keyless signatures: a signing certificate issued by a Fulcio-like CA, logged in a
//! Rekor-like transparency log, perhaps timestamped, all verified offline against a sigstore
//! trusted root held on the node.
//!
//! Every check is sigstore-rust's (`sigstore-verify`): X.509 path validation to a CA of the
//! root at the signing time (the log's integrated time or a verified RFC 3161 timestamp, never
//! the clock), the code-signing EKU, the embedded SCT, the log entry's SET or inclusion proof
//! and signed checkpoint, the binding of the entry's body to this certificate, signature and
//! artifact, then the identity. What this module adds is the offline setup (our
//! [`provider`], the embedded public-good roots) and bounds on what it is handed. The one
//! exception to "never the clock" is containers-policy.json `pki` ([`pki`]), which
//! containers/image checks at the current time, with no log.
//!
//! Why sigstore-verify and not the `sigstore` crate 0.15: the latter's bundle support comes
//! with its `sign` stack (oauth2, openidconnect, reqwest, webbrowser) and its own X.509 code;
//! sigstore-verify is verification only, follows the conformance suite, and builds without
//! any network or C dependency once aws-lc-rs is left out.

pub mod legacy;
pub mod pki;
pub mod provider;
pub mod root;
pub mod san;

use std::path::Path;

use sigstore_verify::trust_root::{SIGSTORE_PRODUCTION_TRUSTED_ROOT, SIGSTORE_STAGING_TRUSTED_ROOT, TrustedRoot};
use sigstore_verify::types::{Artifact, Bundle, DerPublicKey, Sha256Hash};
use sigstore_verify::{
    CertificateError, Error as VerifyError, PublicKeyVerificationPolicy, VerificationPolicy, Verifier,
};

/// A trusted root file: the public-good root is about 7 KiB, one with a long history of
/// rotated keys a few tens; anything near this bound is not a trusted root.
pub const MAX_TRUSTED_ROOT_BYTES: u64 = 1024 * 1024;
/// A bundle file: a DSSE bundle carries its whole attestation, and SBOM attestations run to a
/// few MiB; a message-signature bundle is a few KiB.
pub const MAX_BUNDLE_BYTES: u64 = 16 * 1024 * 1024;

/// The certificate authorities, transparency logs, CT logs and timestamp authorities a
/// keyless signature may chain to, ready to verify with.
pub struct TrustRoot {
    verifier: Verifier,
    /// What it trusts and until when, for `policy check`.
    authorities: Vec<root::Authority>,
}

/// Which root: the Sigstore public-good instance (production or staging), as embedded in
/// sigstore-trust-root, or a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicGood {
    Production,
    Staging,
}

impl std::fmt::Debug for TrustRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TrustRoot")
    }
}

impl TrustRoot {
    pub fn public_good(instance: PublicGood) -> Result<TrustRoot, KeylessError> {
        let json = match instance {
            PublicGood::Production => SIGSTORE_PRODUCTION_TRUSTED_ROOT,
            PublicGood::Staging => SIGSTORE_STAGING_TRUSTED_ROOT,
        };
        TrustRoot::from_json(json)
    }

    /// A `TrustedRoot` document (`application/vnd.dev.sigstore.trustedroot+json;version=0.1`).
    /// Malformed, duplicate or unsupported trust material is refused here, not at first use.
    pub fn from_json(json: &str) -> Result<TrustRoot, KeylessError> {
        provider::install();
        let root = TrustedRoot::from_json(json).map_err(|e| KeylessError::TrustRoot(e.to_string()))?;
        let verifier = Verifier::new(&root).map_err(|e| KeylessError::TrustRoot(e.to_string()))?;
        Ok(TrustRoot { verifier, authorities: root::authorities(&root) })
    }

    pub fn authorities(&self) -> &[root::Authority] {
        &self.authorities
    }
}

/// Who must have signed: a certificate identity (SAN) and OIDC issuer, or a public key.
pub enum Signer {
    Identity { subject: String, issuer: String },
    Key(DerPublicKey),
}

impl Signer {
    /// A PEM public key (SubjectPublicKeyInfo), as `--key` names it.
    pub fn key_from_pem(pem: &str) -> Result<Signer, KeylessError> {
        DerPublicKey::from_pem(pem)
            .map(Signer::Key)
            .map_err(|e| KeylessError::Input(format!("not a PEM public key: {e}")))
    }
}

/// What a bundle signs: an artifact's bytes, read in constant memory, or its SHA-256 digest.
pub enum Subject<'a> {
    Reader(&'a mut dyn std::io::Read),
    Digest(Sha256Hash),
}

/// What a verified bundle established, for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The certificate's SAN, when it was signed with a certificate.
    pub identity: Option<String>,
    pub issuer: Option<String>,
    /// RFC 3339: the log's integrated time or the verified timestamps the certificate was
    /// checked at.
    pub signing_times: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeylessError {
    #[error("trusted root unusable: {0}")]
    TrustRoot(String),
    #[error("{0}")]
    Input(String),
    #[error("bundle is not a sigstore bundle: {0}")]
    Bundle(String),
    /// Names the check that failed, as sigstore-verify words it (certificate chain, SCT,
    /// transparency log, timestamp, identity, issuer, signature, artifact).
    #[error("{0}")]
    Refused(String),
}

/// Verifies a sigstore bundle (v0.1 to v0.3) for `subject`, signed by `signer`.
pub fn verify_bundle(
    root: &TrustRoot,
    bundle_json: &str,
    subject: Subject<'_>,
    signer: &Signer,
) -> Result<Verified, KeylessError> {
    let bundle = Bundle::from_json(bundle_json).map_err(|e| KeylessError::Bundle(e.to_string()))?;
    let certificate_policy;
    let key_policy;
    let policy: &dyn sigstore_verify::Policy = match signer {
        Signer::Identity { subject, issuer } => {
            certificate_policy = VerificationPolicy::new(subject.as_str(), issuer.as_str());
            &certificate_policy
        }
        Signer::Key(key) => {
            key_policy = PublicKeyVerificationPolicy::new(key.clone());
            &key_policy
        }
    };
    let result = match subject {
        Subject::Reader(reader) => root.verifier.verify_reader(reader, &bundle, policy),
        Subject::Digest(digest) => root.verifier.verify(Artifact::from_digest(digest), &bundle, policy),
    }
    .map_err(|e| KeylessError::Refused(e.to_string()))?;
    Ok(Verified {
        identity: result.identity().map(|san| san.to_string()),
        issuer: result.issuer().map(str::to_owned),
        signing_times: result.verified_timestamps().iter().map(ToString::to_string).collect(),
    })
}

/// What a certificate signature established once every check passed: who the certificate
/// names, and the evidence its checks used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certified {
    /// The certificate's SAN: its first email or URI, else its first DNS name.
    pub subject: String,
    /// Its OIDC issuer (OID 1.3.6.1.4.1.57264.1.8, else .1.1).
    pub issuer: String,
    /// RFC 3339: the log's integrated time (or a verified timestamp) the chain was checked at.
    pub signing_time: String,
    /// The log entry's index, when the signature carries one.
    pub log_index: Option<u64>,
}

/// A certificate signature that failed, with the check that failed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `certificate chain`, `SCT`, `transparency log`, `timestamp`, `signature`, `digest`,
    /// `identity`, `issuer` or `bundle`.
    pub check: &'static str,
    pub text: String,
}

/// sigstore-verify's checks of a certificate-signed `bundle` over `artifact`, for any identity:
/// chain to a CA of `root` at the signing time, code-signing EKU, the SCT (when `sct`), the log
/// entry's SET or proof, the entry's binding to this certificate, signature and artifact, and
/// the signature. Which identities count is the caller's policy, matched on the result.
pub fn verify_certificate(
    root: &TrustRoot,
    bundle: &Bundle,
    artifact: Artifact<'_>,
    sct: bool,
) -> Result<Certified, Refusal> {
    let mut policy = VerificationPolicy::any_identity();
    if !sct {
        policy = policy.skip_sct();
    }
    let result = root
        .verifier
        .verify(artifact, bundle, &policy)
        .map_err(|e| Refusal { check: check_of(&e), text: e.to_string() })?;
    // The identity is read only from the certificate just verified (chain, SCT, log entry),
    // and never from one whose chain was skipped.
    let certificate = bundle.signing_certificate().filter(|_| result.certificate_verified());
    let certificate = certificate
        .ok_or_else(|| Refusal { check: "certificate chain", text: "certificate was not verified".to_owned() })?;
    // Fail closed on what the rule is matched against: a verified certificate without a SAN
    // or an issuer names nobody.
    let missing = |what: &str| Refusal { check: "identity", text: format!("certificate has no {what}") };
    let subject =
        san::identity(result.identity(), certificate).ok_or_else(|| missing("SAN identity (email, URI or DNS)"))?;
    let issuer = result.issuer().ok_or_else(|| missing("OIDC issuer extension"))?.to_owned();
    let signing_time = result
        .integrated_time()
        .or_else(|| result.verified_timestamps().first().copied())
        .map_or_else(|| "unknown".to_owned(), |t| t.to_string());
    let log_index = bundle.verification_material.tlog_entries.first().map(|e| e.log_index.get());
    Ok(Certified { subject, issuer, signing_time, log_index })
}

/// The check a sigstore-verify error is about, in the words of pullgate's reasons.
fn check_of(error: &VerifyError) -> &'static str {
    match error {
        VerifyError::Certificate(CertificateError::Sct(_)) => "SCT",
        VerifyError::Certificate(_) | VerifyError::TrustedCertificate(_) => "certificate chain",
        VerifyError::TransparencyLog(_) => "transparency log",
        VerifyError::Timestamp(_) => "timestamp",
        VerifyError::SignatureInvalid(_) => "signature",
        VerifyError::ArtifactMismatch(_) => "digest",
        VerifyError::IdentityMismatch { .. } => "identity",
        VerifyError::IssuerMismatch { .. } => "issuer",
        _ => "bundle",
    }
}

/// Reads a trusted root file within [`MAX_TRUSTED_ROOT_BYTES`].
pub fn read_trust_root(path: &Path) -> Result<TrustRoot, KeylessError> {
    let json = crate::policy::read_bounded_text(path, MAX_TRUSTED_ROOT_BYTES, "trusted root")
        .map_err(|e| KeylessError::TrustRoot(format!("{}: {e}", path.display())))?;
    TrustRoot::from_json(&json)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test instance and one signature made by tests/it/keyless/test_sigstore.py
    /// (python3-cryptography), as `args` say: its root, bundle and artifact.
    fn signed(args: &[&str]) -> (TrustRoot, Bundle, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/keyless/test_sigstore.py");
        let status = std::process::Command::new("python3").arg(script).arg(dir.path()).args(args).status().unwrap();
        assert!(status.success(), "test_sigstore.py {args:?}");
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        let root = TrustRoot::from_json(&read("trusted_root.json")).unwrap();
        let bundle = Bundle::from_json(&read("bundle.json")).unwrap();
        (root, bundle, std::fs::read(dir.path().join("artifact.txt")).unwrap())
    }

    #[test]
    fn a_certificate_naming_only_a_host_names_that_host_once_verified() {
        let (root, bundle, artifact) = signed(&["--subject-dns", "host.example.test"]);
        let certified = verify_certificate(&root, &bundle, Artifact::from_blob(&artifact), true).unwrap();
        assert_eq!(certified.subject, "host.example.test");
        assert_eq!(certified.issuer, "https://issuer.example.test");
        // An email certificate still names its email.
        let (root, bundle, artifact) = signed(&["--subject-email", "ann@example.test"]);
        let certified = verify_certificate(&root, &bundle, Artifact::from_blob(&artifact), true).unwrap();
        assert_eq!(certified.subject, "ann@example.test");
    }

    #[test]
    fn a_host_certificate_that_fails_a_check_names_nobody() {
        for (case, check) in
            [("forged-sct", "SCT"), ("foreign-ca", "certificate chain"), ("forged-set", "transparency log")]
        {
            let (root, bundle, artifact) = signed(&["--subject-dns", "host.example.test", "--case", case]);
            let refusal = verify_certificate(&root, &bundle, Artifact::from_blob(&artifact), true).unwrap_err();
            assert_eq!(refusal.check, check, "{case}: {refusal:?}");
        }
    }

    /// The `.sig` annotations standing for test_sigstore.py's bundle, with `timestamp` as the
    /// RFC 3161 timestamp annotation, turned back into a bundle by [`legacy::bundle`].
    fn as_sig_layer(bundle: &Bundle, artifact: &[u8], timestamp: Option<String>) -> Bundle {
        use base64::Engine as _;
        use base64::engine::general_purpose::STANDARD;
        let json: serde_json::Value = serde_json::from_str(&bundle.to_json().unwrap()).unwrap();
        let material = &json["verificationMaterial"];
        let leaf = material["x509CertificateChain"]["certificates"][0]["rawBytes"].as_str().unwrap();
        let entry = &material["tlogEntries"][0];
        let rekor = serde_json::json!({
            "SignedEntryTimestamp": entry["inclusionPromise"]["signedEntryTimestamp"],
            "Payload": {
                "body": entry["canonicalizedBody"],
                "integratedTime": entry["integratedTime"].as_str().unwrap().parse::<i64>().unwrap(),
                "logIndex": entry["logIndex"].as_str().unwrap().parse::<i64>().unwrap(),
                "logID": hex::encode(STANDARD.decode(entry["logId"]["keyId"].as_str().unwrap()).unwrap()),
            },
        });
        let certificate = pem::encode(&pem::Pem::new("CERTIFICATE", STANDARD.decode(leaf).unwrap()));
        let material = crate::verify::signatures::CertificateMaterial {
            certificate,
            chain: None,
            rekor_bundle: Some(rekor.to_string()),
            rfc3161_timestamp: timestamp,
        };
        let signature = STANDARD.decode(json["messageSignature"]["signature"].as_str().unwrap()).unwrap();
        legacy::bundle(&material, &signature, artifact).unwrap()
    }

    #[test]
    fn a_sig_layers_timestamp_is_verified_and_one_that_does_not_verify_refuses() {
        use base64::Engine as _;
        let (root, bundle, artifact) = signed(&[]);
        let plain = as_sig_layer(&bundle, &artifact, None);
        assert!(verify_certificate(&root, &plain, Artifact::from_blob(&artifact), true).is_ok());
        // Not a timestamp from an authority of the root (it has none): the signature fails,
        // where an ignored annotation would have let it count.
        let bogus = serde_json::json!({ "SignedRFC3161Timestamp": base64::engine::general_purpose::STANDARD.encode(b"not a TimeStampResp") });
        let timestamped = as_sig_layer(&bundle, &artifact, Some(bogus.to_string()));
        let refusal = verify_certificate(&root, &timestamped, Artifact::from_blob(&artifact), true).unwrap_err();
        assert_eq!(refusal.check, "timestamp", "{refusal:?}");
    }
}
