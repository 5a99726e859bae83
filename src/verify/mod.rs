//! Decides whether the cosign signatures found for an image digest satisfy a policy rule:
//! simple-signing signatures (the `.sig` tag, or referrers of that kind) and sigstore bundles
//! (cosign v3's default, found as OCI referrers).

mod bundle;
mod certificate;
pub mod keyless;
pub mod keys;
pub mod payload;
pub mod referrers;
pub mod signatures;

use std::collections::HashSet;

use bytes::Bytes;

pub use keys::{BadSignature, KeyError, TrustedKey};
pub use payload::{MAX_PAYLOAD_BYTES, PayloadError, SignedPayload};
pub use referrers::Discovery;
pub use signatures::{ManifestError, SignatureLayer, parse_signature_manifest};

use crate::policy::{KeyRef, Rule};
use crate::reference::{Digest, ImageRef};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub accepted: bool,
    /// Distinct key groups (for a TOML rule: distinct keys) with at least one fully valid
    /// signature by one of their keys.
    pub satisfied_keys: usize,
    /// The groups needed: the rule's threshold.
    pub required: usize,
    pub signatures: Vec<SignatureOutcome>,
    pub reason: String,
    /// Why the signatures fall short; None when accepted.
    pub shortfall: Option<Shortfall>,
    /// The rule's keys without a signature that counts, by path or fingerprint; empty when
    /// accepted.
    pub missing_keys: Vec<String>,
}

/// What kept the signatures from satisfying the rule, most telling first: a signature by a
/// trusted key that names something else says more than one by an unknown key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Shortfall {
    /// Fewer distinct trusted keys signed than the threshold needs, but at least one did.
    Threshold,
    /// A trusted key signed, but for another image name.
    IdentityMismatch,
    /// A trusted key signed, but for another digest.
    DigestMismatch,
    /// A trusted key signed something that is not a cosign image signature.
    UnusablePayload,
    /// A certificate verified against the trusted root, but names a signer (subject, issuer)
    /// none of the rule's identities matches.
    SignerMismatch,
    /// A keyless signature failed a check: certificate chain, SCT, log entry (SET), timestamp,
    /// or the signature itself.
    UntrustedCertificate,
    /// Signatures exist, but none verifies with a trusted key.
    UntrustedKey,
    /// There is no signature at all.
    NoSignatures,
}

/// Where a signature was found and in which format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A simple-signing layer of the manifest under the `sha256-<hex>.sig` tag.
    SigTag,
    /// A simple-signing layer of a referrer (`cosign --registry-referrers-mode=oci-1-1`).
    SimpleSigningReferrer(Discovery),
    /// A sigstore bundle referrer (cosign v3's default).
    Bundle(Discovery),
}

impl Format {
    /// The format as one word, for JSON: `sig`, `simple-signing-referrer` or `bundle`.
    pub fn word(self) -> &'static str {
        match self {
            Format::SigTag => "sig",
            Format::SimpleSigningReferrer(_) => "simple-signing-referrer",
            Format::Bundle(_) => "bundle",
        }
    }

    /// Where it was found, for JSON: `sig-tag`, `referrers-api` or `referrers-tag`.
    pub fn found_via(self) -> &'static str {
        match self {
            Format::SigTag => "sig-tag",
            Format::SimpleSigningReferrer(via) | Format::Bundle(via) => match via {
                Discovery::ReferrersApi => "referrers-api",
                Discovery::ReferrersTag => "referrers-tag",
            },
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Format::SigTag => f.write_str(".sig tag"),
            Format::SimpleSigningReferrer(via) => write!(f, "simple-signing referrer, via the {}", via.describe()),
            Format::Bundle(via) => write!(f, "sigstore bundle, via the {}", via.describe()),
        }
    }
}

/// One signature as fetched, not yet checked.
#[derive(Debug, Clone)]
pub enum Found {
    /// A simple-signing layer and its payload blob.
    Simple { layer: SignatureLayer, payload: Bytes, format: Format },
    /// A bundle layer's digest and its blob.
    Bundle { layer: Digest, bundle: Bytes, via: Discovery },
}

/// A signature counts towards the threshold exactly when `rejected_because` is `None`.
/// `verified_by` is set whenever the cryptographic check passed, even if the payload was then
/// refused, so an operator can see "signed by the right key, but for something else".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureOutcome {
    /// The digest of the layer holding the payload or the bundle.
    pub layer: Digest,
    pub format: Format,
    pub verified_by: Option<String>,
    /// The image name the signed payload carries; only read once a trusted key's signature
    /// over it verified, since until then it is anybody's text.
    pub signed_name: Option<String>,
    pub rejected_because: Option<String>,
}

/// What checking one signature found.
struct Checked<'k> {
    key: Option<&'k KeyRef>,
    /// A keyless signature's signer, when its certificate verified for one of the rule's
    /// identities.
    signer: Option<certificate::Signer>,
    signed_name: Option<String>,
    problem: Option<(Shortfall, String)>,
}

/// `evaluate_found` for `.sig` tag signatures alone: each layer with its payload blob.
pub fn evaluate(image: &ImageRef, digest: &Digest, rule: &Rule, sigs: &[(SignatureLayer, Bytes)]) -> Evaluation {
    let found: Vec<Found> = sigs
        .iter()
        .map(|(layer, payload)| Found::Simple {
            layer: layer.clone(),
            payload: payload.clone(),
            format: Format::SigTag,
        })
        .collect();
    evaluate_found(image, digest, rule, &found)
}

