//! A containers-policy.json(5) file, for nodes that already have one.
//!
//! Read: `default` and `transports.docker`, each scope with a list of requirements of type
//! `insecureAcceptAnything`, `reject` or `sigstoreSigned` with public keys (`keyPath`,
//! `keyPaths`, `keyData`, `keyDatas`; base64 of PEM for the data forms) or a Fulcio CA with
//! Rekor keys (`fulcio`, see `certificates`), and `signedIdentity`. Other transports are
//! ignored: they never apply to a CRI pull.
//!
//! Refused with a load error, never silently accepted: every other requirement type
//! (`signedBy`, `signedBaseLayer`, …), `pki` and Rekor keys beside public keys (pullgate cannot
//! check them as containers/image does), `exactReference` identities, `sigstoreSigned`
//! requirements of one scope with different identities, unknown or duplicate fields.
//!
//! Mapping, as CRI-O and Podman (containers/image) evaluate a list: every requirement must
//! hold. A `reject` anywhere rejects; `insecureAcceptAnything` adds nothing to the others; each
//! `sigstoreSigned` becomes a group satisfied by any one of its keys (or by its Fulcio signer),
//! and the rule needs every group. A missing `signedIdentity` means matchRepoDigestOrExact (containers' default,
//! which cosign's tagless signatures only satisfy for pulls by digest); relative key paths are
//! taken relative to the policy.json's directory; `transports.docker[""]`, being more specific
//! for docker images, replaces `default` entirely.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::identity::IdentityRule;
use super::input;
use super::load::{self, Loader, line_of};
use super::{KeyRef, Mode, Requirement, Rule, Scope, SignerIdentity};

mod certificates;

// === raw serde types ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy<'a> {
    #[serde(borrow)]
    default: Option<&'a RawValue>,
    #[serde(borrow)]
    transports: Option<Entries<'a>>,
}

/// A JSON object kept in document order, refusing duplicate keys (as containers/image does;
/// serde_json alone would let the last duplicate silently win).
struct Entries<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Entries<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EntriesVisitor)
    }
}

struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Entries<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<'de>, A::Error> {
        let mut entries: Vec<(String, &'de RawValue)> = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, &'de RawValue>()? {
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            entries.push((key, value));
        }
        Ok(Entries(entries))
    }
}

#[derive(Deserialize)]
struct TypeOnly {
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// `insecureAcceptAnything` and `reject` take no other field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Bare {
    #[serde(rename = "type")]
    _kind: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSigstore<'a> {
    #[serde(rename = "type")]
    _kind: String,
    key_path: Option<String>,
    key_paths: Option<Vec<String>>,
    key_data: Option<String>,
    key_datas: Option<Vec<String>>,
    signed_identity: Option<RawSignedIdentity>,
    // Kept raw, and present even when null (which is then refused as not an object).
    #[serde(default, borrow, deserialize_with = "present")]
    fulcio: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    pki: Option<&'a RawValue>,
    rekor_public_key_path: Option<String>,
    rekor_public_key_paths: Option<Vec<String>>,
    rekor_public_key_data: Option<String>,
    rekor_public_key_datas: Option<Vec<String>>,
}

fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(deserializer).map(Some)
}

#[derive(Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
enum RawSignedIdentity {
    #[serde(rename = "matchExact")]
    MatchExact {},
    #[serde(rename = "matchRepoDigestOrExact")]
    MatchRepoDigestOrExact {},
    #[serde(rename = "matchRepository")]
    MatchRepository {},
    #[serde(rename = "exactReference", rename_all = "camelCase")]
    ExactReference {
        #[allow(dead_code)] // only its presence matters: it is refused
        docker_reference: String,
    },
    #[serde(rename = "exactRepository", rename_all = "camelCase")]
    ExactRepository { docker_repository: String },
    #[serde(rename = "remapIdentity", rename_all = "camelCase")]
    RemapIdentity { prefix: String, signed_prefix: String },
}

/// The transports containers-policy.json(5) defines; only `docker` applies to a CRI pull.
const TRANSPORTS: [&str; 11] = [
    "docker",
    "atomic",
    "containers-storage",
    "dir",
    "docker-archive",
    "docker-daemon",
    "oci",
    "oci-archive",
    "ostree",
    "sif",
    "tarball",
];

// === loading ===

pub(super) fn load_file(path: &Path, loader: &mut Loader) {
    match input::read_policy_file(path) {
        Ok(text) => JsonCtx { path, text: &text, loader }.load(),
        Err(e) => loader.problem(path, None, e),
    }
}

struct JsonCtx<'a> {
    path: &'a Path,
    text: &'a str,
    loader: &'a mut Loader,
}

// === impl JsonCtx: document structure ===

impl<'a> JsonCtx<'a> {
    fn problem(&mut self, line: Option<usize>, message: impl Into<String>) {
        self.loader.problem(self.path, line, message);
    }

    /// Line where `raw` starts. RawValue borrows from `self.text`, so its address gives
    /// its offset; this is what lets policy.json errors carry line numbers.
    fn line(&self, raw: &RawValue) -> Option<usize> {
        let offset = (raw.get().as_ptr() as usize).checked_sub(self.text.as_ptr() as usize)?;
        let inside = offset.checked_add(raw.get().len()).is_some_and(|end| end <= self.text.len());
        inside.then(|| line_of(self.text, offset))
    }

    /// Report a serde_json error found while parsing the fragment `raw`.
    fn json_problem(&mut self, raw: Option<&RawValue>, context: &str, e: &serde_json::Error) {
        let base = raw.and_then(|r| self.line(r)).unwrap_or(1);
        let line = (e.line() > 0).then(|| base + e.line() - 1);
        let serde = e.to_string().replace(&format!(" at line {} column {}", e.line(), e.column()), "");
        let mut message = format!("{context}{}", crate::error_text::plain(&serde));
        // serde_json meets `,}` as a key that is not a string.
        if message.ends_with("key must be a string") {
            message.push_str(" (a trailing comma before \"}\"? JSON allows none)");
        }
        self.problem(line, message);
    }

