//! containers-policy.json `pki`: a `.sig` signature whose certificate was issued by a company
//! PKI, checked as containers/image checks it (signature/pki_cert.go, policy_eval_sigstore.go):
//! the leaf, with the policy's intermediates and the chain annotation offered as intermediates,
//! chains to a certificate of the policy's roots **at the current time**, with the code-signing
//! EKU wherever an EKU is given; the signature verifies with the leaf's key over the payload;
//! `subjectEmail` is one of the leaf's email SANs and `subjectHostname` is a name the leaf is
//! valid for (DNS SANs with their wildcards, or IP SANs), both when both are given. No log, no
//! timestamp, no SCT: containers/image uses none with `pki`.
//!
//! Path building, validity dates, basic and name constraints, the EKU and hostname matching are
//! rustls-webpki's, with sigstore-crypto's algorithms (so our [`super::provider`] verifies);
//! SANs are read with x509-cert. Nothing here parses DER or walks a chain by hand.

use jiff::Timestamp;
use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use sigstore_verify::crypto::{WEBPKI_VERIFICATION_ALGS, parse_certificate_info};
use sigstore_verify::types::DerCertificate;
use webpki::{EndEntityCert, KeyUsage};
use x509_cert::der::Decode as _;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

use crate::verify::keys::TrustedKey;
use crate::verify::signatures::{CertificateMaterial, MAX_CHAIN_CERTIFICATES};

/// id-kp-codeSigning (1.3.6.1.5.5.7.3.3), DER contents: what containers/image asks Go's
/// `Certificate.Verify` for.
const CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];
/// What a `pki` signer shows, and matches, as its issuer: a company PKI certificate names no
/// OIDC issuer.
pub const PKI_ISSUER: &str = "pki (no OIDC issuer)";
/// id-ce-subjectAltName (2.5.29.17).
const SUBJECT_ALT_NAME: x509_cert::der::oid::ObjectIdentifier =
    x509_cert::der::oid::ObjectIdentifier::new_unwrap("2.5.29.17");

/// A `pki` requirement ready to verify with: its roots (each with its own validity, which
/// Go's chain building checks too), its intermediates, and the subject it asks for.
pub struct PkiTrust {
    roots: Vec<Root>,
    intermediates: Vec<CertificateDer<'static>>,
    email: Option<String>,
    hostname: Option<ServerName<'static>>,
}

struct Root {
    anchor: TrustAnchor<'static>,
    not_before: Timestamp,
    not_after: Timestamp,
}

impl std::fmt::Debug for PkiTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PkiTrust")
    }
}

/// What a `pki` signature established once every check passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiCertified {
    /// The leaf's SHA-256 fingerprint (hex): a threshold counts distinct certificates.
    pub fingerprint: String,
    /// The subject names the requirement asked for and the leaf carries.
    pub subject: String,
    /// RFC 3339: the wall-clock time the chain was checked at.
    pub checked_at: String,
}

/// Which check failed, in the words of pullgate's reasons, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiRefusal {
    /// `certificate chain`, `signature` or `identity`.
    pub check: &'static str,
    pub text: String,
}

impl PkiTrust {
    /// From the policy's roots (every one a trust anchor, as in a Go `CertPool`), its
    /// intermediates, and `subjectEmail` / `subjectHostname` (at least one).
    pub fn new(
        roots: &[DerCertificate],
        intermediates: &[DerCertificate],
        email: Option<&str>,
        hostname: Option<&str>,
    ) -> Result<PkiTrust, String> {
        // webpki's algorithms call sigstore-crypto's provider, which panics when none is set.
        super::provider::install();
        let mut anchors = Vec::new();
        for (i, der) in roots.iter().enumerate() {
            let info = parse_certificate_info(der).map_err(|e| format!("CA root #{}: {e}", i + 1))?;
            let cert = CertificateDer::from(der.as_bytes());
            let anchor =
                webpki::anchor_from_trusted_cert(&cert).map_err(|e| format!("CA root #{}: {e:?}", i + 1))?.to_owned();
            anchors.push(Root { anchor, not_before: info.not_before, not_after: info.not_after });
        }
        let hostname = hostname
            .filter(|h| !h.is_empty())
            .map(|h| {
                ServerName::try_from(h.to_owned())
                    .map_err(|_| format!("subjectHostname {h:?} is not a DNS name or IP address"))
            })
            .transpose()?;
        let email = email.filter(|e| !e.is_empty()).map(str::to_owned);
        if email.is_none() && hostname.is_none() {
            return Err("subjectEmail or subjectHostname is required".to_owned());
        }
        let intermediates = intermediates.iter().map(|c| CertificateDer::from(c.as_bytes().to_vec())).collect();
        Ok(PkiTrust { roots: anchors, intermediates, email, hostname })
    }

