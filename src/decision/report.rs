//! A decision with everything that led to it: what the daemon logs once per pull, what the
//! kubelet reads in a rejection, and what `pullgate verify` explains.

use std::time::{Duration, Instant};

use crate::policy::{Mode, Requirement, Rule};
use crate::reference::{Digest, ImageRef};
use crate::verify::Evaluation;

#[cfg(test)]
use super::check::Outcome;
use super::reason::ReasonCode;
use super::verifier::Settled;
use super::{Admission, Rejection};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Accepted,
    Rejected,
    /// The registry could not be asked; nothing could be verified.
    Unavailable,
}

#[derive(Debug)]
pub struct Decision {
    /// The normalised image, or the raw request when it does not parse.
    pub image: String,
    parsed: Option<ImageRef>,
    /// The image as the rule was chosen for: with the digest containerd will fetch, and with
    /// the tag only while it points at that digest. None when the request does not parse.
    pub matched: Option<ImageRef>,
    pub digest: Option<Digest>,
    pub rule: Option<Rule>,
    pub evaluation: Option<Evaluation>,
    pub verdict: Verdict,
    pub reason: String,
    pub code: ReasonCode,
    /// Which host answered each registry request (see `check::Outcome::answered`).
    pub answered: Vec<String>,
    pub elapsed: Duration,
}

impl Decision {
    pub(super) fn new(image: ImageRef, settled: Settled, started: Instant) -> Decision {
        let Settled { rule, matched, outcome } = settled;
        Decision {
            image: image.to_string(),
            digest: outcome.digest.or_else(|| image.digest().cloned()),
            parsed: Some(image),
            matched: Some(matched),
            rule,
            evaluation: outcome.evaluation,
            verdict: outcome.verdict,
            reason: outcome.reason,
            code: outcome.code,
            answered: outcome.answered,
            elapsed: started.elapsed(),
        }
    }

    /// The policy was reloaded under every attempt to decide: refused, and worth a retry.
    pub(super) fn superseded(image: ImageRef, started: Instant) -> Decision {
        let reason = "the policy was reloaded while the pull was being decided; retry the pull".to_owned();
        let mut decision = Decision::rejected(image.to_string(), ReasonCode::PolicyReloaded, reason, started);
        decision.verdict = Verdict::Unavailable;
        decision.digest = image.digest().cloned();
        decision.parsed = Some(image);
        decision
    }

    pub(super) fn unparsable(image: &str, error: &dyn std::error::Error, started: Instant) -> Decision {
        let reason = format!("not a valid image reference: {error}");
        Decision::rejected(image.to_owned(), ReasonCode::Unparsable, reason, started)
    }

    fn rejected(image: String, code: ReasonCode, reason: String, started: Instant) -> Decision {
        Decision {
            image,
            parsed: None,
            matched: None,
            digest: None,
            rule: None,
            evaluation: None,
            verdict: Verdict::Rejected,
            reason,
            code,
            answered: Vec::new(),
            elapsed: started.elapsed(),
        }
    }

    pub fn mode(&self) -> Option<Mode> {
        self.rule.as_ref().map(|rule| rule.mode)
    }

    /// What the daemon does on this decision; `pullgate verify` shows the same.
    pub fn action(&self) -> Result<Admission, Rejection> {
        match (self.verdict, self.mode()) {
            (Verdict::Accepted, _) => self.admission(),
            // Audit: the verdict is logged and counted, and the pull goes ahead, pinned like an
            // enforced one so the digest the record names is the one containerd stores.
            (_, Some(Mode::Audit)) => Ok(self.pinned().unwrap_or(Admission::Forward)),
            (Verdict::Rejected, _) if self.code == ReasonCode::NotFound => Err(Rejection::NotFound(self.message())),
            (Verdict::Rejected, _) => Err(Rejection::Denied(self.message())),
            (Verdict::Unavailable, _) => Err(Rejection::RegistryUnavailable(self.message())),
        }
    }

    /// What an accepted decision lets containerd do: a verified image is pulled by the digest
    /// that was verified, never by a tag that could have moved since. A `signed` rule without a
    /// digest to pin cannot happen; if it ever did, the pull is refused rather than forwarded.
    fn admission(&self) -> Result<Admission, Rejection> {
        let signed = self.rule.as_ref().is_some_and(|rule| rule.require == Requirement::Signed);
        match self.pinned() {
            Some(admission) => Ok(admission),
            None if signed => Err(Rejection::Denied(format!("{}: no verified digest to pin", self.message()))),
            None => Ok(Admission::Forward),
        }
    }

    /// Pulling exactly the digest the decision was made on, and pointing the requested tag
    /// at it; None while no digest is known.
    fn pinned(&self) -> Option<Admission> {
        let (image, digest) = (self.parsed.as_ref()?, self.digest.as_ref()?);
        let pinned = image.with_digest(digest.clone()).pinned()?;
        let tag = image.digest().is_none().then(|| image.to_string());
        Some(Admission::Pinned { pinned, tag })
    }

