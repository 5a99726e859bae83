//! Node-local pull policy: which images need which signatures.
//!
//! Loaded from every `*.toml` in a policy directory (see `toml_file`) and optionally one
//! containers-policy.json (see `policy_json`). Any problem fails the whole load: a policy
//! that is half understood must not be half enforced.

mod error;
pub mod identity;
pub(crate) mod input;
mod limits;
pub mod lint;
mod load;
mod policy_json;
pub mod scope;
mod shared;
pub mod signer;
mod toml_file;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::{PolicyError, Problem};
pub use identity::{IdentityConfigError, IdentityMismatch, IdentityRule};
pub use input::read_bounded_text;
pub use scope::{Scope, ScopeError, Specificity};
pub use shared::SharedPolicy;
pub use signer::{CertificateTrust, Pattern, RootSource, SignerIdentity};
pub(crate) use toml_file::valid_namespace;

use crate::reference::ImageRef;
use crate::verify::keys::TrustedKey;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Requirement {
    /// Signatures satisfying `threshold` distinct groups are required (see `KeyRef::group` and
    /// `SignerIdentity::group`).
    Signed,
    /// Pulled without any signature check.
    Accept,
    /// Never pulled.
    Reject,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// A failed check blocks the pull.
    Enforce,
    /// A failed check is reported, and the pull goes ahead.
    Audit,
}

/// A trusted public key, where it came from, and the group it counts towards.
#[derive(Clone, Debug)]
pub struct KeyRef {
    /// None for keys given inline (policy.json `keyData`).
    pub path: Option<PathBuf>,
    pub key: Arc<TrustedKey>,
    /// A group is satisfied by a valid signature from any one of its keys, and a rule needs
    /// `threshold` distinct groups satisfied. A TOML rule puts each key in a group of its own,
    /// so its threshold counts distinct keys; a policy.json scope makes one group of each
    /// `sigstoreSigned` requirement and needs them all, as containers/image does.
    pub group: usize,
}

/// One scope's requirement. A TOML rule with several scopes becomes one `Rule` per scope.
#[derive(Clone, Debug)]
pub struct Rule {
    pub scope: Scope,
    /// Kubernetes namespaces the rule is limited to; None for all.
    pub namespaces: Option<Vec<String>>,
    pub require: Requirement,
    /// Empty unless `require` is `Signed`; never holds the same key twice in one group.
    pub keys: Vec<KeyRef>,
    /// Keyless signers (certificate subject and issuer); empty unless `require` is `Signed`.
    /// Their groups follow the keys' (a TOML rule: one group per entry, after the keys').
    pub identities: Vec<SignerIdentity>,
    /// Distinct groups (keys and signer identities) needed; from 1 to the number of groups
    /// for `Signed`.
    pub threshold: usize,
    pub identity: IdentityRule,
    pub mode: Mode,
    /// The file the rule was read from.
    pub source: PathBuf,
    /// Where in `source` the rule is, for formats that have lines; None for rules built
    /// elsewhere.
    pub line: Option<usize>,
    /// The operator's words appended to the kubelet's error when this rule refuses a pull
    /// (a ticket, whom to ask); None for none.
    pub message: Option<String>,
    /// The repository the image's signatures are stored in instead of beside it (cosign's
    /// `COSIGN_REPOSITORY`), looked up for the image's digest; None: beside the image. The
    /// signatures still speak of the image's own name.
    pub signatures_from: Option<ImageRef>,
}

impl Rule {
    /// "file:line" (or the file alone), as operators look a rule up and as load errors name it.
    pub fn location(&self) -> String {
        match self.line {
            Some(line) => format!("{}:{line}", self.source.display()),
            None => self.source.display().to_string(),
        }
    }

    fn applies_in(&self, namespace: Option<&str>) -> bool {
        match (&self.namespaces, namespace) {
            (None, _) => true,
            (Some(list), Some(ns)) => list.iter().any(|n| n == ns),
            // Why: when the caller cannot tell the namespace, a namespace-limited rule
            // (often an exemption) must not apply.
            (Some(_), None) => false,
        }
    }
}

