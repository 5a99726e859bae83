//! Which signed identity (the payload's `docker-reference`) is acceptable for a pulled image.
//!
//! The rules mean what containers-policy.json(5)'s `signedIdentity` means. Both sides are
//! normalised first ("busybox" == "docker.io/library/busybox"), and registries compare in
//! their canonical form, as policy scopes do ("localhost:5000" == "127.0.0.1:5000"). `pulled` is the reference
//! as requested (with the tag, if the pull named one). Passing it pinned to the resolved
//! digest (`ImageRef::with_digest`) is fine too: where a tag was requested the tag still
//! decides, and a digest named by the signature must then equal the resolved one.
//!
//! cosign signs the bare repository ("registry/repo", no tag, no digest). With such
//! signatures:
//! - `MatchRepository`: passes when the repositories are equal. The usual choice for cosign;
//!   note it does not bind the tag, so a signed image can be served under another tag.
//! - `MatchExact`: never passes (the signed identity carries neither tag nor digest).
//! - `MatchRepoDigestOrExact`: passes for pulls by digest only; a pull by tag needs a signed
//!   identity with that same tag.
//! - `Remap`: like `MatchRepoDigestOrExact` after rewriting the pulled name's `prefix` to
//!   `signed_prefix`; so with cosign signatures only pulls by digest pass.
//! - `ExactRepository(r)`: passes when the signed repository is `r`, whatever was pulled
//!   (for mirrors that keep the upstream signatures).
//! - `Ignore`: always passes; the key alone decides (pullgate-only, not in containers).

use std::fmt;

use super::scope::{Scope, path_prefix_matches};
use crate::reference::ImageRef;

/// Signed identities quoted in errors are cut to this length (they come from registry data).
const QUOTE_LIMIT: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityRule {
    MatchRepository,
    MatchExact,
    MatchRepoDigestOrExact,
    Ignore,
    /// Both are `host[:port]` or `host[:port]/path`, fully expanded, without tag/digest.
    Remap {
        prefix: String,
        signed_prefix: String,
    },
    /// A fully expanded repository name, e.g. "docker.io/library/busybox".
    ExactRepository(String),
}

/// A signature's identity was not acceptable; `reason` says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signed identity {signed:?} rejected by {rule} for {pulled}: {reason}")]
pub struct IdentityMismatch {
    pub signed: String,
    pub pulled: String,
    pub rule: &'static str,
    pub reason: String,
}

/// A rule from configuration could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IdentityConfigError(String);

// === impl IdentityRule: construction ===

impl IdentityRule {
    /// Validate and normalise a remap rule's prefixes (loaders use this, not the variant).
    pub fn remap(prefix: &str, signed_prefix: &str) -> Result<IdentityRule, IdentityConfigError> {
        Ok(IdentityRule::Remap {
            prefix: parse_prefix("prefix", prefix)?.to_string(),
            signed_prefix: parse_prefix("signed_prefix", signed_prefix)?.to_string(),
        })
    }

    /// Validate and normalise an exact-repository rule.
    pub fn exact_repository(repository: &str) -> Result<IdentityRule, IdentityConfigError> {
        Ok(IdentityRule::ExactRepository(parse_repository(repository)?))
    }

    /// Stable configuration name, used in messages.
    pub fn name(&self) -> &'static str {
        match self {
            IdentityRule::MatchRepository => "match-repository",
            IdentityRule::MatchExact => "match-exact",
            IdentityRule::MatchRepoDigestOrExact => "match-repo-digest-or-exact",
            IdentityRule::Ignore => "ignore",
            IdentityRule::Remap { .. } => "remap",
            IdentityRule::ExactRepository(_) => "exact-repository",
        }
    }
}

fn parse_prefix(field: &str, value: &str) -> Result<Scope, IdentityConfigError> {
    let bad = |why: String| IdentityConfigError(format!("remap {field} {value:?}: {why}"));
    match value.parse::<Scope>() {
        Ok(scope @ (Scope::Host(_) | Scope::Path { .. })) => Ok(scope),
        Ok(_) => Err(bad("must be host[:port] or host[:port]/path, without tag, digest or wildcard".into())),
        Err(e) => Err(bad(e.to_string())),
    }
}

fn parse_repository(value: &str) -> Result<String, IdentityConfigError> {
    let bad = |why: String| IdentityConfigError(format!("exact-repository {value:?}: {why}"));
    let image: ImageRef = value.parse().map_err(|e: crate::reference::ReferenceError| bad(e.to_string()))?;
    if image.tag().is_some() || image.digest().is_some() {
        return Err(bad("must be a repository, without tag or digest".into()));
    }
    Ok(image.canonical_name())
}

