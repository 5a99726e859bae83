//! Keyless signers a rule trusts: a certificate's subject (its SAN) and OIDC issuer, each
//! matched exactly or by an anchored regex, and the trusted root the certificate must chain to.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use super::limits::{MAX_SIGNER_PATTERN_CHARS, MAX_SIGNER_REGEX_BYTES};
use crate::verify::keyless::TrustRoot;
use crate::verify::keyless::pki::PkiTrust;

/// How a subject or issuer is matched.
#[derive(Clone, Debug)]
pub enum Pattern {
    Exact(String),
    /// Matches the whole string: compiled as `^(?:…)$`.
    Regex(regex::Regex),
}

impl Pattern {
    /// An anchored regex. The text is first compiled alone: a pattern such as `a)|(b` would
    /// otherwise close the anchoring group and match anything ending in `b`.
    pub fn regex(text: &str) -> Result<Pattern, String> {
        if text.chars().count() > MAX_SIGNER_PATTERN_CHARS {
            return Err(format!("is longer than {MAX_SIGNER_PATTERN_CHARS} characters"));
        }
        let compile = |pattern: &str| {
            regex::RegexBuilder::new(pattern).size_limit(MAX_SIGNER_REGEX_BYTES).build().map_err(|e| regex_error(&e))
        };
        compile(text)?;
        compile(&format!("^(?:{text})$")).map(Pattern::Regex)
    }

    pub fn exact(text: &str) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err("is empty".to_owned());
        }
        if text.chars().count() > MAX_SIGNER_PATTERN_CHARS {
            return Err(format!("is longer than {MAX_SIGNER_PATTERN_CHARS} characters"));
        }
        Ok(Pattern::Exact(text.to_owned()))
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Exact(text) => text == value,
            Pattern::Regex(regex) => regex.is_match(value),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(text) => write!(f, "{text:?}"),
            // Shown as written, without the anchoring added at load.
            Pattern::Regex(regex) => {
                let anchored = regex.as_str();
                let written = anchored.strip_prefix("^(?:").and_then(|s| s.strip_suffix(")$")).unwrap_or(anchored);
                write!(f, "~{written:?}")
            }
        }
    }
}

/// regex's syntax errors span several lines (the pattern, a caret, the error); a load problem
/// is one line, and the pattern is already in the file at that line.
fn regex_error(error: &regex::Error) -> String {
    let text = error.to_string();
    let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("invalid regex").trim();
    format!("is not a valid regex: {}", last.strip_prefix("error: ").unwrap_or(last))
}

/// Where a keyless signature must chain to, and which proofs it must carry.
#[derive(Debug)]
pub struct CertificateTrust {
    pub root: Arc<TrustRoot>,
    pub source: RootSource,
    /// An embedded SCT is required (TOML `ignore_sct = false`, the default).
    pub sct: bool,
    /// A containers-policy.json `pki` requirement: its certificates are checked by
    /// `verify::keyless::pki` at the current time, with no log, and carry the subject it asks
    /// for; `root` then only lists its CA roots for `policy check`, and verifies nothing.
    pub pki: Option<PkiTrust>,
}

/// What a trusted root was built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSource {
    /// The Sigstore public-good root built into pullgate.
    BuiltIn,
    /// A `TrustedRoot` file.
    File(PathBuf),
    /// A containers-policy.json `fulcio` requirement: its CA file and Rekor key files (none
    /// for the `…Data` forms), watched like key files.
    PolicyJson { policy_json: PathBuf, files: Vec<PathBuf> },
}

impl RootSource {
    /// The files whose change must reload the policy.
    pub fn files(&self) -> &[PathBuf] {
        match self {
            RootSource::BuiltIn => &[],
            RootSource::File(path) => std::slice::from_ref(path),
            RootSource::PolicyJson { files, .. } => files,
        }
    }
}

impl CertificateTrust {
    /// The root as operators name it: its file, or "the built-in Sigstore public-good root".
    pub fn root_label(&self) -> String {
        match &self.source {
            RootSource::File(path) => path.display().to_string(),
            RootSource::BuiltIn => "the built-in Sigstore public-good root".to_owned(),
            RootSource::PolicyJson { policy_json, .. } if self.pki.is_some() => {
                format!("the pki CA roots of {}", policy_json.display())
            }
            RootSource::PolicyJson { policy_json, .. } => {
                format!("the fulcio CA and Rekor keys of {}", policy_json.display())
            }
        }
    }
}

/// One keyless signer a rule trusts, and the group it counts towards (as `KeyRef::group`).
#[derive(Clone, Debug)]
pub struct SignerIdentity {
    pub issuer: Pattern,
    pub subject: Pattern,
    pub trust: Arc<CertificateTrust>,
    pub group: usize,
}

impl SignerIdentity {
    pub fn matches(&self, subject: &str, issuer: &str) -> bool {
        self.subject.matches(subject) && self.issuer.matches(issuer)
    }

    /// "subject "…" from issuer ~"…"", for reasons and listings.
    pub fn label(&self) -> String {
        format!("subject {} from issuer {}", self.subject, self.issuer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regexes_match_the_whole_string() {
        let re = Pattern::regex(".*@example\\.com").unwrap();
        assert!(re.matches("ann@example.com"));
        assert!(!re.matches("ann@example.com.evil.io"), "anchored at the end");
        assert!(!re.matches("ann@example.company"));
        let prefix = Pattern::regex("https://accounts\\.example\\.com").unwrap();
        assert!(!prefix.matches("https://evil.io/https://accounts.example.com"), "anchored at the start");
        assert!(!prefix.matches("https://accounts.example.com\n"), "no trailing newline");
    }

    #[test]
    fn a_pattern_cannot_break_out_of_its_anchors() {
        // Alone these do not compile, so they are never wrapped into something that does.
        assert!(Pattern::regex("a)|(b").is_err());
        assert!(Pattern::regex("a)|.*|(b").is_err());
        // A top-level alternation stays inside the anchors.
        let alt = Pattern::regex("a|b").unwrap();
        assert!(alt.matches("a") && alt.matches("b") && !alt.matches("ab") && !alt.matches("xb"));
    }

    #[test]
    fn bad_and_oversized_patterns_are_refused() {
        assert!(Pattern::regex("(unclosed").unwrap_err().contains("unclosed"));
        let long = "a".repeat(MAX_SIGNER_PATTERN_CHARS + 1);
        assert!(Pattern::regex(&long).unwrap_err().contains("longer than"));
        assert!(Pattern::exact(&long).unwrap_err().contains("longer than"));
        assert_eq!(Pattern::exact("").unwrap_err(), "is empty");
        // Small to write, huge compiled: refused by the size limit, not built.
        assert!(Pattern::regex("(\\w{100}){100}").is_err());
    }

    #[test]
    fn exact_is_exact_and_patterns_show_as_written() {
        let exact = Pattern::exact("a.b").unwrap();
        assert!(exact.matches("a.b") && !exact.matches("axb"));
        assert_eq!(exact.to_string(), "\"a.b\"");
        assert_eq!(Pattern::regex("a.b").unwrap().to_string(), "~\"a.b\"");
    }
}