    /// The subject asked for, as operators read it.
    pub fn subject_label(&self) -> String {
        let email = self.email.as_ref().map(|e| format!("email {e}"));
        let host = self.hostname.as_ref().map(|h| format!("hostname {}", h.to_str()));
        email.into_iter().chain(host).collect::<Vec<_>>().join(" and ")
    }
}

/// Verifies a `.sig` layer's certificate, chain and `signature` over `payload` for `trust`,
/// at `now`.
///
/// `now` is the wall clock, deliberately: containers/image calls Go's `Certificate.Verify`
/// without a `CurrentTime`, and a `pki` signature carries neither a log entry nor a timestamp
/// that could prove when it was made. These are long-lived company certificates: a signature
/// stops being accepted when its certificate (or a CA above it) expires, as in Podman and CRI-O.
pub fn verify(
    trust: &PkiTrust,
    material: &CertificateMaterial,
    signature: &[u8],
    payload: &[u8],
    now: Timestamp,
) -> Result<PkiCertified, PkiRefusal> {
    let chain = |text: String| PkiRefusal { check: "certificate chain", text };
    let leaf =
        DerCertificate::from_pem(&material.certificate).map_err(|e| chain(format!("certificate annotation: {e}")))?;
    let offered = offered_intermediates(material.chain.as_deref()).map_err(chain)?;
    let intermediates: Vec<CertificateDer<'_>> = trust.intermediates.iter().cloned().chain(offered).collect();
    let leaf_der = CertificateDer::from(leaf.as_bytes());
    let end_entity = EndEntityCert::try_from(&leaf_der).map_err(|e| chain(format!("leaf certificate: {e:?}")))?;
    let anchors: Vec<TrustAnchor<'_>> = trust
        .roots
        .iter()
        .filter(|root| root.not_before <= now && now <= root.not_after)
        .map(|root| root.anchor.clone())
        .collect();
    if anchors.is_empty() {
        return Err(chain(format!("no CA root is valid at {now}")));
    }
    let seconds = u64::try_from(now.as_second()).map_err(|_| chain("the clock is before 1970".to_owned()))?;
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(seconds));
    end_entity
        .verify_for_usage(
            WEBPKI_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            time,
            // Go's rule: a certificate without an EKU extension may be used for anything.
            KeyUsage::required_if_present(CODE_SIGNING),
            None,
            None,
        )
        .map_err(|e| chain(format!("the certificate does not chain to a CA root at {now}: {e:?}")))?;
    let info = parse_certificate_info(&leaf).map_err(|e| chain(format!("leaf certificate: {e}")))?;
    let key = TrustedKey::from_spki_der(info.public_key.as_bytes())
        .map_err(|e| PkiRefusal { check: "signature", text: format!("leaf certificate key: {e}") })?;
    key.verify(payload, signature).map_err(|e| PkiRefusal { check: "signature", text: e.to_string() })?;
    check_subject(trust, &end_entity, &leaf)?;
    let fingerprint = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(leaf.as_bytes()));
    Ok(PkiCertified { fingerprint, subject: trust.subject_label(), checked_at: now.to_string() })
}

/// The chain annotation's certificates but the last, as containers/image takes them: cosign
/// writes the chain up to and including the root, which is never trusted from the signature.
fn offered_intermediates(chain: Option<&str>) -> Result<Vec<CertificateDer<'static>>, String> {
    let Some(chain) = chain else { return Ok(Vec::new()) };
    let blocks = pem::parse_many(chain).map_err(|e| format!("chain annotation: {e}"))?;
    if blocks.len() > MAX_CHAIN_CERTIFICATES {
        return Err(format!(
            "chain annotation holds {} certificates, more than {MAX_CHAIN_CERTIFICATES}",
            blocks.len()
        ));
    }
    if let Some(block) = blocks.iter().find(|block| block.tag() != "CERTIFICATE") {
        return Err(format!("chain annotation holds a {} block", block.tag()));
    }
    let offered = blocks.iter().take(blocks.len().saturating_sub(1));
    Ok(offered.map(|block| CertificateDer::from(block.contents().to_vec())).collect())
}

