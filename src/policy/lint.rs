//! What a loaded policy may not mean what its author meant: files in `policy_dir` that look
//! like policy but are never read, and rules that load but cannot do what they seem to say.
//! Warnings, not load errors: each of these can be intended, and the daemon must not refuse
//! to start over one. `policy check` prints them and `serve` logs them.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use super::{IdentityRule, Policy, Requirement, RootSource, Scope};
use crate::verify::keyless::{self, root::Authority};

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
    /// A trusted root in force that stops working soon, or has no certificate authority valid now.
    Root,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.kind {
            WarningKind::Ignored => "ignored",
            WarningKind::Rule => "warning",
            WarningKind::Alias => "note",
            WarningKind::Root => "warning",
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
    warnings.extend(root_warnings(&roots_in_force(policy), jiff::Timestamp::now()));
    warnings
}

/// A trusted root some rule verifies keyless signatures against.
pub struct RootInForce {
    /// As `CertificateTrust::root_label` names it.
    pub label: String,
    pub source: RootSource,
    /// The file its warnings are reported against: the root file, the policy.json it was built
    /// from, or (for the built-in root) the first file with a rule using it.
    pub file: PathBuf,
    pub authorities: Vec<Authority>,
    /// How many rules use it.
    pub rules: usize,
}

/// Every distinct trusted root the rules use, in the order rules first name them.
pub fn roots_in_force(policy: &Policy) -> Vec<RootInForce> {
    let mut roots: Vec<RootInForce> = Vec::new();
    for rule in policy.rules() {
        let mut counted = BTreeSet::new();
        for trust in rule.identities.iter().map(|signer| &signer.trust) {
            let label = trust.root_label();
            if !counted.insert(label.clone()) {
                continue;
            }
            match roots.iter_mut().find(|root| root.label == label) {
                Some(root) => root.rules += 1,
                None => roots.push(RootInForce {
                    file: match &trust.source {
                        RootSource::File(path) | RootSource::PolicyJson { policy_json: path, .. } => path.clone(),
                        RootSource::BuiltIn => rule.source.clone(),
                    },
                    label,
                    source: trust.source.clone(),
                    authorities: trust.root.authorities().to_vec(),
                    rules: 1,
                }),
            }
        }
    }
    roots
}

