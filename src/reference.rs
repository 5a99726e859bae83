//! Image references and content digests, read exactly as containerd reads them.
//!
//! containerd's CRI plugin parses every PullImage name with distribution/reference's
//! `ParseDockerRef`. pullgate must decide on the image containerd will fetch, so it reads a
//! name the same way (host, repository, tag, digest) or refuses it; it never reinterprets.
//! `tests/refdiff` holds containerd's parser, and a differential test keeps the two in step.
//! pullgate is stricter in a few places, always by refusing: capitalised or ambiguous hosts
//! (see `host`), sha384 digests, a one-component Docker Hub name under one of Hub's other
//! host names (`registry-1.docker.io/nginx`: containerd asks for `nginx`, not
//! `library/nginx`).
//!
//! Normalisation matters for security: policy scopes are matched against the canonical form,
//! so two spellings of one image ("nginx", "docker.io/library/nginx",
//! "index.docker.io/library/nginx", "registry-1.docker.io:443/library/nginx") must compare
//! equal or a scope could be dodged. An `ImageRef` keeps both: its `Display`, `name` and
//! `pinned` forms carry the host as containerd reads it (containerd's `certs.d` and registry
//! settings are keyed by that spelling, so it is what gets forwarded), and `canonical`,
//! `canonical_name` and `registry().canonical()` are what policy, caches and slots compare.

mod host;

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256, Sha512};

pub use host::{DOCKER_HUB, RegistryHost};

/// Longest repository path accepted (distribution/reference's limit; the host is not counted).
const MAX_PATH_LEN: usize = 255;
/// Longest tag accepted (distribution/reference's limit).
const MAX_TAG_LEN: usize = 128;
/// distribution/reference refuses a name of exactly this many lowercase hex digits: an image id.
const IDENTIFIER_LEN: usize = 64;
/// Error messages quote at most this much of the input, so a hostile reference cannot flood logs.
const QUOTE_LIMIT: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("empty image reference")]
    Empty,
    #[error("repository name is too long ({0} bytes; at most 255)")]
    TooLong(usize),
    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex> or sha512:<128 lowercase hex>")]
    InvalidDigest(String),
    #[error("invalid registry host {0:?}")]
    InvalidRegistry(String),
    #[error("registry host {0:?} has a port containerd cannot connect to (1 to 65535)")]
    InvalidPort(String),
    #[error(
        "registry host {0:?} has capital letters; containerd compares hosts as written (\"Docker.io\" is not Docker Hub to it), so write it in lowercase"
    )]
    CapitalisedRegistry(String),
    #[error("registry host {host:?} is refused: {why} may lead elsewhere than pullgate would check")]
    AmbiguousHost { host: String, why: &'static str },
    #[error("{0:?} is an image id, not an image name")]
    Identifier(String),
    #[error(
        "{0:?}: on a Docker Hub host other than docker.io containerd does not add \"library/\"; write docker.io/library/NAME"
    )]
    HubShortName(String),
    #[error("invalid repository name {0:?}")]
    InvalidRepository(String),
    #[error("repository name {0:?} must be lowercase")]
    UppercaseRepository(String),
    #[error("invalid tag {0:?}")]
    InvalidTag(String),
}

/// Quote a piece of input in an error, bounded in length.
fn quote(s: &str) -> String {
    s.chars().take(QUOTE_LIMIT).collect()
}

// === impl Digest ===

/// A content digest, "sha256:<64 hex>" or "sha512:<128 hex>", always lowercase.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    pub fn algorithm(&self) -> &str {
        self.0.split_once(':').map_or("", |(a, _)| a)
    }

    pub fn hex(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, h)| h)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Recompute the digest of `bytes` with this digest's algorithm and compare.
    pub fn verify(&self, bytes: &[u8]) -> bool {
        let computed = match self.algorithm() {
            "sha256" => hex::encode(Sha256::digest(bytes)),
            "sha512" => hex::encode(Sha512::digest(bytes)),
            _ => return false,
        };
        computed == self.hex()
    }
}