/// `subjectEmail` among the leaf's email SANs (exactly, as Go's `slices.Contains`), and the leaf
/// valid for `subjectHostname` (webpki's matching: DNS SANs with wildcards, IP SANs).
fn check_subject(trust: &PkiTrust, end_entity: &EndEntityCert<'_>, leaf: &DerCertificate) -> Result<(), PkiRefusal> {
    let mismatch = |text: String| PkiRefusal { check: "identity", text };
    if let Some(email) = &trust.email {
        let emails = email_sans(leaf).map_err(|e| mismatch(format!("leaf certificate SANs: {e}")))?;
        if !emails.iter().any(|e| e == email) {
            let shown: Vec<String> = emails.iter().take(8).map(|e| e.chars().take(200).collect()).collect();
            return Err(mismatch(format!("required email {email:?} is not among the certificate's {shown:?}")));
        }
    }
    if let Some(hostname) = &trust.hostname {
        end_entity
            .verify_is_valid_for_subject_name(hostname)
            .map_err(|_| mismatch(format!("the certificate is not valid for hostname {:?}", hostname.to_str())))?;
    }
    Ok(())
}

fn email_sans(leaf: &DerCertificate) -> Result<Vec<String>, String> {
    let certificate = x509_cert::Certificate::from_der(leaf.as_bytes()).map_err(|e| e.to_string())?;
    let extensions = certificate.tbs_certificate.extensions.unwrap_or_default();
    let mut emails = Vec::new();
    for extension in extensions.iter().filter(|e| e.extn_id == SUBJECT_ALT_NAME) {
        let names = SubjectAltName::from_der(extension.extn_value.as_bytes()).map_err(|e| e.to_string())?;
        for name in names.0 {
            if let GeneralName::Rfc822Name(email) = name {
                emails.push(email.as_str().to_owned());
            }
        }
    }
    Ok(emails)
}

#[cfg(test)]
pub(crate) mod tests {
    use p256::ecdsa::signature::Signer as _;
    use p256::pkcs8::DecodePrivateKey as _;

    use super::*;
    use crate::policy::test_support::TestDir;

    /// A company PKI made by tests/it/keyless/test_pki.py (see there for the files).
    pub(crate) fn make_pki() -> TestDir {
        let dir = TestDir::new();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/keyless/test_pki.py");
        let status = std::process::Command::new("python3").arg(script).arg(dir.path("")).status().unwrap();
        assert!(status.success(), "test_pki.py failed");
        dir
    }

    pub(crate) fn read(dir: &TestDir, file: &str) -> String {
        std::fs::read_to_string(dir.path(file)).unwrap()
    }

    /// A DER signature (what cosign writes, base64-decoded) over `payload` with `key_file`.
    pub(crate) fn sign(dir: &TestDir, key_file: &str, payload: &[u8]) -> Vec<u8> {
        let key = p256::ecdsa::SigningKey::from_pkcs8_pem(&read(dir, key_file)).unwrap();
        let signature: p256::ecdsa::Signature = key.sign(payload);
        signature.to_der().as_bytes().to_vec()
    }

    fn ders(pem: &str) -> Vec<DerCertificate> {
        pem::parse_many(pem).unwrap().into_iter().map(|b| DerCertificate::new(b.into_contents())).collect()
    }

    fn trust(dir: &TestDir, intermediates: bool, email: Option<&str>, hostname: Option<&str>) -> PkiTrust {
        let intermediates = if intermediates { ders(&read(dir, "intermediate.pem")) } else { Vec::new() };
        PkiTrust::new(&ders(&read(dir, "root.pem")), &intermediates, email, hostname).unwrap()
    }

    fn material(dir: &TestDir, leaf: &str, chain: Option<&str>) -> CertificateMaterial {
        CertificateMaterial {
            certificate: read(dir, leaf),
            chain: chain.map(|c| read(dir, c)),
            rekor_bundle: None,
            rfc3161_timestamp: None,
        }
    }

    const PAYLOAD: &[u8] = b"{\"critical\": {}}";

    fn check(trust: &PkiTrust, material: &CertificateMaterial, signature: &[u8]) -> Result<PkiCertified, PkiRefusal> {
        verify(trust, material, signature, PAYLOAD, Timestamp::now())
    }

    fn refused(result: Result<PkiCertified, PkiRefusal>, check: &str, needle: &str) {
        let refusal = result.expect_err("accepted");
        assert_eq!(refusal.check, check, "{refusal:?}");
        assert!(refusal.text.contains(needle), "{refusal:?}");
    }

    #[test]
    fn a_leaf_chaining_to_the_roots_now_and_naming_the_subject_verifies() {
        let dir = make_pki();
        let signature = sign(&dir, "leaf.key", PAYLOAD);
        let leaf = material(&dir, "leaf.pem", None);
        let both = trust(&dir, true, Some("dev@example.com"), Some("ci.build.example.com"));
        let certified = check(&both, &leaf, &signature).unwrap();
        assert_eq!(certified.subject, "email dev@example.com and hostname ci.build.example.com");
        assert_eq!(certified.fingerprint.len(), 64);
        // The intermediate may come from the chain annotation instead of the policy.
        let email = trust(&dir, false, Some("dev@example.com"), None);
        check(&email, &material(&dir, "leaf.pem", Some("chain.pem")), &signature).unwrap();
        // As in Go, a leaf without an EKU may be used for anything.
        check(&email, &material(&dir, "no-eku.pem", Some("chain.pem")), &signature).unwrap();
    }

