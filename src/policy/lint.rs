//! What a loaded policy may not mean what its author meant: files in `policy_dir` that look
//! like policy but are never read, and rules that load but cannot do what they seem to say.
//! Warnings, not load errors: each of these can be intended, and the daemon must not refuse
//! to start over one. `policy check` prints them and `serve` logs them.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use super::{IdentityRule, Policy, Requirement, Scope};

/// Extensions of files an operator may have meant as policy; compared without case.
const POLICY_LIKE: [&str; 4] = ["toml", "json", "yaml", "yml"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub file: PathBuf,
    pub kind: WarningKind,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WarningKind {
    /// A file in `policy_dir` that is not read.
    Ignored,
    /// A rule that loads but does not do what it seems to.
    Rule,
    /// Not a problem: a scope's host also has other well-known spellings it covers.
    Alias,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.kind {
            WarningKind::Ignored => "ignored",
            WarningKind::Rule => "warning",
            WarningKind::Alias => "note",
        };
        write!(f, "{label}: {}: {}", self.file.display(), self.message)
    }
}

/// Every warning about `policy`, loaded from `policy_dir` and `policy_json`.
pub fn warnings(policy: &Policy, policy_dir: &Path, policy_json: Option<&Path>) -> Vec<Warning> {
    let mut warnings = ignored_files(policy_dir);
    for rule in policy.rules() {
        let warn = |message: String| Warning { file: rule.source.clone(), kind: WarningKind::Rule, message };
        if let Some(message) = hub_namespace(&rule.scope) {
            warnings.push(warn(message));
        }
        let from_json = policy_json.is_some_and(|json| rule.source == json);
        if from_json && rule.require == Requirement::Signed && rule.identity == IdentityRule::MatchRepoDigestOrExact {
            warnings.push(warn(format!(
                "scope \"{}\": signedIdentity is matchRepoDigestOrExact (the default when it is missing): cosign \
                 signatures name no tag, so every pull by tag is refused; add \"signedIdentity\": \
                 {{\"type\": \"matchRepository\"}} to accept them",
                rule.scope
            )));
        }
    }
    warnings
}

/// A scope naming `127.0.0.1:5000` also covers `localhost:5000`: said once per host, at the
/// first rule naming it, so nobody writes a second rule expecting it to be separate.
pub fn alias_notes(policy: &Policy) -> Vec<Warning> {
    let mut seen = BTreeSet::new();
    let mut notes = Vec::new();
    for rule in policy.rules() {
        let Some(host) = rule.scope.registry().filter(|host| seen.insert(*host)) else { continue };
        let aliases = host.well_known_aliases();
        if !aliases.is_empty() {
            let message = format!("scopes on \"{host}\" also cover {}", aliases.join(", "));
            notes.push(Warning { file: rule.source.clone(), kind: WarningKind::Alias, message });
        }
    }
    notes
}

/// Files that look like policy but are not `*.toml`, so nothing in them applies. Hidden files
/// and anything else (README, editor backups) are ignored without a word, as intended.
fn ignored_files(policy_dir: &Path) -> Vec<Warning> {
    let Ok(entries) = fs::read_dir(policy_dir) else { return Vec::new() };
    let mut ignored: Vec<Warning> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter_map(|path| ignored_because(&path).map(|message| (path, message)))
        .map(|(file, message)| Warning { file, kind: WarningKind::Ignored, message })
        .collect();
    ignored.sort_by(|a, b| a.file.cmp(&b.file));
    ignored
}

fn ignored_because(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_string_lossy();
    let extension = path.extension()?.to_string_lossy();
    if name.starts_with('.') || extension == "toml" || !POLICY_LIKE.contains(&extension.to_ascii_lowercase().as_str()) {
        return None;
    }
    Some(match extension.to_ascii_lowercase().as_str() {
        "toml" => "only files ending in lower-case .toml are read; rename it".to_owned(),
        "json" => "only *.toml files are read from policy_dir; a containers-policy.json is read only where the \
                   policy_json setting points"
            .to_owned(),
        _ => "only *.toml files are read from policy_dir; YAML is not a policy format".to_owned(),
    })
}