/// `digest` is the manifest digest the pull will be pinned to. A threshold counts distinct
/// keys whatever format their signatures came in.
pub fn evaluate_found(image: &ImageRef, digest: &Digest, rule: &Rule, sigs: &[Found]) -> Evaluation {
    let keys = distinct_keys(&rule.keys);
    // A threshold of 0 would accept an image with no signature at all; policy loading forbids
    // it, and this keeps a mistake there from turning into an open door.
    let required = rule.threshold.max(1);
    let mut satisfied: HashSet<usize> = HashSet::new();
    let mut outcomes = Vec::with_capacity(sigs.len());
    let mut worst = Shortfall::NoSignatures;
    let mut signers: Vec<certificate::Signer> = Vec::new();
    for found in sigs {
        let (layer, format, checked) = match found {
            Found::Simple { layer, payload, format } => {
                (&layer.digest, *format, check_signature(image, digest, rule, &keys, layer, payload))
            }
            Found::Bundle { layer, bundle, via } => {
                (layer, Format::Bundle(*via), bundle::check_bundle(digest, rule, &keys, layer, bundle))
            }
        };
        let Checked { key, signer, signed_name, problem } = checked;
        let verified_by = key.map(key_label).or_else(|| signer.as_ref().map(|s| s.label.clone()));
        match (key, signer, &problem) {
            (Some(key), _, None) => satisfied.extend(groups_of(rule, key)),
            (None, Some(signer), None) => signers.push(signer),
            (_, _, Some((kind, _))) => worst = worst.min(*kind),
            (None, None, None) => {}
        }
        outcomes.push(SignatureOutcome {
            layer: layer.clone(),
            format,
            verified_by,
            signed_name,
            rejected_because: problem.map(|(_, text)| text),
        });
    }
    let by_signer: Vec<(&(String, String), &[usize])> = signers.iter().map(|s| (&s.id, s.groups.as_slice())).collect();
    satisfied.extend(certificate::matched_groups(&by_signer));
    let accepted = satisfied.len() >= required;
    let missing_keys: Vec<String> = if accepted {
        Vec::new()
    } else {
        // A key is missing when no group it belongs to is satisfied: in a group of
        // alternatives that another key satisfied, it is not needed.
        let keys = keys.iter().filter(|k| !groups_of(rule, k).any(|g| satisfied.contains(&g))).map(|k| key_label(k));
        let signers = rule.identities.iter().filter(|s| !satisfied.contains(&s.group)).map(|s| s.label());
        keys.chain(signers).collect()
    };
    let shortfall = match (accepted, satisfied.len()) {
        (true, _) => None,
        (false, 0) => Some(worst),
        (false, _) => Some(Shortfall::Threshold),
    };
    let counted = Counted::of(rule);
    let reason = summarize(counted, accepted, satisfied.len(), required, &outcomes, &missing_keys);
    Evaluation {
        accepted,
        satisfied_keys: satisfied.len(),
        required,
        signatures: outcomes,
        reason,
        shortfall,
        missing_keys,
    }
}

/// Each key is tried once, however many times (and in however many groups) it is listed.
fn distinct_keys(keys: &[KeyRef]) -> Vec<&KeyRef> {
    let mut seen = HashSet::new();
    keys.iter().filter(|k| seen.insert(k.key.fingerprint())).collect()
}

/// Every group that lists `key`: a signature by a key two policy.json requirements both trust
/// satisfies both, as in containers/image, where each requirement is checked on its own.
fn groups_of<'r>(rule: &'r Rule, key: &'r KeyRef) -> impl Iterator<Item = usize> + 'r {
    let fingerprint = key.key.fingerprint();
    rule.keys.iter().filter(move |k| k.key.fingerprint() == fingerprint).map(|k| k.group)
}

fn key_label(key: &KeyRef) -> String {
    match &key.path {
        Some(path) => path.display().to_string(),
        None => format!("inline {} key {}", key.key.algorithm(), key.key.short_fingerprint()),
    }
}

// The signature is checked before the payload is interpreted: until then the payload is
// attacker-chosen text, and "does not verify" is the only honest thing to say about it.
fn check_signature<'k>(
    image: &ImageRef,
    digest: &Digest,
    rule: &Rule,
    keys: &[&'k KeyRef],
    layer: &SignatureLayer,
    payload: &[u8],
) -> Checked<'k> {
    let refused =
        |kind, text: String| Checked { key: None, signer: None, signed_name: None, problem: Some((kind, text)) };
    if !layer.digest.verify(payload) {
        return refused(Shortfall::UnusablePayload, "payload blob does not match the layer digest".to_string());
    }
    let verified = match keys.iter().copied().find(|k| k.key.verify(payload, &layer.signature).is_ok()) {
        Some(key) => Checked { key: Some(key), signer: None, signed_name: None, problem: None },
        // Keys first: a key signature may carry a certificate too, and the key decides then.
        None => match &layer.certificate {
            Some(material) if !rule.identities.is_empty() => {
                match certificate::check_legacy(rule, material, layer, payload) {
                    Ok(signer) => Checked { key: None, signer: Some(signer), signed_name: None, problem: None },
                    Err((kind, text)) => return refused(kind, text),
                }
            }
            _ => {
                let n = keys.len();
                let mut text = format!("signature does not verify with any of the {n} trusted {}", plural(n, "key"));
                if layer.certificate.is_some() {
                    text.push_str(" (it is a keyless signature, and the rule lists no `identities`)");
                }
                return refused(Shortfall::UntrustedKey, text);
            }
        },
    };
    let signed = match SignedPayload::parse(payload) {
        Ok(signed) => signed,
        Err(PayloadError::WrongType(t)) => {
            let text = format!("signature payload has type {t:?}, not a cosign container image signature");
            return Checked { problem: Some((Shortfall::UnusablePayload, text)), ..verified };
        }
        Err(other) => return Checked { problem: Some((Shortfall::UnusablePayload, other.to_string())), ..verified },
    };
    let problem = check_payload(image, digest, rule, &signed).err();
    Checked { signed_name: Some(signed.docker_reference), problem, ..verified }
}