    #[test]
    fn another_subject_is_an_identity_mismatch() {
        let dir = make_pki();
        let signature = sign(&dir, "leaf.key", PAYLOAD);
        let leaf = material(&dir, "leaf.pem", None);
        let other_email = trust(&dir, true, Some("ops@example.com"), None);
        refused(check(&other_email, &leaf, &signature), "identity", "required email \"ops@example.com\"");
        // Exact, as Go's slices.Contains: no case folding.
        refused(check(&trust(&dir, true, Some("Dev@example.com"), None), &leaf, &signature), "identity", "email");
        for host in ["build.example.com", "a.b.build.example.com", "ci.build.example.org"] {
            let other_host = trust(&dir, true, None, Some(host));
            refused(check(&other_host, &leaf, &signature), "identity", "not valid for hostname");
        }
        // Both given: both must hold.
        let one_wrong = trust(&dir, true, Some("dev@example.com"), Some("ci.build.example.org"));
        refused(check(&one_wrong, &leaf, &signature), "identity", "hostname");
    }

    #[test]
    fn chains_that_do_not_hold_now_are_refused() {
        let dir = make_pki();
        let signature = sign(&dir, "leaf.key", PAYLOAD);
        let email = trust(&dir, true, Some("dev@example.com"), None);
        let chain_failure = |leaf: &str, chain: Option<&str>, trust: &PkiTrust| {
            refused(check(trust, &material(&dir, leaf, chain), &signature), "certificate chain", "does not chain");
        };
        // Issued by a CA outside the roots (under the same name), even with its root offered.
        std::fs::write(dir.path("outside-chain.pem"), read(&dir, "outside-root.pem").repeat(2)).unwrap();
        chain_failure("outside.pem", Some("outside-chain.pem"), &email);
        chain_failure("expired.pem", None, &email);
        chain_failure("server-eku.pem", None, &email);
        // The intermediate neither in the policy nor in the chain annotation.
        let roots_only = trust(&dir, false, Some("dev@example.com"), None);
        chain_failure("leaf.pem", None, &roots_only);
        // containers/image drops the chain annotation's last certificate (the root): an
        // annotation holding only the intermediate offers nothing.
        chain_failure("leaf.pem", Some("intermediate.pem"), &roots_only);
        // The chain is checked at the time given: a year on, the CAs have expired.
        let later = Timestamp::now() + jiff::SignedDuration::from_hours(24 * 400);
        let result = verify(&email, &material(&dir, "leaf.pem", None), &signature, PAYLOAD, later);
        refused(result, "certificate chain", "no CA root is valid");
    }

    #[test]
    fn a_signature_by_another_key_or_over_other_bytes_is_refused() {
        let dir = make_pki();
        let email = trust(&dir, true, Some("dev@example.com"), None);
        let leaf = material(&dir, "leaf.pem", None);
        refused(check(&email, &leaf, &sign(&dir, "other.key", PAYLOAD)), "signature", "does not verify");
        refused(check(&email, &leaf, &sign(&dir, "leaf.key", b"other bytes")), "signature", "does not verify");
    }

    #[test]
    fn unusable_annotations_and_requirements_are_refused() {
        let dir = make_pki();
        let signature = sign(&dir, "leaf.key", PAYLOAD);
        let email = trust(&dir, true, Some("dev@example.com"), None);
        let mut junk = material(&dir, "leaf.pem", None);
        junk.chain = Some(read(&dir, "leaf.key"));
        refused(check(&email, &junk, &signature), "certificate chain", "chain annotation holds a PRIVATE KEY block");
        junk.chain = Some(read(&dir, "intermediate.pem").repeat(MAX_CHAIN_CERTIFICATES + 1));
        refused(check(&email, &junk, &signature), "certificate chain", "more than 8");
        junk.chain = None;
        junk.certificate = "junk".into();
        refused(check(&email, &junk, &signature), "certificate chain", "certificate annotation");
        let roots = ders(&read(&dir, "root.pem"));
        assert!(PkiTrust::new(&roots, &[], None, Some("")).unwrap_err().contains("subjectEmail or subjectHostname"));
        assert!(PkiTrust::new(&roots, &[], None, Some("not a host!")).unwrap_err().contains("not a DNS name"));
    }
}