    fn load(mut self) {
        let text = self.text;
        let raw: RawPolicy<'_> = match serde_json::from_str(text) {
            Ok(raw) => raw,
            Err(e) => return self.json_problem(None, "", &e),
        };
        let docker = raw.transports.map(|t| self.docker_scopes(t)).unwrap_or_default();
        let transport_default = docker.iter().any(|(scope, _)| scope.is_empty());
        match raw.default {
            None => self.problem(None, "\"default\" is missing (containers-policy.json requires it)"),
            Some(_) if transport_default => {} // transports.docker[""] replaces it
            Some(value) => self.scope(Scope::Default, value),
        }
        for (key, value) in docker {
            self.scope_key(&key, value);
        }
    }

    fn docker_scopes(&mut self, transports: Entries<'a>) -> Vec<(String, &'a RawValue)> {
        // A misspelt "docker" would otherwise leave its scopes out without a word.
        for (name, value) in transports.0.iter().filter(|(name, _)| !TRANSPORTS.contains(&name.as_str())) {
            let line = self.line(value);
            self.problem(
                line,
                format!("unknown transport {name:?} (containers-policy.json(5) knows {})", TRANSPORTS.join(", ")),
            );
        }
        let Some((_, docker)) = transports.0.into_iter().find(|(name, _)| name == "docker") else {
            return Vec::new();
        };
        match serde_json::from_str::<Entries<'a>>(docker.get()) {
            Ok(entries) => entries.0,
            Err(e) => {
                self.json_problem(Some(docker), "transports.docker: ", &e);
                Vec::new()
            }
        }
    }

    fn scope_key(&mut self, key: &str, value: &RawValue) {
        let line = self.line(value);
        let parsed = match key {
            "" => Ok(Scope::Default),
            // In containers/image "*" never matches a docker image; refuse the likely mistake.
            "*" => Err("scope \"*\" is not a containers-policy.json scope; use \"\" or \"default\"".to_owned()),
            _ => key.parse::<Scope>().map_err(|e| e.to_string()),
        };
        match parsed {
            Ok(scope) => self.scope(scope, value),
            Err(e) => self.problem(line, e),
        }
    }

    fn scope(&mut self, scope: Scope, value: &RawValue) {
        let line = self.line(value);
        let list: Vec<&RawValue> = match serde_json::from_str(value.get()) {
            Ok(list) => list,
            Err(e) => return self.json_problem(Some(value), &format!("scope \"{scope}\": "), &e),
        };
        if list.is_empty() {
            return self.problem(line, format!("scope \"{scope}\" has no requirement"));
        }
        // Every requirement is read, so that all problems in the list are reported together.
        let read: Vec<Option<Read>> = list.iter().map(|raw| self.requirement(raw)).collect();
        if let Some(all) = read.into_iter().collect::<Option<Vec<Read>>>() {
            self.combine(scope, line, all);
        }
    }
}

// === impl JsonCtx: requirements ===

/// One requirement of a scope's list, as read.
enum Read {
    Accept,
    Reject,
    /// One group: a signature by any of `keys`, or by a `fulcio` signer, satisfies it.
    Signed {
        keys: Vec<KeyRef>,
        signers: Vec<SignerIdentity>,
        identity: IdentityRule,
    },
}

impl JsonCtx<'_> {
    /// None when the requirement has a problem (already reported).
    fn requirement(&mut self, raw: &RawValue) -> Option<Read> {
        let line = self.line(raw);
        let kind = match serde_json::from_str::<TypeOnly>(raw.get()) {
            Ok(TypeOnly { kind: Some(kind) }) => kind,
            Ok(TypeOnly { kind: None }) => {
                self.problem(line, "requirement has no \"type\"");
                return None;
            }
            Err(e) => {
                self.json_problem(Some(raw), "requirement: ", &e);
                return None;
            }
        };
        match kind.as_str() {
            "insecureAcceptAnything" => self.bare(raw, Read::Accept),
            "reject" => self.bare(raw, Read::Reject),
            "sigstoreSigned" => self.sigstore(raw),
            other => {
                let message = format!(
                    "requirement type {other:?} is not supported (pullgate supports insecureAcceptAnything, reject and sigstoreSigned)"
                );
                self.problem(line, message);
                None
            }
        }
    }

    fn bare(&mut self, raw: &RawValue, read: Read) -> Option<Read> {
        match serde_json::from_str::<Bare>(raw.get()) {
            Ok(_) => Some(read),
            Err(e) => {
                self.json_problem(Some(raw), "", &e);
                None
            }
        }
    }

    fn sigstore(&mut self, raw: &RawValue) -> Option<Read> {
        let line = self.line(raw);
        let before = self.loader.problem_count();
        let mut sig: RawSigstore<'_> = match serde_json::from_str(raw.get()) {
            Ok(sig) => sig,
            Err(e) => {
                self.json_problem(Some(raw), "sigstoreSigned: ", &e);
                return None;
            }
        };
        let identity = self.identity(sig.signed_identity.take(), line);
        let rekor = certificates::RekorKeys {
            path: sig.rekor_public_key_path.take(),
            paths: sig.rekor_public_key_paths.take(),
            data: sig.rekor_public_key_data.take(),
            datas: sig.rekor_public_key_datas.take(),
        };
        let key_forms =
            [sig.key_path.is_some(), sig.key_paths.is_some(), sig.key_data.is_some(), sig.key_datas.is_some()];
        let key_forms = key_forms.iter().filter(|given| **given).count();
        if !self.check_sources(line, key_forms, sig.fulcio.is_some(), sig.pki.is_some(), &rekor) {
            return None;
        }
        let (keys, signers): (Vec<KeyRef>, Vec<SignerIdentity>) = match (sig.fulcio, sig.pki) {
            (Some(fulcio), _) => (Vec::new(), self.fulcio(fulcio, &rekor, line).into_iter().collect()),
            (None, Some(pki)) => (Vec::new(), self.pki(pki, line).into_iter().collect()),
            (None, None) => (self.keys(&sig, line), Vec::new()),
        };
        if let Err(e) = load::check_distinct_keys(&keys) {
            self.problem(line, e);
        }
        (self.loader.problem_count() == before).then_some(Read::Signed { keys, signers, identity })
    }

    fn identity(&mut self, raw: Option<RawSignedIdentity>, line: Option<usize>) -> IdentityRule {
        let built = match raw {
            None | Some(RawSignedIdentity::MatchRepoDigestOrExact {}) => Ok(IdentityRule::MatchRepoDigestOrExact),
            Some(RawSignedIdentity::MatchExact {}) => Ok(IdentityRule::MatchExact),
            Some(RawSignedIdentity::MatchRepository {}) => Ok(IdentityRule::MatchRepository),
            Some(RawSignedIdentity::ExactRepository { docker_repository }) => {
                IdentityRule::exact_repository(&docker_repository).map_err(|e| e.to_string())
            }
            Some(RawSignedIdentity::RemapIdentity { prefix, signed_prefix }) => {
                IdentityRule::remap(&prefix, &signed_prefix).map_err(|e| e.to_string())
            }
            Some(RawSignedIdentity::ExactReference { .. }) => Err("\"exactReference\" is not supported".to_owned()),
        };
        built.unwrap_or_else(|e| {
            self.problem(line, format!("signedIdentity: {e}"));
            IdentityRule::MatchRepoDigestOrExact
        })
    }
}

