//! Image references and content digests, normalised the way docker/containerd do it.
//!
//! Normalisation matters for security here: policy scopes are matched against the
//! normalised form, so two spellings of one image ("nginx", "docker.io/library/nginx",
//! "index.docker.io/library/nginx") must end up identical or a scope could be dodged.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256, Sha512};

/// Docker's default registry; short names resolve here.
pub const DOCKER_HUB: &str = "docker.io";
/// Longest "registry/repository" accepted (distribution/reference's limit).
const MAX_NAME_LEN: usize = 255;
/// Longest tag accepted (distribution/reference's limit).
const MAX_TAG_LEN: usize = 128;
/// Error messages quote at most this much of the input, so a hostile reference cannot flood logs.
const QUOTE_LIMIT: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("empty image reference")]
    Empty,
    #[error("image name is too long ({0} bytes; at most 255)")]
    TooLong(usize),
    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex> or sha512:<128 lowercase hex>")]
    InvalidDigest(String),
    #[error("invalid registry host {0:?}")]
    InvalidRegistry(String),
    #[error("registry host {0:?} is a host only because of its capital letters; write it with a domain or a port")]
    CapitalisedRegistry(String),
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

/// Whether the first path component names a registry host (docker's rule), not a Hub namespace.
fn looks_like_registry(component: &str) -> bool {
    component.contains(['.', ':'])
        || component == "localhost"
        || component.starts_with('[')
        || component.chars().any(|c| c.is_ascii_uppercase())
}

pub(crate) fn validate_tag(tag: &str) -> Result<(), ReferenceError> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let ok = tag.len() <= MAX_TAG_LEN
        && tag.chars().next().is_some_and(word)
        && tag.chars().all(|c| word(c) || c == '.' || c == '-');
    if ok { Ok(()) } else { Err(ReferenceError::InvalidTag(quote(tag))) }
}

/// Validate "host[:port]" and return it lowercased, with Docker Hub's alias folded.
pub(crate) fn normalize_registry(host: &str) -> Result<String, ReferenceError> {
    let bad = || ReferenceError::InvalidRegistry(quote(host));
    let (name, port) = split_port(host).ok_or_else(bad)?;
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(bad());
    }
    let valid_name = if let Some(ip6) = name.strip_prefix('[') {
        ip6.strip_suffix(']').is_some_and(|inner| {
            !inner.is_empty() && inner.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        })
    } else {
        !name.is_empty() && name.split('.').all(valid_dns_label)
    };
    if !valid_name {
        return Err(bad());
    }
    // Why lowercase: hostnames are case-insensitive, scopes are compared as strings.
    let lowered = host.to_ascii_lowercase();
    Ok(if lowered == "index.docker.io" { DOCKER_HUB.to_owned() } else { lowered })
}

/// Split "host[:port]" (host may be a bracketed IPv6 literal). None if malformed.
fn split_port(host: &str) -> Option<(&str, Option<&str>)> {
    if host.starts_with('[') {
        let end = host.find(']')?;
        let rest = &host[end + 1..];
        return match rest.strip_prefix(':') {
            Some(port) => Some((&host[..=end], Some(port))),
            None if rest.is_empty() => Some((host, None)),
            None => None,
        };
    }
    Some(match host.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    })
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

/// Split "host/path" (or a bare Hub path) into (registry, repository), docker-style.
fn split_registry(name: &str) -> Result<(String, String), ReferenceError> {
    let (registry, path) = match name.split_once('/') {
        Some((first, rest)) if looks_like_registry(first) => (registry_host(first)?, rest),
        _ => (DOCKER_HUB.to_owned(), name),
    };
    Ok((registry.clone(), hub_library(&registry, path)))
}

/// A first component that docker reads as a host, normalised.
fn registry_host(first: &str) -> Result<String, ReferenceError> {
    let registry = normalize_registry(first)?;
    // Lowercased, "Host/app" would read as the Hub image "host/app": the name verified and the
    // one containerd is told to pull would then be on different registries.
    if looks_like_registry(&registry) { Ok(registry) } else { Err(ReferenceError::CapitalisedRegistry(quote(first))) }
}

/// Docker Hub's official images live under "library/".
pub(crate) fn hub_library(registry: &str, path: &str) -> String {
    if registry == DOCKER_HUB && !path.contains('/') { format!("library/{path}") } else { path.to_owned() }
}

// === impl ImageRef ===

/// A normalised image reference: registry, repository, optional tag, optional digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl FromStr for ImageRef {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (rest, Some(d.parse::<Digest>()?)),
            None => (s, None),
        };
        let (name, tag) = split_tag(rest);
        if let Some(tag) = tag {
            validate_tag(tag)?;
        }
        let (registry, repository) = split_registry(name)?;
        validate_repository(&repository)?;
        let len = registry.len() + 1 + repository.len();
        if len > MAX_NAME_LEN {
            return Err(ReferenceError::TooLong(len));
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

    pub fn registry(&self) -> &str {
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

    /// "registry/repository", without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
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

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
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
        assert_eq!((r.registry(), r.repository(), r.tag()), ("docker.io", "library/nginx", None));
        assert_eq!(parse("docker.io/nginx").name(), "docker.io/library/nginx");
        assert_eq!(parse("index.docker.io/nginx:1").to_string(), "docker.io/library/nginx:1");
        assert_eq!(parse("bitnami/redis").name(), "docker.io/bitnami/redis");
    }

    #[test]
    fn registries_with_ports_and_localhost() {
        let r = parse("127.0.0.1:5000/team/app:v1");
        assert_eq!((r.registry(), r.repository(), r.tag()), ("127.0.0.1:5000", "team/app", Some("v1")));
        assert_eq!(parse("localhost/app").registry(), "localhost");
        assert_eq!(parse("[::1]:5000/app").registry(), "[::1]:5000");
        assert_eq!(parse("Registry.Example.COM/app").registry(), "registry.example.com");
        // Without a '/' the ":5000" is a tag, exactly as docker reads it.
        assert_eq!(parse("localhost:5000").to_string(), "docker.io/library/localhost:5000");
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
            ("user:pw@host/a", |e| matches!(e, ReferenceError::InvalidDigest(_))),
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
        let long = format!("ghcr.io/{}", "a".repeat(260));
        assert!(matches!(long.parse::<ImageRef>(), Err(ReferenceError::TooLong(_))));
        let long_tag = format!("ghcr.io/a:{}", "t".repeat(129));
        assert!(matches!(long_tag.parse::<ImageRef>(), Err(ReferenceError::InvalidTag(_))));
    }

    #[test]
    fn error_quotes_are_bounded() {
        let err = format!("ghcr.io/a:{}", "!".repeat(5000)).parse::<ImageRef>().unwrap_err();
        assert!(err.to_string().len() < 300);
    }
}
