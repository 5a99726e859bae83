//! The native policy format: every `*.toml` in the policy directory, read in name order.
//!
//! ```toml
//! [[rule]]
//! scope = ["registry.example.com/team-a", "*.team-a.internal"]  # string or list
//! require = "signed"            # signed | accept | reject
//! keys = ["keys/team-a.pub"]    # PEM public keys; relative to this file
//! identities = [                # keyless signers: exactly one of issuer/issuer_regex and one
//!   { issuer = "https://token.actions.githubusercontent.com",  # of subject/subject_regex;
//!     subject_regex = "https://github\\.com/org/.*" },          # regexes match the whole string
//! ]
//! trusted_root = "trusted_root.json"  # default: the built-in Sigstore public-good root
//! ignore_sct = false            # default false: an embedded SCT is required
//! ignore_tlog = false           # only false: a log entry (SET) is required
//! threshold = 1                 # distinct keys plus identities needed; default 1
//! identity = "match-repository" # match-exact | match-repo-digest-or-exact | ignore |
//!                               # { remap = { prefix = "…", signed_prefix = "…" } } |
//!                               # { exact-repository = "…" }
//! mode = "enforce"              # enforce | audit
//! namespaces = ["kube-system"]  # default: all namespaces
//! message = "see INC-123"       # appended to the kubelet's error when this rule refuses
//! signatures_from = "registry.internal/sigs/app"  # where the signatures are stored
//!                               # (cosign's COSIGN_REPOSITORY); default: beside the image
//! ```
//!
//! A syntax or type error stops the reading of that one file (toml reports only the
//! first); all other problems, in all files, are collected.

use std::fmt;
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use toml::Spanned;

use super::identity::IdentityRule;
use super::input;
use super::load::{self, Loader, line_of};
use super::{CertificateTrust, KeyRef, Mode, Pattern, Requirement, RootSource, Rule, Scope, SignerIdentity};
use crate::reference::ImageRef;

/// Room for a ticket reference and whom to ask, short enough that the kubelet's event and the
/// pod's status still show pullgate's own reason in full.
const MAX_MESSAGE_CHARS: usize = 200;

// === raw serde types ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    scope: Spanned<ScopeField>,
    require: Spanned<RawRequire>,
    keys: Option<Spanned<Vec<Spanned<String>>>>,
    identities: Option<Spanned<Vec<Spanned<RawSigner>>>>,
    trusted_root: Option<Spanned<String>>,
    ignore_tlog: Option<Spanned<bool>>,
    ignore_sct: Option<Spanned<bool>>,
    // i64, not usize, so that 0 and negatives reach our own message.
    threshold: Option<Spanned<i64>>,
    identity: Option<Spanned<RawIdentity>>,
    mode: Option<RawMode>,
    namespaces: Option<Spanned<Vec<Spanned<String>>>>,
    message: Option<Spanned<String>>,
    signatures_from: Option<Spanned<String>>,
}

/// One keyless signer; which of each pair is given is checked on conversion, so that the
/// message can say what is wrong.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSigner {
    issuer: Option<String>,
    issuer_regex: Option<String>,
    subject: Option<String>,
    subject_regex: Option<String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum RawRequire {
    Signed,
    Accept,
    Reject,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RawMode {
    Enforce,
    Audit,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
enum RawIdentity {
    MatchRepository,
    MatchExact,
    MatchRepoDigestOrExact,
    Ignore,
    Remap { prefix: String, signed_prefix: String },
    ExactRepository(String),
}

/// `scope` is a string or a list of strings.
enum ScopeField {
    One(String),
    Many(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for ScopeField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScopeVisitor)
    }
}

struct ScopeVisitor;

impl<'de> Visitor<'de> for ScopeVisitor {
    type Value = ScopeField;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a scope string or a list of scope strings")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ScopeField, E> {
        Ok(ScopeField::One(v.to_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ScopeField, A::Error> {
        let mut scopes = Vec::new();
        while let Some(scope) = seq.next_element()? {
            scopes.push(scope);
        }
        Ok(ScopeField::Many(scopes))
    }
}

// === loading files ===

/// Load every visible `*.toml` in `dir`, sorted by name. A missing directory is a problem.
pub(super) fn load_dir(dir: &Path, loader: &mut Loader) {
    for path in policy_files(dir, loader) {
        load_file(&path, loader);
    }
}

fn policy_files(dir: &Path, loader: &mut Loader) -> Vec<PathBuf> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            loader.problem(dir, None, format!("cannot read policy directory: {e}"));
            return Vec::new();
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => files.extend(policy_file(&entry.path())),
            Err(e) => loader.problem(dir, None, format!("cannot list policy directory: {e}")),
        }
    }
    files.sort();
    files
}

fn policy_file(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_string_lossy();
    // Why skip dot-files: Kubernetes ConfigMap mounts keep real copies under "..data/" and
    // editors leave ".x.toml.swp"; only visible *.toml entries are policy. What else a
    // `*.toml` entry may be (a dangling symlink, a directory, a FIFO) is reported on reading.
    (!name.starts_with('.') && name.ends_with(".toml")).then(|| path.to_owned())
}

pub(super) fn load_file(path: &Path, loader: &mut Loader) {
    match input::read_policy_file(path) {
        Ok(text) => load_str(path, &text, loader),
        Err(e) => loader.problem(path, None, e),
    }
}

fn load_str(path: &Path, text: &str, loader: &mut Loader) {
    let first_error = match toml::from_str::<RawFile>(text) {
        Ok(raw) => return convert_all(path, text, raw, loader),
        Err(e) => e,
    };
    // Why a second pass: toml stops at the first error, but an operator should see every
    // broken rule at once. Each `[[…]]` section is re-read alone, the rest of the file blanked
    // out so that line numbers stay true. Only when every section is valid TOML by itself:
    // a header look-alike inside a multi-line string would otherwise invent errors.
    let alone: Vec<String> = sections(text).iter().map(|r| blank_outside(text, r)).collect();
    let syntax_ok = |doc: &str| toml::from_str::<toml::Table>(doc).is_ok();
    if !syntax_ok(text) || !alone.iter().all(|doc| syntax_ok(doc)) {
        return toml_problem(path, text, &first_error, loader);
    }
    let before = loader.problem_count();
    for doc in &alone {
        match toml::from_str::<RawFile>(doc) {
            Ok(raw) => convert_all(path, doc, raw, loader),
            Err(e) => toml_problem(path, doc, &e, loader),
        }
    }
    // Defensive: never let the second pass swallow the first error.
    if loader.problem_count() == before {
        toml_problem(path, text, &first_error, loader);
    }
}