/// `docker.io/<name>` is a Docker Hub namespace (`docker.io/<name>/…`), never the official
/// image of that name, which lives under `docker.io/library/`.
fn hub_namespace(scope: &Scope) -> Option<String> {
    match scope {
        Scope::Path { registry, path }
            if registry.canonical() == "docker.io" && !path.contains('/') && path != "library" =>
        {
            Some(format!(
                "scope \"{scope}\" covers the Docker Hub namespace {scope}/…, never the official image \
                 `{path}`, which is docker.io/library/{path}; write \"docker.io/library/{path}\" for that"
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Mode, Rule};

    fn rule(scope: &str, identity: IdentityRule, source: &str) -> Rule {
        Rule {
            scope: scope.parse().expect("scope"),
            namespaces: None,
            require: Requirement::Signed,
            keys: Vec::new(),
            identities: Vec::new(),
            threshold: 1,
            identity,
            mode: Mode::Enforce,
            source: PathBuf::from(source),
            message: None,
            signatures_from: None,
            line: None,
        }
    }

    #[test]
    fn a_hub_scope_with_one_name_warns_and_a_qualified_one_does_not() {
        let policy = Policy::from_rules(vec![
            rule("docker.io/nginx", IdentityRule::MatchRepository, "/p/a.toml"),
            rule("docker.io/library/nginx", IdentityRule::MatchRepository, "/p/a.toml"),
            rule("docker.io/bitnami/redis", IdentityRule::MatchRepository, "/p/a.toml"),
            rule("quay.io/nginx", IdentityRule::MatchRepository, "/p/a.toml"),
        ]);
        let warnings = warnings(&policy, Path::new("/nonexistent"), None);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].message.contains("docker.io/library/nginx"), "{}", warnings[0]);
        assert_eq!(warnings[0].to_string().split(": ").next(), Some("warning"));
    }

    #[test]
    fn a_policy_json_rule_without_a_tag_friendly_identity_warns() {
        let json = Path::new("/etc/containers/policy.json");
        let policy = Policy::from_rules(vec![
            rule("r.example/a", IdentityRule::MatchRepoDigestOrExact, "/etc/containers/policy.json"),
            rule("r.example/b", IdentityRule::MatchRepository, "/etc/containers/policy.json"),
            // Written in TOML, the identity is a deliberate choice.
            rule("r.example/c", IdentityRule::MatchRepoDigestOrExact, "/p/a.toml"),
        ]);
        let warnings = warnings(&policy, Path::new("/nonexistent"), Some(json));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].message.starts_with("scope \"r.example/a\": signedIdentity"), "{}", warnings[0]);
    }

    #[test]
    fn a_loopback_or_hub_host_is_noted_once_with_its_other_spellings() {
        let policy = Policy::from_rules(vec![
            rule("127.0.0.1:5000/a", IdentityRule::MatchRepository, "/p/a.toml"),
            rule("localhost:5000/b", IdentityRule::MatchRepository, "/p/b.toml"),
            rule("registry.example/c", IdentityRule::MatchRepository, "/p/c.toml"),
            rule("docker.io/library/nginx", IdentityRule::MatchRepository, "/p/d.toml"),
        ]);
        let notes: Vec<String> = alias_notes(&policy).iter().map(ToString::to_string).collect();
        assert_eq!(
            notes,
            [
                "note: /p/a.toml: scopes on \"127.0.0.1:5000\" also cover localhost:5000, [::1]:5000",
                "note: /p/d.toml: scopes on \"docker.io\" also cover index.docker.io, registry-1.docker.io",
            ]
        );
    }

    #[test]
    fn files_that_look_like_policy_are_named_and_others_are_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        for name in ["10-a.toml", "policy.json", "20-extra.TOML", "30-extra.yaml", "README", "a.toml~", ".b.toml.swp"] {
            fs::write(dir.path().join(name), "").expect("write");
        }
        let named: Vec<String> = warnings(&Policy::default(), dir.path(), None)
            .iter()
            .map(|w| format!("{}", w.file.file_name().unwrap().to_string_lossy()))
            .collect();
        assert_eq!(named, ["20-extra.TOML", "30-extra.yaml", "policy.json"]);
    }
}