// === impl IdentityRule: checking ===

impl IdentityRule {
    pub fn check(&self, pulled: &ImageRef, signed_docker_reference: &str) -> Result<(), IdentityMismatch> {
        let fail = |reason: String| IdentityMismatch {
            signed: signed_docker_reference.chars().take(QUOTE_LIMIT).collect(),
            pulled: pulled.to_string(),
            rule: self.name(),
            reason,
        };
        if *self == IdentityRule::Ignore {
            return Ok(());
        }
        let signed: ImageRef =
            signed_docker_reference.parse().map_err(|e| fail(format!("not a valid image reference ({e})")))?;
        self.check_parsed(pulled, &signed).map_err(fail)
    }

    fn check_parsed(&self, pulled: &ImageRef, signed: &ImageRef) -> Result<(), String> {
        match self {
            IdentityRule::Ignore => Ok(()),
            IdentityRule::MatchRepository => same_repository(&pulled.canonical_name(), signed),
            IdentityRule::MatchExact => exact(pulled, signed),
            IdentityRule::MatchRepoDigestOrExact => repo_digest_or_exact(pulled, signed),
            IdentityRule::Remap { prefix, signed_prefix } => {
                let remapped = remap(pulled, prefix, signed_prefix)?;
                repo_digest_or_exact(&remapped, signed)
            }
            IdentityRule::ExactRepository(repository) => {
                let expected = parse_repository(repository).map_err(|e| e.to_string())?;
                same_repository(&expected, signed)
            }
        }
    }
}

fn same_repository(expected: &str, signed: &ImageRef) -> Result<(), String> {
    if signed.canonical_name() == expected {
        Ok(())
    } else {
        Err(format!("repository {} is not {expected}", signed.canonical_name()))
    }
}

/// containers/image's matchExact: equal references, neither side a bare name. A pulled
/// "repo:tag@digest" accepts a signed "repo:tag", "repo@digest" or the full form, as long
/// as every part the signature names agrees.
fn exact(pulled: &ImageRef, signed: &ImageRef) -> Result<(), String> {
    if signed.tag().is_none() && signed.digest().is_none() {
        return Err("it names neither tag nor digest (as cosign signatures do)".into());
    }
    if pulled.tag().is_none() && pulled.digest().is_none() {
        return Err("the pulled reference names neither tag nor digest".into());
    }
    same_repository(&pulled.canonical_name(), signed)?;
    if signed.tag().is_some() && signed.tag() != pulled.tag() {
        return Err(format!("tag {} is not the pulled tag", Part(signed.tag())));
    }
    if signed.digest().is_some() && signed.digest() != pulled.digest() {
        return Err("its digest is not the pulled digest".into());
    }
    Ok(())
}

/// containers/image's matchRepoDigestOrExact: a pull by tag needs an exact match, a pull
/// by digest only needs the same repository (the digest itself is checked elsewhere).
fn repo_digest_or_exact(pulled: &ImageRef, signed: &ImageRef) -> Result<(), String> {
    match (pulled.tag(), pulled.digest()) {
        (Some(_), _) => exact(pulled, signed),
        (None, Some(_)) => same_repository(&pulled.canonical_name(), signed),
        (None, None) => Err("the pulled reference names neither tag nor digest".into()),
    }
}

/// Rewrite the pulled name's `prefix` to `signed_prefix`; unchanged when it does not match.
fn remap(pulled: &ImageRef, prefix: &str, signed_prefix: &str) -> Result<ImageRef, String> {
    let prefix = parse_prefix("prefix", prefix).map_err(|e| e.to_string())?;
    let signed_prefix = parse_prefix("signed_prefix", signed_prefix).map_err(|e| e.to_string())?;
    let Some(rest) = strip_prefix(&prefix, pulled) else {
        return Ok(pulled.clone());
    };
    let (registry, repository) = match &signed_prefix {
        Scope::Path { registry, path } if rest.is_empty() => (registry, path.clone()),
        Scope::Path { registry, path } => (registry, format!("{path}/{rest}")),
        Scope::Host(host) => (host, rest.to_owned()),
        _ => return Err("signed_prefix is not a host or path".into()),
    };
    if repository.is_empty() {
        return Err(format!("remapping {pulled} onto {signed_prefix} leaves no repository"));
    }
    let mut text = format!("{registry}/{repository}");
    if let Some(tag) = pulled.tag() {
        text.push_str(&format!(":{tag}"));
    }
    if let Some(digest) = pulled.digest() {
        text.push_str(&format!("@{digest}"));
    }
    text.parse().map_err(|e| format!("remapped reference {text:?} is invalid ({e})"))
}

