//! Keyless signatures in a rule's decision: a certificate-signed `.sig` layer or bundle is
//! verified by sigstore-verify against each trusted root the rule's identities use, and counts
//! for the identities whose subject and issuer the verified certificate carries. A `.sig`
//! layer is first tried against the rule's containers-policy.json `pki` requirements, which
//! `keyless::pki` checks at the current time, with no log.

use std::sync::Arc;

use sigstore_verify::types::{Artifact, Bundle};

use super::Shortfall;
use super::keyless::pki::{PKI_ISSUER, PkiCertified};
use super::keyless::{self, Certified, legacy};
use super::signatures::{CertificateMaterial, SignatureLayer};
use crate::policy::{CertificateTrust, Rule};

/// A certificate signature that verified and names a signer the rule trusts.
#[derive(Debug, Clone)]
pub(super) struct Signer {
    /// Subject and issuer: a threshold counts distinct signers, not signatures.
    pub id: (String, String),
    /// The identity groups whose patterns match it.
    pub groups: Vec<usize>,
    /// What verified it, for `SignatureOutcome::verified_by`.
    pub label: String,
}

/// A `.sig` layer signed with a certificate: checked for the rule's `pki` requirements, then
/// (the annotations as the bundle they stand for) against its sigstore roots.
pub(super) fn check_legacy(
    rule: &Rule,
    material: &CertificateMaterial,
    layer: &SignatureLayer,
    payload: &[u8],
) -> Result<Signer, (Shortfall, String)> {
    let mut worst: Option<(Shortfall, String)> = None;
    for (trust, pki) in distinct_trusts(rule).into_iter().filter_map(|t| t.pki.as_ref().map(|pki| (t, pki))) {
        match check_pki(rule, trust, pki, material, layer, payload) {
            Ok(signer) => return Ok(signer),
            Err(problem) if worst.as_ref().is_none_or(|w| problem.0 < w.0) => worst = Some(problem),
            Err(_) => {}
        }
    }
    if sigstore_trusts(rule).is_empty() {
        return Err(worst.unwrap_or_else(|| (Shortfall::UntrustedCertificate, "no trusted root to verify with".into())));
    }
    check_sigstore_legacy(rule, material, layer, payload).map_err(|problem| match worst {
        Some(worst) if worst.0 < problem.0 => worst,
        _ => problem,
    })
}

/// containers-policy.json `pki`: chain to the requirement's roots at the current time (see
/// `keyless::pki::verify` for why the clock), the signature, then the subject.
fn check_pki(
    rule: &Rule,
    trust: &Arc<CertificateTrust>,
    pki: &keyless::pki::PkiTrust,
    material: &CertificateMaterial,
    layer: &SignatureLayer,
    payload: &[u8],
) -> Result<Signer, (Shortfall, String)> {
    let now = jiff::Timestamp::now();
    let certified = keyless::pki::verify(pki, material, &layer.signature, payload, now).map_err(|refusal| {
        let text: String = refusal.text.chars().take(800).collect();
        match refusal.check {
            "identity" => (Shortfall::SignerMismatch, format!("pki certificate: identity mismatch: {text}")),
            check => (Shortfall::UntrustedCertificate, format!("pki certificate: {check} check failed: {text}")),
        }
    })?;
    let PkiCertified { fingerprint, subject, checked_at } = certified;
    let groups: Vec<usize> = rule
        .identities
        .iter()
        .filter(|s| Arc::ptr_eq(&s.trust, trust) && s.matches(&subject, PKI_ISSUER))
        .map(|s| s.group)
        .collect();
    let short = fingerprint.get(..16).unwrap_or(&fingerprint);
    let label = format!(
        "pki certificate sha256:{short}… for {subject} (chain checked at {checked_at}, the current time, no log; {})",
        trust.root_label()
    );
    Ok(Signer { id: (fingerprint, PKI_ISSUER.to_owned()), groups, label })
}

