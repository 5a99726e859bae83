//! Machinery shared by both policy file formats: collecting problems, loading keys once,
//! and the cross-file checks that run after every file has been read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::error::{PolicyError, Problem};
use super::input;
use super::{KeyRef, Rule};
use crate::verify::keyless::{KeylessError, MAX_TRUSTED_ROOT_BYTES, PublicGood, TrustRoot};
use crate::verify::keys::TrustedKey;

/// A rule plus where it came from, for messages about it.
pub(super) struct Loaded {
    pub rule: Rule,
    pub line: Option<usize>,
}

/// Accumulates rules and problems across all files of one `Policy::load`.
#[derive(Default)]
pub(super) struct Loader {
    problems: Vec<Problem>,
    rules: Vec<Loaded>,
    // Why cache: the same key file usually backs many rules; parse it once, and share the Arc.
    key_files: HashMap<PathBuf, Result<Arc<TrustedKey>, String>>,
    // Why cache: a trusted root is parsed and its keys and CAs prepared once per load, however
    // many rules name it.
    trusted_roots: HashMap<PathBuf, Result<Arc<TrustRoot>, String>>,
}

// === impl Loader ===

impl Loader {
    pub fn problem(&mut self, file: &Path, line: Option<usize>, message: impl Into<String>) {
        let problem = Problem { file: file.to_owned(), line, message: message.into() };
        self.problems.push(problem);
    }

    pub fn problem_count(&self) -> usize {
        self.problems.len()
    }

    pub fn push(&mut self, rule: Rule, line: Option<usize>) {
        self.rules.push(Loaded { rule, line });
    }

    /// Load a PEM public key from `path` (already resolved against the policy file).
    pub fn key_file(&mut self, path: &Path) -> Result<KeyRef, String> {
        let cached = self
            .key_files
            .entry(path.to_owned())
            .or_insert_with(|| input::read_key_file(path).and_then(|pem| parse_key(&pem)));
        let key = cached.clone().map_err(|e| format!("key file {}: {e}", path.display()))?;
        Ok(KeyRef { path: Some(path.to_owned()), key, group: 0 })
    }

    /// A trusted root file (already resolved against the policy file), or with None the
    /// Sigstore public-good root built into pullgate. The error names the file.
    pub fn trusted_root(&mut self, path: Option<&Path>) -> Result<Arc<TrustRoot>, String> {
        let Some(path) = path else { return built_in_root() };
        let cached = self.trusted_roots.entry(path.to_owned()).or_insert_with(|| read_trusted_root(path));
        cached.clone().map_err(|e| format!("trusted root {}: {e}", path.display()))
    }

    /// All rules, or every problem found (including overlaps between rules).
    pub fn finish(mut self) -> Result<Vec<super::Rule>, PolicyError> {
        check_overlaps(&self.rules, &mut self.problems);
        if self.problems.is_empty() {
            Ok(self.rules.into_iter().map(|loaded| super::Rule { line: loaded.line, ..loaded.rule }).collect())
        } else {
            Err(PolicyError { problems: self.problems })
        }
    }
}

fn read_trusted_root(path: &Path) -> Result<Arc<TrustRoot>, String> {
    let json = input::read_bounded_text(path, MAX_TRUSTED_ROOT_BYTES, "trusted root")?;
    TrustRoot::from_json(&json).map(Arc::new).map_err(|e| match e {
        KeylessError::TrustRoot(text) => format!("unusable: {text}"),
        other => other.to_string(),
    })
}

/// Built once per process: it is compiled in and cannot change.
fn built_in_root() -> Result<Arc<TrustRoot>, String> {
    static ROOT: OnceLock<Result<Arc<TrustRoot>, String>> = OnceLock::new();
    ROOT.get_or_init(|| TrustRoot::public_good(PublicGood::Production).map(Arc::new).map_err(|e| e.to_string())).clone()
}