    /// Names the image, its digest, the rule and the reason; the CRI edge puts the kubelet's
    /// prefix in front. An image that does not exist is said to be not found, as containerd
    /// would say it, rather than refused.
    pub fn message(&self) -> String {
        if self.code == ReasonCode::NotFound {
            return format!("image {} not found: {}", self.image, self.reason);
        }
        let digest = self.digest.as_ref().map(|d| format!(" ({d})")).unwrap_or_default();
        let rule = match &self.rule {
            Some(rule) => format!(" by rule {:?} in {}", rule.scope.to_string(), rule.location()),
            None => String::new(),
        };
        let note = match self.rule.as_ref().and_then(|rule| rule.message.as_deref()) {
            Some(note) if self.verdict == Verdict::Rejected => format!(". {note}"),
            _ => String::new(),
        };
        format!("image {}{digest} refused{rule}: {}{note}", self.image, self.reason)
    }

    /// The keys of the rule that did not sign, for a signature check that fell short.
    pub fn missing_keys(&self) -> &[String] {
        self.evaluation.as_ref().map_or(&[], |evaluation| evaluation.missing_keys.as_slice())
    }

    /// The one log event per decision. Every refusal is a warning, an audited one too: audit
    /// mode exists to surface what enforcing would refuse, so it must show at `level = "warn"`.
    pub fn log(&self) {
        let digest = self.digest.as_ref().map(ToString::to_string).unwrap_or_default();
        let scope = self.rule.as_ref().map(|rule| rule.scope.to_string()).unwrap_or_default();
        let file = self.rule.as_ref().map(Rule::location).unwrap_or_default();
        let mode = match self.mode() {
            Some(Mode::Audit) => "audit",
            _ => "enforce",
        };
        let missing_keys = self.missing_keys().join(", ");
        let answered = self.answered.join("; ");
        macro_rules! event {
            ($level:expr) => {
                tracing::event!(
                    $level,
                    image = %self.image,
                    digest,
                    rule = scope,
                    file,
                    mode,
                    verdict = ?self.verdict,
                    reason_code = self.code.as_str(),
                    reason = %self.reason,
                    missing_keys,
                    answered,
                    duration_ms = self.elapsed.as_millis() as u64,
                    "decision"
                )
            };
        }
        match self.verdict {
            Verdict::Accepted => event!(tracing::Level::INFO),
            Verdict::Rejected | Verdict::Unavailable => event!(tracing::Level::WARN),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::policy::IdentityRule;

    fn rule(require: Requirement, mode: Mode) -> Rule {
        Rule {
            scope: "example.com/team".parse().expect("scope"),
            namespaces: None,
            require,
            keys: Vec::new(),
            identities: Vec::new(),
            threshold: 1,
            identity: IdentityRule::MatchRepository,
            mode,
            source: PathBuf::from("/etc/pullgate/policy.d/team.toml"),
            message: None,
            signatures_from: None,
            line: None,
        }
    }

    fn decide(require: Requirement, mode: Mode, outcome: Outcome) -> Result<Admission, Rejection> {
        let image = ImageRef::parse_for_pull("example.com/team/app:1").expect("image");
        let settled = Settled { rule: Some(rule(require, mode)), matched: image.clone(), outcome };
        Decision::new(image, settled, Instant::now()).action()
    }

    fn digest() -> Digest {
        format!("sha256:{}", "ab".repeat(32)).parse().expect("digest")
    }

    #[test]
    fn accepted_signed_pull_is_pinned_and_retagged() {
        let outcome = Outcome { digest: Some(digest()), ..Outcome::accept(ReasonCode::Verified, "signed") };
        let admission = decide(Requirement::Signed, Mode::Enforce, outcome).expect("admitted");
        let pinned = format!("example.com/team/app@{}", digest());
        assert_eq!(admission, Admission::Pinned { pinned, tag: Some("example.com/team/app:1".into()) });
    }

    #[test]
    fn signed_rule_without_a_digest_is_refused_not_forwarded() {
        let refused = decide(Requirement::Signed, Mode::Enforce, Outcome::accept(ReasonCode::Verified, "signed"));
        assert!(matches!(refused, Err(Rejection::Denied(message)) if message.contains("no verified digest")));
    }

    #[test]
    fn accept_rule_forwards_as_asked() {
        let admitted = decide(Requirement::Accept, Mode::Enforce, Outcome::accept(ReasonCode::Verified, "accept"));
        assert_eq!(admitted.expect("admitted"), Admission::Forward);
    }

    #[test]
    fn audit_pins_a_rejected_pull_to_the_digest_it_recorded() {
        let outcome = Outcome { digest: Some(digest()), ..Outcome::reject(ReasonCode::NoSignatures, "unsigned") };
        let admission = decide(Requirement::Signed, Mode::Audit, outcome).expect("audit lets it through");
        let pinned = format!("example.com/team/app@{}", digest());
        assert_eq!(admission, Admission::Pinned { pinned, tag: Some("example.com/team/app:1".into()) });
    }

    #[test]
    fn an_accept_rule_chosen_on_a_resolved_digest_pins_it() {
        let outcome = Outcome { digest: Some(digest()), ..Outcome::accept(ReasonCode::Verified, "accept") };
        let admission = decide(Requirement::Accept, Mode::Enforce, outcome).expect("admitted");
        assert!(matches!(admission, Admission::Pinned { .. }), "{admission:?}");
    }

    /// Collects what a subscriber writes, for asserting on log lines.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log buffer").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The JSON lines `decision.log()` writes with `level = "warn"`.
    fn logged_at_warn(decision: &Decision) -> Vec<serde_json::Value> {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_env_filter("warn")
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || decision.log());
        let text = String::from_utf8(captured.0.lock().expect("log buffer").clone()).expect("utf-8 log");
        text.lines().map(|line| serde_json::from_str(line).expect("a JSON log line")).collect()
    }

    fn decision(mode: Mode, outcome: Outcome) -> Decision {
        let image = ImageRef::parse_for_pull("example.com/team/app:1").expect("image");
        let settled = Settled { rule: Some(rule(Requirement::Signed, mode)), matched: image.clone(), outcome };
        Decision::new(image, settled, Instant::now())
    }

    #[test]
    fn every_refusal_is_a_warning_naming_image_digest_rule_and_reason() {
        for mode in [Mode::Audit, Mode::Enforce] {
            let outcome = Outcome { digest: Some(digest()), ..Outcome::reject(ReasonCode::NoSignatures, "unsigned") };
            let lines = logged_at_warn(&decision(mode, outcome));
            assert_eq!(lines.len(), 1, "{mode:?}: {lines:?}");
            let line = &lines[0];
            assert_eq!(line["level"], "WARN", "{line}");
            assert_eq!(line["image"], "example.com/team/app:1", "{line}");
            assert_eq!(line["digest"], digest().to_string(), "{line}");
            assert_eq!(line["rule"], "example.com/team", "{line}");
            assert_eq!(line["file"], "/etc/pullgate/policy.d/team.toml", "{line}");
            assert_eq!(
                (line["reason_code"].as_str(), line["reason"].as_str()),
                (Some("no-signatures"), Some("unsigned"))
            );
        }
        let outage = Outcome::unavailable(ReasonCode::RegistryUnavailable, "registry down".into());
        assert_eq!(logged_at_warn(&decision(Mode::Enforce, outage)).len(), 1, "an outage refuses too");
        let accepted = Outcome { digest: Some(digest()), ..Outcome::accept(ReasonCode::Verified, "signed") };
        assert!(logged_at_warn(&decision(Mode::Enforce, accepted)).is_empty(), "an acceptance is not a warning");
    }

    #[test]
    fn the_rules_message_ends_the_kubelets_error_when_the_rule_refuses() {
        let image = ImageRef::parse_for_pull("example.com/team/app:1").expect("image");
        let with_note = |outcome: Outcome| {
            let rule =
                Rule { message: Some("revoked build, see INC-123".into()), ..rule(Requirement::Reject, Mode::Enforce) };
            let settled = Settled { rule: Some(rule), matched: image.clone(), outcome };
            Decision::new(image.clone(), settled, Instant::now())
        };
        let refused =
            with_note(Outcome::reject(ReasonCode::RejectedScope, "the rule rejects every image in its scope"));
        let Err(Rejection::Denied(message)) = refused.action() else { panic!("{refused:?}") };
        assert!(message.ends_with("every image in its scope. revoked build, see INC-123"), "{message}");
        // An outage is not the rule's refusal: its message would mislead.
        let down = with_note(Outcome::unavailable(ReasonCode::RegistryUnavailable, "registry down".into()));
        assert!(!down.message().contains("INC-123"), "{}", down.message());
    }

    #[test]
    fn audit_forwards_a_rejection_and_enforce_refuses_it() {
        assert_eq!(
            decide(Requirement::Signed, Mode::Audit, Outcome::reject(ReasonCode::NoSignatures, "unsigned"))
                .expect("audit"),
            Admission::Forward
        );
        let refused = decide(Requirement::Signed, Mode::Enforce, Outcome::reject(ReasonCode::NoSignatures, "unsigned"));
        assert!(
            matches!(refused, Err(Rejection::Denied(message)) if message.contains("team.toml") && message.contains("unsigned"))
        );
        let unavailable = decide(
            Requirement::Signed,
            Mode::Enforce,
            Outcome::unavailable(ReasonCode::RegistryUnavailable, "registry down".into()),
        );
        assert!(matches!(unavailable, Err(Rejection::RegistryUnavailable(_))));
    }
}