fn check_sigstore_legacy(
    rule: &Rule,
    material: &CertificateMaterial,
    layer: &SignatureLayer,
    payload: &[u8],
) -> Result<Signer, (Shortfall, String)> {
    let bundle = legacy::bundle(material, &layer.signature, payload).map_err(|e| {
        let (check, text) = match e {
            legacy::LegacyError::Certificate(text) => ("certificate chain", text),
            legacy::LegacyError::Tlog(text) => ("transparency log", text),
            legacy::LegacyError::Timestamp(text) => ("timestamp", text),
        };
        refused(check, &text)
    })?;
    check(rule, &bundle, || Artifact::from_blob(payload))
}

/// A certificate-signed bundle over `artifact` (made once per trusted root tried).
pub(super) fn check<'a>(
    rule: &Rule,
    bundle: &Bundle,
    artifact: impl Fn() -> Artifact<'a>,
) -> Result<Signer, (Shortfall, String)> {
    if rule.identities.is_empty() {
        let text = "keyless signature (a certificate), and the rule lists no `identities`";
        return Err((Shortfall::UntrustedKey, text.to_owned()));
    }
    let trusts = sigstore_trusts(rule);
    if trusts.is_empty() {
        let text = "keyless signature, and the rule's certificate requirements are all policy.json `pki`, which \
                    applies to `.sig` signatures only";
        return Err((Shortfall::UntrustedCertificate, text.to_owned()));
    }
    let mut worst: Option<(Shortfall, String)> = None;
    for trust in trusts {
        let found = match keyless::verify_certificate(&trust.root, bundle, artifact(), trust.sct) {
            Ok(certified) => matched(rule, trust, certified),
            Err(refusal) => Err(refused(refusal.check, &format!("{}{}", refusal.text, claimed(bundle)))),
        };
        match found {
            Ok(signer) => return Ok(signer),
            // A certificate that verified says more than one that did not.
            Err(problem) if worst.as_ref().is_none_or(|w| problem.0 < w.0) => worst = Some(problem),
            Err(_) => {}
        }
    }
    Err(worst.unwrap_or_else(|| (Shortfall::UntrustedCertificate, "no trusted root to verify with".to_owned())))
}

/// The identity groups, under `trust`, that the verified certificate's signer satisfies.
fn matched(rule: &Rule, trust: &Arc<CertificateTrust>, certified: Certified) -> Result<Signer, (Shortfall, String)> {
    let groups: Vec<usize> = rule
        .identities
        .iter()
        .filter(|s| Arc::ptr_eq(&s.trust, trust) && s.matches(&certified.subject, &certified.issuer))
        .map(|s| s.group)
        .collect();
    let Certified { subject, issuer, signing_time, log_index } = certified;
    if groups.is_empty() {
        return Err((Shortfall::SignerMismatch, mismatch(rule, &subject, &issuer)));
    }
    let log = log_index.map_or_else(String::new, |i| format!(", log index {i}"));
    let label =
        format!("certificate of {subject} from {issuer} (signed at {signing_time}{log}; {})", trust.root_label());
    Ok(Signer { id: (subject, issuer), groups, label })
}

/// Whom the certificate names, unverified, so that an operator can tell whose signature failed.
fn claimed(bundle: &Bundle) -> String {
    let Some(der) = bundle.signing_certificate() else { return String::new() };
    let Ok(info) = sigstore_verify::crypto::parse_certificate_info(der) else { return String::new() };
    let subject = keyless::san::identity(info.identity.as_ref(), der);
    let subject = subject.as_deref().unwrap_or("no SAN");
    let issuer = info.issuer.as_deref().unwrap_or("no issuer");
    let shown = |text: &str| text.chars().take(200).collect::<String>();
    format!(" (certificate of {:?} from {:?}, unverified)", shown(subject), shown(issuer))
}