pub(super) fn parse_key(pem: &[u8]) -> Result<Arc<TrustedKey>, String> {
    TrustedKey::from_pem(pem).map(Arc::new).map_err(|e| e.to_string())
}

/// Resolve a key path from a policy file: absolute as is, relative to the file's directory.
pub(super) fn resolve(policy_file: &Path, key: &str) -> PathBuf {
    let dir = policy_file.parent().unwrap_or(Path::new("."));
    dir.join(key)
}

/// Why: within a TOML rule each key is its own group, so one key listed twice (even under two
/// paths) would let a single signer meet a threshold of 2; within one policy.json requirement
/// the same key twice is at best a mistake.
pub(super) fn check_distinct_keys(keys: &[KeyRef]) -> Result<(), String> {
    for (i, a) in keys.iter().enumerate() {
        let twin = keys[..i].iter().find(|b| b.key.fingerprint() == a.key.fingerprint());
        if let Some(b) = twin {
            return Err(format!("{} and {} are the same key", describe(b), describe(a)));
        }
    }
    Ok(())
}

fn describe(key: &KeyRef) -> String {
    match &key.path {
        Some(path) => path.display().to_string(),
        None => format!("inline key {}", key.key.fingerprint()),
    }
}

/// 1-based line of a byte offset (clamped, so a bad offset cannot panic).
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

// === cross-file checks ===

/// Two rules with one scope whose namespaces overlap would make `Policy::find` ambiguous.
fn check_overlaps(rules: &[Loaded], problems: &mut Vec<Problem>) {
    for (i, later) in rules.iter().enumerate() {
        let earlier = rules[..i].iter().find(|e| {
            e.rule.scope == later.rule.scope && namespaces_overlap(&e.rule.namespaces, &later.rule.namespaces)
        });
        if let Some(earlier) = earlier {
            problems.push(Problem {
                file: later.rule.source.clone(),
                line: later.line,
                message: overlap_message(earlier, later),
            });
        }
    }
}

fn namespaces_overlap(a: &Option<Vec<String>>, b: &Option<Vec<String>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.iter().any(|ns| b.contains(ns)),
        // A rule limited to namespaces deliberately overrides the general one.
        _ => false,
    }
}

fn overlap_message(earlier: &Loaded, later: &Loaded) -> String {
    let at = match earlier.line {
        Some(line) => format!("{}:{line}", earlier.rule.source.display()),
        None => earlier.rule.source.display().to_string(),
    };
    let namespaces = match &later.rule.namespaces {
        None => "all namespaces".to_owned(),
        Some(ns) => format!("namespaces {ns:?}"),
    };
    // The problem itself names the later file; `at` names the earlier one.
    format!("duplicate rule: scope \"{}\" for {namespaces} is already defined at {at}", later.rule.scope)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_of_offsets() {
        let text = "a\nbc\n\nd";
        assert_eq!(line_of(text, 0), 1);
        assert_eq!(line_of(text, 2), 2);
        assert_eq!(line_of(text, 5), 3);
        assert_eq!(line_of(text, 6), 4);
        assert_eq!(line_of(text, 10_000), 4);
    }

    #[test]
    fn resolve_relative_and_absolute() {
        let file = Path::new("/etc/pullgate/policy.d/a.toml");
        assert_eq!(resolve(file, "keys/k.pub"), Path::new("/etc/pullgate/policy.d/keys/k.pub"));
        assert_eq!(resolve(file, "/etc/keys/k.pub"), Path::new("/etc/keys/k.pub"));
        assert_eq!(resolve(Path::new("a.toml"), "k.pub"), Path::new("k.pub"));
    }

    #[test]
    fn namespace_overlap_rules() {
        let ns = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(namespaces_overlap(&None, &None));
        assert!(!namespaces_overlap(&None, &ns(&["a"])));
        assert!(namespaces_overlap(&ns(&["a", "b"]), &ns(&["b", "c"])));
        assert!(!namespaces_overlap(&ns(&["a"]), &ns(&["b"])));
    }
}
