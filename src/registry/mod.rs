//! Registry access: resolve a reference to a manifest and fetch blobs, with every byte
//! bounded and digest-checked. The `Registry` trait lets policy and verification be tested
//! against canned responses; `HttpRegistry` is the OCI distribution client.

mod auth;
pub mod buffering;
pub mod credentials;
pub mod hosts;
mod http;
mod insecure;
pub mod limits;
mod link;
pub mod media_type;
mod referrers_api;
mod response;
mod token;

use std::future::Future;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use credentials::{Credentials, CredentialsError};
pub use http::{BuildError, HttpRegistry};
pub use insecure::entry_problem as insecure_entry_problem;

use crate::reference::{Digest, ImageRef};

/// A manifest exactly as the registry sent it: signatures cover these bytes, so they are
/// never re-serialised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub bytes: Bytes,
    pub media_type: String,
    /// sha256 over `bytes`, computed here; the registry's `Docker-Content-Digest` is not trusted.
    pub digest: Digest,
    /// The host that answered (`host[:port]`): the registry itself or one of its mirrors.
    pub host: String,
}

/// The referrers API's list of a digest's referrers, page by page as the registry sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReferrerPages {
    /// At least one.
    pub pages: Vec<Manifest>,
    /// Why the list was not read to its end (more pages than `limits::MAX_REFERRER_PAGES`, a
    /// next page elsewhere); None when its last page was read.
    pub unread: Option<String>,
}

pub trait Registry: Send + Sync {
    /// `reference` is a tag or a digest ("sha256:…"); a digest is checked against the bytes.
    /// Ok(None) when the registry has no such manifest (e.g. an image without a `.sig` tag).
    fn manifest(
        &self,
        image: &ImageRef,
        reference: &str,
        creds: &Credentials,
    ) -> impl Future<Output = Result<Option<Manifest>, RegistryError>> + Send;

    /// A manifest under a tag derived from a digest (cosign's `sha256-<hex>.sig`): content
    /// addressed in all but name, so fetched where digests are (hosts that can pull, not only
    /// those that resolve tags). Ok(None) when no host has it.
    fn artifact_manifest(
        &self,
        image: &ImageRef,
        tag: &str,
        creds: &Credentials,
    ) -> impl Future<Output = Result<Option<Manifest>, RegistryError>> + Send {
        self.manifest(image, tag, creds)
    }

    /// The image indexes listing `digest`'s referrers, from the referrers API
    /// (`GET /v2/<name>/referrers/<digest>`, OCI distribution 1.1, and the pages its `Link`
    /// headers name). Ok(None) when the registry
    /// has no referrers API (it answers 404, as docker-registry 2.8 and GHCR do): the referrers
    /// tag schema then applies. Registries that cannot know better (canned ones in tests) say so
    /// by default.
    fn referrers(
        &self,
        _image: &ImageRef,
        _digest: &Digest,
        _creds: &Credentials,
    ) -> impl Future<Output = Result<Option<ReferrerPages>, RegistryError>> + Send {
        async { Ok(None) }
    }

    /// The blob's bytes, at most `max_bytes`, checked against `digest`.
    fn blob(
        &self,
        image: &ImageRef,
        digest: &Digest,
        max_bytes: usize,
        creds: &Credentials,
    ) -> impl Future<Output = Result<Bytes, RegistryError>> + Send;
}

/// Messages name the registry and repository, never credentials or tokens.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Connect failure, timeout, 5xx or 429: worth retrying later.
    #[error("registry unreachable: {0}")]
    Unreachable(String),
    #[error("registry denied access: {0}")]
    Unauthorized(String),
    #[error("{what} is larger than the limit of {limit} bytes")]
    TooLarge { what: String, limit: usize },
    #[error("{what} does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch { what: String, expected: Digest, actual: Digest },
    #[error("registry protocol error: {0}")]
    Protocol(String),
}

impl RegistryError {
    /// True for failures the kubelet should report as `RegistryUnavailable` and retry.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, RegistryError::Unreachable(_))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Registries spoken to over plain HTTP: "host:port" matches that registry however an image
    /// spells its host (`localhost:5000` is `127.0.0.1:5000`), "host" matches it on any port.
    /// Default: none, everything else is HTTPS.
    pub insecure: Vec<String>,
    /// PEM bundle of extra CAs trusted on top of the system roots. Default: none.
    pub ca_file: Option<PathBuf>,
    /// Deadline for each HTTP request, body included, and for a pull's whole verification,
    /// time spent waiting for a slot included. Default: 10s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Most verifications talking to one registry at once; more wait. Default: 4.
    pub checks_per_registry: NonZeroUsize,
    /// Most verifications keeping more than a little of what registries answered (all
    /// registries together); more wait before they read further. Default: 16.
    pub checks_total: NonZeroUsize,
    /// containerd's registry host directory (its CRI `registry.config_path`, e.g.
    /// "/etc/containerd/certs.d"; a ":"-separated list as there): images are fetched from the
    /// hosts its `hosts.toml` files list, as containerd fetches them. Default: none, each
    /// registry is asked directly.
    pub config_path: Option<String>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            insecure: Vec::new(),
            ca_file: None,
            timeout: limits::DEFAULT_REQUEST_TIMEOUT,
            checks_per_registry: limits::DEFAULT_CHECKS_PER_REGISTRY,
            checks_total: limits::DEFAULT_CHECKS_TOTAL,
            config_path: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_apply_to_missing_fields() {
        let config: RegistryConfig = toml::from_str("").unwrap();
        assert_eq!(config, RegistryConfig::default());
        assert_eq!(config.timeout, Duration::from_secs(10));
    }

    #[test]
    fn config_parses_humantime_and_rejects_unknown_fields() {
        let config: RegistryConfig =
            toml::from_str("insecure = [\"127.0.0.1:5000\"]\ntimeout = \"1500ms\"\nca_file = \"/etc/ca.pem\"").unwrap();
        assert_eq!(config.timeout, Duration::from_millis(1500));
        assert_eq!(config.insecure, vec!["127.0.0.1:5000".to_owned()]);
        assert!(toml::from_str::<RegistryConfig>("timeouts = \"1s\"").is_err());
    }

    #[test]
    fn check_slots_must_be_at_least_one() {
        let config: RegistryConfig = toml::from_str("checks_per_registry = 1\nchecks_total = 2").unwrap();
        assert_eq!((config.checks_per_registry.get(), config.checks_total.get()), (1, 2));
        let zero = toml::from_str::<RegistryConfig>("checks_total = 0").unwrap_err();
        assert!(zero.to_string().contains("nonzero"), "{zero}");
    }

    #[test]
    fn only_unreachable_is_unavailable() {
        assert!(RegistryError::Unreachable("r".into()).is_unavailable());
        assert!(!RegistryError::Unauthorized("r".into()).is_unavailable());
        assert!(!RegistryError::Protocol("r".into()).is_unavailable());
    }
}
