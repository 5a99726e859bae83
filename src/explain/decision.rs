//! One pull decision, explained: what `pullgate verify` prints as text or JSON.

use std::fmt;

use serde::Serialize;

use crate::cri::status;
use crate::decision::{Admission, Decision, ReasonCode, Verdict};
use crate::verify::SignatureOutcome;

use super::rule::RuleView;

/// The version of the JSON that `verify` and `policy check` print: raised when a field changes
/// meaning or goes away, not when one is added.
pub const SCHEMA_VERSION: u32 = 1;

/// Field names are a stable interface for scripts reading `--output json`.
#[derive(Debug, Serialize)]
pub struct Explanation {
    pub schema_version: u32,
    /// The image exactly as given.
    pub requested: String,
    pub namespace: Option<String>,
    /// The normalised image, or the request itself when it does not parse.
    pub image: String,
    /// The digest that was (or would be) verified and pulled, once known.
    pub digest: Option<String>,
    /// The image as the rule was chosen for: the digest containerd will fetch, with the tag
    /// only while it points at that digest.
    pub matched: Option<String>,
    /// The rule that decided; None when no rule matches.
    pub rule: Option<RuleView>,
    pub signatures: Vec<SignatureView>,
    /// Distinct trusted keys with a valid signature; None when no signature check ran.
    pub satisfied_keys: Option<usize>,
    pub required_keys: Option<usize>,
    pub verdict: Verdict,
    pub reason: String,
    /// One stable word for the reason (docs/policy.md, "Reason codes").
    pub reason_code: ReasonCode,
    /// The rule's keys without a signature that counts; empty unless a signature check fell short.
    pub missing_keys: Vec<String>,
    /// Which host answered each registry request: the registry itself or one of its mirrors
    /// (containerd's hosts.toml), e.g. "tag v1 resolved by mirror.local:5000".
    pub answered: Vec<String>,
    pub daemon: DaemonAction,
    pub elapsed_ms: u64,
}

#[derive(Debug, Serialize)]
pub struct SignatureView {
    /// The digest of the layer holding the signed payload or the bundle.
    pub layer: String,
    /// `sig`, `simple-signing-referrer` or `bundle`.
    pub format: &'static str,
    /// `sig-tag`, `referrers-api` or `referrers-tag`.
    pub found_via: &'static str,
    /// Format and place in words, for the text explanation.
    #[serde(skip)]
    pub found: String,
    /// The key whose check passed, even when the payload was then refused.
    pub verified_by: Option<String>,
    /// The image name the signature is for, once a trusted key's signature over it verified.
    pub signed_name: Option<String>,
    /// Whether the signature counts towards the threshold.
    pub counted: bool,
    pub rejected_because: Option<String>,
}

/// What the daemon would do with this decision. In JSON always one shape, every field present
/// (null or false where it does not apply), so a tool reads it without knowing the action first.
#[derive(Debug)]
pub enum DaemonAction {
    /// containerd pulls exactly `pinned`, and `tag` is pointed at it; `audit` when only an
    /// audit-mode rule let it through.
    PullPinned { pinned: String, tag: Option<String>, audit: bool },
    /// The request goes to containerd unchanged; `audit` when only an audit-mode rule let it through.
    Forward { audit: bool },
    /// The kubelet gets this error message.
    Refuse { message: String },
}