impl FromStr for Digest {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ReferenceError::InvalidDigest(quote(s));
        let (algorithm, hex) = s.split_once(':').ok_or_else(bad)?;
        let want_len = match algorithm {
            "sha256" => 64,
            "sha512" => 128,
            _ => return Err(bad()),
        };
        // Why lowercase only: digests are compared as strings everywhere (scopes, payloads),
        // so a second spelling of the same digest must not exist.
        let lower_hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
        if hex.len() != want_len || !hex.chars().all(lower_hex) {
            return Err(bad());
        }
        Ok(Digest(s.to_owned()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === grammar helpers (shared with policy::scope) ===

/// Split "name[:tag]" at the last ':' after the last '/', so a registry port is not a tag.
pub(crate) fn split_tag(s: &str) -> (&str, Option<&str>) {
    let slash = s.rfind('/').map_or(0, |i| i + 1);
    match s[slash..].rfind(':') {
        Some(i) => (&s[..slash + i], Some(&s[slash + i + 1..])),
        None => (s, None),
    }
}

/// Whether the part before the first '/' names a registry host: distribution/reference's
/// rule, case included ("Foo/bar" is host "Foo", which `RegistryHost` then refuses).
fn looks_like_registry(component: &str) -> bool {
    component.contains(['.', ':']) || component == "localhost" || component.to_lowercase() != component
}

pub(crate) fn validate_tag(tag: &str) -> Result<(), ReferenceError> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let ok = tag.len() <= MAX_TAG_LEN
        && tag.chars().next().is_some_and(word)
        && tag.chars().all(|c| word(c) || c == '.' || c == '-');
    if ok { Ok(()) } else { Err(ReferenceError::InvalidTag(quote(tag))) }
}

pub(crate) fn valid_dns_label(label: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    !label.is_empty()
        && label.len() <= 63
        && label.chars().all(|c| alnum(c) || c == '-')
        && label.chars().next().is_some_and(alnum)
        && label.chars().last().is_some_and(alnum)
}

/// Validate a repository path ("library/nginx"): lowercase components separated by '/'.
pub(crate) fn validate_repository(path: &str) -> Result<(), ReferenceError> {
    if path.split('/').all(valid_path_component) {
        return Ok(());
    }
    let lowered = path.to_ascii_lowercase();
    if lowered != path && lowered.split('/').all(valid_path_component) {
        return Err(ReferenceError::UppercaseRepository(quote(path)));
    }
    Err(ReferenceError::InvalidRepository(quote(path)))
}

/// One path component: `[a-z0-9]+` runs joined by '.', '_', '__' or any number of '-'.
fn valid_path_component(c: &str) -> bool {
    let alnum = |ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit();
    if !c.starts_with(alnum) || !c.ends_with(alnum) {
        return false;
    }
    // Splitting on alphanumerics leaves exactly the separator runs (plus empty strings).
    c.split(alnum)
        .filter(|sep| !sep.is_empty())
        .all(|sep| matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-'))
}

/// Docker Hub's official images live under "library/" (for the host written `docker.io`).
fn hub_library(registry: &RegistryHost, path: &str) -> String {
    if registry.as_str() == DOCKER_HUB && !path.contains('/') { format!("library/{path}") } else { path.to_owned() }
}

/// distribution/reference refuses a bare image id where a name belongs.
fn is_identifier(s: &str) -> bool {
    s.len() == IDENTIFIER_LEN && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Split off the registry host the way distribution/reference does: at the first '/', when
/// what comes before it looks like a host; otherwise the name is on Docker Hub.
fn split_host(s: &str) -> Result<(RegistryHost, &str), ReferenceError> {
    match s.split_once('/') {
        Some((first, rest)) if looks_like_registry(first) => Ok((first.parse()?, rest)),
        _ => Ok((RegistryHost::docker_hub(), s)),
    }
}

// === impl ImageRef ===

/// An image reference as containerd reads it: registry, repository, optional tag, optional
/// digest. Equal (and hashed) by its canonical form.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: RegistryHost,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl FromStr for ImageRef {
    type Err = ReferenceError;

    /// distribution/reference's `ParseNormalizedNamed`, step by step.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if is_identifier(s) {
            return Err(ReferenceError::Identifier(quote(s)));
        }
        let (registry, remainder) = split_host(s)?;
        let (rest, digest) = match remainder.split_once('@') {
            Some((rest, d)) => (rest, Some(d.parse::<Digest>()?)),
            None => (remainder, None),
        };
        let (path, tag) = split_tag(rest);
        if let Some(tag) = tag {
            validate_tag(tag)?;
        }
        let repository = hub_library(&registry, path);
        validate_repository(&repository)?;
        if registry.is_hub_alias() && !repository.contains('/') {
            return Err(ReferenceError::HubShortName(quote(s)));
        }
        if repository.len() > MAX_PATH_LEN {
            return Err(ReferenceError::TooLong(repository.len()));
        }
        let tag = tag.map(str::to_owned);
        Ok(ImageRef { registry, repository, tag, digest })
    }
}

impl ImageRef {
    /// Parse as a pull would: a reference with neither tag nor digest means ":latest".
    pub fn parse_for_pull(s: &str) -> Result<ImageRef, ReferenceError> {
        let mut image: ImageRef = s.parse()?;
        if image.tag.is_none() && image.digest.is_none() {
            image.tag = Some("latest".to_owned());
        }
        Ok(image)
    }