fn check_payload(
    image: &ImageRef,
    digest: &Digest,
    rule: &Rule,
    signed: &SignedPayload,
) -> Result<(), (Shortfall, String)> {
    if signed.manifest_digest != *digest {
        let text = format!("signature payload names digest {}, not {digest}", signed.manifest_digest);
        return Err((Shortfall::DigestMismatch, text));
    }
    rule.identity
        .check(image, &signed.docker_reference)
        .map_err(|e| (Shortfall::IdentityMismatch, format!("identity mismatch: {e}")))
}

/// Names both places looked in, so an image signed in a format not looked for is told apart.
const NONE_FOUND: &str = "no signatures found (no .sig tag, no sigstore bundle or simple-signing referrer)";

/// What a rule's threshold counts, as reasons name it: keys, or signers once identities count
/// too (a keyless signer is no key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counted {
    Keys,
    Signers,
}

impl Counted {
    fn of(rule: &Rule) -> Counted {
        if rule.identities.is_empty() { Counted::Keys } else { Counted::Signers }
    }

    /// "key" or "signer", plural unless `n` is 1.
    fn noun(self, n: usize) -> String {
        plural(n, if self == Counted::Keys { "key" } else { "signer" })
    }
}

fn summarize(
    counted: Counted,
    accepted: bool,
    satisfied: usize,
    required: usize,
    outcomes: &[SignatureOutcome],
    missing: &[String],
) -> String {
    let trusted = counted.noun(1);
    if accepted {
        return format!("signed by {satisfied} of {required} required {}", counted.noun(required));
    }
    if outcomes.is_empty() {
        return format!("no signature by a trusted {trusted}: {NONE_FOUND}");
    }
    let problems = problem_summary(outcomes);
    if satisfied == 0 {
        format!("no signature by a trusted {trusted} ({problems})")
    } else {
        // Naming the keys still missing tells the operator whom to ask for a signature.
        let required_noun = counted.noun(required);
        format!(
            "only {satisfied} of {required} required {required_noun} signed; missing: {} ({problems})",
            missing.join(", ")
        )
    }
}