/// The loaded policy. Immutable; reloads build a new one.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    rules: Vec<Rule>,
    /// Which replacement in a `SharedPolicy` this is (0 for the first), so results derived
    /// from one policy, such as cached verdicts, are never taken for another's.
    generation: u64,
}

// === impl Policy ===

impl Policy {
    /// Load all `*.toml` files in `policy_dir` (which must exist) and, if given,
    /// `policy_json`. Every problem in every file is reported together.
    pub fn load(policy_dir: &Path, policy_json: Option<&Path>) -> Result<Policy, PolicyError> {
        let mut loader = load::Loader::default();
        toml_file::load_dir(policy_dir, &mut loader);
        if let Some(path) = policy_json {
            policy_json::load_file(path, &mut loader);
        }
        loader.finish().map(Policy::from_rules)
    }

    /// A policy from rules built elsewhere (tests, tools). Skips the loader's checks.
    pub fn from_rules(rules: Vec<Rule>) -> Policy {
        Policy { rules, generation: 0 }
    }

    /// The rule for `image` pulled into `namespace`: the most specific matching scope; at
    /// equal scope, a rule naming the namespace beats a general one. None means no rule
    /// matches, which callers treat as reject.
    pub fn find(&self, image: &ImageRef, namespace: Option<&str>) -> Option<&Rule> {
        self.find_indexed(image, namespace).map(|(_, rule)| rule)
    }

    /// `find`, with the rule's position in `rules()`: together with the generation, an
    /// identity for the rule that results derived from it (cached verdicts) can be keyed on.
    pub fn find_indexed(&self, image: &ImageRef, namespace: Option<&str>) -> Option<(usize, &Rule)> {
        let mut best: Option<(usize, &Rule, (Specificity, bool))> = None;
        for (index, rule) in
            self.rules.iter().enumerate().filter(|(_, r)| r.applies_in(namespace) && r.scope.matches(image))
        {
            let rank = (rule.scope.specificity(), rule.namespaces.is_some());
            // Strictly greater: on a (loader-prevented) tie the earlier rule stays.
            if best.is_none_or(|(_, _, best_rank)| rank > best_rank) {
                best = Some((index, rule, rank));
            }
        }
        best.map(|(index, rule, _)| (index, rule))
    }

    /// Whether a rule applying in `namespace` names one of `image`'s digests: then a pull of
    /// the image by tag is decided only once the tag is resolved, since the digest containerd
    /// will fetch may be the one that rule is about (a revoked build, say).
    pub fn names_a_digest_of(&self, image: &ImageRef, namespace: Option<&str>) -> bool {
        self.rules.iter().any(|rule| {
            rule.applies_in(namespace)
                && matches!(&rule.scope, Scope::Digest { registry, repository, .. }
                    if registry == image.registry() && repository == image.repository())
        })
    }