/// Which half of the signer failed: the subject when some identity accepts the issuer (the
/// usual case: the right CI, another workflow), else the issuer.
fn mismatch(rule: &Rule, subject: &str, issuer: &str) -> String {
    let n = rule.identities.len();
    let listed = format!("the rule's {n} {}", if n == 1 { "identity" } else { "identities" });
    if rule.identities.iter().any(|s| s.issuer.matches(issuer)) {
        format!(
            "keyless signature: identity mismatch: certificate subject {subject:?} (issuer {issuer:?}) matches none of {listed}"
        )
    } else {
        format!(
            "keyless signature: issuer mismatch: certificate issuer {issuer:?} (subject {subject:?}) matches none of {listed}"
        )
    }
}

fn refused(check: &str, text: &str) -> (Shortfall, String) {
    let text: String = text.chars().take(800).collect();
    (Shortfall::UntrustedCertificate, format!("keyless signature: {check} check failed: {text}"))
}

/// The trusted roots sigstore-verify checks against: all but `pki` requirements'.
fn sigstore_trusts(rule: &Rule) -> Vec<&Arc<CertificateTrust>> {
    distinct_trusts(rule).into_iter().filter(|t| t.pki.is_none()).collect()
}

/// Each trusted root (with its options) once, however many identities use it.
fn distinct_trusts(rule: &Rule) -> Vec<&Arc<CertificateTrust>> {
    let mut trusts: Vec<&Arc<CertificateTrust>> = Vec::new();
    for signer in &rule.identities {
        if !trusts.iter().any(|t| Arc::ptr_eq(t, &signer.trust)) {
            trusts.push(&signer.trust);
        }
    }
    trusts
}

/// How many identity groups distinct signers satisfy, each signer counting for one group at
/// most: one signer matching two entries (say an exact subject and a regex) must not meet a
/// threshold of 2. A maximum bipartite matching (Kuhn's), over a handful of each.
pub(super) fn matched_groups(signers: &[(&(String, String), &[usize])]) -> Vec<usize> {
    let mut distinct: Vec<(&(String, String), Vec<usize>)> = Vec::new();
    for (id, groups) in signers {
        match distinct.iter_mut().find(|(known, _)| known == id) {
            Some((_, all)) => all.extend(groups.iter().filter(|g| !all.contains(g)).collect::<Vec<_>>()),
            None => distinct.push((id, groups.to_vec())),
        }
    }
    let candidates: Vec<Vec<usize>> = distinct.into_iter().map(|(_, groups)| groups).collect();
    // owner[group] = the signer assigned to it.
    let mut owner: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    for signer in 0..candidates.len() {
        let mut seen = std::collections::HashSet::new();
        assign(signer, &candidates, &mut owner, &mut seen);
    }
    let mut groups: Vec<usize> = owner.into_keys().collect();
    groups.sort_unstable();
    groups
}

fn assign(
    signer: usize,
    candidates: &[Vec<usize>],
    owner: &mut std::collections::HashMap<usize, usize>,
    seen: &mut std::collections::HashSet<usize>,
) -> bool {
    for &group in &candidates[signer] {
        if !seen.insert(group) {
            continue;
        }
        let free = match owner.get(&group) {
            None => true,
            Some(&other) => assign(other, candidates, owner, seen),
        };
        if free {
            owner.insert(group, signer);
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> (String, String) {
        (s.to_owned(), "issuer".to_owned())
    }

    #[test]
    fn one_signer_counts_for_one_identity_however_many_it_matches() {
        let ann = id("ann");
        assert_eq!(matched_groups(&[(&ann, &[1, 2])]), vec![1]);
        // Signing twice does not make two signers.
        assert_eq!(matched_groups(&[(&ann, &[1, 2]), (&ann, &[1, 2])]).len(), 1);
    }

    #[test]
    fn distinct_signers_are_assigned_so_that_most_groups_count() {
        let (ann, bob) = (id("ann"), id("bob"));
        // Greedy would give ann group 1 and leave bob nothing.
        assert_eq!(matched_groups(&[(&ann, &[1, 2]), (&bob, &[1])]), vec![1, 2]);
        assert_eq!(matched_groups(&[(&ann, &[1]), (&bob, &[1])]), vec![1]);
        assert!(matched_groups(&[]).is_empty());
    }
}
