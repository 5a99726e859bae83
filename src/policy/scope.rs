//! Policy scopes for the docker transport, with containers-policy.json(5) semantics.
//!
//! A scope is either an individual image (`host/repo:tag`, `host/repo@digest`), a prefix of
//! one (`host/namespace…` or `host/repo`, matched on whole path components; `host[:port]`),
//! a wildcarded host (`*.example.com`: subdomains only, any port) or the default `*`.
//! Exactly like containers/image, the most specific matching scope wins:
//! digest > tag > longer path > shorter path > host > `*.a.b.c` > `*.b.c` > `*`.
//!
//! Registries are compared in their canonical form (`reference::RegistryHost`): a scope
//! naming `127.0.0.1:5000` covers `localhost:5000` and `[::1]:05000` too, and one naming
//! `docker.io` covers `registry-1.docker.io:443`. Wildcards match the canonical host, so
//! they never match loopback or Docker Hub's other host names.

use std::fmt;
use std::str::FromStr;

use crate::reference::{
    DOCKER_HUB, Digest, ImageRef, ReferenceError, RegistryHost, split_tag, valid_dns_label, validate_repository,
    validate_tag,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("empty scope")]
    Empty,
    #[error(
        "scope {0:?} has no registry host; write it fully qualified (e.g. \"docker.io/library/nginx\"), or use \"*\" for the default"
    )]
    Unqualified(String),
    #[error("invalid wildcard scope {0:?}: only a leading \"*.\" followed by a domain is allowed")]
    BadWildcard(String),
    #[error("scope {0:?}: a tag or digest needs a repository")]
    TagWithoutRepository(String),
    #[error("scope {0:?} has both a tag and a digest; use one")]
    TagAndDigest(String),
    #[error("scope {scope:?}: {source}")]
    Reference { scope: String, source: ReferenceError },
}

/// A parsed scope. Registries are lowercased and compare canonically (see the module comment).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `*`: matches every image.
    Default,
    /// `*.example.com`, stored as "example.com": any host strictly below that domain.
    Wildcard(String),
    /// `host[:port]`: every image on exactly that registry (a port is part of the identity).
    Host(RegistryHost),
    /// `host/ns…` or `host/repo`: that repository and everything below it.
    Path { registry: RegistryHost, path: String },
    /// `host/repo:tag`: one tag of one repository.
    Tag { registry: RegistryHost, repository: String, tag: String },
    /// `host/repo@digest`: one manifest of one repository.
    Digest { registry: RegistryHost, repository: String, digest: Digest },
}

/// Total order of how specific a scope is; only meaningful between scopes that match one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Specificity {
    // Field order matters: derived Ord compares `class` first.
    class: u8,
    depth: usize,
}

// === impl Scope: parsing ===

impl FromStr for Scope {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" => Err(ScopeError::Empty),
            "*" => Ok(Scope::Default),
            _ if s.starts_with('*') => parse_wildcard(s),
            _ => parse_named(s),
        }
    }
}

fn parse_wildcard(s: &str) -> Result<Scope, ScopeError> {
    let domain = s.strip_prefix("*.").ok_or_else(|| ScopeError::BadWildcard(s.to_owned()))?;
    // Why no port or path: containers/image strips the port before building wildcard
    // candidates, so `*.example.com:5000` could never match; refuse it instead of ignoring it.
    if domain.is_empty() || !domain.split('.').all(valid_dns_label) {
        return Err(ScopeError::BadWildcard(s.to_owned()));
    }
    Ok(Scope::Wildcard(domain.to_ascii_lowercase()))
}

fn parse_named(s: &str) -> Result<Scope, ScopeError> {
    let wrap = |source| ScopeError::Reference { scope: s.to_owned(), source };
    let (first, rest) = match s.split_once('/') {
        Some((first, rest)) => (first, Some(rest)),
        None => (s, None),
    };
    // Why reject "nginx" or "team/app": containers/image only matches fully expanded names,
    // so such a scope would silently match nothing (and "nginx" is ambiguous besides).
    if !is_host(first) {
        return Err(ScopeError::Unqualified(s.to_owned()));
    }
    let Some(rest) = rest else {
        if s.contains('@') {
            return Err(ScopeError::TagWithoutRepository(s.to_owned()));
        }
        return Ok(Scope::Host(parse_host(first).map_err(wrap)?));
    };
    let registry = parse_host(first).map_err(wrap)?;
    parse_path(s, registry, rest)
}