    /// Whether a rule applying in `namespace` names `image`'s tag: then a pull by tag and
    /// digest is decided on that rule only if the tag resolves to that digest.
    pub fn names_the_tag_of(&self, image: &ImageRef, namespace: Option<&str>) -> bool {
        let Some(wanted) = image.tag() else { return false };
        self.rules.iter().any(|rule| {
            rule.applies_in(namespace)
                && matches!(&rule.scope, Scope::Tag { registry, repository, tag }
                    if registry == image.registry() && repository == image.repository() && tag == wanted)
        })
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Counts the `SharedPolicy::replace` calls before this policy was put in force.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// True when no rule exists, so every pull would be rejected; worth a loud warning.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod test_support;

#[cfg(test)]
mod tests {
    use super::test_support::{KEY_A, TestDir};
    use super::*;

    fn img(s: &str) -> ImageRef {
        s.parse().unwrap()
    }

    fn rule(scope: &str, namespaces: Option<&[&str]>, require: Requirement) -> Rule {
        Rule {
            scope: scope.parse().unwrap(),
            namespaces: namespaces.map(|n| n.iter().map(|s| s.to_string()).collect()),
            require,
            keys: vec![],
            identities: vec![],
            threshold: 0,
            identity: IdentityRule::MatchRepository,
            mode: Mode::Enforce,
            source: PathBuf::from("test.toml"),
            message: None,
            signatures_from: None,
            line: None,
        }
    }

    fn found(policy: &Policy, image: &str, ns: Option<&str>) -> Option<String> {
        policy.find(&img(image), ns).map(|r| format!("{}{:?}", r.scope, r.namespaces))
    }

    #[test]
    fn most_specific_scope_wins() {
        let policy = Policy::from_rules(vec![
            rule("*", None, Requirement::Reject),
            rule("*.example.com", None, Requirement::Signed),
            rule("r.example.com", None, Requirement::Signed),
            rule("r.example.com/team", None, Requirement::Signed),
            rule("r.example.com/team/app", None, Requirement::Accept),
            rule("r.example.com/team/app:dev", None, Requirement::Accept),
        ]);
        let cases = [
            ("nginx", "*"),
            ("x.example.com/a", "*.example.com"),
            ("r.example.com/other", "r.example.com"),
            ("r.example.com/team/b", "r.example.com/team"),
            ("r.example.com/team/app:v1", "r.example.com/team/app"),
            ("r.example.com/team/app/sub", "r.example.com/team/app"),
            ("r.example.com/team/app:dev", "r.example.com/team/app:dev"),
            ("r.example.com:5000/team/app", "*.example.com"),
        ];
        for (image, scope) in cases {
            assert_eq!(found(&policy, image, None), Some(format!("{scope}None")), "{image}");
        }
    }

    #[test]
    fn no_match_is_none() {
        let policy = Policy::from_rules(vec![rule("r.io", None, Requirement::Accept)]);
        assert!(policy.find(&img("other.io/a"), None).is_none());
        assert!(Policy::default().find(&img("nginx"), None).is_none());
        assert!(Policy::default().is_empty());
    }

    #[test]
    fn namespace_rule_beats_general_rule_at_equal_scope() {
        let policy = Policy::from_rules(vec![
            rule("r.io/team", Some(&["kube-system"]), Requirement::Accept),
            rule("r.io/team", None, Requirement::Signed),
        ]);
        let ns = |n| policy.find(&img("r.io/team/app"), n).map(|r| r.require);
        assert_eq!(ns(Some("kube-system")), Some(Requirement::Accept));
        assert_eq!(ns(Some("default")), Some(Requirement::Signed));
        assert_eq!(ns(None), Some(Requirement::Signed), "unknown namespace never gets the exemption");
    }

    #[test]
    fn more_specific_scope_beats_namespace_rule() {
        let policy = Policy::from_rules(vec![
            rule("r.io", Some(&["dev"]), Requirement::Accept),
            rule("r.io/team", None, Requirement::Signed),
        ]);
        let r = policy.find(&img("r.io/team/app"), Some("dev")).map(|r| r.require);
        assert_eq!(r, Some(Requirement::Signed));
        let r = policy.find(&img("r.io/other"), Some("dev")).map(|r| r.require);
        assert_eq!(r, Some(Requirement::Accept));
    }

    #[test]
    fn namespace_only_rule_does_not_match_other_namespaces() {
        let policy = Policy::from_rules(vec![rule("*", Some(&["dev"]), Requirement::Accept)]);
        assert!(policy.find(&img("nginx"), Some("prod")).is_none());
        assert!(policy.find(&img("nginx"), Some("dev")).is_some());
    }

    #[test]
    fn load_combines_toml_and_json() {
        let dir = TestDir::new();
        dir.write("keys/a.pub", KEY_A);
        dir.write(
            "policy.d/a.toml",
            "[[rule]]\nscope = \"r.io/team\"\nrequire = \"signed\"\nkeys = [\"../keys/a.pub\"]\n",
        );
        dir.write("policy.json", r#"{"default": [{"type": "reject"}]}"#);
        let json = dir.path("policy.json");
        let policy = Policy::load(&dir.path("policy.d"), Some(&json)).unwrap();
        assert_eq!(policy.rules().len(), 2);
        assert_eq!(policy.find(&img("r.io/team/x"), None).map(|r| r.require), Some(Requirement::Signed));
        assert_eq!(policy.find(&img("nginx"), None).map(|r| r.require), Some(Requirement::Reject));
    }

    #[test]
    fn load_reports_problems_from_both_formats() {
        let dir = TestDir::new();
        dir.write("policy.d/a.toml", "[[rule]]\nscope = \"*\"\nrequire = \"reject\"\n");
        dir.write("policy.json", "{\"default\": [{\"type\": \"signedBy\"}]}");
        let json = dir.path("policy.json");
        let err = Policy::load(&dir.path("policy.d"), Some(&json)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("signedBy"), "{text}");
        assert!(text.contains("duplicate rule") || err.problems.len() == 1, "{text}");
    }

    #[test]
    fn a_fifo_key_and_a_device_policy_json_are_refused_naming_them() {
        let dir = TestDir::new();
        dir.write("policy.d/a.toml", "[[rule]]\nscope = \"r.io\"\nrequire = \"signed\"\nkeys = [\"a.pub\"]\n");
        let fifo = dir.path("policy.d/a.pub");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        let (done, result) = std::sync::mpsc::channel();
        let policy_dir = dir.path("policy.d");
        // On another thread: a load that blocks must fail the test, not hang it.
        std::thread::spawn(move || done.send(Policy::load(&policy_dir, Some(Path::new("/dev/zero")))));
        let err = result.recv_timeout(std::time::Duration::from_secs(5)).expect("load finished").unwrap_err();
        let text = err.to_string();
        assert_eq!(err.problems.len(), 2, "{text}");
        let key = format!("a.toml:4: key file {}: is a FIFO (named pipe), not a regular file", fifo.display());
        assert!(text.contains(&key), "{text}");
        assert!(text.contains("/dev/zero: is a character device, not a regular file"), "{text}");
    }

    #[test]
    fn two_spellings_of_one_registry_are_one_scope() {
        let dir = TestDir::new();
        let rules = "[[rule]]\nscope = \"127.0.0.1:5000\"\nrequire = \"reject\"\n\n\
                     [[rule]]\nscope = \"localhost:05000\"\nrequire = \"accept\"\n";
        dir.write("policy.d/a.toml", rules);
        let err = Policy::load(&dir.path("policy.d"), None).unwrap_err();
        assert!(err.to_string().contains("duplicate rule: scope \"localhost:05000\""), "{err}");
    }

    #[test]
    fn a_loaded_rule_knows_its_file_and_line() {
        let dir = TestDir::new();
        let toml = "# the default\n[[rule]]\nscope = \"*\"\nrequire = \"reject\"\n\n[[rule]]\n\
                    scope = [\"r.io/a\", \"r.io/b\"]\nrequire = \"accept\"\n";
        dir.write("policy.d/a.toml", toml);
        let policy = Policy::load(&dir.path("policy.d"), None).unwrap();
        let file = dir.path("policy.d/a.toml").display().to_string();
        let located: Vec<String> = policy.rules().iter().map(Rule::location).collect();
        // A rule with several scopes is one rule per scope, each at its scope's line.
        assert_eq!(located, [format!("{file}:3"), format!("{file}:7"), format!("{file}:7")]);
    }

    #[test]
    fn missing_policy_json_is_an_error() {
        let dir = TestDir::new();
        dir.write("policy.d/a.toml", "");
        let missing = dir.path("nope.json");
        let err = Policy::load(&dir.path("policy.d"), Some(&missing)).unwrap_err();
        assert!(err.problems[0].file.ends_with("nope.json"), "{err}");
    }
}
