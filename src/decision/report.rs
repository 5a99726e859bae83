//! A decision with everything that led to it: what the daemon logs once per pull, what the
//! kubelet reads in a rejection, and what `pullgate verify` explains.

use std::time::{Duration, Instant};

use crate::policy::{Mode, Rule};
use crate::reference::{Digest, ImageRef};
use crate::verify::Evaluation;

use super::{Admission, Rejection};
use super::check::Outcome;

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
    pub digest: Option<Digest>,
    pub rule: Option<Rule>,
    pub evaluation: Option<Evaluation>,
    pub verdict: Verdict,
    pub reason: String,
    pub elapsed: Duration,
}

impl Decision {
    pub(super) fn new(image: ImageRef, rule: Rule, outcome: Outcome, started: Instant) -> Decision {
        Decision {
            image: image.to_string(),
            digest: outcome.digest.or_else(|| image.digest().cloned()),
            parsed: Some(image),
            rule: Some(rule),
            evaluation: outcome.evaluation,
            verdict: outcome.verdict,
            reason: outcome.reason,
            elapsed: started.elapsed(),
        }
    }

    pub(super) fn no_rule(image: ImageRef, started: Instant) -> Decision {
        let reason = "no policy rule matches the image".to_owned();
        let mut decision = Decision::rejected(image.to_string(), reason, started);
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
            (Verdict::Accepted, _) => Ok(self.admission()),
            // Audit: the verdict is logged and counted, the pull goes ahead as asked.
            (_, Some(Mode::Audit)) => Ok(Admission::Forward),
            (Verdict::Rejected, _) => Err(Rejection::Denied(self.message())),
            (Verdict::Unavailable, _) => Err(Rejection::RegistryUnavailable(self.message())),
        }
    }

    /// What an accepted decision lets containerd do: a verified image is pulled by the digest
    /// that was verified, never by a tag that could have moved since.
    fn admission(&self) -> Admission {
        let (Some(image), Some(digest)) = (&self.parsed, &self.digest) else { return Admission::Forward };
        let pinned = image.with_digest(digest.clone());
        match pinned.pinned() {
            Some(reference) => {
                let tag = image.digest().is_none().then(|| image.to_string());
                Admission::Pinned { pinned: reference, tag }
            }
            None => Admission::Forward,
        }
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