fn toml_problem(path: &Path, text: &str, e: &toml::de::Error, loader: &mut Loader) {
    let line = e.span().map(|s| line_of(text, s.start));
    // `[rule]` is a single table where an array of tables is expected; toml says only that a
    // map is not a sequence.
    if text.lines().any(|l| l.trim() == "[rule]") && e.message().contains("expected a sequence") {
        return loader.problem(path, line, "write each rule under [[rule]] (double brackets), not [rule]");
    }
    let message = crate::error_text::plain(e.message());
    let message = match e.span().and_then(|span| key_before(text, span.start)) {
        Some(key) if message.starts_with("must be") => format!("{key} {message}"),
        _ => message,
    };
    loader.problem(path, line, message);
}

/// The key of the `key = value` line where a value starts at `offset`: toml's type errors
/// point at the value and do not name its key.
fn key_before(text: &str, offset: usize) -> Option<&str> {
    let line_start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let (key, _) = text.get(line_start..offset)?.split_once('=')?;
    let key = key.trim();
    (!key.is_empty() && !key.starts_with('[')).then_some(key)
}

fn convert_all(path: &Path, text: &str, raw: RawFile, loader: &mut Loader) {
    let mut ctx = FileCtx { path, text, loader };
    for rule in raw.rule {
        ctx.convert(rule);
    }
}

/// Byte ranges of `text`, split before each line that starts an array-of-tables header.
fn sections(text: &str) -> Vec<Range<usize>> {
    let mut starts = vec![0];
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if offset > 0 && line.trim_start().starts_with("[[") {
            starts.push(offset);
        }
        offset += line.len();
    }
    let ends = starts.iter().skip(1).copied().chain([text.len()]);
    starts.iter().copied().zip(ends).map(|(s, e)| s..e).collect()
}

/// `text` with everything outside `keep` turned into spaces, newlines kept.
fn blank_outside(text: &str, keep: &Range<usize>) -> String {
    let blank = |(i, c): (usize, char)| {
        if keep.contains(&i) || c == '\n' { c } else { ' ' }
    };
    text.char_indices().map(blank).collect()
}

// === impl FileCtx: one file's raw rules → Rules ===

struct FileCtx<'a> {
    path: &'a Path,
    text: &'a str,
    loader: &'a mut Loader,
}

impl FileCtx<'_> {
    fn line(&self, span: &Range<usize>) -> Option<usize> {
        Some(line_of(self.text, span.start))
    }

    fn problem(&mut self, span: &Range<usize>, message: impl Into<String>) {
        let line = self.line(span);
        self.loader.problem(self.path, line, message);
    }

    fn convert(&mut self, raw: Spanned<RawRule>) {
        let before = self.loader.problem_count();
        let raw = raw.into_inner();
        let require = *raw.require.get_ref();
        let scopes = self.scopes(raw.scope);
        let namespaces = self.namespaces(raw.namespaces);
        let message = raw.message.and_then(|message| self.message(message));
        let signatures_from = raw.signatures_from.and_then(|field| self.signatures_from(field, require));
        let signed_only = SignedOnly {
            keys: raw.keys,
            identities: raw.identities,
            trusted_root: raw.trusted_root,
            ignore_tlog: raw.ignore_tlog,
            ignore_sct: raw.ignore_sct,
            threshold: raw.threshold,
            identity: raw.identity,
        };
        let Signed { keys, identities, threshold, identity } = if require == RawRequire::Signed {
            self.signed_fields(signed_only, raw.require.span())
        } else {
            self.refuse_signed_fields(signed_only);
            Signed { keys: Vec::new(), identities: Vec::new(), threshold: 0, identity: IdentityRule::MatchRepository }
        };
        if self.loader.problem_count() != before {
            return;
        }
        let template = Rule {
            scope: Scope::Default,
            namespaces,
            require: require.into(),
            keys,
            identities,
            threshold,
            identity,
            mode: raw.mode.map_or(Mode::Enforce, Mode::from),
            source: self.path.to_owned(),
            // Each scope's own line, set by the loader.
            line: None,
            message,
            signatures_from,
        };
        for (scope, line) in scopes {
            self.loader.push(Rule { scope, ..template.clone() }, line);
        }
    }
}

impl From<RawRequire> for Requirement {
    fn from(raw: RawRequire) -> Requirement {
        match raw {
            RawRequire::Signed => Requirement::Signed,
            RawRequire::Accept => Requirement::Accept,
            RawRequire::Reject => Requirement::Reject,
        }
    }
}

impl From<RawMode> for Mode {
    fn from(raw: RawMode) -> Mode {
        match raw {
            RawMode::Enforce => Mode::Enforce,
            RawMode::Audit => Mode::Audit,
        }
    }
}

/// The fields that only mean something for `require = "signed"`.
struct SignedOnly {
    keys: Option<Spanned<Vec<Spanned<String>>>>,
    identities: Option<Spanned<Vec<Spanned<RawSigner>>>>,
    trusted_root: Option<Spanned<String>>,
    ignore_tlog: Option<Spanned<bool>>,
    ignore_sct: Option<Spanned<bool>>,
    threshold: Option<Spanned<i64>>,
    identity: Option<Spanned<RawIdentity>>,
}

/// What a signed rule needs, as loaded.
struct Signed {
    keys: Vec<KeyRef>,
    identities: Vec<SignerIdentity>,
    threshold: usize,
    identity: IdentityRule,
}

/// The keyless fields of one rule, apart from the identities themselves.
struct RawTrust {
    trusted_root: Option<Spanned<String>>,
    ignore_tlog: Option<Spanned<bool>>,
    ignore_sct: Option<Spanned<bool>>,
}

// === impl FileCtx: field checks ===

