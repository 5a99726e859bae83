//! A decision with everything that led to it: what the daemon logs once per pull, what the
//! kubelet reads in a rejection, and what `pullgate verify` explains.

use std::time::{Duration, Instant};

use crate::policy::{Mode, Requirement, Rule};
use crate::reference::{Digest, ImageRef};
use crate::verify::Evaluation;

#[cfg(test)]
use super::check::Outcome;
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
            elapsed: started.elapsed(),
        }
    }

    /// The policy was reloaded under every attempt to decide: refused, and worth a retry.
    pub(super) fn superseded(image: ImageRef, started: Instant) -> Decision {
        let reason = "the policy was reloaded while the pull was being decided; retry the pull".to_owned();
        let mut decision = Decision::rejected(image.to_string(), reason, started);
        decision.verdict = Verdict::Unavailable;
        decision.digest = image.digest().cloned();
        decision.parsed = Some(image);
        decision
    }

    pub(super) fn unparsable(image: &str, error: &dyn std::error::Error, started: Instant) -> Decision {
        Decision::rejected(image.to_owned(), format!("not a valid image reference: {error}"), started)
    }

    fn rejected(image: String, reason: String, started: Instant) -> Decision {
        Decision {
            image,
            parsed: None,
            matched: None,
            digest: None,
            rule: None,
            evaluation: None,
            verdict: Verdict::Rejected,
            reason,
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
    /// prefix in front.
    pub fn message(&self) -> String {
        let digest = self.digest.as_ref().map(|d| format!(" ({d})")).unwrap_or_default();
        let rule = match &self.rule {
            Some(rule) => format!(" by rule {:?} in {}", rule.scope.to_string(), rule.source.display()),
            None => String::new(),
        };
        format!("image {}{digest} refused{rule}: {}", self.image, self.reason)
    }

    /// The one log event per decision.
    pub fn log(&self) {
        let digest = self.digest.as_ref().map(ToString::to_string).unwrap_or_default();
        let scope = self.rule.as_ref().map(|rule| rule.scope.to_string()).unwrap_or_default();
        let file = self.rule.as_ref().map(|rule| rule.source.display().to_string()).unwrap_or_default();
        let mode = match self.mode() {
            Some(Mode::Audit) => "audit",
            _ => "enforce",
        };
        tracing::info!(
            image = %self.image,
            digest,
            rule = scope,
            file,
            mode,
            verdict = ?self.verdict,
            reason = %self.reason,
            duration_ms = self.elapsed.as_millis() as u64,
            "decision"
        );
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
            threshold: 1,
            identity: IdentityRule::MatchRepository,
            mode,
            source: PathBuf::from("/etc/pullgate/policy.d/team.toml"),
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
        let outcome = Outcome { digest: Some(digest()), ..Outcome::accept("signed") };
        let admission = decide(Requirement::Signed, Mode::Enforce, outcome).expect("admitted");
        let pinned = format!("example.com/team/app@{}", digest());
        assert_eq!(admission, Admission::Pinned { pinned, tag: Some("example.com/team/app:1".into()) });
    }

    #[test]
    fn signed_rule_without_a_digest_is_refused_not_forwarded() {
        let refused = decide(Requirement::Signed, Mode::Enforce, Outcome::accept("signed"));
        assert!(matches!(refused, Err(Rejection::Denied(message)) if message.contains("no verified digest")));
    }

    #[test]
    fn accept_rule_forwards_as_asked() {
        let admitted = decide(Requirement::Accept, Mode::Enforce, Outcome::accept("accept"));
        assert_eq!(admitted.expect("admitted"), Admission::Forward);
    }

    #[test]
    fn audit_pins_a_rejected_pull_to_the_digest_it_recorded() {
        let outcome = Outcome { digest: Some(digest()), ..Outcome::reject("unsigned") };
        let admission = decide(Requirement::Signed, Mode::Audit, outcome).expect("audit lets it through");
        let pinned = format!("example.com/team/app@{}", digest());
        assert_eq!(admission, Admission::Pinned { pinned, tag: Some("example.com/team/app:1".into()) });
    }

    #[test]
    fn an_accept_rule_chosen_on_a_resolved_digest_pins_it() {
        let outcome = Outcome { digest: Some(digest()), ..Outcome::accept("accept") };
        let admission = decide(Requirement::Accept, Mode::Enforce, outcome).expect("admitted");
        assert!(matches!(admission, Admission::Pinned { .. }), "{admission:?}");
    }

    #[test]
    fn audit_forwards_a_rejection_and_enforce_refuses_it() {
        assert_eq!(
            decide(Requirement::Signed, Mode::Audit, Outcome::reject("unsigned")).expect("audit"),
            Admission::Forward
        );
        let refused = decide(Requirement::Signed, Mode::Enforce, Outcome::reject("unsigned"));
        assert!(
            matches!(refused, Err(Rejection::Denied(message)) if message.contains("team.toml") && message.contains("unsigned"))
        );
        let unavailable = decide(Requirement::Signed, Mode::Enforce, Outcome::unavailable("registry down".into()));
        assert!(matches!(unavailable, Err(Rejection::RegistryUnavailable(_))));
    }
}