// === impl JsonCtx: a scope's requirements → one rule ===

impl JsonCtx<'_> {
    /// As containers/image evaluates a list: every requirement must hold. So one `reject`
    /// rejects; `insecureAcceptAnything` adds nothing; each `sigstoreSigned` is a key group
    /// and all are needed.
    fn combine(&mut self, scope: Scope, line: Option<usize>, list: Vec<Read>) {
        if list.iter().any(|read| matches!(read, Read::Reject)) {
            return self.push(
                scope,
                line,
                Requirement::Reject,
                Trusted::default(),
                IdentityRule::MatchRepoDigestOrExact,
            );
        }
        let groups: Vec<(Trusted, IdentityRule)> = list
            .into_iter()
            .filter_map(|read| match read {
                Read::Signed { keys, signers, identity } => Some((Trusted { keys, signers, threshold: 1 }, identity)),
                Read::Accept | Read::Reject => None,
            })
            .collect();
        let Some(identity) = groups.first().map(|(_, identity)| identity.clone()) else {
            return self.push(
                scope,
                line,
                Requirement::Accept,
                Trusted::default(),
                IdentityRule::MatchRepoDigestOrExact,
            );
        };
        // Why refuse: a rule checks one identity for all its signatures; applying the first
        // requirement's to all would accept or refuse what containers/image would not.
        if groups.iter().any(|(_, other)| *other != identity) {
            let message = format!(
                "scope \"{scope}\": its sigstoreSigned requirements have different \"signedIdentity\" values; pullgate supports one signedIdentity per scope"
            );
            return self.problem(line, message);
        }
        let mut all = Trusted { threshold: groups.len(), ..Trusted::default() };
        for (group, (trusted, _)) in groups.into_iter().enumerate() {
            all.keys.extend(trusted.keys.into_iter().map(|key| KeyRef { group, ..key }));
            all.signers.extend(trusted.signers.into_iter().map(|signer| SignerIdentity { group, ..signer }));
        }
        self.push(scope, line, Requirement::Signed, all, identity);
    }

    fn push(
        &mut self,
        scope: Scope,
        line: Option<usize>,
        require: Requirement,
        trusted: Trusted,
        identity: IdentityRule,
    ) {
        let source = self.path.to_owned();
        let rule = Rule {
            scope,
            namespaces: None,
            require,
            keys: trusted.keys,
            identities: trusted.signers,
            threshold: trusted.threshold,
            identity,
            mode: Mode::Enforce,
            source,
            message: None,
            signatures_from: None,
            line: None,
        };
        self.loader.push(rule, line);
    }
}

/// What a rule built from a scope trusts: keys and keyless signers, each in its group, and how
/// many groups it needs.
#[derive(Default)]
struct Trusted {
    keys: Vec<KeyRef>,
    signers: Vec<SignerIdentity>,
    threshold: usize,
}

// === impl JsonCtx: keys ===

impl JsonCtx<'_> {
    /// The keys of a requirement giving exactly one key form (`check_sources` made sure).
    fn keys(&mut self, sig: &RawSigstore<'_>, line: Option<usize>) -> Vec<KeyRef> {
        let message = if sig.key_paths.as_ref().is_some_and(Vec::is_empty) {
            "sigstoreSigned: keyPaths is empty"
        } else if sig.key_datas.as_ref().is_some_and(Vec::is_empty) {
            "sigstoreSigned: keyDatas is empty"
        } else {
            return self.load_keys(sig, line);
        };
        self.problem(line, message);
        Vec::new()
    }

    fn load_keys(&mut self, sig: &RawSigstore<'_>, line: Option<usize>) -> Vec<KeyRef> {
        let mut keys = Vec::new();
        for path in sig.key_path.iter().chain(sig.key_paths.iter().flatten()) {
            match self.loader.key_file(&load::resolve(self.path, path)) {
                Ok(key) => keys.push(key),
                Err(e) => self.problem(line, e),
            }
        }
        for (i, data) in sig.key_data.iter().chain(sig.key_datas.iter().flatten()).enumerate() {
            match decode_key_data(data) {
                Ok(key) => keys.push(key),
                Err(e) => self.problem(line, format!("keyData #{}: {e}", i + 1)),
            }
        }
        keys
    }
}