impl FileCtx<'_> {
    /// A repository as an image names one (`registry/path`), without tag or digest: the
    /// signatures are looked up there by the image's digest.
    fn signatures_from(&mut self, field: Spanned<String>, require: RawRequire) -> Option<ImageRef> {
        let span = field.span();
        if require != RawRequire::Signed {
            self.problem(&span, "signatures_from only applies to require = \"signed\"");
            return None;
        }
        let text = field.into_inner();
        match text.parse::<ImageRef>() {
            Ok(repo) if repo.tag().is_none() && repo.digest().is_none() && text.contains('/') => Some(repo),
            Ok(_) => {
                let shown: String = text.chars().take(100).collect();
                self.problem(
                    &span,
                    format!("signatures_from {shown:?} must be a repository (registry/path), without tag or digest"),
                );
                None
            }
            Err(e) => {
                self.problem(&span, format!("signatures_from: {e}"));
                None
            }
        }
    }

    fn scopes(&mut self, field: Spanned<ScopeField>) -> Vec<(Scope, Option<usize>)> {
        let span = field.span();
        let items = match field.into_inner() {
            ScopeField::One(s) => vec![Spanned::new(span.clone(), s)],
            ScopeField::Many(list) => list,
        };
        if items.is_empty() {
            self.problem(&span, "scope list is empty");
        }
        let mut scopes = Vec::new();
        for item in items {
            match item.get_ref().parse::<Scope>() {
                Ok(scope) => scopes.push((scope, self.line(&item.span()))),
                Err(e) => self.problem(&item.span(), e.to_string()),
            }
        }
        scopes
    }

    fn namespaces(&mut self, field: Option<Spanned<Vec<Spanned<String>>>>) -> Option<Vec<String>> {
        let field = field?;
        if field.get_ref().is_empty() {
            // An empty list would make the rule match nothing, which is surely a mistake.
            self.problem(&field.span(), "namespaces list is empty; leave it out to mean all namespaces");
        }
        let mut names: Vec<String> = Vec::new();
        for ns in field.into_inner() {
            let name = ns.get_ref();
            if !valid_namespace(name) {
                self.problem(&ns.span(), format!("{name:?} is not a valid Kubernetes namespace name"));
            } else if names.contains(name) {
                self.problem(&ns.span(), format!("namespace {name:?} is listed twice"));
            } else {
                names.push(name.clone());
            }
        }
        Some(names)
    }

    /// The message goes into the kubelet's error, its events and pullgate's log: one short line.
    fn message(&mut self, field: Spanned<String>) -> Option<String> {
        let span = field.span();
        let text = field.into_inner();
        let problem = if text.trim().is_empty() {
            Some("message is empty; leave it out for none".to_owned())
        } else if text.chars().any(char::is_control) {
            Some("message must be one line of text, without control characters".to_owned())
        } else if text.chars().count() > MAX_MESSAGE_CHARS {
            Some(format!("message is longer than {MAX_MESSAGE_CHARS} characters"))
        } else {
            None
        };
        match problem {
            Some(problem) => {
                self.problem(&span, problem);
                None
            }
            None => Some(text),
        }
    }

    fn signed_fields(&mut self, raw: SignedOnly, require_span: Range<usize>) -> Signed {
        let keys_listed = raw.keys.as_ref().map_or(0, |k| k.get_ref().len());
        let signers_listed = raw.identities.as_ref().map_or(0, |i| i.get_ref().len());
        if keys_listed + signers_listed == 0 {
            let text = "require = \"signed\" needs at least one key in `keys` or one signer in `identities`";
            self.problem(&require_span, text);
        }
        let keys = raw.keys.map(|field| self.keys(field)).unwrap_or_default();
        let trust =
            RawTrust { trusted_root: raw.trusted_root, ignore_tlog: raw.ignore_tlog, ignore_sct: raw.ignore_sct };
        let identities = self.identities(raw.identities, trust, keys_listed);
        let threshold = self.threshold(raw.threshold, keys_listed, signers_listed);
        let identity = raw.identity.map_or(IdentityRule::MatchRepository, |id| self.identity(id));
        Signed { keys, identities, threshold, identity }
    }

    fn refuse_signed_fields(&mut self, raw: SignedOnly) {
        // Why refuse rather than ignore: keys on an "accept" rule suggest the author expected
        // them to be checked; silently skipping that would be a security surprise.
        let spans = [
            raw.keys.map(|k| ("keys", k.span())),
            raw.identities.map(|i| ("identities", i.span())),
            raw.trusted_root.map(|t| ("trusted_root", t.span())),
            raw.ignore_tlog.map(|t| ("ignore_tlog", t.span())),
            raw.ignore_sct.map(|t| ("ignore_sct", t.span())),
            raw.threshold.map(|t| ("threshold", t.span())),
            raw.identity.map(|i| ("identity", i.span())),
        ];
        for (name, span) in spans.into_iter().flatten() {
            self.problem(&span, format!("`{name}` is only allowed with require = \"signed\""));
        }
    }

    /// Loaded keys, each a group of its own.
    fn keys(&mut self, field: Spanned<Vec<Spanned<String>>>) -> Vec<KeyRef> {
        let span = field.span();
        let mut keys = Vec::new();
        for key in field.into_inner() {
            match self.loader.key_file(&load::resolve(self.path, key.get_ref())) {
                // Each key a group of its own: the threshold counts distinct keys.
                Ok(k) => keys.push(KeyRef { group: keys.len(), ..k }),
                Err(e) => self.problem(&key.span(), e),
            }
        }
        if let Err(e) = load::check_distinct_keys(&keys) {
            self.problem(&span, e);
        }
        keys
    }

    /// Keyless signers, each a group of its own after the `first_group - 1` keys' groups.
    fn identities(
        &mut self,
        field: Option<Spanned<Vec<Spanned<RawSigner>>>>,
        raw: RawTrust,
        first_group: usize,
    ) -> Vec<SignerIdentity> {
        let Some(field) = field.filter(|f| !f.get_ref().is_empty()) else {
            // Keyless options without signers suggest signers were meant; say so.
            let spans = [
                raw.trusted_root.map(|t| ("trusted_root", t.span())),
                raw.ignore_tlog.map(|t| ("ignore_tlog", t.span())),
                raw.ignore_sct.map(|t| ("ignore_sct", t.span())),
            ];
            for (name, span) in spans.into_iter().flatten() {
                self.problem(&span, format!("`{name}` applies to keyless signers, and `identities` lists none"));
            }
            return Vec::new();
        };
        let Some(trust) = self.trust(raw) else { return Vec::new() };
        let mut signers: Vec<SignerIdentity> = Vec::new();
        for entry in field.into_inner() {
            let span = entry.span();
            let Some((issuer, subject)) = self.signer(entry.into_inner(), &span) else { continue };
            let signer = SignerIdentity { issuer, subject, trust: trust.clone(), group: first_group + signers.len() };
            // Why: each entry is a group of its own, so one signer listed twice would let a
            // single signature meet a threshold of 2.
            if signers.iter().any(|s| s.label() == signer.label()) {
                self.problem(&span, format!("signer {} is listed twice", signer.label()));
                continue;
            }
            signers.push(signer);
        }
        signers
    }

    fn trust(&mut self, raw: RawTrust) -> Option<Arc<CertificateTrust>> {
        if let Some(flag) = raw.ignore_tlog.filter(|f| *f.get_ref()) {
            // sigstore-verify can skip the inclusion proof, but still needs a verified signing
            // time, which a `.sig` signature without a log entry does not have: honouring the
            // option would mean faking it.
            let text = "ignore_tlog = true is not supported: a keyless signature needs its log entry \
                        (SET) as the verified signing time its certificate is checked at";
            self.problem(&flag.span(), text);
            return None;
        }
        let sct = !raw.ignore_sct.is_some_and(|f| *f.get_ref());
        let (path, span) = match raw.trusted_root {
            Some(field) => (Some(load::resolve(self.path, field.get_ref())), Some(field.span())),
            None => (None, None),
        };
        match self.loader.trusted_root(path.as_deref()) {
            Ok(root) => {
                let source = path.map_or(RootSource::BuiltIn, RootSource::File);
                Some(Arc::new(CertificateTrust { root, source, sct, pki: None }))
            }
            Err(e) => {
                match span {
                    Some(span) => self.problem(&span, e),
                    None => self.loader.problem(self.path, None, e),
                }
                None
            }
        }
    }

    /// One `{ issuer… , subject… }` entry: exactly one of each pair, patterns compiled.
    fn signer(&mut self, raw: RawSigner, span: &Range<usize>) -> Option<(Pattern, Pattern)> {
        let issuer = self.pattern("issuer", raw.issuer, raw.issuer_regex, span);
        let subject = self.pattern("subject", raw.subject, raw.subject_regex, span);
        Some((issuer?, subject?))
    }

    fn pattern(
        &mut self,
        name: &str,
        exact: Option<String>,
        regex: Option<String>,
        span: &Range<usize>,
    ) -> Option<Pattern> {
        let (key, built) = match (exact, regex) {
            (Some(text), None) => (name.to_owned(), Pattern::exact(&text)),
            (None, Some(text)) => (format!("{name}_regex"), Pattern::regex(&text)),
            (Some(_), Some(_)) => {
                self.problem(span, format!("an identity has both `{name}` and `{name}_regex`; give one"));
                return None;
            }
            (None, None) => {
                self.problem(span, format!("an identity needs `{name}` or `{name}_regex`"));
                return None;
            }
        };
        built.map_err(|e| self.problem(span, format!("identity {key} {e}"))).ok()
    }

    fn threshold(&mut self, field: Option<Spanned<i64>>, keys: usize, signers: usize) -> usize {
        let listed = keys + signers;
        let Some(field) = field else { return 1 };
        let value = *field.get_ref();
        match usize::try_from(value) {
            Ok(0) | Err(_) => {
                let message = format!("threshold must be at least 1, not {value}");
                self.problem(&field.span(), message);
                1
            }
            // With no keys listed, that problem is already reported.
            Ok(n) if listed > 0 && n > listed => {
                let what = if signers == 0 { "keys" } else { "keys and identities" };
                let message = format!("threshold {n} is more than the {listed} {what} listed");
                self.problem(&field.span(), message);
                n
            }
            Ok(n) => n,
        }
    }

    fn identity(&mut self, field: Spanned<RawIdentity>) -> IdentityRule {
        let span = field.span();
        let built = match field.into_inner() {
            RawIdentity::MatchRepository => Ok(IdentityRule::MatchRepository),
            RawIdentity::MatchExact => Ok(IdentityRule::MatchExact),
            RawIdentity::MatchRepoDigestOrExact => Ok(IdentityRule::MatchRepoDigestOrExact),
            RawIdentity::Ignore => Ok(IdentityRule::Ignore),
            RawIdentity::Remap { prefix, signed_prefix } => IdentityRule::remap(&prefix, &signed_prefix),
            RawIdentity::ExactRepository(repo) => IdentityRule::exact_repository(&repo),
        };
        built.unwrap_or_else(|e| {
            self.problem(&span, format!("bad identity: {e}"));
            IdentityRule::MatchRepository
        })
    }
}