    pub fn registry(&self) -> &RegistryHost {
        &self.registry
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// "registry/repository" as containerd reads it, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// "registry/repository" with the canonical registry: what identity rules compare.
    pub fn canonical_name(&self) -> String {
        format!("{}/{}", self.registry.canonical(), self.repository)
    }

    /// The whole reference with the canonical registry: a key for results that hold for
    /// every spelling of the image.
    pub fn canonical(&self) -> String {
        let mut text = self.canonical_name();
        push_tag_and_digest(&mut text, self.tag(), self.digest());
        text
    }

    /// The same image pinned to `d`; the tag is kept for display and identity checks.
    pub fn with_digest(&self, d: Digest) -> ImageRef {
        ImageRef { digest: Some(d), ..self.clone() }
    }

    /// The same image without its tag: a "repo:tag@digest" reference whose tag does not (or is
    /// not known to) point at that digest is only the digest to containerd.
    pub fn without_tag(&self) -> ImageRef {
        ImageRef { tag: None, ..self.clone() }
    }

    /// "registry/repository@digest" when a digest is set: what is actually pulled.
    pub fn pinned(&self) -> Option<String> {
        self.digest.as_ref().map(|d| format!("{}@{}", self.name(), d))
    }
}

fn push_tag_and_digest(text: &mut String, tag: Option<&str>, digest: Option<&Digest>) {
    if let Some(tag) = tag {
        text.push(':');
        text.push_str(tag);
    }
    if let Some(digest) = digest {
        text.push('@');
        text.push_str(digest.as_str());
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.name();
        push_tag_and_digest(&mut text, self.tag(), self.digest());
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn parse(s: &str) -> ImageRef {
        s.parse().unwrap()
    }

    #[test]
    fn digest_roundtrip_and_parts() {
        let d: Digest = format!("sha256:{HEX}").parse().unwrap();
        assert_eq!(d.algorithm(), "sha256");
        assert_eq!(d.hex(), HEX);
        assert_eq!(d.to_string(), format!("sha256:{HEX}"));
        assert_eq!(d, Digest::sha256_of(b""));
        assert!(d.verify(b""));
        assert!(!d.verify(b"x"));
    }

    #[test]
    fn digest_sha512() {
        let hex = hex::encode(Sha512::digest(b"abc"));
        let d: Digest = format!("sha512:{hex}").parse().unwrap();
        assert!(d.verify(b"abc"));
        assert!(!d.verify(b"abd"));
    }

    #[test]
    fn digest_rejects_bad_forms() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            &format!("sha256:{}", HEX.to_uppercase()),
            &format!("sha256:{}", &HEX[1..]),
            &format!("sha256:{HEX}0"),
            &format!("md5:{HEX}"),
            &format!("sha512:{HEX}"),
            &format!("sha256:{}g", &HEX[1..]),
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn short_names_go_to_hub_library() {
        let r = parse("nginx");
        assert_eq!((r.registry().as_str(), r.repository(), r.tag()), ("docker.io", "library/nginx", None));
        assert_eq!(parse("docker.io/nginx").name(), "docker.io/library/nginx");
        assert_eq!(parse("index.docker.io/nginx:1").to_string(), "docker.io/library/nginx:1");
        assert_eq!(parse("bitnami/redis").name(), "docker.io/bitnami/redis");
    }

    #[test]
    fn registries_with_ports_and_localhost() {
        let r = parse("127.0.0.1:5000/team/app:v1");
        assert_eq!((r.registry().as_str(), r.repository(), r.tag()), ("127.0.0.1:5000", "team/app", Some("v1")));
        assert_eq!(parse("localhost/app").registry().as_str(), "localhost");
        assert_eq!(parse("[::1]:5000/app").registry().as_str(), "[::1]:5000");
        // Without a '/' the ":5000" is a tag, exactly as docker reads it.
        assert_eq!(parse("localhost:5000").to_string(), "docker.io/library/localhost:5000");
    }

    #[test]
    fn forwarded_forms_keep_the_host_as_written_and_keys_are_canonical() {
        let r = parse(&format!("127.0.0.1:08123/team/app:v1@sha256:{HEX}"));
        assert_eq!(r.to_string(), format!("127.0.0.1:08123/team/app:v1@sha256:{HEX}"));
        assert_eq!(r.pinned(), Some(format!("127.0.0.1:08123/team/app@sha256:{HEX}")));
        assert_eq!(r.canonical(), format!("localhost:8123/team/app:v1@sha256:{HEX}"));
        assert_eq!(r.canonical_name(), "localhost:8123/team/app");
        assert_eq!(r, parse(&format!("[::1]:8123/team/app:v1@sha256:{HEX}")));
        let hub = parse("registry-1.docker.io:443/library/nginx:1");
        assert_eq!(
            (hub.name().as_str(), hub.canonical().as_str()),
            ("registry-1.docker.io:443/library/nginx", "docker.io/library/nginx:1")
        );
        assert_eq!(hub, parse("nginx:1"));
    }

    /// Each of these is read differently by containerd (distribution/reference) than a
    /// lenient reading would: refused, never reinterpreted.
    #[test]
    fn names_containerd_reads_differently_are_refused() {
        type Case = (&'static str, fn(&ReferenceError) -> bool);
        let cases: &[Case] = &[
            // containerd: host "Docker.io", repository "nginx" (not Docker Hub's library/nginx).
            ("Docker.io/nginx", |e| matches!(e, ReferenceError::CapitalisedRegistry(_))),
            ("Registry.Example.COM/app", |e| matches!(e, ReferenceError::CapitalisedRegistry(_))),
            // containerd: repository "nginx" on Hub's API host, not "library/nginx".
            ("registry-1.docker.io/nginx", |e| matches!(e, ReferenceError::HubShortName(_))),
            ("index.docker.io:443/nginx:1", |e| matches!(e, ReferenceError::HubShortName(_))),
            (HEX, |e| matches!(e, ReferenceError::Identifier(_))),
            ("127.000.000.001:5000/a", |e| matches!(e, ReferenceError::AmbiguousHost { .. })),
            ("r.io:99999/a", |e| matches!(e, ReferenceError::InvalidPort(_))),
            ("[::ffff:127.0.0.1]:5000/a", |e| matches!(e, ReferenceError::InvalidRegistry(_))),
        ];
        for (input, expected) in cases {
            let err = input.parse::<ImageRef>().unwrap_err();
            assert!(expected(&err), "{input:?} gave {err:?}");
        }
        // "index.docker.io" itself is rewritten by containerd's parser, so it stays allowed.
        assert_eq!(parse("index.docker.io/nginx").to_string(), "docker.io/library/nginx");
    }

    #[test]
    fn tag_and_digest_are_both_kept() {
        let r = parse(&format!("ghcr.io/a/b:v2@sha256:{HEX}"));
        assert_eq!(r.tag(), Some("v2"));
        assert_eq!(r.digest().map(Digest::hex), Some(HEX));
        assert_eq!(r.to_string(), format!("ghcr.io/a/b:v2@sha256:{HEX}"));
        assert_eq!(r.pinned(), Some(format!("ghcr.io/a/b@sha256:{HEX}")));
    }

    #[test]
    fn no_default_tag_unless_for_pull() {
        assert_eq!(parse("ghcr.io/a/b").tag(), None);
        assert_eq!(ImageRef::parse_for_pull("ghcr.io/a/b").unwrap().tag(), Some("latest"));
        let by_digest = ImageRef::parse_for_pull(&format!("ghcr.io/a/b@sha256:{HEX}")).unwrap();
        assert_eq!(by_digest.tag(), None);
    }

    #[test]
    fn with_digest_keeps_tag() {
        let r = parse("ghcr.io/a/b:v1").with_digest(Digest::sha256_of(b""));
        assert_eq!(r.to_string(), format!("ghcr.io/a/b:v1@sha256:{HEX}"));
        assert_eq!(parse("ghcr.io/a/b:v1").pinned(), None);
    }

    #[test]
    fn rejects_invalid_references() {
        type Case = (&'static str, fn(&ReferenceError) -> bool);
        let cases: &[Case] = &[
            ("", |e| matches!(e, ReferenceError::Empty)),
            ("ghcr.io/Team/app", |e| matches!(e, ReferenceError::UppercaseRepository(_))),
            ("ghcr.io/a//b", |e| matches!(e, ReferenceError::InvalidRepository(_))),
            ("ghcr.io/a/-b", |e| matches!(e, ReferenceError::InvalidRepository(_))),
            ("ghcr.io/a/b:", |e| matches!(e, ReferenceError::InvalidTag(_))),
            ("ghcr.io/a/b:.x", |e| matches!(e, ReferenceError::InvalidTag(_))),
            ("ghcr.io/a/b@sha256:abc", |e| matches!(e, ReferenceError::InvalidDigest(_))),
            ("bad_host.io/a", |e| matches!(e, ReferenceError::InvalidRegistry(_))),
            ("host.io:99999x/a", |e| matches!(e, ReferenceError::InvalidRegistry(_))),
            ("[::1/a", |e| matches!(e, ReferenceError::InvalidRegistry(_))),
            ("Host/a", |e| matches!(e, ReferenceError::CapitalisedRegistry(_))),
            ("user:pw@host/a", |e| matches!(e, ReferenceError::InvalidRegistry(_))),
            ("user@host/a", |e| matches!(e, ReferenceError::InvalidDigest(_))),
        ];
        for (input, expected) in cases {
            let err = input.parse::<ImageRef>().unwrap_err();
            assert!(expected(&err), "{input:?} gave {err:?}");
        }
    }

    #[test]
    fn repository_separators() {
        for ok in ["a/b.c", "a/b_c", "a/b__c", "a/b---c", "a/0"] {
            assert!(format!("ghcr.io/{ok}").parse::<ImageRef>().is_ok(), "{ok}");
        }
        for bad in ["a/b..c", "a/b___c", "a/b._c", "a/b.", "a/_b"] {
            assert!(format!("ghcr.io/{bad}").parse::<ImageRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn overlong_names_and_tags() {
        let long = format!("ghcr.io/{}", "a".repeat(256));
        assert!(matches!(long.parse::<ImageRef>(), Err(ReferenceError::TooLong(256))));
        assert!(format!("ghcr.io/{}", "a".repeat(255)).parse::<ImageRef>().is_ok(), "the host is not counted");
        assert!(matches!("a".repeat(248).parse::<ImageRef>(), Err(ReferenceError::TooLong(256))), "library/ is");
        let long_host = format!("{}.io/a", vec!["h".repeat(63); 4].join("."));
        assert!(matches!(long_host.parse::<ImageRef>(), Err(ReferenceError::InvalidRegistry(_))));
        let long_tag = format!("ghcr.io/a:{}", "t".repeat(129));
        assert!(matches!(long_tag.parse::<ImageRef>(), Err(ReferenceError::InvalidTag(_))));
    }

    #[test]
    fn error_quotes_are_bounded() {
        let err = format!("ghcr.io/a:{}", "!".repeat(5000)).parse::<ImageRef>().unwrap_err();
        assert!(err.to_string().len() < 300);
    }
}