/// "2 signatures: X; 1 signature: Y", in first-seen order, at most a few kinds so that a hostile
/// manifest cannot produce an unbounded message.
fn problem_summary(outcomes: &[SignatureOutcome]) -> String {
    const MAX_KINDS: usize = 3;
    let mut kinds: Vec<(&str, usize)> = Vec::new();
    for reason in outcomes.iter().filter_map(|o| o.rejected_because.as_deref()) {
        match kinds.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, count)) => *count += 1,
            None => kinds.push((reason, 1)),
        }
    }
    if kinds.is_empty() {
        return format!("{} valid {}", outcomes.len(), plural(outcomes.len(), "signature"));
    }
    let mut parts: Vec<String> =
        kinds.iter().take(MAX_KINDS).map(|(r, n)| format!("{n} {}: {r}", plural(*n, "signature"))).collect();
    if kinds.len() > MAX_KINDS {
        parts.push(format!("and {} other kinds of problem", kinds.len() - MAX_KINDS));
    }
    parts.join("; ")
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 { word.to_string() } else { format!("{word}s") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{IdentityRule, Mode, Requirement, Scope};
    use p256::ecdsa::signature::Signer as _;
    use p256::pkcs8::{EncodePublicKey as _, LineEnding};
    use rand_core::OsRng;
    use std::path::PathBuf;
    use std::sync::Arc;

    const REPO: &str = "registry.example/team/app";
    const DIGEST: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const OTHER: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    struct Signer(p256::ecdsa::SigningKey);

    impl Signer {
        fn new() -> Signer {
            Signer(p256::ecdsa::SigningKey::random(&mut OsRng))
        }
        fn key_ref(&self, path: Option<&str>) -> KeyRef {
            let pem = self.0.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
            let key = Arc::new(TrustedKey::from_pem(pem.as_bytes()).unwrap());
            KeyRef { path: path.map(PathBuf::from), key, group: 0 }
        }
        fn sign(&self, payload: &[u8]) -> (SignatureLayer, Bytes) {
            let sig: p256::ecdsa::Signature = self.0.sign(payload);
            let layer = SignatureLayer {
                digest: Digest::sha256_of(payload),
                size: payload.len() as u64,
                signature: sig.to_der().as_bytes().to_vec(),
                certificate: None,
            };
            (layer, Bytes::copy_from_slice(payload))
        }
        fn sign_for(&self, reference: &str, digest: &str) -> (SignatureLayer, Bytes) {
            self.sign(&payload_json(reference, digest, payload::COSIGN_SIGNATURE_TYPE))
        }
    }

    fn payload_json(reference: &str, digest: &str, kind: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "critical": {"identity": {"docker-reference": reference}, "image": {"docker-manifest-digest": digest}, "type": kind},
            "optional": null,
        }))
        .unwrap()
    }

    /// As a TOML rule has them: each key a group of its own.
    fn rule(keys: Vec<KeyRef>, threshold: usize) -> Rule {
        grouped(keys.into_iter().map(|key| vec![key]).collect(), threshold)
    }

    /// As a policy.json scope has them: each list a group, `threshold` of them needed.
    fn grouped(groups: Vec<Vec<KeyRef>>, threshold: usize) -> Rule {
        let keys = groups
            .into_iter()
            .enumerate()
            .flat_map(|(group, keys)| keys.into_iter().map(move |k| KeyRef { group, ..k }));
        Rule {
            scope: REPO.parse::<Scope>().expect("scope"),
            namespaces: None,
            require: Requirement::Signed,
            keys: keys.collect(),
            identities: Vec::new(),
            threshold,
            identity: IdentityRule::MatchRepository,
            mode: Mode::Enforce,
            source: PathBuf::from("/etc/pullgate/policy.d/test.toml"),
            message: None,
            signatures_from: None,
            line: None,
        }
    }

    fn run(rule: &Rule, sigs: &[(SignatureLayer, Bytes)]) -> Evaluation {
        let image: ImageRef = format!("{REPO}:v1").parse().unwrap();
        evaluate(&image, &DIGEST.parse().unwrap(), rule, sigs)
    }

    #[test]
    fn one_valid_signature_satisfies_threshold_one() {
        let a = Signer::new();
        let ev = run(&rule(vec![a.key_ref(Some("/keys/a.pub"))], 1), &[a.sign_for(REPO, DIGEST)]);
        assert!(ev.accepted, "{ev:?}");
        assert_eq!((ev.satisfied_keys, ev.required), (1, 1));
        assert_eq!(ev.signatures[0].verified_by.as_deref(), Some("/keys/a.pub"));
        assert_eq!(ev.signatures[0].rejected_because, None);
        assert_eq!(ev.signatures[0].signed_name.as_deref(), Some(REPO));
        assert_eq!(ev.reason, "signed by 1 of 1 required key");
        assert_eq!((ev.shortfall, ev.missing_keys.len()), (None, 0));
    }

    #[test]
    fn threshold_counts_distinct_keys_not_signatures() {
        let (a, b) = (Signer::new(), Signer::new());
        let r = rule(vec![a.key_ref(Some("a.pub")), b.key_ref(Some("b.pub"))], 2);
        let twice_by_a = [a.sign_for(REPO, DIGEST), a.sign_for(REPO, DIGEST)];
        let ev = run(&r, &twice_by_a);
        assert!(!ev.accepted);
        assert_eq!(ev.satisfied_keys, 1);
        assert!(ev.reason.starts_with("only 1 of 2 required keys signed; missing: b.pub ("), "{}", ev.reason);
        assert_eq!((ev.shortfall, ev.missing_keys.clone()), (Some(Shortfall::Threshold), vec!["b.pub".to_owned()]));
        let ev = run(&r, &[a.sign_for(REPO, DIGEST), b.sign_for(REPO, DIGEST)]);
        assert!(ev.accepted, "{ev:?}");
        assert_eq!(ev.reason, "signed by 2 of 2 required keys");
    }

    #[test]
    fn the_same_key_listed_twice_in_a_group_counts_once() {
        let (a, b) = (Signer::new(), Signer::new());
        let r = grouped(vec![vec![a.key_ref(Some("a.pub")), a.key_ref(None)], vec![b.key_ref(None)]], 2);
        let ev = run(&r, &[a.sign_for(REPO, DIGEST)]);
        assert!(!ev.accepted);
        assert_eq!(ev.satisfied_keys, 1);
    }

    #[test]
    fn missing_keys_are_those_of_groups_nobody_satisfied() {
        let (a1, a2, b) = (Signer::new(), Signer::new(), Signer::new());
        let r = grouped(
            vec![vec![a1.key_ref(Some("a1.pub")), a2.key_ref(Some("a2.pub"))], vec![b.key_ref(Some("b.pub"))]],
            2,
        );
        let ev = run(&r, &[a1.sign_for(REPO, DIGEST)]);
        assert_eq!((ev.shortfall, ev.missing_keys.clone()), (Some(Shortfall::Threshold), vec!["b.pub".to_owned()]));
    }

    #[test]
    fn every_group_needs_a_signature_by_one_of_its_keys() {
        let (a1, a2, b) = (Signer::new(), Signer::new(), Signer::new());
        let r = grouped(vec![vec![a1.key_ref(None), a2.key_ref(None)], vec![b.key_ref(None)]], 2);
        let verdict = |sigs: &[(SignatureLayer, Bytes)]| {
            let ev = run(&r, sigs);
            (ev.accepted, ev.satisfied_keys)
        };
        assert_eq!(verdict(&[a2.sign_for(REPO, DIGEST)]), (false, 1));
        assert_eq!(verdict(&[a1.sign_for(REPO, DIGEST), a2.sign_for(REPO, DIGEST)]), (false, 1), "one group twice");
        assert_eq!(verdict(&[b.sign_for(REPO, DIGEST)]), (false, 1));
        assert_eq!(verdict(&[a2.sign_for(REPO, DIGEST), b.sign_for(REPO, DIGEST)]), (true, 2));
        assert_eq!(verdict(&[b.sign_for(REPO, DIGEST), a1.sign_for(REPO, DIGEST)]), (true, 2));
    }

    #[test]
    fn a_key_in_two_groups_satisfies_both() {
        let (a, b, c) = (Signer::new(), Signer::new(), Signer::new());
        let r = grouped(vec![vec![a.key_ref(None), b.key_ref(None)], vec![a.key_ref(None), c.key_ref(None)]], 2);
        assert!(run(&r, &[a.sign_for(REPO, DIGEST)]).accepted);
        assert!(!run(&r, &[b.sign_for(REPO, DIGEST)]).accepted);
        assert!(run(&r, &[b.sign_for(REPO, DIGEST), c.sign_for(REPO, DIGEST)]).accepted);
    }

    #[test]
    fn untrusted_signer_is_reported_with_key_count() {
        let (a, b, mallory) = (Signer::new(), Signer::new(), Signer::new());
        let r = rule(vec![a.key_ref(None), b.key_ref(None)], 1);
        let ev = run(&r, &[mallory.sign_for(REPO, DIGEST)]);
        assert!(!ev.accepted);
        assert_eq!(ev.signatures[0].verified_by, None);
        assert_eq!(ev.signatures[0].signed_name, None, "an unverified payload is not read");
        assert_eq!(
            ev.reason,
            "no signature by a trusted key (1 signature: signature does not verify with any of the 2 trusted keys)"
        );
    }

    #[test]
    fn digest_mismatch_is_explained() {
        let a = Signer::new();
        let ev = run(&rule(vec![a.key_ref(None)], 1), &[a.sign_for(REPO, OTHER)]);
        assert!(!ev.accepted);
        let outcome = &ev.signatures[0];
        assert!(outcome.verified_by.as_deref().is_some_and(|v| v.starts_with("inline ECDSA P-256 key sha256:")));
        assert_eq!(outcome.rejected_because, Some(format!("signature payload names digest {OTHER}, not {DIGEST}")));
        assert!(ev.reason.contains(&format!("names digest {OTHER}, not {DIGEST}")), "{}", ev.reason);
    }

    #[test]
    fn identity_mismatch_is_explained() {
        let a = Signer::new();
        let ev = run(&rule(vec![a.key_ref(None)], 1), &[a.sign_for("registry.example/other/app", DIGEST)]);
        assert!(!ev.accepted);
        let because = ev.signatures[0].rejected_because.as_deref().unwrap_or_default();
        assert!(because.starts_with("identity mismatch: "), "{because}");
        assert_eq!(ev.signatures[0].signed_name.as_deref(), Some("registry.example/other/app"));
        assert_eq!(ev.shortfall, Some(Shortfall::IdentityMismatch));
    }

    #[test]
    fn the_most_telling_shortfall_wins_over_unknown_signers() {
        let (a, mallory) = (Signer::new(), Signer::new());
        let r = rule(vec![a.key_ref(Some("a.pub"))], 1);
        let sigs = [mallory.sign_for(REPO, DIGEST), a.sign_for(REPO, OTHER), mallory.sign_for(REPO, DIGEST)];
        let ev = run(&r, &sigs);
        assert_eq!(
            (ev.shortfall, ev.missing_keys.clone()),
            (Some(Shortfall::DigestMismatch), vec!["a.pub".to_owned()])
        );
        let ev = run(&r, &[mallory.sign_for(REPO, DIGEST)]);
        assert_eq!(ev.shortfall, Some(Shortfall::UntrustedKey));
    }

    #[test]
    fn wrong_payload_type_is_explained() {
        let a = Signer::new();
        let sig = a.sign(&payload_json(REPO, DIGEST, "atomic container signature"));
        let ev = run(&rule(vec![a.key_ref(None)], 1), &[sig]);
        let because = ev.signatures[0].rejected_because.as_deref().unwrap_or_default();
        assert!(because.contains("type \"atomic container signature\""), "{because}");
        assert_eq!(ev.shortfall, Some(Shortfall::UnusablePayload));
    }

    #[test]
    fn tampered_payload_does_not_count() {
        let a = Signer::new();
        let (layer, _) = a.sign_for(REPO, OTHER);
        let forged = Bytes::from(payload_json(REPO, DIGEST, payload::COSIGN_SIGNATURE_TYPE));
        let layer = SignatureLayer { digest: Digest::sha256_of(&forged), ..layer };
        let ev = run(&rule(vec![a.key_ref(None)], 1), &[(layer, forged)]);
        assert!(!ev.accepted);
        assert!(ev.signatures[0].rejected_because.as_deref().is_some_and(|r| r.contains("does not verify")));
    }

    #[test]
    fn payload_not_matching_layer_digest_does_not_count() {
        let a = Signer::new();
        let (layer, _) = a.sign_for(REPO, DIGEST);
        let other = Bytes::from_static(b"{}");
        let ev = run(&rule(vec![a.key_ref(None)], 1), &[(layer, other)]);
        assert_eq!(ev.signatures[0].rejected_because.as_deref(), Some("payload blob does not match the layer digest"));
    }

    #[test]
    fn no_signatures_and_zero_threshold_never_accept() {
        let a = Signer::new();
        let ev = run(&rule(vec![a.key_ref(None)], 0), &[]);
        assert!(!ev.accepted);
        assert_eq!(ev.required, 1);
        assert_eq!(ev.reason, format!("no signature by a trusted key: {NONE_FOUND}"));
        assert_eq!(ev.shortfall, Some(Shortfall::NoSignatures));
    }

    #[test]
    fn mixed_outcomes_are_grouped_in_the_reason() {
        let (a, b, mallory) = (Signer::new(), Signer::new(), Signer::new());
        let r = rule(vec![a.key_ref(Some("a.pub")), b.key_ref(Some("b.pub"))], 2);
        let sigs = [
            mallory.sign_for(REPO, DIGEST),
            a.sign_for(REPO, DIGEST),
            mallory.sign_for(REPO, DIGEST),
            b.sign_for(REPO, OTHER),
        ];
        let ev = run(&r, &sigs);
        assert!(!ev.accepted);
        assert_eq!(
            ev.reason,
            format!(
                "only 1 of 2 required keys signed; missing: b.pub (2 signatures: signature does not verify with any of the 2 trusted keys; \
                 1 signature: signature payload names digest {OTHER}, not {DIGEST})"
            )
        );
    }

    // === bundles ===

    const BUNDLE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

    fn statement(digest: &str, predicate_type: &str) -> Vec<u8> {
        let hex = digest.trim_start_matches("sha256:");
        serde_json::to_vec(&serde_json::json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"digest": {"sha256": hex}}],
            "predicateType": predicate_type,
            "predicate": {},
        }))
        .unwrap()
    }

    fn envelope_json(payload_type: &str, payload: &[u8], signature: &[u8]) -> serde_json::Value {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        serde_json::json!({
            "payload": b64.encode(payload),
            "payloadType": payload_type,
            "signatures": [{"sig": b64.encode(signature)}],
        })
    }

    fn found_bundle(bundle: serde_json::Value) -> Found {
        let bytes = Bytes::from(serde_json::to_vec(&bundle).unwrap());
        Found::Bundle { layer: Digest::sha256_of(&bytes), bundle: bytes, via: Discovery::ReferrersTag }
    }

    impl Signer {
        /// A key-signed bundle over `payload` of `payload_type`, as cosign v3 writes one.
        fn bundle_of(&self, payload_type: &str, payload: &[u8]) -> Found {
            let pae = sigstore_types::pae(payload_type, payload);
            let sig: p256::ecdsa::Signature = self.0.sign(&pae);
            found_bundle(serde_json::json!({
                "mediaType": BUNDLE_V03,
                "verificationMaterial": {"publicKey": {"hint": "unauthenticated"}},
                "dsseEnvelope": envelope_json(payload_type, payload, sig.to_der().as_bytes()),
            }))
        }
        /// A key-signed bundle holding a message signature over `digest`, as `cosign sign-blob`
        /// writes one for the manifest bytes.
        fn message_for(&self, digest: &str) -> Found {
            use base64::Engine as _;
            use p256::ecdsa::signature::hazmat::PrehashSigner as _;
            let digest = hex::decode(digest.trim_start_matches("sha256:")).unwrap();
            let sig: p256::ecdsa::Signature = self.0.sign_prehash(&digest).unwrap();
            let b64 = base64::engine::general_purpose::STANDARD;
            found_bundle(serde_json::json!({
                "mediaType": BUNDLE_V03,
                "verificationMaterial": {"publicKey": {"hint": "unauthenticated"}},
                "messageSignature": {
                    "messageDigest": {"algorithm": "SHA2_256", "digest": b64.encode(&digest)},
                    "signature": b64.encode(sig.to_der().as_bytes()),
                },
            }))
        }
        fn bundle_for(&self, digest: &str) -> Found {
            self.bundle_of(bundle::IN_TOTO_PAYLOAD_TYPE, &statement(digest, bundle::COSIGN_SIGN_PREDICATE))
        }
    }

    fn digest_only(keys: Vec<KeyRef>, threshold: usize) -> Rule {
        Rule { identity: IdentityRule::Ignore, ..rule(keys, threshold) }
    }

    fn run_found(rule: &Rule, found: &[Found]) -> Evaluation {
        let image: ImageRef = format!("{REPO}:v1").parse().unwrap();
        evaluate_found(&image, &DIGEST.parse().unwrap(), rule, found)
    }

    fn only_reason(ev: &Evaluation) -> &str {
        ev.signatures[0].rejected_because.as_deref().unwrap_or_default()
    }

    #[test]
    fn a_bundle_by_a_trusted_key_counts_where_the_rule_accepts_digest_only_signatures() {
        let a = Signer::new();
        let ev = run_found(&digest_only(vec![a.key_ref(Some("a.pub"))], 1), &[a.bundle_for(DIGEST)]);
        assert!(ev.accepted, "{ev:?}");
        assert_eq!(ev.signatures[0].format, Format::Bundle(Discovery::ReferrersTag));
        assert_eq!(
            (ev.signatures[0].verified_by.as_deref(), ev.signatures[0].signed_name.as_deref()),
            (Some("a.pub"), None)
        );
    }

    #[test]
    fn a_bundle_does_not_satisfy_a_rule_that_needs_an_identity() {
        let a = Signer::new();
        let ev = run_found(&rule(vec![a.key_ref(None)], 1), &[a.bundle_for(DIGEST)]);
        assert!(!ev.accepted);
        assert_eq!(ev.shortfall, Some(Shortfall::IdentityMismatch));
        assert!(only_reason(&ev).starts_with("sigstore bundle: names no image"), "{}", only_reason(&ev));
        assert!(only_reason(&ev).contains("match-repository"), "{}", only_reason(&ev));
    }

    #[test]
    fn a_threshold_counts_distinct_keys_across_both_formats() {
        let (a, b) = (Signer::new(), Signer::new());
        let r = digest_only(vec![a.key_ref(None), b.key_ref(None)], 2);
        let (layer, payload) = a.sign_for(REPO, DIGEST);
        let by_a_twice = [Found::Simple { layer, payload, format: Format::SigTag }, a.bundle_for(DIGEST)];
        assert_eq!(run_found(&r, &by_a_twice).satisfied_keys, 1);
        let (layer, payload) = a.sign_for(REPO, DIGEST);
        let both = [Found::Simple { layer, payload, format: Format::SigTag }, b.bundle_for(DIGEST)];
        assert!(run_found(&r, &both).accepted);
    }

    #[test]
    fn hostile_bundles_are_refused_with_a_reason_naming_the_format() {
        let (a, mallory) = (Signer::new(), Signer::new());
        let r = digest_only(vec![a.key_ref(None)], 1);
        let attestation =
            a.bundle_of(bundle::IN_TOTO_PAYLOAD_TYPE, &statement(DIGEST, "https://slsa.dev/provenance/v1"));
        let other_type = a.bundle_of("application/vnd.dev.cosign.simplesigning.v1+json", &statement(DIGEST, "x"));
        let cases = [
            (
                mallory.bundle_for(DIGEST),
                Shortfall::UntrustedKey,
                "signature does not verify with any of the 1 trusted key",
            ),
            (a.bundle_for(OTHER), Shortfall::DigestMismatch, "signed statement names sha256:bbbb"),
            (
                attestation,
                Shortfall::UnusablePayload,
                "an attestation (predicate type \"https://slsa.dev/provenance/v1\")",
            ),
            (other_type, Shortfall::UnusablePayload, "not an in-toto statement"),
        ];
        for (found, shortfall, needle) in cases {
            let ev = run_found(&r, &[found]);
            assert!(!ev.accepted, "{needle}");
            assert_eq!(ev.shortfall, Some(shortfall), "{needle}: {ev:?}");
            assert!(only_reason(&ev).starts_with("sigstore bundle: "), "{}", only_reason(&ev));
            assert!(only_reason(&ev).contains(needle), "{needle}: {}", only_reason(&ev));
        }
    }

    #[test]
    fn an_altered_dsse_payload_does_not_verify() {
        let a = Signer::new();
        let Found::Bundle { bundle, .. } = a.bundle_for(OTHER) else { unreachable!() };
        let mut json: serde_json::Value = serde_json::from_slice(&bundle).unwrap();
        let forged = statement(DIGEST, bundle::COSIGN_SIGN_PREDICATE);
        let sig = json["dsseEnvelope"]["signatures"][0]["sig"].clone();
        json["dsseEnvelope"] = envelope_json(bundle::IN_TOTO_PAYLOAD_TYPE, &forged, b"");
        json["dsseEnvelope"]["signatures"][0]["sig"] = sig;
        let ev = run_found(&digest_only(vec![a.key_ref(None)], 1), &[found_bundle(json)]);
        assert_eq!(ev.shortfall, Some(Shortfall::UntrustedKey));
        assert!(only_reason(&ev).contains("does not verify"), "{}", only_reason(&ev));
    }

    /// A message signature signs bytes, not an image: it never counts, even by a trusted key
    /// over the very digest pulled, where the rule accepts digest-only signatures.
    #[test]
    fn a_message_signature_never_counts() {
        let a = Signer::new();
        let ev = run_found(&digest_only(vec![a.key_ref(Some("a.pub"))], 1), &[a.message_for(DIGEST)]);
        assert!(!ev.accepted, "{ev:?}");
        assert_eq!(ev.shortfall, Some(Shortfall::UnusablePayload));
        assert!(
            only_reason(&ev).starts_with("sigstore bundle: holds a message signature, which signs bytes, not an image"),
            "{}",
            only_reason(&ev)
        );
    }

    #[test]
    fn keyless_and_malformed_bundles_do_not_count() {
        let a = Signer::new();
        let r = digest_only(vec![a.key_ref(None)], 1);
        let envelope =
            envelope_json(bundle::IN_TOTO_PAYLOAD_TYPE, &statement(DIGEST, bundle::COSIGN_SIGN_PREDICATE), b"x");
        let keyless = serde_json::json!({
            "mediaType": BUNDLE_V03,
            "verificationMaterial": {"certificate": {"rawBytes": "MAo="}},
            "dsseEnvelope": envelope,
        });
        let cases = [
            (
                found_bundle(keyless.clone()),
                "sigstore bundle: keyless signature (a certificate), and the rule lists no `identities`",
            ),
            (found_bundle(serde_json::json!({"mediaType": BUNDLE_V03})), "sigstore bundle: not a valid bundle"),
            (found_bundle(serde_json::json!([1, 2])), "sigstore bundle: not a valid bundle"),
        ];
        for (found, needle) in cases {
            let ev = run_found(&r, &[found]);
            assert!(!ev.accepted && only_reason(&ev).starts_with(needle), "{needle}: {}", only_reason(&ev));
        }
        let Found::Bundle { layer, .. } = a.bundle_for(DIGEST) else { unreachable!() };
        let swapped = Found::Bundle { layer, bundle: Bytes::from_static(b"{}"), via: Discovery::ReferrersApi };
        let ev = run_found(&r, &[swapped]);
        assert_eq!(only_reason(&ev), "sigstore bundle: blob does not match the layer digest");
        // Under a rule with identities, sigstore-verify judges it, and names the check.
        let ev = run_found(&with_identity(r), &[found_bundle(keyless)]);
        assert!(only_reason(&ev).starts_with("sigstore bundle: keyless signature: "), "{}", only_reason(&ev));
        assert!(only_reason(&ev).contains(" check failed: "), "{}", only_reason(&ev));
        assert_eq!(ev.shortfall, Some(Shortfall::UntrustedCertificate));
    }

    /// `rule` with one keyless identity, under the built-in public-good root.
    fn with_identity(rule: Rule) -> Rule {
        use crate::policy::{CertificateTrust, Pattern, RootSource, SignerIdentity};
        let root = Arc::new(keyless::TrustRoot::public_good(keyless::PublicGood::Production).unwrap());
        let trust = Arc::new(CertificateTrust { root, source: RootSource::BuiltIn, sct: true, pki: None });
        let signer = SignerIdentity {
            issuer: Pattern::exact("https://issuer.example.test").unwrap(),
            subject: Pattern::exact("signer@example.test").unwrap(),
            trust,
            group: rule.keys.len(),
        };
        Rule { identities: vec![signer], ..rule }
    }

    /// `rule` with one containers-policy.json `pki` signer (roots and intermediate of `pki`).
    fn with_pki(rule: Rule, pki: &crate::policy::test_support::TestDir, email: &str) -> Rule {
        use crate::policy::{CertificateTrust, Pattern, RootSource, SignerIdentity};
        use sigstore_verify::types::DerCertificate;
        let ders = |file: &str| -> Vec<DerCertificate> {
            let pem = keyless::pki::tests::read(pki, file);
            ::pem::parse_many(pem).unwrap().into_iter().map(|b| DerCertificate::new(b.into_contents())).collect()
        };
        let roots = ders("root.pem");
        let trust = keyless::pki::PkiTrust::new(&roots, &ders("intermediate.pem"), Some(email), None).unwrap();
        let subject = Pattern::exact(&trust.subject_label()).unwrap();
        let root = Arc::new(keyless::root::from_parts("pki", &roots, &[]).unwrap());
        let source =
            RootSource::PolicyJson { policy_json: PathBuf::from("/etc/containers/policy.json"), files: vec![] };
        let trust = Arc::new(CertificateTrust { root, source, sct: false, pki: Some(trust) });
        let issuer = Pattern::exact(keyless::pki::PKI_ISSUER).unwrap();
        let signer = SignerIdentity { issuer, subject, trust, group: rule.keys.len() };
        Rule { identities: vec![signer], threshold: rule.keys.len() + 1, ..rule }
    }

    /// A `.sig` layer signed with `key` under the certificate `leaf` (chain annotation chain.pem).
    fn pki_signed(
        pki: &crate::policy::test_support::TestDir,
        key: &str,
        leaf: &str,
        digest: &str,
    ) -> (SignatureLayer, Bytes) {
        use keyless::pki::tests::{read, sign};
        let payload = payload_json(REPO, digest, payload::COSIGN_SIGNATURE_TYPE);
        let certificate = signatures::CertificateMaterial {
            certificate: read(pki, leaf),
            chain: Some(read(pki, "chain.pem")),
            rekor_bundle: None,
            rfc3161_timestamp: None,
        };
        let layer = SignatureLayer {
            digest: Digest::sha256_of(&payload),
            size: payload.len() as u64,
            signature: sign(pki, key, &payload),
            certificate: Some(certificate),
        };
        (layer, Bytes::from(payload))
    }

    #[test]
    fn a_pki_signature_counts_once_its_chain_signature_subject_and_payload_hold() {
        let pki = keyless::pki::tests::make_pki();
        let a = Signer::new();
        let r = with_pki(rule(vec![], 0), &pki, "dev@example.com");
        let good = pki_signed(&pki, "leaf.key", "leaf.pem", DIGEST);
        let ev = run(&r, std::slice::from_ref(&good));
        assert!(ev.accepted, "{}", ev.reason);
        let verified_by = ev.signatures[0].verified_by.as_deref().unwrap();
        assert!(verified_by.starts_with("pki certificate sha256:"), "{verified_by}");
        assert!(verified_by.contains("for email dev@example.com (chain checked at "), "{verified_by}");
        // With a key beside it (threshold 2), both are needed.
        let both = with_pki(rule(vec![a.key_ref(None)], 1), &pki, "dev@example.com");
        assert!(!run(&both, std::slice::from_ref(&good)).accepted);
        assert!(run(&both, &[good.clone(), a.sign_for(REPO, DIGEST)]).accepted);
        let cases = [
            (
                pki_signed(&pki, "leaf.key", "leaf.pem", OTHER),
                Shortfall::DigestMismatch,
                "signature payload names digest",
            ),
            (
                pki_signed(&pki, "other.key", "leaf.pem", DIGEST),
                Shortfall::UntrustedCertificate,
                "pki certificate: signature check failed",
            ),
            (
                pki_signed(&pki, "leaf.key", "expired.pem", DIGEST),
                Shortfall::UntrustedCertificate,
                "pki certificate: certificate chain check failed",
            ),
            (
                pki_signed(&pki, "leaf.key", "outside.pem", DIGEST),
                Shortfall::UntrustedCertificate,
                "pki certificate: certificate chain check failed",
            ),
        ];
        for (signature, shortfall, needle) in cases {
            let ev = run(&r, &[signature]);
            assert_eq!(ev.shortfall, Some(shortfall), "{}", ev.reason);
            assert!(only_reason(&ev).starts_with(needle), "{}", ev.reason);
        }
        let other = with_pki(rule(vec![], 0), &pki, "ops@example.com");
        let ev = run(&other, &[good]);
        assert_eq!(ev.shortfall, Some(Shortfall::SignerMismatch), "{}", ev.reason);
        assert!(only_reason(&ev).starts_with("pki certificate: identity mismatch: required email \"ops@example.com\""));
        // containers/image reads no bundles: a keyless bundle never counts for `pki`.
        let keyless = serde_json::json!({
            "mediaType": BUNDLE_V03,
            "verificationMaterial": {"certificate": {"rawBytes": "MAo="}},
            "dsseEnvelope": envelope_json(bundle::IN_TOTO_PAYLOAD_TYPE, &statement(DIGEST, bundle::COSIGN_SIGN_PREDICATE), b"x"),
        });
        let ev = run_found(&Rule { identity: IdentityRule::Ignore, ..r }, &[found_bundle(keyless)]);
        assert!(only_reason(&ev).contains("applies to `.sig` signatures only"), "{}", ev.reason);
    }

    #[test]
    fn summaries_count_keys_or_signers_as_the_rule_does() {
        let refused = SignatureOutcome {
            layer: Digest::sha256_of(b"payload"),
            format: Format::SigTag,
            verified_by: None,
            signed_name: None,
            rejected_because: Some("x".to_owned()),
        };
        let missing = ["b.pub".to_owned()];
        let summary = |counted, accepted, satisfied, outcomes: &[SignatureOutcome]| {
            summarize(counted, accepted, satisfied, 2, outcomes, &missing)
        };
        let outcomes = [refused.clone()];
        assert_eq!(summary(Counted::Keys, true, 2, &[]), "signed by 2 of 2 required keys");
        assert_eq!(summary(Counted::Signers, true, 2, &[]), "signed by 2 of 2 required signers");
        assert!(
            summary(Counted::Keys, false, 1, &outcomes).starts_with("only 1 of 2 required keys signed; missing: b.pub")
        );
        assert!(summary(Counted::Signers, false, 1, &outcomes).starts_with("only 1 of 2 required signers signed"));
        assert!(summary(Counted::Keys, false, 0, &outcomes).starts_with("no signature by a trusted key ("));
        assert!(summary(Counted::Signers, false, 0, &[]).starts_with("no signature by a trusted signer: "));
        assert_eq!(summarize(Counted::Signers, true, 1, 1, &[], &[]), "signed by 1 of 1 required signer");
    }
}