/// Why lowercase first: host names are case-insensitive, and a reference spelling a host with
/// capitals is refused anyway, so a policy may write them as it likes.
fn parse_host(first: &str) -> Result<RegistryHost, ReferenceError> {
    first.to_ascii_lowercase().parse()
}

/// Stricter than docker's image rule (which also takes "Foo/bar" as a host): a scope's
/// first component must plainly be a host.
fn is_host(first: &str) -> bool {
    first.contains(['.', ':']) || first.eq_ignore_ascii_case("localhost") || first.starts_with('[')
}

fn parse_path(s: &str, registry: RegistryHost, rest: &str) -> Result<Scope, ScopeError> {
    let wrap = |source| ScopeError::Reference { scope: s.to_owned(), source };
    let (rest, digest) = match rest.split_once('@') {
        Some((r, d)) => (r, Some(d.parse::<Digest>().map_err(wrap)?)),
        None => (rest, None),
    };
    let (path, tag) = split_tag(rest);
    validate_repository(path).map_err(wrap)?;
    match (tag, digest) {
        (None, None) => Ok(Scope::Path { registry, path: path.to_owned() }),
        (Some(_), Some(_)) => Err(ScopeError::TagAndDigest(s.to_owned())),
        (Some(tag), None) => {
            validate_tag(tag).map_err(wrap)?;
            let repository = hub_library(&registry, path);
            Ok(Scope::Tag { registry, repository, tag: tag.to_owned() })
        }
        (None, Some(digest)) => {
            let repository = hub_library(&registry, path);
            Ok(Scope::Digest { registry, repository, digest })
        }
    }
}

// === impl Scope: matching ===

impl Scope {
    pub fn matches(&self, image: &ImageRef) -> bool {
        let same_repo = |registry: &RegistryHost, repository: &str| {
            image.registry() == registry && image.repository() == repository
        };
        match self {
            Scope::Default => true,
            Scope::Wildcard(domain) => wildcard_matches(domain, image.registry().canonical()),
            Scope::Host(host) => image.registry() == host,
            Scope::Path { registry, path } => {
                image.registry() == registry && path_prefix_matches(path, image.repository())
            }
            Scope::Tag { registry, repository, tag } => {
                same_repo(registry, repository) && image.tag() == Some(tag.as_str())
            }
            Scope::Digest { registry, repository, digest } => {
                same_repo(registry, repository) && image.digest() == Some(digest)
            }
        }
    }

    /// The registry a scope names, if it names one.
    pub fn registry(&self) -> Option<&RegistryHost> {
        match self {
            Scope::Default | Scope::Wildcard(_) => None,
            Scope::Host(registry)
            | Scope::Path { registry, .. }
            | Scope::Tag { registry, .. }
            | Scope::Digest { registry, .. } => Some(registry),
        }
    }

    pub fn specificity(&self) -> Specificity {
        let (class, depth) = match self {
            Scope::Default => (0, 0),
            Scope::Wildcard(domain) => (1, domain.split('.').count()),
            Scope::Host(_) => (2, 0),
            Scope::Path { path, .. } => (3, path.split('/').count()),
            Scope::Tag { .. } => (4, 0),
            // Why digest above tag: for "repo:tag@digest" pulls both may match, and the
            // digest names the exact content while the tag is only a pointer.
            Scope::Digest { .. } => (5, 0),
        };
        Specificity { class, depth }
    }
}

/// An individual-image scope is unambiguous, so Docker Hub short forms can be expanded, under
/// any of Hub's host names.
fn hub_library(registry: &RegistryHost, path: &str) -> String {
    if registry.canonical() == DOCKER_HUB && !path.contains('/') { format!("library/{path}") } else { path.to_owned() }
}