/// What to act on in the roots in force at `now` (see `keyless::root::warnings`).
pub fn root_warnings(roots: &[RootInForce], now: jiff::Timestamp) -> Vec<Warning> {
    let warn = |root: &RootInForce, message: String| Warning {
        file: root.file.clone(),
        kind: WarningKind::Root,
        message: format!("trusted root {}: {message}", root.label),
    };
    roots
        .iter()
        .flat_map(|root| keyless::root::warnings(&root.authorities, now).into_iter().map(move |m| warn(root, m)))
        .collect()
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

/// The trusted roots keyless rules name: listed once each, warned about before they stop
/// working, and hostile root files refused at load.
#[cfg(test)]
mod trusted_roots {
    use sigstore_verify::trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT;

    use super::*;
    use crate::policy::PolicyError;
    use crate::policy::test_support::TestDir;
    use crate::verify::keyless::MAX_TRUSTED_ROOT_BYTES;

    /// A rule for `scope` trusting one keyless signer, against `root` (a path relative to
    /// policy.d) or the built-in root.
    fn rule(scope: &str, root: Option<&str>) -> String {
        let root = root.map(|r| format!("trusted_root = {r:?}\n")).unwrap_or_default();
        format!(
            "[[rule]]\nscope = \"{scope}\"\nrequire = \"signed\"\n{root}identities = [{{ issuer = \"https://i.example\", subject = \"a@example.com\" }}]\n"
        )
    }

    fn load(dir: &TestDir, rules: &[&str]) -> Result<Policy, PolicyError> {
        dir.write("policy.d/a.toml", &rules.concat());
        Policy::load(&dir.path("policy.d"), None)
    }

    /// The public-good root with every CA's window ending at `end` (None: no CA at all).
    fn root_with_cas_ending(end: Option<jiff::Timestamp>) -> String {
        let mut root: serde_json::Value = serde_json::from_str(SIGSTORE_PRODUCTION_TRUSTED_ROOT).unwrap();
        let cas = root["certificateAuthorities"].as_array_mut().unwrap();
        match end {
            Some(end) => cas.iter_mut().for_each(|ca| ca["validFor"]["end"] = end.to_string().into()),
            None => cas.clear(),
        }
        root.to_string()
    }

    fn days_from_now(days: i64) -> jiff::Timestamp {
        jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * days)
    }

    #[test]
    fn each_root_in_force_is_listed_once_with_the_rules_using_it() {
        let dir = TestDir::new();
        dir.write("policy.d/roots/staging.json", sigstore_verify::trust_root::SIGSTORE_STAGING_TRUSTED_ROOT);
        let rules = [rule("r.io/a", None), rule("r.io/b", Some("roots/staging.json")), rule("r.io/c", None)];
        let policy = load(&dir, &rules.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        let roots = roots_in_force(&policy);
        let listed: Vec<(&str, usize)> = roots.iter().map(|r| (r.label.as_str(), r.rules)).collect();
        let staging = dir.path("policy.d/roots/staging.json");
        assert_eq!(listed, [("the built-in Sigstore public-good root", 2), (staging.to_str().unwrap(), 1)]);
        assert_eq!((&roots[0].source, &roots[0].file), (&RootSource::BuiltIn, &dir.path("policy.d/a.toml")));
        assert_eq!(roots[1].file, staging);
        assert!(roots.iter().all(|r| !r.authorities.is_empty()));
        // A policy without keyless rules has no root in force.
        let keys_only = load(&dir, &["[[rule]]\nscope = \"*\"\nrequire = \"reject\"\n"]).unwrap();
        assert!(roots_in_force(&keys_only).is_empty());
    }

    #[test]
    fn a_root_ending_soon_an_expired_root_and_a_root_without_a_ca_are_warned_about() {
        let dir = TestDir::new();
        dir.write("policy.d/soon.json", &root_with_cas_ending(Some(days_from_now(10))));
        dir.write("policy.d/expired.json", &root_with_cas_ending(Some("2023-01-01T00:00:00Z".parse().unwrap())));
        dir.write("policy.d/no-ca.json", &root_with_cas_ending(None));
        let rules = [
            rule("r.io/soon", Some("soon.json")),
            rule("r.io/old", Some("expired.json")),
            rule("r.io/none", Some("no-ca.json")),
        ];
        let policy = load(&dir, &rules.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        let found: Vec<Warning> = warnings(&policy, &dir.path("policy.d"), None)
            .into_iter()
            .filter(|w| w.kind == WarningKind::Root)
            .collect();
        let about = |name: &str| -> Vec<&str> {
            found
                .iter()
                .filter(|w| w.file == dir.path(&format!("policy.d/{name}")))
                .map(|w| w.message.as_str())
                .collect()
        };
        let soon = about("soon.json");
        assert_eq!(soon.len(), 2, "{found:?}");
        assert!(
            soon.iter().all(|m| m.contains("certificate authority https://fulcio.sigstore.dev: stops being valid on"))
        );
        assert!(soon[0].contains("(in 9 days)") || soon[0].contains("(in 10 days)"), "{soon:?}");
        assert_eq!(about("expired.json").len(), 1, "{found:?}");
        assert!(
            about("expired.json")[0]
                .contains("no certificate authority is valid now (the last one ended on 2023-01-01)")
        );
        assert_eq!(
            about("no-ca.json"),
            [format!(
                "trusted root {}: no certificate authority is valid now: no signing certificate can verify against this root",
                dir.path("policy.d/no-ca.json").display()
            )]
        );
        // The built-in root, valid for years, is not warned about.
        let built_in = load(&dir, &[&rule("r.io", None)]).unwrap();
        let about_roots =
            warnings(&built_in, &dir.path("policy.d"), None).into_iter().filter(|w| w.kind == WarningKind::Root);
        assert_eq!(about_roots.count(), 0);
    }

    #[test]
    fn hostile_trusted_root_files_are_refused_at_load_naming_them() {
        let dir = TestDir::new();
        let fifo = dir.path("policy.d/fifo.json");
        dir.write("policy.d/README", "");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        dir.write("policy.d/huge.json", &" ".repeat(MAX_TRUSTED_ROOT_BYTES as usize + 1));
        dir.write("policy.d/not-json.json", "mediaType: yaml");
        dir.write("policy.d/empty-object.json", "{}");
        dir.write("policy.d/real.json", SIGSTORE_PRODUCTION_TRUSTED_ROOT);
        std::os::unix::fs::symlink("real.json", dir.path("policy.d/link.json")).unwrap();
        std::os::unix::fs::symlink("fifo.json", dir.path("policy.d/link-to-fifo.json")).unwrap();
        let cases = [
            ("fifo.json", "is a FIFO (named pipe), not a regular file"),
            ("huge.json", "is larger than 1 MiB, the limit for a trusted root"),
            ("not-json.json", "unusable:"),
            ("empty-object.json", "unusable:"),
            ("link-to-fifo.json", "is a FIFO (named pipe), not a regular file"),
            ("missing.json", "cannot open"),
        ];
        for (name, needle) in cases {
            let (done, result) = std::sync::mpsc::channel();
            let text = rule("r.io", Some(name));
            let policy_dir = dir.path("policy.d");
            std::fs::write(policy_dir.join("a.toml"), &text).unwrap();
            // On another thread: a load that blocks must fail the test, not hang it.
            std::thread::spawn(move || done.send(Policy::load(&policy_dir, None)));
            let loaded = result.recv_timeout(std::time::Duration::from_secs(5)).expect("load finished");
            let err = loaded.err().unwrap_or_else(|| panic!("{name} loaded"));
            let expected = format!("trusted root {}: {needle}", dir.path(&format!("policy.d/{name}")).display());
            assert!(err.to_string().contains(&expected), "{name}: {err}");
        }
        // A symlink to a regular file is followed, as ConfigMap mounts need.
        let policy = load(&dir, &[&rule("r.io", Some("link.json"))]).unwrap();
        assert_eq!(roots_in_force(&policy)[0].source, RootSource::File(dir.path("policy.d/link.json")));
    }
}