impl Explanation {
    pub fn new(requested: &str, namespace: Option<&str>, decision: &Decision) -> Explanation {
        let evaluation = decision.evaluation.as_ref();
        Explanation {
            schema_version: SCHEMA_VERSION,
            requested: requested.to_owned(),
            namespace: namespace.map(str::to_owned),
            image: decision.image.clone(),
            digest: decision.digest.as_ref().map(ToString::to_string),
            matched: decision.matched.as_ref().map(ToString::to_string),
            rule: decision.rule.as_ref().map(RuleView::new),
            signatures: evaluation.map(|e| e.signatures.iter().map(SignatureView::new).collect()).unwrap_or_default(),
            satisfied_keys: evaluation.map(|e| e.satisfied_keys),
            required_keys: evaluation.map(|e| e.required),
            verdict: decision.verdict,
            reason: decision.reason.clone(),
            reason_code: decision.code,
            missing_keys: decision.missing_keys().to_vec(),
            answered: decision.answered.clone(),
            daemon: DaemonAction::new(decision),
            elapsed_ms: u64::try_from(decision.elapsed.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

impl SignatureView {
    fn new(outcome: &SignatureOutcome) -> SignatureView {
        SignatureView {
            layer: outcome.layer.to_string(),
            format: outcome.format.word(),
            found_via: outcome.format.found_via(),
            found: outcome.format.to_string(),
            verified_by: outcome.verified_by.clone(),
            signed_name: outcome.signed_name.clone(),
            counted: outcome.rejected_because.is_none(),
            rejected_because: outcome.rejected_because.clone(),
        }
    }
}

/// `DaemonAction` as JSON: `action` is `pull-pinned`, `forward` or `refuse`.
#[derive(Serialize)]
struct DaemonJson<'a> {
    action: &'static str,
    pinned: Option<&'a str>,
    tag: Option<&'a str>,
    audit: bool,
    message: Option<&'a str>,
}

impl Serialize for DaemonAction {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let none = DaemonJson { action: "", pinned: None, tag: None, audit: false, message: None };
        let json = match self {
            DaemonAction::PullPinned { pinned, tag, audit } => {
                DaemonJson { action: "pull-pinned", pinned: Some(pinned), tag: tag.as_deref(), audit: *audit, ..none }
            }
            DaemonAction::Forward { audit } => DaemonJson { action: "forward", audit: *audit, ..none },
            DaemonAction::Refuse { message } => DaemonJson { action: "refuse", message: Some(message), ..none },
        };
        json.serialize(serializer)
    }
}

impl DaemonAction {
    fn new(decision: &Decision) -> DaemonAction {
        match decision.action() {
            Ok(Admission::Pinned { pinned, tag }) => {
                DaemonAction::PullPinned { pinned, tag, audit: decision.verdict != Verdict::Accepted }
            }
            Ok(Admission::Forward) => DaemonAction::Forward { audit: decision.verdict != Verdict::Accepted },
            Err(rejection) => DaemonAction::Refuse { message: status::rejected(&rejection).message().to_owned() },
        }
    }
}

// === text ===

/// Why the rule shown is the one: how scopes rank (docs/policy.md, "Which rule applies").
const PRECEDENCE: &str = "the most specific matching scope wins (digest > tag > repository path > host > *.domain > *)";

/// Labels are padded to this width so values line up.
const LABEL: usize = 11;

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        line(f, "image", &self.image)?;
        line(f, "namespace", self.namespace.as_deref().unwrap_or("(none given)"))?;
        line(f, "digest", self.digest.as_deref().unwrap_or("(not resolved)"))?;
        match &self.rule {
            Some(rule) => {
                write_rule(f, rule)?;
                if let Some(matched) = &self.matched {
                    line(f, "  matched", &format!("on {matched}: {PRECEDENCE}"))?;
                }
            }
            None => line(f, "rule", "none matches; a pull no rule covers is refused")?,
        }
        for answer in &self.answered {
            line(f, "registry", answer)?;
        }
        self.write_signatures(f)?;
        line(f, "verdict", &format!("{}: {}", verdict_name(self.verdict), self.reason))?;
        line(f, "  code", self.reason_code.as_str())?;
        line(f, "daemon", &self.daemon.to_string())
    }
}

impl Explanation {
    fn write_signatures(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (Some(satisfied), Some(required)) = (self.satisfied_keys, self.required_keys) else {
            return Ok(());
        };
        let found = self.signatures.len();
        // Keyless signers count towards the threshold too, and are no keys.
        let signers = self.rule.as_ref().is_some_and(|rule| !rule.identities.is_empty());
        let counted = if signers { "signers" } else { "keys" };
        line(f, "signatures", &format!("{found} found; {satisfied} of {required} required {counted} satisfied"))?;
        self.signatures.iter().try_for_each(|signature| writeln!(f, "  {signature}"))
    }
}