/// Kubernetes namespace names are RFC 1123 labels: lowercase alphanumerics and '-'.
pub(crate) fn valid_namespace(name: &str) -> bool {
    crate::reference::valid_dns_label(name) && !name.chars().any(|c| c.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::test_support::{KEY_A, KEY_B, KEY_ED, TestDir};
    use super::super::{Policy, PolicyError};
    use super::*;

    /// A policy dir with keys/a.pub, keys/b.pub, keys/ed.pub and the given files.
    fn setup(files: &[(&str, &str)]) -> TestDir {
        let dir = TestDir::new();
        dir.write("policy.d/keys/a.pub", KEY_A);
        dir.write("policy.d/keys/b.pub", KEY_B);
        dir.write("policy.d/keys/ed.pub", KEY_ED);
        for (name, text) in files {
            dir.write(&format!("policy.d/{name}"), text);
        }
        dir
    }

    fn load(dir: &TestDir) -> Result<Policy, PolicyError> {
        Policy::load(&dir.path("policy.d"), None)
    }

    fn load_err(files: &[(&str, &str)]) -> PolicyError {
        let dir = setup(files);
        match load(&dir) {
            Ok(p) => panic!("loaded {} rules, expected an error", p.rules().len()),
            Err(e) => e,
        }
    }

    /// Assert exactly one problem, in `file` at `line`, whose message contains `needle`.
    fn assert_one(err: &PolicyError, file: &str, line: usize, needle: &str) {
        assert_eq!(err.problems.len(), 1, "{err}");
        let p = &err.problems[0];
        assert!(p.file.ends_with(file), "{err}");
        assert_eq!(p.line, Some(line), "{err}");
        assert!(p.message.contains(needle), "{err}");
        assert!(err.to_string().contains(&format!("{file}:{line}: ")), "{err}");
    }

    const FULL: &str = r#"
# team A
[[rule]]
scope = ["registry.example.com/team-a", "*.team-a.internal"]
require = "signed"
keys = ["keys/a.pub", "keys/b.pub", "keys/ed.pub"]
threshold = 2
identity = { remap = { prefix = "registry.example.com/team-a", signed_prefix = "upstream.io/a" } }
mode = "audit"
namespaces = ["kube-system", "team-a"]
"#;

    #[test]
    fn a_single_bracket_rule_table_says_to_double_the_brackets() {
        let err = load_err(&[("a.toml", "[rule]\nscope = \"*\"\nrequire = \"reject\"\n")]);
        assert!(err.to_string().contains("write each rule under [[rule]] (double brackets)"), "{err}");
    }

    #[test]
    fn signatures_from_is_a_repository_on_signed_rules_only() {
        let rule = |require: &str, from: &str| {
            format!(
                "[[rule]]\nscope = \"*\"\nrequire = \"{require}\"\nkeys = [\"keys/a.pub\"]\nsignatures_from = {from:?}\n"
            )
        };
        let dir = setup(&[("a.toml", &rule("signed", "registry.internal:5000/sigs/app"))]);
        let policy = load(&dir).unwrap();
        let from = policy.rules()[0].signatures_from.as_ref().map(ImageRef::name);
        assert_eq!(from.as_deref(), Some("registry.internal:5000/sigs/app"));
        assert!(
            load(&setup(&[("a.toml", FULL)])).unwrap().rules()[0].signatures_from.is_none(),
            "default: beside the image"
        );
        for bad in
            ["registry.internal/sigs/app:v1", "registry.internal/sigs/app@sha256:0", "Registry.internal/x", "app"]
        {
            let err = load_err(&[("a.toml", &rule("signed", bad))]);
            assert!(err.to_string().contains("signatures_from"), "{bad}: {err}");
        }
        let reject = "[[rule]]\nscope = \"*\"\nrequire = \"reject\"\nsignatures_from = \"r.io/sigs\"\n";
        assert_one(&load_err(&[("a.toml", reject)]), "a.toml", 4, "only applies to require = \"signed\"");
    }

    #[test]
    fn a_rules_message_is_one_short_line() {
        let rule = |message: &str| format!("[[rule]]\nscope = \"*\"\nrequire = \"reject\"\nmessage = {message:?}\n");
        let dir = setup(&[("a.toml", &rule("revoked build, see INC-123"))]);
        let policy = load(&dir).unwrap();
        assert_eq!(policy.rules()[0].message.as_deref(), Some("revoked build, see INC-123"));
        assert_one(&load_err(&[("a.toml", &rule("line\nbreak"))]), "a.toml", 4, "one line of text");
        assert_one(&load_err(&[("a.toml", &rule(" "))]), "a.toml", 4, "message is empty");
        let long = "x".repeat(MAX_MESSAGE_CHARS + 1);
        assert_one(&load_err(&[("a.toml", &rule(&long))]), "a.toml", 4, "longer than 200 characters");
    }

    #[test]
    fn full_rule_with_scope_list() {
        let dir = setup(&[("a.toml", FULL)]);
        let policy = load(&dir).unwrap();
        let rules = policy.rules();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].scope.to_string(), "registry.example.com/team-a");
        assert_eq!(rules[1].scope.to_string(), "*.team-a.internal");
        let r = &rules[0];
        assert_eq!((r.require, r.threshold, r.mode), (Requirement::Signed, 2, Mode::Audit));
        assert_eq!(r.keys.len(), 3);
        assert_eq!(r.keys[0].path.as_deref(), Some(dir.path("policy.d/keys/a.pub").as_path()));
        assert_eq!(r.keys[2].key.algorithm(), "Ed25519");
        assert_eq!(r.namespaces, Some(vec!["kube-system".to_owned(), "team-a".to_owned()]));
        assert_eq!(
            r.identity,
            IdentityRule::Remap { prefix: "registry.example.com/team-a".into(), signed_prefix: "upstream.io/a".into() }
        );
        assert!(r.source.ends_with("policy.d/a.toml"));
    }

    #[test]
    fn defaults() {
        let text = "[[rule]]\nscope = \"r.io\"\nrequire = \"signed\"\nkeys = [\"keys/a.pub\"]\n";
        let dir = setup(&[("a.toml", text)]);
        let policy = load(&dir).unwrap();
        let r = &policy.rules()[0];
        assert_eq!((r.threshold, r.mode, r.namespaces.clone()), (1, Mode::Enforce, None));
        assert_eq!(r.identity, IdentityRule::MatchRepository);
    }

    #[test]
    fn every_identity_spelling() {
        let cases = [
            ("\"match-repository\"", IdentityRule::MatchRepository),
            ("\"match-exact\"", IdentityRule::MatchExact),
            ("\"match-repo-digest-or-exact\"", IdentityRule::MatchRepoDigestOrExact),
            ("\"ignore\"", IdentityRule::Ignore),
            ("{ exact-repository = \"busybox\" }", IdentityRule::ExactRepository("docker.io/library/busybox".into())),
        ];
        for (spelling, expected) in cases {
            let text = format!(
                "[[rule]]\nscope = \"r.io\"\nrequire = \"signed\"\nkeys = [\"keys/a.pub\"]\nidentity = {spelling}\n"
            );
            let dir = setup(&[("a.toml", &text)]);
            assert_eq!(load(&dir).unwrap().rules()[0].identity, expected, "{spelling}");
        }
    }

    #[test]
    fn accept_and_reject_rules() {
        let text =
            "[[rule]]\nscope = \"*\"\nrequire = \"reject\"\n\n[[rule]]\nscope = \"r.io\"\nrequire = \"accept\"\n";
        let dir = setup(&[("a.toml", text)]);
        let policy = load(&dir).unwrap();
        let req: Vec<_> = policy.rules().iter().map(|r| (r.require, r.keys.len())).collect();
        assert_eq!(req, vec![(Requirement::Reject, 0), (Requirement::Accept, 0)]);
    }

    #[test]
    fn absolute_key_paths_and_shared_keys() {
        let dir = setup(&[]);
        let abs = dir.path("policy.d/keys/a.pub");
        let text = format!(
            "[[rule]]\nscope = \"r.io\"\nrequire = \"signed\"\nkeys = [{abs:?}]\n\n[[rule]]\nscope = \"s.io\"\nrequire = \"signed\"\nkeys = [\"keys/a.pub\"]\n"
        );
        dir.write("policy.d/a.toml", &text);
        let policy = load(&dir).unwrap();
        let (a, b) = (&policy.rules()[0].keys[0].key, &policy.rules()[1].keys[0].key);
        assert!(Arc::ptr_eq(a, b), "one key file is parsed once and shared");
    }

    #[test]
    fn files_are_read_in_name_order_and_others_skipped() {
        let rule = |scope: &str| format!("[[rule]]\nscope = \"{scope}\"\nrequire = \"accept\"\n");
        let dir = setup(&[
            ("b.toml", &rule("b.io")),
            ("a.toml", &rule("a.io")),
            ("c.toml.bak", "garbage"),
            (".hidden.toml", "garbage"),
            ("README", "garbage"),
            ("..data/x.toml", "garbage"),
        ]);
        let policy = load(&dir).unwrap();
        let scopes: Vec<_> = policy.rules().iter().map(|r| r.scope.to_string()).collect();
        assert_eq!(scopes, vec!["a.io", "b.io"]);
    }

    #[test]
    fn empty_dir_and_empty_file_give_empty_policy() {
        let dir = setup(&[("a.toml", "# nothing yet\n")]);
        let policy = load(&dir).unwrap();
        assert!(policy.is_empty());
    }

    #[test]
    fn missing_dir_is_an_error() {
        let dir = TestDir::new();
        let err = Policy::load(&dir.path("nope"), None).unwrap_err();
        assert_eq!(err.problems.len(), 1);
        assert!(err.problems[0].file.ends_with("nope"));
        assert!(err.to_string().contains("cannot read policy directory"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn dangling_symlink_is_an_error() {
        let dir = setup(&[]);
        std::os::unix::fs::symlink(dir.path("gone.toml"), dir.path("policy.d/a.toml")).unwrap();
        let err = load(&dir).unwrap_err();
        assert!(err.problems[0].file.ends_with("a.toml"), "{err}");
    }

    #[test]
    fn directory_named_toml_is_an_error() {
        let dir = setup(&[("sub.toml/x", "")]);
        let err = load(&dir).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn unknown_field_names_line() {
        let err = load_err(&[("a.toml", "[[rule]]\nscope = \"r.io\"\nrequire = \"accept\"\nkeyz = []\n")]);
        assert_one(&err, "a.toml", 4, "unknown key \"keyz\"");
    }

    #[test]
    fn unknown_top_level_table() {
        let err = load_err(&[("a.toml", "[[rules]]\nscope = \"r.io\"\n")]);
        assert_one(&err, "a.toml", 1, "unknown key \"rules\"; the keys here are rule");
    }

    #[test]
    fn syntax_error_names_line() {
        let err = load_err(&[("a.toml", "[[rule]]\nscope = \"r.io\"\nrequire = accept\n")]);
        assert_one(&err, "a.toml", 3, "");
    }

    #[test]
    fn type_errors_name_the_key_in_the_files_words() {
        let rule =
            |line: &str| format!("[[rule]]\nscope = \"r.io\"\nrequire = \"signed\"\nkeys = [\"a.pub\"]\n{line}\n");
        let cases = [
            ("threshold = \"one\"", "threshold must be a whole number, not the string \"one\""),
            ("threshold = 1.5", "threshold must be a whole number, not 1.5"),
            ("namespaces = 5", "namespaces must be a list, not 5"),
            ("message = 3", "message must be a string, not 3"),
        ];
        for (line, expected) in cases {
            let err = load_err(&[("a.toml", &rule(line))]);
            assert_one(&err, "a.toml", 5, expected);
            assert!(!err.to_string().contains('`'), "{err}");
        }
    }

    #[test]
    fn missing_require() {
        let err = load_err(&[("a.toml", "\n[[rule]]\nscope = \"r.io\"\n")]);
        assert_eq!(err.problems.len(), 1, "{err}");
        assert!(err.problems[0].message.contains("missing key \"require\""), "{err}");
        assert!(err.problems[0].line.is_some(), "{err}");
    }

    #[test]
    fn bad_enum_values() {
        let err = load_err(&[("a.toml", "[[rule]]\nscope = \"r.io\"\nrequire = \"maybe\"\n")]);
        assert_one(&err, "a.toml", 3, "require must be one of \"signed\", \"accept\", \"reject\", not \"maybe\"");
        let err = load_err(&[("a.toml", "[[rule]]\nscope = \"r.io\"\nrequire = \"accept\"\nmode = \"warn\"\n")]);
        assert_one(&err, "a.toml", 4, "mode must be one of \"enforce\", \"audit\", not \"warn\"");
    }

    const SIGNED: &str = "[[rule]]\nscope = \"r.io\"\nrequire = \"signed\"\n";

    #[test]
    fn missing_key_file() {
        let err = load_err(&[("a.toml", &format!("{SIGNED}keys = [\"keys/a.pub\",\n  \"keys/missing.pub\"]\n"))]);
        assert_one(&err, "a.toml", 5, "keys/missing.pub: cannot open");
    }

    #[test]
    fn malformed_key_file() {
        let dir = setup(&[("a.toml", &format!("{SIGNED}keys = [\"keys/bad.pub\"]\n"))]);
        dir.write("policy.d/keys/bad.pub", "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n");
        let err = load(&dir).unwrap_err();
        assert_one(&err, "a.toml", 4, "keys/bad.pub: ");
    }

    #[test]
    fn key_file_that_is_a_private_key_or_directory() {
        let dir = setup(&[("a.toml", &format!("{SIGNED}keys = [\"keys\"]\n"))]);
        assert_one(&load(&dir).unwrap_err(), "a.toml", 4, "keys: is a directory, not a regular file");
    }

    #[test]
    fn oversized_key_file() {
        let dir = setup(&[("a.toml", &format!("{SIGNED}keys = [\"keys/big.pub\"]\n"))]);
        dir.write("policy.d/keys/big.pub", &"x".repeat(70_000));
        assert_one(&load(&dir).unwrap_err(), "a.toml", 4, "larger than 64 KiB");
    }

    #[test]
    fn same_key_under_two_paths() {
        let dir = setup(&[("a.toml", &format!("{SIGNED}keys = [\"keys/a.pub\", \"keys/copy.pub\"]\nthreshold = 2\n"))]);
        dir.write("policy.d/keys/copy.pub", KEY_A);
        assert_one(&load(&dir).unwrap_err(), "a.toml", 4, "are the same key");
    }

    #[test]
    fn threshold_problems() {
        let two_keys = format!("{SIGNED}keys = [\"keys/a.pub\", \"keys/b.pub\"]\n");
        let err = load_err(&[("a.toml", &format!("{two_keys}threshold = 3\n"))]);
        assert_one(&err, "a.toml", 5, "threshold 3 is more than the 2 keys listed");
        let err = load_err(&[("a.toml", &format!("{two_keys}threshold = 0\n"))]);
        assert_one(&err, "a.toml", 5, "threshold must be at least 1, not 0");
        let err = load_err(&[("a.toml", &format!("{two_keys}threshold = -1\n"))]);
        assert_one(&err, "a.toml", 5, "not -1");
    }

    #[test]
    fn signed_without_keys() {
        assert_one(&load_err(&[("a.toml", SIGNED)]), "a.toml", 3, "needs at least one key");
        let err = load_err(&[("a.toml", &format!("{SIGNED}keys = []\n"))]);
        assert_one(&err, "a.toml", 3, "needs at least one key");
    }

    #[test]
    fn signed_fields_on_accept_rule() {
        let text = "[[rule]]\nscope = \"r.io\"\nrequire = \"accept\"\nkeys = [\"keys/a.pub\"]\nidentity = \"ignore\"\n";
        let err = load_err(&[("a.toml", text)]);
        assert_eq!(err.problems.len(), 2, "{err}");
        assert!(err.problems[0].message.contains("`keys` is only allowed"), "{err}");
        assert_eq!(err.problems[1].line, Some(5), "{err}");
    }

    #[test]
    fn bad_identities() {
        let with = |id: &str| format!("{SIGNED}keys = [\"keys/a.pub\"]\nidentity = {id}\n");
        let err = load_err(&[("a.toml", &with("\"match-anything\""))]);
        assert_one(&err, "a.toml", 5, "not \"match-anything\"");
        let err = load_err(&[("a.toml", &with("{ remap = { prefix = \"nginx\", signed_prefix = \"r.io\" } }"))]);
        assert_one(&err, "a.toml", 5, "bad identity: remap prefix \"nginx\"");
        let err = load_err(&[("a.toml", &with("{ remap = { prefix = \"r.io\" } }"))]);
        assert_one(&err, "a.toml", 5, "missing key \"signed_prefix\"");
        let err = load_err(&[("a.toml", &with("{ remap = { prefix = \"r.io\", signed_prefix = \"s.io\", x = 1 } }"))]);
        assert_one(&err, "a.toml", 5, "unexpected keys in table: x");
        let err = load_err(&[("a.toml", &with("{ exact-repository = \"r.io/a:v1\" }"))]);
        assert_one(&err, "a.toml", 5, "without tag or digest");
    }

    #[test]
    fn bad_scopes_each_reported() {
        let text = "[[rule]]\nscope = [\"r.io\",\n  \"nginx\",\n  \"*.x.io:80\"]\nrequire = \"accept\"\n";
        let err = load_err(&[("a.toml", text)]);
        assert_eq!(err.problems.len(), 2, "{err}");
        assert_eq!((err.problems[0].line, err.problems[1].line), (Some(3), Some(4)), "{err}");
        assert!(err.problems[0].message.contains("no registry host"), "{err}");
        let err = load_err(&[("a.toml", "[[rule]]\nscope = []\nrequire = \"accept\"\n")]);
        assert_one(&err, "a.toml", 2, "scope list is empty");
    }

    #[test]
    fn bad_namespaces() {
        let base = "[[rule]]\nscope = \"r.io\"\nrequire = \"accept\"\n";
        let err = load_err(&[("a.toml", &format!("{base}namespaces = []\n"))]);
        assert_one(&err, "a.toml", 4, "namespaces list is empty");
        let err = load_err(&[("a.toml", &format!("{base}namespaces = [\"Kube_System\"]\n"))]);
        assert_one(&err, "a.toml", 4, "not a valid Kubernetes namespace");
        let err = load_err(&[("a.toml", &format!("{base}namespaces = [\"a\", \"a\"]\n"))]);
        assert_one(&err, "a.toml", 4, "listed twice");
    }

    #[test]
    fn duplicate_scope_across_files_names_both() {
        let a = "[[rule]]\nscope = \"r.io/team\"\nrequire = \"accept\"\n";
        let b = "\n[[rule]]\nscope = [\"s.io\", \"r.io/team\"]\nrequire = \"reject\"\n";
        let err = load_err(&[("a.toml", a), ("b.toml", b)]);
        assert_one(&err, "b.toml", 3, "duplicate rule: scope \"r.io/team\" for all namespaces");
        let msg = err.to_string();
        assert!(msg.contains("b.toml:3: ") && msg.contains("defined at ") && msg.contains("a.toml:2"), "{msg}");
    }

    #[test]
    fn duplicate_scope_after_normalisation() {
        let a = "[[rule]]\nscope = \"index.docker.io/library/nginx:1\"\nrequire = \"accept\"\n";
        let b = "[[rule]]\nscope = \"docker.io/nginx:1\"\nrequire = \"reject\"\n";
        assert_one(&load_err(&[("a.toml", a), ("b.toml", b)]), "b.toml", 2, "duplicate rule");
    }

    #[test]
    fn namespaces_tie_break_and_overlap() {
        let rule = |ns: &str| format!("[[rule]]\nscope = \"r.io\"\nrequire = \"accept\"\n{ns}\n");
        let dir = setup(&[
            ("a.toml", &rule("")),
            ("b.toml", &rule("namespaces = [\"dev\"]")),
            ("c.toml", &rule("namespaces = [\"prod\"]")),
        ]);
        assert_eq!(load(&dir).unwrap().rules().len(), 3, "general + disjoint namespace rules coexist");
        let err = load_err(&[
            ("a.toml", &rule("namespaces = [\"dev\", \"qa\"]")),
            ("b.toml", &rule("namespaces = [\"qa\"]")),
        ]);
        assert_one(&err, "b.toml", 2, "namespaces [\"qa\"] is already defined at");
    }

    #[test]
    fn every_broken_rule_in_a_file_is_reported() {
        let text = "[[rule]]\nscope = \"a.io\"\nrequire = \"accept\"\nkeyz = 1\n\n[[rule]]\nscope = \"b.io\"\nrequire = \"allow\"\n\n[[rule]]\nscope = \"nginx\"\nrequire = \"accept\"\n\n[[rule]]\nscope = \"d.io\"\n";
        let err = load_err(&[("a.toml", text)]);
        let got: Vec<_> = err.problems.iter().map(|p| p.line).collect();
        assert_eq!(got, vec![Some(4), Some(8), Some(11), Some(14)], "{err}");
        assert!(err.problems[1].message.contains("not \"allow\""), "{err}");
        assert!(err.problems[3].message.contains("missing key \"require\""), "{err}");
    }

    #[test]
    fn header_lookalike_inside_a_string_still_reports_the_real_error() {
        let text = "[[rule]]\nscope = \"a.io\"\nrequire = \"accept\"\nbad = \"\"\"\n[[rule]]\n\"\"\"\n";
        let err = load_err(&[("a.toml", text)]);
        assert!(err.problems.iter().any(|p| p.message.contains("unknown key \"bad\"")), "{err}");
    }

    #[test]
    fn sections_split_before_headers() {
        let text = "# x\n[[rule]]\na = 1\n  [[rule]]\nb = 2";
        let parts: Vec<_> = sections(text).into_iter().map(|r| &text[r]).collect();
        assert_eq!(parts, vec!["# x\n", "[[rule]]\na = 1\n", "  [[rule]]\nb = 2"]);
        assert_eq!(blank_outside("ab\ncd\nef", &(3..6)), "  \ncd\n  ");
    }

    #[test]
    fn all_problems_in_all_files_are_collected() {
        let a = format!("{SIGNED}threshold = 0\n\n[[rule]]\nscope = \"nginx\"\nrequire = \"accept\"\n");
        let b = "[[rule]]\nscope = \"r.io\"\nrequire = \"accept\"\nbogus = 1\n";
        let err = load_err(&[("a.toml", &a), ("b.toml", b)]);
        let got: Vec<_> =
            err.problems.iter().map(|p| (p.file.file_name().unwrap().to_string_lossy().into_owned(), p.line)).collect();
        let expect = [("a.toml", Some(3)), ("a.toml", Some(4)), ("a.toml", Some(7)), ("b.toml", Some(4))];
        let expect: Vec<_> = expect.iter().map(|(f, l)| (f.to_string(), *l)).collect();
        assert_eq!(got, expect, "{err}");
    }

    // === keyless signers ===

    const GITHUB: &str = "https://token.actions.githubusercontent.com";

    /// `setup`, plus a trusted root (sigstore's staging root) at policy.d/roots/staging.json.
    fn setup_keyless(rule: &str) -> TestDir {
        let dir = setup(&[("a.toml", rule)]);
        dir.write("policy.d/roots/staging.json", sigstore_verify::trust_root::SIGSTORE_STAGING_TRUSTED_ROOT);
        dir
    }

    fn keyless_err(rule: &str) -> PolicyError {
        let dir = setup_keyless(rule);
        load(&dir).expect_err("a load error")
    }

    #[test]
    fn identities_as_the_brief_writes_them() {
        let rule = format!(
            "{SIGNED}identities = [\n  {{ issuer = \"{GITHUB}\", subject = \"https://github.com/org/app/.github/workflows/release.yml@refs/tags/v1\" }},\n  \
             {{ issuer_regex = \"https://accounts\\\\.example\\\\.com\", subject_regex = \".*@example\\\\.com\" }},\n]\n\
             keys = [\"keys/a.pub\"]\ntrusted_root = \"roots/staging.json\"\nignore_tlog = false\nignore_sct = true\nthreshold = 3\n"
        );
        let dir = setup_keyless(&rule);
        let policy = load(&dir).unwrap();
        let rule = &policy.rules()[0];
        assert_eq!((rule.keys.len(), rule.identities.len(), rule.threshold), (1, 2, 3));
        // Groups: the key's, then one per identity.
        let groups: Vec<usize> = rule.identities.iter().map(|s| s.group).collect();
        assert_eq!((rule.keys[0].group, groups), (0, vec![1, 2]));
        let (first, second) = (&rule.identities[0], &rule.identities[1]);
        assert!(first.matches("https://github.com/org/app/.github/workflows/release.yml@refs/tags/v1", GITHUB));
        assert!(!first.matches("https://github.com/org/app/.github/workflows/release.yml@refs/tags/v2", GITHUB));
        assert!(second.matches("ann@example.com", "https://accounts.example.com"));
        assert!(!second.matches("ann@example.com", "https://accounts.example.com.evil.io"));
        let trust = &first.trust;
        assert_eq!(trust.source, RootSource::File(dir.path("policy.d/roots/staging.json")));
        assert!(!trust.sct, "ignore_sct = true");
        assert!(Arc::ptr_eq(trust, &second.trust), "one rule, one trust");
    }

    #[test]
    fn identities_alone_default_to_the_built_in_root_with_every_proof() {
        let rule = format!("{SIGNED}identities = [{{ issuer = \"{GITHUB}\", subject_regex = \".*\" }}]\n");
        let policy = load(&setup_keyless(&rule)).unwrap();
        let rule = &policy.rules()[0];
        assert_eq!((rule.keys.len(), rule.threshold), (0, 1));
        assert_eq!(rule.identities[0].trust.source, RootSource::BuiltIn);
        assert!(rule.identities[0].trust.sct);
        assert_eq!(rule.identities[0].trust.root_label(), "the built-in Sigstore public-good root");
    }

    #[test]
    fn bad_identity_entries_name_their_line() {
        let cases = [
            ("{ issuer = \"i\" }", "needs `subject` or `subject_regex`"),
            ("{ subject = \"s\" }", "needs `issuer` or `issuer_regex`"),
            ("{ issuer = \"i\", issuer_regex = \"i\", subject = \"s\" }", "both `issuer` and `issuer_regex`"),
            ("{ issuer = \"i\", subject_regex = \"(unclosed\" }", "identity subject_regex is not a valid regex"),
            ("{ issuer_regex = \"a)|(b\", subject = \"s\" }", "identity issuer_regex is not a valid regex"),
            ("{ issuer = \"\", subject = \"s\" }", "identity issuer is empty"),
            ("{ issuer = \"i\", subject = \"s\", email = \"x\" }", "unknown key"),
        ];
        for (entry, needle) in cases {
            let err = keyless_err(&format!("{SIGNED}keys = [\"keys/a.pub\"]\nidentities = [\n  {entry},\n]\n"));
            assert_one(&err, "a.toml", 6, needle);
        }
        let twice = format!(
            "{SIGNED}identities = [\n{{ issuer = \"i\", subject = \"s\" }},\n{{ issuer = \"i\", subject = \"s\" }},\n]\n"
        );
        assert_one(&keyless_err(&twice), "a.toml", 6, "is listed twice");
    }

    #[test]
    fn threshold_counts_keys_and_identities() {
        let rule = |n| {
            format!(
                "{SIGNED}keys = [\"keys/a.pub\"]\nidentities = [{{ issuer = \"i\", subject = \"s\" }}]\nthreshold = {n}\n"
            )
        };
        assert_eq!(load(&setup_keyless(&rule(2))).unwrap().rules()[0].threshold, 2);
        assert_one(&keyless_err(&rule(3)), "a.toml", 6, "threshold 3 is more than the 2 keys and identities listed");
        let none = format!("{SIGNED}identities = []\n");
        assert_one(&keyless_err(&none), "a.toml", 3, "needs at least one key in `keys` or one signer in `identities`");
    }

    #[test]
    fn keyless_options_need_signers_and_a_usable_root() {
        let options = format!("{SIGNED}keys = [\"keys/a.pub\"]\ntrusted_root = \"roots/staging.json\"\n");
        assert_one(&keyless_err(&options), "a.toml", 5, "`trusted_root` applies to keyless signers");
        let signer = format!("{SIGNED}identities = [{{ issuer = \"i\", subject = \"s\" }}]\n");
        let tlog = format!("{signer}ignore_tlog = true\n");
        assert_one(&keyless_err(&tlog), "a.toml", 5, "ignore_tlog = true is not supported");
        let missing = format!("{signer}trusted_root = \"roots/gone.json\"\n");
        let err = keyless_err(&missing);
        assert_one(&err, "a.toml", 5, "roots/gone.json: cannot open");
        let dir = setup_keyless(&format!("{signer}trusted_root = \"keys/a.pub\"\n"));
        assert_one(&load(&dir).unwrap_err(), "a.toml", 5, "keys/a.pub: unusable:");
        let dir = setup_keyless(&format!("{signer}trusted_root = \"/dev/zero\"\n"));
        assert_one(&load(&dir).unwrap_err(), "a.toml", 5, "/dev/zero: is a character device");
        let accept = "[[rule]]\nscope = \"r.io\"\nrequire = \"accept\"\nidentities = []\ntrusted_root = \"x\"\nignore_tlog = false\nignore_sct = false\n";
        let err = keyless_err(accept);
        let names: Vec<&str> = err.problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(names.len(), 4, "{err}");
        assert!(names.iter().all(|m| m.contains("is only allowed with require = \"signed\"")), "{err}");
    }
}
