//! A policy rule as operators read it: plain strings and numbers, no key material.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::policy::{IdentityRule, KeyRef, Mode, Requirement, Rule};

#[derive(Debug, Serialize)]
pub struct RuleView {
    pub scope: String,
    /// None: the rule applies in every namespace.
    pub namespaces: Option<Vec<String>>,
    /// `signed`, `accept` or `reject`, as written in a policy file.
    pub require: &'static str,
    pub keys: Vec<KeyView>,
    /// Distinct key groups needed (for a TOML rule: distinct keys); None unless `require` is
    /// `signed`.
    pub threshold: Option<usize>,
    pub identity: String,
    /// `enforce` or `audit`.
    pub mode: &'static str,
    /// The file the rule was read from.
    pub file: PathBuf,
    /// The rule's line in `file`, where the format has lines.
    pub line: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct KeyView {
    /// None for keys given inline (policy.json `keyData`).
    pub path: Option<PathBuf>,
    pub algorithm: &'static str,
    pub fingerprint: String,
    /// A signature by any key of a group satisfies the group (see `policy::KeyRef::group`).
    pub group: usize,
}

impl RuleView {
    pub fn new(rule: &Rule) -> RuleView {
        let signed = rule.require == Requirement::Signed;
        RuleView {
            scope: rule.scope.to_string(),
            namespaces: rule.namespaces.clone(),
            require: requirement_name(rule.require),
            keys: rule.keys.iter().map(KeyView::new).collect(),
            threshold: signed.then_some(rule.threshold),
            identity: identity_label(&rule.identity),
            mode: mode_name(rule.mode),
            file: rule.source.clone(),
            line: rule.line,
        }
    }

    /// "all" or the namespaces, comma-separated.
    pub fn namespaces_label(&self) -> String {
        match &self.namespaces {
            Some(list) => list.join(", "),
            None => "all".to_owned(),
        }
    }

    /// The keys, short enough for one table cell: a key beside the rule's file by its file name,
    /// any other by its path, an inline key by its fingerprint. A group of several keys (any
    /// one of which will do) shows as "(a.pub or b.pub)".
    pub fn keys_label(&self) -> String {
        let dir = self.file.parent();
        let mut groups: Vec<(usize, Vec<String>)> = Vec::new();
        for key in &self.keys {
            match groups.iter_mut().find(|(group, _)| *group == key.group) {
                Some((_, labels)) => labels.push(key.label(dir)),
                None => groups.push((key.group, vec![key.label(dir)])),
            }
        }
        let group_label = |labels: &[String]| match labels {
            [one] => one.clone(),
            many => format!("({})", many.join(" or ")),
        };
        groups.iter().map(|(_, labels)| group_label(labels)).collect::<Vec<_>>().join(", ")
    }
}

impl KeyView {
    fn new(key: &KeyRef) -> KeyView {
        KeyView {
            path: key.path.clone(),
            algorithm: key.key.algorithm(),
            fingerprint: key.key.fingerprint().to_owned(),
            group: key.group,
        }
    }

    fn label(&self, rule_dir: Option<&Path>) -> String {
        let Some(path) = &self.path else {
            let short = self.fingerprint.get(..23).unwrap_or(&self.fingerprint);
            return format!("inline {short}");
        };
        match (rule_dir, path.file_name()) {
            (Some(dir), Some(name)) if path.parent() == Some(dir) => name.to_string_lossy().into_owned(),
            _ => path.display().to_string(),
        }
    }
}

fn requirement_name(requirement: Requirement) -> &'static str {
    match requirement {
        Requirement::Signed => "signed",
        Requirement::Accept => "accept",
        Requirement::Reject => "reject",
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Enforce => "enforce",
        Mode::Audit => "audit",
    }
}

/// The identity rule's name, with its argument where it has one.
fn identity_label(identity: &IdentityRule) -> String {
    match identity {
        IdentityRule::Remap { prefix, signed_prefix } => format!("remap {prefix} -> {signed_prefix}"),
        IdentityRule::ExactRepository(repository) => format!("exact-repository {repository}"),
        other => other.name().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Scope;
    use crate::verify::TrustedKey;
    use p256::pkcs8::{EncodePublicKey as _, LineEnding};
    use std::sync::Arc;

    fn key(path: Option<&str>) -> KeyRef {
        let signing = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let pem = signing.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
        KeyRef { path: path.map(PathBuf::from), key: Arc::new(TrustedKey::from_pem(pem.as_bytes()).unwrap()), group: 0 }
    }

    /// Each key a group of its own, as in a TOML rule.
    fn rule(require: Requirement, keys: Vec<KeyRef>) -> Rule {
        let keys: Vec<KeyRef> = keys.into_iter().enumerate().map(|(group, key)| KeyRef { group, ..key }).collect();
        Rule {
            scope: "r.example/team".parse::<Scope>().unwrap(),
            namespaces: None,
            require,
            threshold: keys.len(),
            keys,
            identities: vec![],
            identity: IdentityRule::remap("r.example/team", "mirror.example/team").unwrap(),
            mode: Mode::Audit,
            source: PathBuf::from("/etc/pullgate/policy.d/team.toml"),
            message: None,
            signatures_from: None,
            line: None,
        }
    }

    #[test]
    fn keys_beside_the_rule_show_by_name_others_by_path_or_fingerprint() {
        let keys = vec![key(Some("/etc/pullgate/policy.d/a.pub")), key(Some("/etc/keys/b.pub")), key(None)];
        let view = RuleView::new(&rule(Requirement::Signed, keys));
        let label = view.keys_label();
        let parts: Vec<&str> = label.split(", ").collect();
        assert_eq!(parts[..2], ["a.pub", "/etc/keys/b.pub"]);
        assert!(parts[2].starts_with("inline sha256:") && parts[2].len() == "inline ".len() + 23, "{label}");
        assert_eq!(view.threshold, Some(3));
        assert_eq!(view.keys[0].algorithm, "ECDSA P-256");
    }

    #[test]
    fn a_group_of_several_keys_shows_as_alternatives() {
        let mut rule =
            rule(Requirement::Signed, vec![key(Some("/k/a1.pub")), key(Some("/k/a2.pub")), key(Some("/k/b.pub"))]);
        rule.keys[1].group = 0;
        rule.keys[2].group = 1;
        rule.threshold = 2;
        assert_eq!(RuleView::new(&rule).keys_label(), "(/k/a1.pub or /k/a2.pub), /k/b.pub");
    }

    #[test]
    fn names_match_the_policy_file_spelling() {
        let view = RuleView::new(&rule(Requirement::Accept, vec![]));
        assert_eq!((view.require, view.mode, view.threshold), ("accept", "audit", None));
        assert_eq!(view.identity, "remap r.example/team -> mirror.example/team");
        assert_eq!(view.namespaces_label(), "all");
    }
}