fn write_rule(f: &mut fmt::Formatter<'_>, rule: &RuleView) -> fmt::Result {
    line(f, "rule", &rule.scope)?;
    let file = match rule.line {
        Some(number) => format!("{}:{number}", rule.file.display()),
        None => rule.file.display().to_string(),
    };
    line(f, "  file", &file)?;
    line(f, "  applies", &format!("in namespaces: {}", rule.namespaces_label()))?;
    let require = match rule.threshold {
        Some(threshold) => format!("signed by {threshold} of: {}", rule.keys_label()),
        None => rule.require.to_owned(),
    };
    line(f, "  require", &require)?;
    if rule.threshold.is_some() {
        line(f, "  identity", &rule.identity)?;
    }
    line(f, "  mode", rule.mode)
}

impl fmt::Display for SignatureView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): ", self.layer, self.found)?;
        match (&self.verified_by, &self.rejected_because) {
            (Some(key), None) => write!(f, "counts, verified by {key}"),
            (Some(key), Some(why)) => write!(f, "does not count, verified by {key} but {why}"),
            (None, Some(why)) => write!(f, "does not count: {why}"),
            (None, None) => write!(f, "counts"),
        }
    }
}

impl fmt::Display for DaemonAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonAction::PullPinned { pinned, tag, audit } => {
                write!(f, "pulls {pinned}")?;
                if let Some(tag) = tag {
                    write!(f, " and tags it {tag}")?;
                }
                if *audit {
                    write!(f, " anyway: the rule is in audit mode, so the verdict is only logged")?;
                }
                Ok(())
            }
            DaemonAction::Forward { audit: false } => write!(f, "forwards the pull unchanged"),
            DaemonAction::Forward { audit: true } => {
                write!(
                    f,
                    "forwards the pull unchanged anyway: the rule is in audit mode, so the verdict is only logged"
                )
            }
            DaemonAction::Refuse { message } => write!(f, "refuses the pull; the kubelet sees: {message}"),
        }
    }
}

fn verdict_name(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Accepted => "accepted",
        Verdict::Rejected => "rejected",
        Verdict::Unavailable => "unavailable",
    }
}