/// `repository` equals `path` or lies below it; "team/a" must not match "team/ab".
pub(crate) fn path_prefix_matches(path: &str, repository: &str) -> bool {
    repository.strip_prefix(path).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// containers/image drops the port, then tries `*.<parent>` for each strict parent domain.
fn wildcard_matches(domain: &str, registry: &str) -> bool {
    let host = strip_port(registry);
    host.len() > domain.len() + 1 && host.ends_with(domain) && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
}

fn strip_port(registry: &str) -> &str {
    if registry.starts_with('[') {
        // An IPv6 literal "[…]" has no parent domain, so no wildcard can match it.
        return registry.find(']').map_or(registry, |end| &registry[..=end]);
    }
    registry.split_once(':').map_or(registry, |(h, _)| h)
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Default => f.write_str("*"),
            Scope::Wildcard(domain) => write!(f, "*.{domain}"),
            Scope::Host(host) => write!(f, "{host}"),
            Scope::Path { registry, path } => write!(f, "{registry}/{path}"),
            Scope::Tag { registry, repository, tag } => write!(f, "{registry}/{repository}:{tag}"),
            Scope::Digest { registry, repository, digest } => {
                write!(f, "{registry}/{repository}@{digest}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn scope(s: &str) -> Scope {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn image(s: &str) -> ImageRef {
        s.parse().unwrap()
    }

    fn host(s: &str) -> RegistryHost {
        s.parse().unwrap()
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(scope("*"), Scope::Default);
        assert_eq!(scope("*.Example.com"), Scope::Wildcard("example.com".into()));
        assert_eq!(scope("Registry.io:5000"), Scope::Host(host("registry.io:5000")));
        assert_eq!(scope("localhost"), Scope::Host(host("localhost")));
        assert_eq!(
            scope("index.docker.io/library"),
            Scope::Path { registry: host("docker.io"), path: "library".into() }
        );
        assert_eq!(
            scope("r.io:5000/ns/app:v1"),
            Scope::Tag { registry: host("r.io:5000"), repository: "ns/app".into(), tag: "v1".into() }
        );
        let d = scope(&format!("r.io/app@sha256:{HEX}"));
        assert!(matches!(d, Scope::Digest { ref repository, .. } if repository == "app"));
    }

    #[test]
    fn registries_compare_canonically() {
        let reject = scope("127.0.0.1:8123");
        for spelling in ["127.0.0.1:08123", "localhost:8123", "[::1]:8123", "[0::1]:8123", "127.0.0.2:8123"] {
            assert!(reject.matches(&image(&format!("{spelling}/other/x:v1"))), "{spelling}");
        }
        assert!(!reject.matches(&image("localhost:8124/other/x:v1")));
        assert!(scope("[::1]:5000/team").matches(&image("[0:0::1]:5000/team/app")));
        assert!(scope("[2001:db8::1]:5000").matches(&image("[2001:0db8::0:1]:5000/a")));
        assert!(scope("example.com").matches(&image("example.com:443/a")));
        assert!(scope("example.com:443/a").matches(&image("example.com/a:v1")));
        for hub in ["registry-1.docker.io/library/nginx:1", "registry-1.docker.io:443/library/nginx:1", "nginx:1"] {
            assert!(scope("docker.io/library/nginx").matches(&image(hub)), "{hub}");
            assert!(scope("index.docker.io:443/nginx:1").matches(&image(hub)), "{hub}");
        }
        // Scopes naming one registry twice are one scope: the loader reports the duplicate.
        assert_eq!(scope("localhost:5000/a"), scope("127.0.0.1:05000/a"));
        assert_eq!(scope("localhost:5000/a").to_string(), "localhost:5000/a", "shown as written");
    }

    #[test]
    fn display_roundtrips() {
        for s in ["*", "*.example.com", "r.io:5000", "r.io/a/b", "r.io/a:v1", &format!("r.io/a@sha256:{HEX}")] {
            assert_eq!(scope(s).to_string(), s);
        }
    }

    #[test]
    fn hub_individual_images_are_expanded_but_namespaces_are_not() {
        assert_eq!(scope("docker.io/nginx:1.25").to_string(), "docker.io/library/nginx:1.25");
        // "docker.io/bitnami" is a namespace (docker.io/bitnami/redis), so it stays literal.
        assert_eq!(scope("docker.io/bitnami").to_string(), "docker.io/bitnami");
        assert!(scope("docker.io/bitnami").matches(&image("bitnami/redis")));
        assert!(!scope("docker.io/nginx").matches(&image("nginx")));
    }

    /// Each input must fail with an error whose Debug form contains the given kind.
    fn assert_errors(cases: &[(&str, &str)]) {
        for (input, kind) in cases {
            let err = input.parse::<Scope>().unwrap_err();
            assert!(format!("{err:?}").contains(kind), "{input:?} gave {err:?}");
        }
    }

    #[test]
    fn rejects_unqualified_scopes() {
        assert_errors(&[
            ("", "Empty"),
            ("nginx", "Unqualified"),
            ("team/app", "Unqualified"),
            ("Team/app", "Unqualified"),
            // Read as host "nginx", port "latest": refused either way.
            ("nginx:latest", "InvalidRegistry"),
        ]);
    }

    #[test]
    fn rejects_bad_wildcards() {
        assert_errors(&[
            ("*example.com", "BadWildcard"),
            ("*.", "BadWildcard"),
            ("*.example.com:5000", "BadWildcard"),
            ("*.example.com/ns", "BadWildcard"),
            ("**", "BadWildcard"),
            ("*.exa_mple.com", "BadWildcard"),
        ]);
    }

    #[test]
    fn rejects_bad_paths_tags_and_digests() {
        let both = format!("r.io/a:v1@sha256:{HEX}");
        assert_errors(&[
            ("r.io@sha256:00", "TagWithoutRepository"),
            ("r.io/a:v1@sha256:", "InvalidDigest"),
            ("r.io/a:", "InvalidTag"),
            ("r.io/Team", "UppercaseRepository"),
            ("r.io/a/", "InvalidRepository"),
            ("r_x.io/a", "InvalidRegistry"),
            (&both, "TagAndDigest"),
        ]);
    }

    #[test]
    fn unqualified_error_mentions_the_fix() {
        let msg = "nginx".parse::<Scope>().unwrap_err().to_string();
        assert!(msg.contains("docker.io/library/nginx") && msg.contains("\"*\""), "{msg}");
    }

    #[test]
    fn host_scope_respects_ports() {
        let s = scope("r.io");
        assert!(s.matches(&image("r.io/a/b:v1")));
        assert!(!s.matches(&image("r.io:5000/a/b")));
        assert!(scope("r.io:5000").matches(&image("r.io:5000/a")));
        assert!(!scope("r.io:5000").matches(&image("r.io:5001/a")));
        assert!(!scope("r.io:5000").matches(&image("r.io/a")));
    }

    #[test]
    fn path_scope_matches_whole_components() {
        let s = scope("r.io/team/a");
        assert!(s.matches(&image("r.io/team/a")));
        assert!(s.matches(&image("r.io/team/a/sub:v1")));
        assert!(!s.matches(&image("r.io/team/ab")));
        assert!(!s.matches(&image("r.io/team")));
        assert!(!s.matches(&image("other.io/team/a")));
        assert!(!s.matches(&image("r.io:444/team/a")));
    }

    #[test]
    fn tag_and_digest_scopes() {
        let t = scope("r.io/a:v1");
        assert!(t.matches(&image("r.io/a:v1")));
        assert!(t.matches(&image(&format!("r.io/a:v1@sha256:{HEX}"))));
        assert!(!t.matches(&image("r.io/a:v2")));
        assert!(!t.matches(&image("r.io/a")));
        assert!(!t.matches(&image("r.io/a/b:v1")));
        let d = scope(&format!("r.io/a@sha256:{HEX}"));
        assert!(d.matches(&image(&format!("r.io/a@sha256:{HEX}"))));
        assert!(d.matches(&image(&format!("r.io/a:v9@sha256:{HEX}"))));
        assert!(!d.matches(&image("r.io/a:v1")));
        assert!(!d.matches(&image(&format!("r.io/b@sha256:{HEX}"))));
        assert!(scope("docker.io/nginx:1").matches(&image("nginx:1")));
    }

    #[test]
    fn wildcard_matches_subdomains_only() {
        let s = scope("*.example.com");
        assert!(s.matches(&image("a.example.com/x")));
        assert!(s.matches(&image("b.a.example.com/x")));
        assert!(s.matches(&image("a.example.com:5000/x")), "port is ignored, as containers/image does");
        assert!(!s.matches(&image("example.com/x")), "the domain itself is not a subdomain");
        assert!(!s.matches(&image("badexample.com/x")));
        assert!(!s.matches(&image("example.com.evil.io/x")));
        assert!(!s.matches(&image("[::1]:5000/x")));
        assert!(scope("*.com").matches(&image("example.com/x")));
    }

    #[test]
    fn default_matches_everything() {
        assert!(scope("*").matches(&image("nginx")));
        assert!(scope("*").matches(&image("[::1]:5000/x")));
    }

    #[test]
    fn specificity_order() {
        let ordered = [
            "*",
            "*.com",
            "*.example.com",
            "*.team.example.com",
            "a.team.example.com:5000",
            "a.team.example.com:5000/ns",
            "a.team.example.com:5000/ns/app",
            "a.team.example.com:5000/ns/app:v1",
            &format!("a.team.example.com:5000/ns/app@sha256:{HEX}"),
        ];
        let img = image(&format!("a.team.example.com:5000/ns/app:v1@sha256:{HEX}"));
        for pair in ordered.windows(2) {
            let (lo, hi) = (scope(pair[0]), scope(pair[1]));
            assert!(lo.matches(&img) && hi.matches(&img), "{pair:?} should both match");
            assert!(lo.specificity() < hi.specificity(), "{} < {}", pair[0], pair[1]);
        }
    }
}