fn decode_key_data(data: &str) -> Result<KeyRef, String> {
    if data.trim_start().starts_with("-----BEGIN") {
        return Err("is PEM text; keyData takes the PEM file base64-encoded (`base64 -w0 FILE`), or use keyPath".into());
    }
    let pem = BASE64.decode(data.trim()).map_err(|e| format!("not valid base64 ({e})"))?;
    let key = load::parse_key(&pem)?;
    Ok(KeyRef { path: None, key, group: 0 })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{KEY_A, KEY_B, KEY_ED, TestDir};
    use super::super::{Policy, PolicyError};
    use super::*;

    /// A dir with keys/{a,b,ed}.pub, an empty policy.d/ and policy.json holding `json`.
    fn setup(json: &str) -> TestDir {
        let dir = TestDir::new();
        dir.write("keys/a.pub", KEY_A);
        dir.write("keys/b.pub", KEY_B);
        dir.write("keys/ed.pub", KEY_ED);
        dir.write("policy.d/README", "");
        dir.write("policy.json", json);
        dir
    }

    fn load(dir: &TestDir) -> Result<Policy, PolicyError> {
        Policy::load(&dir.path("policy.d"), Some(&dir.path("policy.json")))
    }

    fn load_err(json: &str) -> PolicyError {
        match load(&setup(json)) {
            Ok(p) => panic!("loaded {} rules, expected an error", p.rules().len()),
            Err(e) => e,
        }
    }

    fn assert_one(err: &PolicyError, line: Option<usize>, needle: &str) {
        assert_eq!(err.problems.len(), 1, "{err}");
        let p = &err.problems[0];
        assert!(p.file.ends_with("policy.json"), "{err}");
        assert_eq!(p.line, line, "{err}");
        assert!(p.message.contains(needle), "{err}");
    }

    /// `{"default": [reject], "transports": {"docker": {scope: [req]}}}` on separate lines;
    /// the requirement sits on line 4.
    #[test]
    fn a_misspelt_transport_and_pem_in_key_data_say_what_is_wrong() {
        let json = "{\n\"default\": [{\"type\": \"reject\"}],\n\"transports\": {\"dokcer\": {}, \"oci\": {}}\n}\n";
        assert_one(&load_err(json), Some(3), "unknown transport \"dokcer\"");
        let pem = serde_json::to_string(KEY_A).unwrap();
        let err = load_err(&with_scope("r.io", &format!("{{\"type\": \"sigstoreSigned\", \"keyData\": {pem}}}")));
        assert!(err.to_string().contains("is PEM text; keyData takes the PEM file base64-encoded"), "{err}");
        let trailing = "{\n\"default\": [{\"type\": \"reject\"}],\n\"transports\": {\"docker\": {\n\"r.io\": [{\"type\": \"reject\"}],\n}}}\n";
        assert_one(
            &load_err(trailing),
            Some(5),
            "key must be a string (a trailing comma before \"}\"? JSON allows none)",
        );
    }

    fn with_scope(scope: &str, requirement: &str) -> String {
        format!(
            "{{\n\"default\": [{{\"type\": \"reject\"}}],\n\"transports\": {{\"docker\": {{\n  {scope:?}: [{requirement}]\n}}}}}}\n"
        )
    }

    fn b64(s: &str) -> String {
        BASE64.encode(s)
    }

    /// A policy.json exercising every supported form; `abs` is an absolute key path.
    fn full_json(abs: &Path) -> String {
        format!(
            r#"{{
  "default": [{{"type": "reject"}}],
  "transports": {{
    "docker": {{
      "r.io/abs": [{{"type": "sigstoreSigned", "keyPath": {abs:?}}}],
      "r.io/rel": [{{"type": "sigstoreSigned", "keyPath": "keys/b.pub", "signedIdentity": {{"type": "matchRepository"}}}}],
      "r.io/many": [{{"type": "sigstoreSigned", "keyPaths": ["keys/a.pub", "keys/ed.pub"]}}],
      "r.io/data": [{{"type": "sigstoreSigned", "keyData": "{}"}}],
      "r.io/datas": [{{"type": "sigstoreSigned", "keyDatas": ["{}", "{}"]}}],
      "*.trusted.io": [{{"type": "insecureAcceptAnything"}}],
      "docker.io/library/busybox:1": [{{"type": "reject"}}]
    }},
    "containers-storage": {{"": [{{"type": "signedBy", "keyType": "GPGKeys"}}]}}
  }}
}}"#,
            b64(KEY_A),
            b64(KEY_A),
            b64(KEY_B)
        )
    }

    #[test]
    fn full_policy() {
        let dir = setup("");
        let abs = dir.path("keys/a.pub");
        let json = full_json(&abs);
        dir.write("policy.json", &json);
        let policy = load(&dir).unwrap();
        let rules = policy.rules();
        let summary: Vec<_> =
            rules.iter().map(|r| (r.scope.to_string(), r.require, r.keys.len(), r.threshold)).collect();
        let expect = [
            ("*", Requirement::Reject, 0, 0),
            ("r.io/abs", Requirement::Signed, 1, 1),
            ("r.io/rel", Requirement::Signed, 1, 1),
            ("r.io/many", Requirement::Signed, 2, 1),
            ("r.io/data", Requirement::Signed, 1, 1),
            ("r.io/datas", Requirement::Signed, 2, 1),
            ("*.trusted.io", Requirement::Accept, 0, 0),
            ("docker.io/library/busybox:1", Requirement::Reject, 0, 0),
        ];
        let expect: Vec<_> = expect.iter().map(|(s, r, k, t)| (s.to_string(), *r, *k, *t)).collect();
        assert_eq!(summary, expect);
        assert_eq!(rules[1].identity, IdentityRule::MatchRepoDigestOrExact, "containers' default");
        assert_eq!(rules[2].identity, IdentityRule::MatchRepository);
        assert_eq!(rules[2].keys[0].path.as_deref(), Some(dir.path("keys/b.pub").as_path()), "relative to policy.json");
        assert!(rules[4].keys[0].path.is_none(), "inline key has no path");
        assert!(rules.iter().all(|r| r.mode == Mode::Enforce && r.namespaces.is_none()));
    }

    #[test]
    fn transport_default_replaces_global_default() {
        let json = r#"{"default": [{"type": "insecureAcceptAnything"}], "transports": {"docker": {"": [{"type": "reject"}]}}}"#;
        let policy = load(&setup(json)).unwrap();
        assert_eq!(policy.rules().len(), 1);
        assert_eq!((policy.rules()[0].scope.clone(), policy.rules()[0].require), (Scope::Default, Requirement::Reject));
    }

    #[test]
    fn signed_identities() {
        let cases = [
            (r#"{"type": "matchExact"}"#, IdentityRule::MatchExact),
            (r#"{"type": "matchRepoDigestOrExact"}"#, IdentityRule::MatchRepoDigestOrExact),
            (r#"{"type": "matchRepository"}"#, IdentityRule::MatchRepository),
            (
                r#"{"type": "exactRepository", "dockerRepository": "v.io/app"}"#,
                IdentityRule::ExactRepository("v.io/app".into()),
            ),
            (
                r#"{"type": "remapIdentity", "prefix": "m.io/v", "signedPrefix": "v.io"}"#,
                IdentityRule::Remap { prefix: "m.io/v".into(), signed_prefix: "v.io".into() },
            ),
        ];
        for (identity, expected) in cases {
            let req = format!(r#"{{"type": "sigstoreSigned", "keyPath": "keys/a.pub", "signedIdentity": {identity}}}"#);
            let policy = load(&setup(&with_scope("r.io", &req))).unwrap();
            assert_eq!(policy.rules()[1].identity, expected, "{identity}");
        }
    }

    #[test]
    fn bad_signed_identities() {
        let req =
            |id: &str| format!(r#"{{"type": "sigstoreSigned", "keyPath": "keys/a.pub", "signedIdentity": {id}}}"#);
        let err = load_err(&with_scope("r.io", &req(r#"{"type": "exactReference", "dockerReference": "r.io/a:v1"}"#)));
        assert_one(&err, Some(4), "\"exactReference\" is not supported");
        let err = load_err(&with_scope("r.io", &req(r#"{"type": "matchSomething"}"#)));
        assert_one(&err, Some(4), "must be one of \"matchExact\"");
        assert!(err.to_string().contains("not \"matchSomething\""), "{err}");
        let err = load_err(&with_scope("r.io", &req(r#"{"type": "matchRepository", "extra": 1}"#)));
        assert_one(&err, Some(4), "unknown key \"extra\"");
        let err = load_err(&with_scope(
            "r.io",
            &req(r#"{"type": "remapIdentity", "prefix": "busybox", "signedPrefix": "r.io"}"#),
        ));
        assert_one(&err, Some(4), "signedIdentity: remap prefix \"busybox\"");
        let err =
            load_err(&with_scope("r.io", &req(r#"{"type": "exactRepository", "dockerRepository": "r.io/a:v1"}"#)));
        assert_one(&err, Some(4), "without tag or digest");
    }

    #[test]
    fn unsupported_requirement_types_are_named() {
        for kind in ["signedBy", "signedBaseLayer", "somethingNew"] {
            let err = load_err(&with_scope("r.io", &format!(r#"{{"type": "{kind}", "keyType": "GPGKeys"}}"#)));
            assert_one(&err, Some(4), &format!("requirement type \"{kind}\" is not supported"));
        }
        let err = load_err(r#"{"default": [{"type": "signedBy"}]}"#);
        assert_one(&err, Some(1), "\"signedBy\" is not supported");
    }

    #[test]
    fn key_source_problems() {
        let cases = [
            (r#"{"type": "sigstoreSigned"}"#, "exactly one of keyPath, keyPaths"),
            (r#"{"type": "sigstoreSigned", "keyPath": "keys/a.pub", "keyData": "eA=="}"#, "exactly one of"),
            (r#"{"type": "sigstoreSigned", "keyPaths": []}"#, "keyPaths is empty"),
            (r#"{"type": "sigstoreSigned", "keyDatas": []}"#, "keyDatas is empty"),
            (r#"{"type": "sigstoreSigned", "keyPath": "keys/missing.pub"}"#, "keys/missing.pub: cannot open"),
            (r#"{"type": "sigstoreSigned", "keyData": "!!!"}"#, "keyData #1: not valid base64"),
            (r#"{"type": "sigstoreSigned", "keyData": "aGVsbG8="}"#, "keyData #1: "),
            (r#"{"type": "sigstoreSigned", "keyPaths": ["keys/a.pub", "/k/a.pub"]}"#, "/k/a.pub: cannot open"),
            (r#"{"type": "sigstoreSigned", "keyPath": "keys/a.pub", "keyType": "GPGKeys"}"#, "unknown key \"keyType\""),
        ];
        for (req, needle) in cases {
            assert_one(&load_err(&with_scope("r.io", req)), Some(4), needle);
        }
    }

    #[test]
    fn same_key_twice_is_refused() {
        let req = format!(r#"{{"type": "sigstoreSigned", "keyDatas": ["{}", "{}"]}}"#, b64(KEY_A), b64(KEY_A));
        assert_one(&load_err(&with_scope("r.io", &req)), Some(4), "are the same key");
    }

    /// Each key's group, as key file names: `[["a", "ed"], ["b"]]`.
    fn groups(rule: &Rule) -> Vec<Vec<String>> {
        let mut groups: Vec<Vec<String>> = vec![Vec::new(); rule.threshold];
        for key in &rule.keys {
            let name = key.path.as_deref().and_then(Path::file_stem).map(|s| s.to_string_lossy().into_owned());
            groups[key.group].push(name.unwrap_or_default());
        }
        groups
    }

    #[test]
    fn every_requirement_of_a_scope_must_hold() {
        let accept = r#"{"type": "insecureAcceptAnything"}"#;
        let reject = r#"{"type": "reject"}"#;
        let by = |keys: &str| {
            format!(r#"{{"type": "sigstoreSigned", {keys}, "signedIdentity": {{"type": "matchRepository"}}}}"#)
        };
        let (a, b) = (by(r#""keyPath": "keys/a.pub""#), by(r#""keyPath": "keys/b.pub""#));
        let a_or_ed = by(r#""keyPaths": ["keys/a.pub", "keys/ed.pub"]"#);
        let none: Vec<Vec<&str>> = Vec::new();
        // (requirements, the rule's requirement, its key groups)
        type Case<'a> = (Vec<&'a str>, Requirement, Vec<Vec<&'a str>>);
        let cases: Vec<Case<'_>> = vec![
            (vec![reject, accept], Requirement::Reject, none.clone()),
            (vec![accept, reject], Requirement::Reject, none.clone()),
            (vec![&a, reject], Requirement::Reject, none.clone()),
            (vec![accept, accept], Requirement::Accept, none.clone()),
            // insecureAcceptAnything accepts only as far as the others do.
            (vec![accept, &a], Requirement::Signed, vec![vec!["a"]]),
            (vec![&a, &b], Requirement::Signed, vec![vec!["a"], vec!["b"]]),
            (vec![&a_or_ed, accept, &b], Requirement::Signed, vec![vec!["a", "ed"], vec!["b"]]),
            // Two requirements trusting one key: a signature by it satisfies both.
            (vec![&a, &a], Requirement::Signed, vec![vec!["a"], vec!["a"]]),
        ];
        for (list, require, expected) in cases {
            let policy = load(&setup(&with_scope("r.io", &list.join(", ")))).unwrap();
            let rule = &policy.rules()[1];
            assert_eq!(rule.require, require, "{list:?}");
            assert_eq!(groups(rule), expected, "{list:?}");
            assert_eq!(rule.threshold, expected.len(), "{list:?}");
            if require == Requirement::Signed {
                assert_eq!(rule.identity, IdentityRule::MatchRepository, "{list:?}");
            }
        }
    }

    #[test]
    fn problems_in_every_requirement_are_reported() {
        let list = r#"{"type": "signedBy", "keyType": "GPGKeys"}, {"type": "sigstoreSigned", "keyPath": "keys/a.pub", "pki": {}}, {"type": "reject"}"#;
        let err = load_err(&with_scope("r.io", list));
        let messages: Vec<&str> = err.problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(messages.len(), 2, "{err}");
        assert!(messages[0].contains("\"signedBy\" is not supported"), "{err}");
        assert!(messages[1].contains("exactly one of keyPath, keyPaths, keyData, keyDatas, fulcio and pki"), "{err}");
    }

    #[test]
    fn requirements_with_different_identities_are_refused_naming_the_field() {
        let list = r#"{"type": "sigstoreSigned", "keyPath": "keys/a.pub", "signedIdentity": {"type": "exactRepository", "dockerRepository": "vendor.io/product"}}, {"type": "sigstoreSigned", "keyPath": "keys/b.pub"}"#;
        let err = load_err(&with_scope("r.io", list));
        assert_one(
            &err,
            Some(4),
            "different \"signedIdentity\" values; pullgate supports one signedIdentity per scope",
        );
    }

    #[test]
    fn requirement_list_shape() {
        assert_one(&load_err(&with_scope("r.io", "")), Some(4), "scope \"r.io\" has no requirement");
        assert_one(&load_err(&with_scope("r.io", "{}")), Some(4), "requirement has no \"type\"");
        assert_one(&load_err(&with_scope("r.io", r#"{"type": "reject", "x": 1}"#)), Some(4), "unknown key \"x\"");
        let not_list = "{\"default\": [{\"type\": \"reject\"}],\n\"transports\": {\"docker\": {\"r.io\": {}}}}";
        assert_one(&load_err(not_list), Some(2), "scope \"r.io\": must be a list");
    }

    #[test]
    fn bad_scopes() {
        let reject = r#"{"type": "reject"}"#;
        assert_one(&load_err(&with_scope("busybox", reject)), Some(4), "no registry host");
        assert_one(&load_err(&with_scope("*", reject)), Some(4), "use \"\" or \"default\"");
        assert_one(&load_err(&with_scope("*.r.io:5000", reject)), Some(4), "invalid wildcard");
    }

    #[test]
    fn document_level_problems() {
        assert_one(&load_err(r#"{"transports": {}}"#), None, "\"default\" is missing");
        assert_one(
            &load_err("{\"default\": [{\"type\": \"reject\"}],\n\"extra\": 1}"),
            Some(2),
            "unknown key \"extra\"",
        );
        assert_one(&load_err("{\n\"default\": [\n{\"type\": \"reject\"},\n]}"), Some(4), "expected value");
        let dup = "{\"default\": [{\"type\": \"reject\"}],\n\"transports\": {\"docker\": {\n\"r.io\": [{\"type\": \"reject\"}],\n\"r.io\": [{\"type\": \"insecureAcceptAnything\"}]}}}";
        assert_one(&load_err(dup), Some(4), "duplicate key \"r.io\"");
    }

    #[test]
    fn duplicates_after_normalisation_and_across_formats() {
        let json = "{\"default\": [{\"type\": \"reject\"}],\n\"transports\": {\"docker\": {\n\"index.docker.io/library\": [{\"type\": \"reject\"}],\n\"docker.io/library\": [{\"type\": \"reject\"}]}}}";
        assert_one(&load_err(json), Some(4), "duplicate rule: scope \"docker.io/library\"");
        let dir = setup(r#"{"default": [{"type": "reject"}]}"#);
        dir.write("policy.d/base.toml", "[[rule]]\nscope = \"*\"\nrequire = \"accept\"\n");
        let err = load(&dir).unwrap_err();
        assert_one(&err, Some(1), "duplicate rule: scope \"*\"");
        assert!(err.problems[0].message.contains("base.toml:2"), "{err}");
    }

    #[test]
    fn line_of_fragment_is_accurate() {
        let dir = setup("{\"default\": [{\"type\": \"reject\"}]}");
        let text = "{\n\n  \"a\": [1]}";
        let raw: Entries<'_> = serde_json::from_str(text).unwrap();
        let mut loader = Loader::default();
        let ctx = JsonCtx { path: &dir.path("policy.json"), text, loader: &mut loader };
        assert_eq!(ctx.line(raw.0[0].1), Some(3));
        let other = String::from("[2]");
        let foreign = serde_json::from_str::<&RawValue>(&other).unwrap();
        assert_eq!(ctx.line(foreign), None, "a fragment of another string has no line here");
    }
}

/// The examples of containers/image's docs/containers-policy.json.5.md, as far as pullgate can
/// express them, each image judged as containers/image judges it (every requirement of the
/// most specific scope must hold). Signatures are made here; pullgate's verifier checks them.
#[cfg(test)]
mod containers_examples {
    use bytes::Bytes;
    use p256::ecdsa::signature::Signer as _;
    use p256::pkcs8::{EncodePublicKey as _, LineEnding};

    use super::super::test_support::TestDir;
    use super::super::{Policy, PolicyError};
    use super::*;
    use crate::reference::{Digest, ImageRef};
    use crate::verify::{self, SignatureLayer, payload::COSIGN_SIGNATURE_TYPE};

    const DIGEST: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const FULL: &str = "hostname:5000/myns/sigstore-signed-with-full-references";
    const SUBST: &str = "hostname:5000/myns/sigstore-signed-allows-malicious-tag-substitution";

    struct Key(p256::ecdsa::SigningKey);

    impl Key {
        fn new() -> Key {
            Key(p256::ecdsa::SigningKey::random(&mut rand_core::OsRng))
        }

        fn pem(&self) -> String {
            self.0.verifying_key().to_public_key_pem(LineEnding::LF).unwrap()
        }

        /// A cosign-format signature of DIGEST whose payload claims `identity`.
        fn sign(&self, identity: &str) -> (SignatureLayer, Bytes) {
            let payload = serde_json::to_vec(&serde_json::json!({
                "critical": {"identity": {"docker-reference": identity}, "image": {"docker-manifest-digest": DIGEST}, "type": COSIGN_SIGNATURE_TYPE},
                "optional": null,
            }))
            .unwrap();
            let signature: p256::ecdsa::Signature = self.0.sign(&payload);
            let layer = SignatureLayer {
                digest: Digest::sha256_of(&payload),
                size: payload.len() as u64,
                signature: signature.to_der().as_bytes().to_vec(),
                certificate: None,
            };
            (layer, Bytes::from(payload))
        }
    }

    /// containers/image's verdict on pulling `image` (manifest DIGEST) with `signatures`.
    fn accepted(policy: &Policy, image: &str, signatures: &[(SignatureLayer, Bytes)]) -> bool {
        let image: ImageRef = image.parse().unwrap();
        match policy.find(&image, Some("default")) {
            None => false,
            Some(rule) => match rule.require {
                Requirement::Accept => true,
                Requirement::Reject => false,
                Requirement::Signed => verify::evaluate(&image, &DIGEST.parse().unwrap(), rule, signatures).accepted,
            },
        }
    }

    fn load_json(dir: &TestDir, json: &serde_json::Value) -> Result<Policy, PolicyError> {
        dir.write("policy.d/README", "");
        dir.write("policy.json", &json.to_string());
        Policy::load(&dir.path("policy.d"), Some(&dir.path("policy.json")))
    }

    /// "A reasonably locked-down system", its comments and trailing commas removed, with its
    /// `fulcio` and `pki` scopes when `certificates` names the directory their files are in
    /// (see `the_fulcio_scope_loads…`).
    fn locked_down(key_path: &Path, certificates: Option<&Path>) -> serde_json::Value {
        let mut docker = serde_json::json!({
            "docker.io/openshift": [{"type": "insecureAcceptAnything"}],
            "docker.io/library/busybox": [{"type": "insecureAcceptAnything"}],
            "*.temporary-project.example.com": [{"type": "insecureAcceptAnything"}],
            FULL: [{"type": "sigstoreSigned", "keyPath": key_path}],
            SUBST: [{"type": "sigstoreSigned", "keyPath": key_path, "signedIdentity": {"type": "matchRepository"}}],
        });
        if let Some(dir) = certificates {
            docker["hostname:5000/myns/sigstore-signed-fulcio-rekor"] = serde_json::json!([{"type": "sigstoreSigned",
                "fulcio": {"caPath": dir.join("fulcio_v1.crt.pem"), "oidcIssuer": "https://github.com/login/oauth", "subjectEmail": "test-user@example.com"},
                "rekorPublicKeyPath": dir.join("rekor.pub")}]);
            docker["hostname:5000/myns/sigstore-signed-byopki"] = serde_json::json!([{"type": "sigstoreSigned",
                "pki": {"caRootsPath": dir.join("pki_root_crts.pem"), "subjectEmail": "test-user@example.com"}}]);
        }
        serde_json::json!({
            "default": [{"type": "reject"}],
            "transports": {
                "docker": docker,
                "dir": {"": [{"type": "insecureAcceptAnything"}]},
                "atomic": {"hostname:5000/vendor/product": [
                    {"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/path/to/vendor-pubkey.gpg",
                     "signedIdentity": {"type": "exactRepository", "dockerRepository": "vendor-hostname/product/repository"}},
                    {"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/path/to/reviewer-pubkey.gpg"}
                ]}
            }
        })
    }

    #[test]
    fn a_reasonably_locked_down_system() {
        let dir = TestDir::new();
        let (trusted, mallory) = (Key::new(), Key::new());
        let key_path = dir.write("sigstore-pubkey.pub", &trusted.pem());
        let policy = load_json(&dir, &locked_down(&key_path, None)).unwrap();
        let none: &[(SignatureLayer, Bytes)] = &[];
        let by_digest = format!("{FULL}@{DIGEST}");
        // (image, its signatures, containers/image's verdict)
        type Row = (String, Vec<(SignatureLayer, Bytes)>, bool);
        let rows: Vec<Row> = vec![
            ("docker.io/openshift/hello-openshift:latest".to_owned(), vec![], true),
            ("busybox:latest".to_owned(), vec![], true),
            ("docker.io/library/busybox:1.36".to_owned(), vec![], true),
            ("docker.io/library/busybox-extra:1".to_owned(), vec![], false),
            ("nginx:latest".to_owned(), vec![], false),
            ("a.temporary-project.example.com/app:1".to_owned(), vec![], true),
            ("temporary-project.example.com/app:1".to_owned(), vec![], false),
            // The default identity: a tag must be signed as exactly that tag.
            (format!("{FULL}:v1"), vec![trusted.sign(&format!("{FULL}:v1"))], true),
            (format!("{FULL}:v1"), vec![trusted.sign(FULL)], false),
            (by_digest.clone(), vec![trusted.sign(FULL)], true),
            (format!("{FULL}:v1"), vec![mallory.sign(&format!("{FULL}:v1"))], false),
            (format!("{FULL}:v1"), vec![], false),
            // matchRepository: cosign's tagless signatures, any tag.
            (format!("{SUBST}:v1"), vec![trusted.sign(SUBST)], true),
            (format!("{SUBST}:latest"), vec![trusted.sign(&format!("{SUBST}:v1"))], true),
            (format!("{SUBST}:v1"), vec![trusted.sign("hostname:5000/myns/other")], false),
            (format!("{SUBST}:v1"), vec![mallory.sign(SUBST)], false),
            ("hostname:5000/myns/unlisted:v1".to_owned(), vec![trusted.sign("hostname:5000/myns/unlisted:v1")], false),
        ];
        for (image, signatures, expected) in &rows {
            assert_eq!(accepted(&policy, image, signatures), *expected, "{image}");
        }
        assert!(!accepted(&policy, "nginx", none));
    }

    #[test]
    fn the_fulcio_and_pki_scopes_load() {
        let dir = TestDir::new();
        let key_path = dir.write("sigstore-pubkey.pub", &Key::new().pem());
        dir.write("certs/fulcio_v1.crt.pem", &super::super::test_support::public_good_fulcio_pem());
        dir.write("certs/rekor.pub", &Key::new().pem());
        dir.write("certs/pki_root_crts.pem", &super::super::test_support::public_good_fulcio_pem());
        let policy = load_json(&dir, &locked_down(&key_path, Some(&dir.path("certs")))).unwrap();
        let image: ImageRef = "hostname:5000/myns/sigstore-signed-byopki:v1".parse().unwrap();
        let rule = policy.find(&image, None).unwrap();
        let signer = &rule.identities[0];
        assert!(signer.trust.pki.is_some(), "{signer:?}");
        assert!(signer.label().starts_with("subject \"email test-user@example.com\""), "{}", signer.label());
    }

    #[test]
    fn completely_disable_security() {
        let dir = TestDir::new();
        let policy = load_json(&dir, &serde_json::json!({"default": [{"type": "insecureAcceptAnything"}]})).unwrap();
        for image in ["nginx:latest", "hostname:5000/myns/anything:v1", &format!("{FULL}@{DIGEST}")] {
            assert!(accepted(&policy, image, &[]), "{image}");
        }
    }

    /// The manual's "signed-off by local IT" example (vendor key and reviewer key, both
    /// required) is written for GPG `signedBy`; this is its sigstore form. With the vendor's
    /// `exactRepository` identity kept, it is refused (one identity per scope); with one
    /// identity for both, both signatures are needed.
    #[test]
    fn vendor_and_reviewer_both_required() {
        const PRODUCT: &str = "hostname:5000/vendor/product";
        let dir = TestDir::new();
        let (vendor, reviewer) = (Key::new(), Key::new());
        let vendor_path = dir.write("vendor.pub", &vendor.pem());
        let reviewer_path = dir.write("reviewer.pub", &reviewer.pem());
        let scope = |vendor_identity: serde_json::Value| {
            serde_json::json!({"default": [{"type": "reject"}], "transports": {"docker": {PRODUCT: [
                {"type": "sigstoreSigned", "keyPath": vendor_path, "signedIdentity": vendor_identity},
                {"type": "sigstoreSigned", "keyPath": reviewer_path, "signedIdentity": {"type": "matchRepository"}}
            ]}}})
        };
        let exact =
            serde_json::json!({"type": "exactRepository", "dockerRepository": "vendor-hostname/product/repository"});
        let err = load_json(&dir, &scope(exact)).unwrap_err();
        assert!(err.to_string().contains("\"signedIdentity\""), "{err}");

        let policy = load_json(&dir, &scope(serde_json::json!({"type": "matchRepository"}))).unwrap();
        let image = format!("{PRODUCT}:1.0");
        assert!(!accepted(&policy, &image, &[vendor.sign(PRODUCT)]));
        assert!(!accepted(&policy, &image, &[reviewer.sign(PRODUCT)]));
        assert!(accepted(&policy, &image, &[vendor.sign(PRODUCT), reviewer.sign(PRODUCT)]));
    }
}