/// The repository part left after `prefix`, or None when `prefix` does not cover `image`.
fn strip_prefix<'a>(prefix: &Scope, image: &'a ImageRef) -> Option<&'a str> {
    match prefix {
        Scope::Host(host) if image.registry() == host => Some(image.repository()),
        Scope::Path { registry, path }
            if image.registry() == registry && path_prefix_matches(path, image.repository()) =>
        {
            Some(image.repository()[path.len()..].trim_start_matches('/'))
        }
        _ => None,
    }
}

/// Displays an optional part, e.g. a missing tag, readably.
struct Part<'a>(Option<&'a str>);

impl fmt::Display for Part<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.unwrap_or("(none)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn img(s: &str) -> ImageRef {
        s.parse().unwrap()
    }

    fn ok(rule: &IdentityRule, pulled: &str, signed: &str) -> bool {
        rule.check(&img(pulled), signed).is_ok()
    }

    #[test]
    fn match_repository() {
        let r = IdentityRule::MatchRepository;
        assert!(ok(&r, "r.io/a:v1", "r.io/a"));
        assert!(ok(&r, "r.io/a:v1", "r.io/a:v2"), "tags are not compared");
        assert!(ok(&r, &format!("r.io/a@{D1}"), &format!("r.io/a@{D2}")));
        assert!(ok(&r, "nginx:1", "docker.io/library/nginx"), "both sides are normalised");
        assert!(ok(&r, "index.docker.io/library/nginx", "nginx"));
        assert!(!ok(&r, "r.io/a:v1", "r.io/b"));
        assert!(!ok(&r, "r.io/a:v1", "r.io/a/b"));
        assert!(!ok(&r, "r.io/a:v1", "r.io:5000/a"));
        assert!(ok(&r, "localhost:5000/a:v1", "127.0.0.1:05000/a"), "registries compare canonically");
        assert!(ok(&r, "registry-1.docker.io/library/nginx:1", "nginx"));
        assert!(!ok(&r, "localhost:5000/a:v1", "localhost:5001/a"));
        assert!(!ok(&r, "r.io/a:v1", "other.io/a"));
    }

    #[test]
    fn match_exact() {
        let r = IdentityRule::MatchExact;
        assert!(ok(&r, "r.io/a:v1", "r.io/a:v1"));
        assert!(ok(&r, &format!("r.io/a@{D1}"), &format!("r.io/a@{D1}")));
        assert!(ok(&r, &format!("r.io/a:v1@{D1}"), "r.io/a:v1"));
        assert!(ok(&r, &format!("r.io/a:v1@{D1}"), &format!("r.io/a@{D1}")));
        assert!(!ok(&r, "r.io/a:v1", "r.io/a"), "cosign-style identity has no tag");
        assert!(!ok(&r, "r.io/a:v1", "r.io/a:v2"));
        assert!(!ok(&r, &format!("r.io/a@{D1}"), "r.io/a:v1"), "digest pull, tag signature");
        assert!(!ok(&r, &format!("r.io/a@{D1}"), &format!("r.io/a@{D2}")));
        assert!(!ok(&r, "r.io/a:v1", &format!("r.io/a:v1@{D1}")), "signature names more than was pulled");
        assert!(!ok(&r, "r.io/a", "r.io/a"), "a bare pulled name never matches exactly");
        assert!(!ok(&r, "r.io/a:v1", "r.io/b:v1"));
    }

    #[test]
    fn match_repo_digest_or_exact() {
        let r = IdentityRule::MatchRepoDigestOrExact;
        assert!(ok(&r, &format!("r.io/a@{D1}"), "r.io/a"), "digest pull: repository is enough");
        assert!(ok(&r, &format!("r.io/a@{D1}"), "r.io/a:anything"));
        assert!(ok(&r, "r.io/a:v1", "r.io/a:v1"));
        assert!(!ok(&r, "r.io/a:v1", "r.io/a"), "tag pull needs the tag signed");
        assert!(!ok(&r, "r.io/a:v1", "r.io/a:v2"));
        assert!(!ok(&r, &format!("r.io/a@{D1}"), "r.io/b"));
        assert!(!ok(&r, "r.io/a", "r.io/a"));
    }

    #[test]
    fn remap() {
        let r = IdentityRule::remap("mirror.local:5000/vendor", "vendor.example.com").unwrap();
        let pulled = format!("mirror.local:5000/vendor/product/app@{D1}");
        assert!(ok(&r, &pulled, "vendor.example.com/product/app"));
        assert!(!ok(&r, &pulled, "mirror.local:5000/vendor/product/app"), "original name no longer counts");
        assert!(!ok(&r, &pulled, "vendor.example.com/product/other"));
        assert!(ok(&r, "mirror.local:5000/vendor/product/app:v1", "vendor.example.com/product/app:v1"));
        assert!(!ok(&r, "mirror.local:5000/vendor/product/app:v1", "vendor.example.com/product/app"));
        // Outside the prefix the image is compared unchanged (matchRepoDigestOrExact).
        assert!(ok(&r, &format!("mirror.local:5000/vendorx/app@{D1}"), "mirror.local:5000/vendorx/app"));
        assert!(!ok(&r, &format!("mirror.local:5000/vendorx/app@{D1}"), "vendor.example.com/x/app"));
    }

    #[test]
    fn remap_onto_hub_and_paths() {
        let r = IdentityRule::remap("mirror.local", "docker.io").unwrap();
        assert!(ok(&r, &format!("mirror.local/nginx@{D1}"), "docker.io/library/nginx"), "Hub rules reapply");
        let r = IdentityRule::remap("mirror.local/hub", "docker.io/library").unwrap();
        assert!(ok(&r, &format!("mirror.local/hub/nginx@{D1}"), "nginx"));
        let r = IdentityRule::remap("mirror.local/hub/app", "r.io/app").unwrap();
        assert!(ok(&r, &format!("mirror.local/hub/app@{D1}"), "r.io/app"), "whole-repository prefix");
        let r = IdentityRule::remap("mirror.local/hub", "r.io").unwrap();
        let err = r.check(&img(&format!("mirror.local/hub@{D1}")), "r.io/x").unwrap_err();
        assert!(err.reason.contains("leaves no repository"), "{err}");
    }

    #[test]
    fn remap_rejects_bad_prefixes() {
        assert!(IdentityRule::remap("nginx", "r.io").is_err());
        assert!(IdentityRule::remap("r.io/a:v1", "r.io").is_err());
        assert!(IdentityRule::remap("*.r.io", "r.io").is_err());
        assert!(IdentityRule::remap("r.io", "*").is_err());
        let msg = IdentityRule::remap("r.io", "x.io/A").unwrap_err().to_string();
        assert!(msg.contains("signed_prefix") && msg.contains("lowercase"), "{msg}");
        assert_eq!(
            IdentityRule::remap("Mirror.Local", "index.docker.io/library").unwrap(),
            IdentityRule::Remap { prefix: "mirror.local".into(), signed_prefix: "docker.io/library".into() }
        );
    }

    #[test]
    fn exact_repository() {
        let r = IdentityRule::exact_repository("vendor.io/app").unwrap();
        assert!(ok(&r, "mirror.local/whatever:v1", "vendor.io/app"));
        assert!(ok(&r, "mirror.local/whatever:v1", "vendor.io/app:v7"));
        assert!(!ok(&r, "vendor.io/other:v1", "vendor.io/other"), "the pulled name is irrelevant");
        assert!(!ok(&r, "mirror.local/x", "vendor.io/app/sub"));
        assert_eq!(
            IdentityRule::exact_repository("busybox").unwrap(),
            IdentityRule::ExactRepository("docker.io/library/busybox".into())
        );
        assert!(IdentityRule::exact_repository("vendor.io/app:v1").is_err());
        assert!(IdentityRule::exact_repository(&format!("vendor.io/app@{D1}")).is_err());
        assert!(IdentityRule::exact_repository("").is_err());
    }

    #[test]
    fn ignore_accepts_anything_even_garbage() {
        assert!(ok(&IdentityRule::Ignore, "r.io/a:v1", "other.io/b"));
        assert!(ok(&IdentityRule::Ignore, "r.io/a:v1", "not a reference!"));
    }

    #[test]
    fn invalid_signed_reference_is_a_mismatch() {
        let err = IdentityRule::MatchRepository.check(&img("r.io/a:v1"), "R.IO/A B").unwrap_err();
        assert!(err.reason.contains("not a valid image reference"), "{err}");
        let long = "x".repeat(10_000);
        let err = IdentityRule::MatchRepository.check(&img("r.io/a:v1"), &long).unwrap_err();
        assert!(err.to_string().len() < 1000, "quoted signed identity is bounded");
    }

    #[test]
    fn mismatch_message_names_rule_and_reason() {
        let err = IdentityRule::MatchExact.check(&img("r.io/a:v1"), "r.io/a").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("match-exact") && msg.contains("neither tag nor digest"), "{msg}");
        assert!(msg.contains("r.io/a:v1"), "{msg}");
    }
}
