//! Why a decision came out as it did, as one stable word that dashboards and alerts can key
//! on. Set where the reason is produced, never read back out of the reason's text; the list
//! is documented in docs/policy.md ("Reason codes").

use serde::Serialize;

use crate::registry::RegistryError;
use crate::verify::Shortfall;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReasonCode {
    /// Enough trusted keys signed the digest.
    Verified,
    /// An `accept` rule: pulled without verification.
    AcceptRule,
    /// A `reject` rule covers the image.
    RejectedScope,
    /// No rule covers the image.
    NoRule,
    /// The digest has no signature at all.
    NoSignatures,
    /// Signatures exist, but none by a trusted key.
    UntrustedKey,
    /// A trusted key signed another image name.
    IdentityMismatch,
    /// A trusted key signed another digest.
    DigestMismatch,
    /// A keyless signature's certificate verified, but names a signer (subject, issuer) none of
    /// the rule's identities matches.
    SignerMismatch,
    /// A keyless signature failed a check: certificate chain, SCT, log entry (SET), timestamp or
    /// the signature itself.
    UntrustedCertificate,
    /// A signature or its payload could not be used (wrong type, malformed, not served intact).
    UnusableSignature,
    /// Some, but too few, of the required keys signed.
    Threshold,
    /// The registry has no such tag or digest.
    NotFound,
    /// The tag names a manifest kind that cannot be verified and pinned (Docker schema1, …).
    UnsupportedManifest,
    /// The registry refused the credentials (401/403).
    RegistryDenied,
    /// The registry answered, but not as the distribution API says it should.
    RegistryError,
    /// The registry could not be reached (connection, TLS, timeout, 5xx, 429).
    RegistryUnavailable,
    /// The verification did not start or finish within its time budget.
    Timeout,
    /// The policy kept changing while the pull was being decided.
    PolicyReloaded,
    /// The image reference does not parse.
    Unparsable,
    /// The reference names neither a tag nor a digest, so there is nothing to verify.
    NoDigest,
    /// The decision was lost inside pullgate (a task ended without an answer).
    Internal,
}

impl ReasonCode {
    /// What a registry failure means for the pull.
    pub(super) fn of_registry_error(error: &RegistryError) -> ReasonCode {
        match error {
            RegistryError::Unreachable(_) => ReasonCode::RegistryUnavailable,
            RegistryError::Unauthorized(_) => ReasonCode::RegistryDenied,
            RegistryError::TooLarge { .. } | RegistryError::DigestMismatch { .. } | RegistryError::Protocol(_) => {
                ReasonCode::RegistryError
            }
        }
    }

    pub(super) fn of_shortfall(shortfall: Shortfall) -> ReasonCode {
        match shortfall {
            Shortfall::Threshold => ReasonCode::Threshold,
            Shortfall::IdentityMismatch => ReasonCode::IdentityMismatch,
            Shortfall::DigestMismatch => ReasonCode::DigestMismatch,
            Shortfall::UnusablePayload => ReasonCode::UnusableSignature,
            Shortfall::UntrustedKey => ReasonCode::UntrustedKey,
            Shortfall::SignerMismatch => ReasonCode::SignerMismatch,
            Shortfall::UntrustedCertificate => ReasonCode::UntrustedCertificate,
            Shortfall::NoSignatures => ReasonCode::NoSignatures,
        }
    }

    /// The word as written in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::Verified => "verified",
            ReasonCode::AcceptRule => "accept-rule",
            ReasonCode::RejectedScope => "rejected-scope",
            ReasonCode::NoRule => "no-rule",
            ReasonCode::NoSignatures => "no-signatures",
            ReasonCode::UntrustedKey => "untrusted-key",
            ReasonCode::IdentityMismatch => "identity-mismatch",
            ReasonCode::DigestMismatch => "digest-mismatch",
            ReasonCode::SignerMismatch => "signer-mismatch",
            ReasonCode::UntrustedCertificate => "untrusted-certificate",
            ReasonCode::UnusableSignature => "unusable-signature",
            ReasonCode::Threshold => "threshold",
            ReasonCode::NotFound => "not-found",
            ReasonCode::UnsupportedManifest => "unsupported-manifest",
            ReasonCode::RegistryDenied => "registry-denied",
            ReasonCode::RegistryError => "registry-error",
            ReasonCode::RegistryUnavailable => "registry-unavailable",
            ReasonCode::Timeout => "timeout",
            ReasonCode::PolicyReloaded => "policy-reloaded",
            ReasonCode::Unparsable => "unparsable",
            ReasonCode::NoDigest => "no-digest",
            ReasonCode::Internal => "internal",
        }
    }
}

#[cfg(test)]
pub(crate) const ALL: [ReasonCode; 22] = [
    ReasonCode::Verified,
    ReasonCode::AcceptRule,
    ReasonCode::RejectedScope,
    ReasonCode::NoRule,
    ReasonCode::NoSignatures,
    ReasonCode::UntrustedKey,
    ReasonCode::IdentityMismatch,
    ReasonCode::DigestMismatch,
    ReasonCode::SignerMismatch,
    ReasonCode::UntrustedCertificate,
    ReasonCode::UnusableSignature,
    ReasonCode::Threshold,
    ReasonCode::NotFound,
    ReasonCode::UnsupportedManifest,
    ReasonCode::RegistryDenied,
    ReasonCode::RegistryError,
    ReasonCode::RegistryUnavailable,
    ReasonCode::Timeout,
    ReasonCode::PolicyReloaded,
    ReasonCode::Unparsable,
    ReasonCode::NoDigest,
    ReasonCode::Internal,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_word_is_the_documented_word() {
        let docs = include_str!("../../docs/policy.md");
        for code in ALL {
            let json = serde_json::to_value(code).expect("serialises");
            assert_eq!(json, code.as_str(), "serde and as_str disagree");
            assert!(docs.contains(&format!("`{}`", code.as_str())), "docs/policy.md does not list {}", code.as_str());
        }
    }

    /// The words of `as_str` (an exhaustive match, so every variant) are exactly the rows of
    /// the table in docs/policy.md, in the same order: none missing, none documented that
    /// does not exist.
    #[test]
    fn the_documented_table_lists_exactly_the_codes() {
        let source = include_str!("reason.rs");
        let as_str = &source[source.find("pub fn as_str").expect("as_str")..];
        let as_str = &as_str[..as_str.find("\n    }\n").expect("end of as_str")];
        let words: Vec<&str> =
            as_str.lines().filter_map(|line| line.split(" => \"").nth(1)?.strip_suffix("\",")).collect();
        let docs = include_str!("../../docs/policy.md");
        let table = &docs[docs.find("### Reason codes").expect("a Reason codes section")..];
        let table = &table[..table.find("\n#").unwrap_or(table.len())];
        let rows: Vec<&str> = table
            .lines()
            .filter_map(|line| line.strip_prefix("| `")?.split('`').next())
            .filter(|word| *word != "reason_code")
            .collect();
        assert_eq!(rows, words, "docs/policy.md's table of reason codes differs from ReasonCode::as_str");
        assert_eq!(words.len(), ALL.len(), "ALL misses a code");
    }
}