fn line(f: &mut fmt::Formatter<'_>, label: &str, value: &str) -> fmt::Result {
    writeln!(f, "{label:<LABEL$} {value}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{Gate, PullRequest};
    use crate::policy::{IdentityRule, Mode, Policy, Requirement, Rule, SharedPolicy};
    use crate::reference::{Digest, ImageRef};
    use crate::registry::{Credentials, Manifest, Registry, RegistryError};
    use bytes::Bytes;
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::Duration;

    /// Every request fails as if the registry were down.
    struct Down;

    impl Registry for Down {
        async fn manifest(&self, _: &ImageRef, _: &str, _: &Credentials) -> Result<Option<Manifest>, RegistryError> {
            Err(RegistryError::Unreachable("connection refused".into()))
        }
        async fn blob(&self, _: &ImageRef, _: &Digest, _: usize, _: &Credentials) -> Result<Bytes, RegistryError> {
            Err(RegistryError::Unreachable("connection refused".into()))
        }
    }

    /// Has no manifest at all.
    struct Empty;

    impl Registry for Empty {
        async fn manifest(&self, _: &ImageRef, _: &str, _: &Credentials) -> Result<Option<Manifest>, RegistryError> {
            Ok(None)
        }
        async fn blob(&self, _: &ImageRef, _: &Digest, _: usize, _: &Credentials) -> Result<Bytes, RegistryError> {
            Err(RegistryError::Protocol("no blobs".into()))
        }
    }

    const DIGEST: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn rule(scope: &str, require: Requirement, mode: Mode) -> Rule {
        Rule {
            scope: scope.parse().unwrap(),
            namespaces: Some(vec!["default".into()]),
            require,
            keys: vec![],
            identities: vec![],
            threshold: 1,
            identity: IdentityRule::MatchRepository,
            mode,
            source: PathBuf::from("/etc/pullgate/policy.d/10.toml"),
            message: None,
            signatures_from: None,
            line: None,
        }
    }

    async fn explain(image: &str) -> Explanation {
        let policy = Policy::from_rules(vec![
            rule("r.example/open", Requirement::Accept, Mode::Enforce),
            rule("r.example/closed", Requirement::Reject, Mode::Enforce),
            rule("r.example/trial", Requirement::Reject, Mode::Audit),
            rule("r.example/signed", Requirement::Signed, Mode::Enforce),
        ]);
        let gate = Gate::new(SharedPolicy::new(policy), Arc::new(Down), Duration::from_secs(5));
        let pull = PullRequest { image: image.into(), namespace: Some("default".into()), ..Default::default() };
        Explanation::new(image, Some("default"), &gate.decide(&pull).await)
    }

    #[tokio::test]
    async fn accept_rule_forwards_or_pins_a_given_digest() {
        let by_tag = explain("r.example/open/app").await;
        assert_eq!(by_tag.image, "r.example/open/app:latest");
        assert!(matches!(by_tag.daemon, DaemonAction::Forward { audit: false }), "{by_tag:?}");
        let by_digest = explain(&format!("r.example/open/app@{DIGEST}")).await;
        let pinned = format!("r.example/open/app@{DIGEST}");
        assert!(
            matches!(&by_digest.daemon, DaemonAction::PullPinned { pinned: p, tag: None, audit: false } if *p == pinned)
        );
        assert_eq!(by_digest.digest.as_deref(), Some(DIGEST));
    }

    #[tokio::test]
    async fn refusal_shows_the_kubelet_message_and_names_the_rule() {
        let refused = explain("r.example/closed/app:v1").await;
        assert_eq!(refused.verdict, Verdict::Rejected);
        let DaemonAction::Refuse { message } = &refused.daemon else { panic!("{refused:?}") };
        assert!(message.starts_with("SignatureValidationFailed: image r.example/closed/app:v1 refused"), "{message}");
        let text = refused.to_string();
        assert!(text.contains("rule        r.example/closed\n"), "{text}");
        assert!(text.contains("  file      /etc/pullgate/policy.d/10.toml\n"), "{text}");
        assert!(text.contains("verdict     rejected: the rule rejects every image in its scope\n"), "{text}");
    }

    #[tokio::test]
    async fn audit_rule_pins_a_rejected_image() {
        let audited = explain(&format!("r.example/trial/app@{DIGEST}")).await;
        assert_eq!(audited.verdict, Verdict::Rejected);
        let pinned = format!("r.example/trial/app@{DIGEST}");
        assert!(
            matches!(&audited.daemon, DaemonAction::PullPinned { pinned: p, tag: None, audit: true } if *p == pinned),
            "{audited:?}"
        );
        assert!(audited.to_string().contains("audit mode"), "{audited}");
        // By tag, the digest to pin is asked of the registry; while it is down, the pull goes
        // ahead as asked.
        let by_tag = explain("r.example/trial/app:v1").await;
        assert_eq!(by_tag.verdict, Verdict::Unavailable);
        assert!(matches!(by_tag.daemon, DaemonAction::Forward { audit: true }), "{by_tag:?}");
    }

    #[tokio::test]
    async fn registry_down_is_unavailable_not_rejected() {
        let down = explain("r.example/signed/app:v1").await;
        assert_eq!(down.verdict, Verdict::Unavailable);
        assert!(down.reason.contains("connection refused"), "{}", down.reason);
        assert_eq!(down.reason_code, ReasonCode::RegistryUnavailable);
        let DaemonAction::Refuse { message } = &down.daemon else { panic!("{down:?}") };
        assert!(message.starts_with("RegistryUnavailable: "), "{message}");
    }

    #[tokio::test]
    async fn no_rule_and_unparsable_images_are_explained() {
        let stray = explain("elsewhere.example/app:v1").await;
        assert!(stray.rule.is_none());
        assert!(stray.to_string().contains("rule        none matches"), "{stray}");
        assert_eq!(stray.reason_code, ReasonCode::NoRule);
        let bad = explain("r.example//app").await;
        assert_eq!((bad.verdict, bad.image.as_str()), (Verdict::Rejected, "r.example//app"));
        assert!(bad.reason.starts_with("not a valid image reference"), "{}", bad.reason);
        assert_eq!(bad.reason_code, ReasonCode::Unparsable);
    }

    #[tokio::test]
    async fn a_missing_tag_is_not_found_in_the_kubelets_terms() {
        let policy = Policy::from_rules(vec![rule("r.example/signed", Requirement::Signed, Mode::Enforce)]);
        let gate = Gate::new(SharedPolicy::new(policy), Arc::new(Empty), Duration::from_secs(5));
        let image = "r.example/signed/app:nope";
        let pull = PullRequest { image: image.into(), namespace: Some("default".into()), ..Default::default() };
        let decision = gate.decide(&pull).await;
        let explained = Explanation::new(image, Some("default"), &decision);
        assert_eq!((explained.verdict, explained.reason_code), (Verdict::Rejected, ReasonCode::NotFound));
        let status = status::rejected(&decision.action().expect_err("refused"));
        assert_eq!(status.code(), tonic::Code::NotFound);
        // No SignatureValidationFailed prefix: the kubelet reports it as ErrImagePull, as it
        // does containerd's own "not found".
        assert!(status.message().starts_with("pullgate: image r.example/signed/app:nope not found: "), "{status:?}");
        assert!(status.message().contains("no tag \"nope\""), "{status:?}");
    }

    #[tokio::test]
    async fn json_field_names_are_stable() {
        let value = serde_json::to_value(explain("r.example/closed/app:v1").await).unwrap();
        let fields: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
        // serde_json sorts keys.
        let expected = "answered daemon digest elapsed_ms image matched missing_keys namespace reason reason_code requested \
                        required_keys rule satisfied_keys schema_version signatures verdict";
        assert_eq!(fields.join(" "), expected);
        assert_eq!(value["verdict"], "rejected");
        assert_eq!(
            (value["schema_version"].clone(), value["reason_code"].clone()),
            (1.into(), "rejected-scope".into())
        );
        assert_eq!(value["daemon"]["action"], "refuse");
        let daemon: Vec<&str> = value["daemon"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(daemon.join(" "), "action audit message pinned tag", "one shape whatever the action");
        let forwarded = serde_json::to_value(explain("r.example/open/app").await).unwrap();
        let daemon: Vec<&str> = forwarded["daemon"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(daemon.join(" "), "action audit message pinned tag", "one shape whatever the action");
        assert_eq!(value["rule"]["require"], "reject");
        assert_eq!(value["rule"]["namespaces"], serde_json::json!(["default"]));
    }

    #[test]
    fn each_signature_says_its_format_and_where_it_was_found() {
        use crate::verify::{Discovery, Format, SignatureOutcome};
        let layer: Digest = format!("sha256:{}", "cd".repeat(32)).parse().unwrap();
        let outcome = |format| SignatureOutcome {
            layer: layer.clone(),
            format,
            verified_by: Some("/keys/a.pub".into()),
            signed_name: None,
            rejected_because: Some("sigstore bundle: names no image".into()),
        };
        let bundle = SignatureView::new(&outcome(Format::Bundle(Discovery::ReferrersTag)));
        assert_eq!(
            bundle.to_string(),
            format!(
                "{layer} (sigstore bundle, via the referrers tag): does not count, verified by /keys/a.pub but \
                 sigstore bundle: names no image"
            )
        );
        let json = serde_json::to_value(&bundle).unwrap();
        assert_eq!((json["format"].as_str(), json["found_via"].as_str()), (Some("bundle"), Some("referrers-tag")));
        assert!(json.get("found").is_none(), "the words are for the text output only: {json}");
        let sig = serde_json::to_value(SignatureView::new(&outcome(Format::SigTag))).unwrap();
        assert_eq!((sig["format"].as_str(), sig["found_via"].as_str()), (Some("sig"), Some("sig-tag")));
        let api = SignatureView::new(&outcome(Format::SimpleSigningReferrer(Discovery::ReferrersApi)));
        assert!(api.to_string().contains("(simple-signing referrer, via the referrers API)"), "{api}");
    }
}
