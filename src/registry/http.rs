//! `HttpRegistry`: the OCI distribution API over one pooled HTTP client.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use reqwest::redirect::Policy;
use reqwest::{Certificate, Client, Response, StatusCode, Url};
use serde::Deserialize;

use super::auth::{AuthState, BearerChallenge, Challenge, Issuer, TokenKey, preferred_challenge};
use super::limits::{CONNECT_TIMEOUT, MANIFEST_MAX_BYTES, MAX_REDIRECTS, MAX_REFERENCE_LEN};
use super::response::{Origin, check_status, read_capped, transport_error, verify_digest};
use super::token::{self, TokenRequest, bearer_header};
use super::{Credentials, Manifest, Registry, RegistryConfig, RegistryError, media_type};
use crate::metrics::Metrics;
use crate::reference::{Digest, ImageRef};

/// Both OCI and Docker schema 2, single manifests and indexes: a registry that only has the
/// index must not be able to answer "not found" because we did not ask for it.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

const USER_AGENT: &str = concat!("pullgate/", env!("CARGO_PKG_VERSION"));

/// Docker Hub's name in image references is not the host that serves its API.
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot use CA file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("the registry request timeout must be greater than zero")]
    ZeroTimeout,
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

pub struct HttpRegistry {
    /// One client for all registries: it pools connections per host, so consecutive
    /// manifest and blob requests reuse the TLS session.
    client: Client,
    insecure: Arc<[String]>,
    auth: AuthState,
    requests: AtomicU64,
    metrics: Option<Arc<Metrics>>,
}

/// One manifest or blob request, with what error messages may say about it.
struct Target<'a> {
    registry: &'a str,
    repository: &'a str,
    url: Url,
    accept: Option<&'static str>,
    what: String,
}

impl Target<'_> {
    fn origin(&self) -> Origin<'_> {
        Origin { registry: self.registry, repository: self.repository, what: &self.what }
    }

    /// The registry's own host: the only one whose challenges are answered.
    fn issuer(&self) -> Issuer {
        Issuer::of(&self.url)
    }

    fn token_key(&self, creds: &Credentials) -> TokenKey {
        TokenKey {
            registry: self.registry.to_owned(),
            repository: self.repository.to_owned(),
            credentials: creds.fingerprint(),
        }
    }
}

/// The Authorization sent first, and whether it is a token fetched for this very request.
struct Upfront {
    header: Option<HeaderValue>,
    just_issued: bool,
}

// === impl HttpRegistry: construction ===

impl HttpRegistry {
    pub fn new(config: &RegistryConfig) -> Result<Self, BuildError> {
        if config.timeout.is_zero() {
            return Err(BuildError::ZeroTimeout);
        }
        let insecure: Arc<[String]> = config.insecure.clone().into();
        let mut builder = Client::builder()
            .user_agent(USER_AGENT)
            .timeout(config.timeout)
            .connect_timeout(CONNECT_TIMEOUT.min(config.timeout))
            .redirect(redirect_policy(Arc::clone(&insecure)));
        if let Some(path) = &config.ca_file {
            for cert in load_ca_file(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| BuildError::Client(e.without_url().to_string()))?;
        Ok(HttpRegistry { client, insecure, auth: AuthState::default(), requests: AtomicU64::new(0), metrics: None })
    }

    /// Counts every response (and every request that got none) by status in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Requests sent to `/v2/<name>/manifests|blobs/…` so far, retries after a 401 included
    /// (token requests are not counted).
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

fn load_ca_file(path: &Path) -> Result<Vec<Certificate>, BuildError> {
    let fail = |reason: String| BuildError::CaFile { path: path.to_owned(), reason };
    let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let certs = Certificate::from_pem_bundle(&pem).map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no PEM certificate in it".to_owned()));
    }
    Ok(certs)
}

/// Registries send blobs to a CDN or object store, so redirects are followed, but only a
/// few, and never from TLS down to plain HTTP unless the target host is configured insecure.
/// reqwest drops the Authorization header when a redirect leaves the host.
fn redirect_policy(insecure: Arc<[String]>) -> Policy {
    Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error("too many redirects");
        }
        if attempt.url().scheme() != "https" && !url_is_insecure(&insecure, attempt.url()) {
            return attempt.error("refusing redirect to a non-https URL");
        }
        attempt.follow()
    })
}

fn url_is_insecure(insecure: &[String], url: &Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let authority = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    is_insecure(insecure, &authority)
}

/// "host:port" entries match exactly; a bare "host" entry matches that host on any port.
fn is_insecure(insecure: &[String], authority: &str) -> bool {
    let host = host_of(authority);
    insecure.iter().any(|entry| entry == authority || entry == host)
}

/// "[::1]:5000" → "[::1]", "reg:5000" → "reg", "reg" → "reg".
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.find(']').and_then(|end| authority.get(..end + 2)).unwrap_or(authority);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

// === impl HttpRegistry: requests ===

impl HttpRegistry {
    fn target<'a>(&self, image: &'a ImageRef, kind: &str, reference: &str) -> Result<Target<'a>, RegistryError> {
        // The host as written: where containerd connects, and what `insecure` lists.
        let (registry, repository) = (image.registry().as_str(), image.repository());
        check_path(registry, repository, reference)?;
        let scheme = if is_insecure(&self.insecure, registry) { "http" } else { "https" };
        let host = if registry == DOCKER_HUB { DOCKER_HUB_API } else { registry };
        let url = format!("{scheme}://{host}/v2/{repository}/{kind}/{reference}");
        let url = Url::parse(&url)
            .map_err(|_| RegistryError::Protocol(format!("{registry}: cannot form a URL for {repository}")))?;
        let sep = if reference.contains(':') { '@' } else { ':' };
        let what = format!("{} {registry}/{repository}{sep}{reference}", kind.trim_end_matches('s'));
        Ok(Target { registry, repository, url, accept: None, what })
    }

    /// Sends with the best authorization we know, answers one 401 challenge, and returns
    /// whatever the registry says last; the caller maps the status.
    async fn send(&self, target: &Target<'_>, creds: &Credentials) -> Result<Response, RegistryError> {
        let first = self.upfront_authorization(target, creds).await?;
        let response = self.send_once(target, first.header.as_ref()).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        self.auth.forget_token(&target.token_key(creds));
        let values = response.headers().get_all(WWW_AUTHENTICATE).iter().filter_map(|v| v.to_str().ok());
        let Some(challenge) = preferred_challenge(values) else {
            return Ok(response);
        };
        self.auth.remember(target.registry, &target.issuer(), &challenge);
        // A token issued moments ago and refused already: another one would be refused too.
        if first.just_issued && matches!(challenge, Challenge::Bearer(_)) {
            return Ok(response);
        }
        let retry = self.answer(target, &challenge, creds).await?;
        if retry.is_none() || retry == first.header {
            // Nothing new to offer: the 401 stands.
            return Ok(response);
        }
        let response = self.send_once(target, retry.as_ref()).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            self.auth.forget_token(&target.token_key(creds));
        }
        Ok(response)
    }

    async fn send_once(
        &self,
        target: &Target<'_>,
        authorization: Option<&HeaderValue>,
    ) -> Result<Response, RegistryError> {
        let mut request = self.client.get(target.url.clone());
        if let Some(accept) = target.accept {
            request = request.header(ACCEPT, accept);
        }
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value.clone());
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let result = request.send().await;
        if let Some(metrics) = &self.metrics {
            metrics.registry_response(result.as_ref().ok().map(|r| r.status().as_u16()));
        }
        let response = result.map_err(|e| transport_error(target.registry, e))?;
        refuse_foreign_challenge(target, &response)?;
        Ok(response)
    }

    /// What to send before the registry has asked: a registry token as is, otherwise what this
    /// registry's last challenge asked for. Unknown registries get nothing, so credentials
    /// never go to a registry that does not want them.
    async fn upfront_authorization(&self, target: &Target<'_>, creds: &Credentials) -> Result<Upfront, RegistryError> {
        let known = |header| Upfront { header, just_issued: false };
        if let Some(token) = creds.registry_token() {
            return registry_token_header(target, token).map(|h| known(Some(h)));
        }
        match self.auth.scheme(target.registry, &target.issuer()) {
            None => Ok(known(None)),
            Some(Challenge::Basic) => basic_header(target, creds).map(known),
            Some(Challenge::Bearer(challenge)) => match self.auth.token(&target.token_key(creds)) {
                Some(cached) => Ok(known(Some(cached))),
                None => {
                    let header = self.fresh_token(target, &challenge, creds).await?;
                    Ok(Upfront { header: Some(header), just_issued: true })
                }
            },
        }
    }

    async fn answer(
        &self,
        target: &Target<'_>,
        challenge: &Challenge,
        creds: &Credentials,
    ) -> Result<Option<HeaderValue>, RegistryError> {
        match (challenge, creds.registry_token()) {
            (Challenge::Basic, _) => basic_header(target, creds),
            (Challenge::Bearer(_), Some(token)) => registry_token_header(target, token).map(Some),
            (Challenge::Bearer(bearer), None) => self.fresh_token(target, bearer, creds).await.map(Some),
        }
    }

    async fn fresh_token(
        &self,
        target: &Target<'_>,
        challenge: &BearerChallenge,
        creds: &Credentials,
    ) -> Result<HeaderValue, RegistryError> {
        let allow_http = |url: &Url| url_is_insecure(&self.insecure, url);
        let request = TokenRequest {
            challenge,
            registry: target.registry,
            repository: target.repository,
            allow_http: &allow_http,
        };
        let token = token::fetch(&self.client, &request, creds).await?;
        tracing::debug!(registry = target.registry, repository = target.repository, "obtained a bearer token");
        self.auth.store_token(target.token_key(creds), token.header.clone(), token.lifetime);
        Ok(token.header)
    }
}

/// A 401 from a host the registry redirected us to is that host asking, not the registry: the
/// pull secret is the registry's, so the request fails rather than answer it.
fn refuse_foreign_challenge(target: &Target<'_>, response: &Response) -> Result<(), RegistryError> {
    let issuer = Issuer::of(response.url());
    if response.status() != StatusCode::UNAUTHORIZED || issuer == target.issuer() {
        return Ok(());
    }
    Err(RegistryError::Unauthorized(format!(
        "{}: {} was redirected to {issuer}, which asks for credentials; pullgate sends credentials only to \
         the registry itself and the token service it names",
        target.registry, target.what
    )))
}

fn basic_header(target: &Target<'_>, creds: &Credentials) -> Result<Option<HeaderValue>, RegistryError> {
    creds.basic_header().map_err(|e| RegistryError::Unauthorized(format!("{}: {e}", target.registry)))
}

fn registry_token_header(target: &Target<'_>, token: &str) -> Result<HeaderValue, RegistryError> {
    let invalid = || RegistryError::Unauthorized(format!("{}: the registry token is not header-safe", target.registry));
    bearer_header(token).ok_or_else(invalid)
}

/// The pieces go into a URL path, so anything beyond the distribution spec's alphabet
/// (e.g. "..", "?", "%") is refused before it can change which resource we ask for.
fn check_path(registry: &str, repository: &str, reference: &str) -> Result<(), RegistryError> {
    let component_ok = |c: &str| {
        !c.is_empty() && !c.starts_with('.') && c.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    let repository_ok = repository.split('/').all(component_ok);
    let reference_ok = reference.len() <= MAX_REFERENCE_LEN
        && !reference.is_empty()
        && reference.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b));
    if repository_ok && reference_ok {
        return Ok(());
    }
    Err(RegistryError::Protocol(format!("{registry}: refusing to request {repository:?} {reference:?}")))
}

// === impl Registry for HttpRegistry ===

impl Registry for HttpRegistry {
    async fn manifest(
        &self,
        image: &ImageRef,
        reference: &str,
        creds: &Credentials,
    ) -> Result<Option<Manifest>, RegistryError> {
        let expected = expected_digest(image.registry().as_str(), reference)?;
        let mut target = self.target(image, "manifests", reference)?;
        target.accept = Some(MANIFEST_ACCEPT);
        let response = self.send(&target, creds).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        check_status(response.status(), &target.origin(), creds.is_anonymous())?;
        let header_type = content_type(&response);
        let bytes = read_capped(response, MANIFEST_MAX_BYTES, &target.origin()).await?;
        if let Some(expected) = &expected {
            verify_digest(expected, &bytes, &target.what)?;
        }
        let media_type = header_type.or_else(|| media_type_field(&bytes)).unwrap_or_default();
        Ok(Some(Manifest { digest: Digest::sha256_of(&bytes), media_type, bytes }))
    }

    async fn referrers(
        &self,
        image: &ImageRef,
        digest: &Digest,
        creds: &Credentials,
    ) -> Result<Option<Manifest>, RegistryError> {
        let mut target = self.target(image, "referrers", digest.as_str())?;
        target.accept = Some(media_type::OCI_INDEX);
        let response = self.send(&target, creds).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        check_status(response.status(), &target.origin(), creds.is_anonymous())?;
        let header_type = content_type(&response);
        // The answer is an image index, bounded like any manifest. Only its first page is read:
        // more signature referrers than one page holds is beyond any limit of ours anyway.
        let bytes = read_capped(response, MANIFEST_MAX_BYTES, &target.origin()).await?;
        let media_type = header_type.or_else(|| media_type_field(&bytes)).unwrap_or_default();
        Ok(Some(Manifest { digest: Digest::sha256_of(&bytes), media_type, bytes }))
    }

    async fn blob(
        &self,
        image: &ImageRef,
        digest: &Digest,
        max_bytes: usize,
        creds: &Credentials,
    ) -> Result<Bytes, RegistryError> {
        let target = self.target(image, "blobs", digest.as_str())?;
        let response = self.send(&target, creds).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Err(RegistryError::Protocol(format!("{} not found", target.what)));
        }
        check_status(response.status(), &target.origin(), creds.is_anonymous())?;
        let bytes = read_capped(response, max_bytes, &target.origin()).await?;
        verify_digest(digest, &bytes, &target.what)?;
        Ok(bytes)
    }
}

/// Tags cannot contain ':', so a reference with one must be a digest, and a malformed one is
/// refused rather than sent as a tag.
fn expected_digest(registry: &str, reference: &str) -> Result<Option<Digest>, RegistryError> {
    if !reference.contains(':') {
        return Ok(None);
    }
    let digest = reference
        .parse()
        .map_err(|_| RegistryError::Protocol(format!("{registry}: invalid digest reference {reference:?}")))?;
    Ok(Some(digest))
}

/// Some registries serve manifests as generic JSON; then the manifest's own `mediaType` says.
fn content_type(response: &Response) -> Option<String> {
    let value = response.headers().get(CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next().unwrap_or_default().trim();
    let generic = ["", "application/json", "application/octet-stream", "text/plain"];
    (!generic.contains(&essence)).then(|| essence.to_owned())
}

fn media_type_field(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct MediaTypeOnly {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    serde_json::from_slice::<MediaTypeOnly>(bytes).ok()?.media_type
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn insecure_matches_exact_authority_or_bare_host() {
        let insecure = list(&["127.0.0.1:5000", "localhost", "[::1]"]);
        assert!(is_insecure(&insecure, "127.0.0.1:5000"));
        assert!(!is_insecure(&insecure, "127.0.0.1:5001"));
        assert!(!is_insecure(&insecure, "127.0.0.1"));
        assert!(is_insecure(&insecure, "localhost:443"));
        assert!(is_insecure(&insecure, "localhost"));
        assert!(is_insecure(&insecure, "[::1]:5000"));
        assert!(!is_insecure(&insecure, "localhost.example:5000"));
    }

    #[test]
    fn host_of_handles_ports_and_ipv6() {
        assert_eq!(host_of("reg:5000"), "reg");
        assert_eq!(host_of("reg"), "reg");
        assert_eq!(host_of("[::1]:5000"), "[::1]");
        assert_eq!(host_of("[::1"), "[::1");
        assert_eq!(host_of("reg:"), "reg:");
    }

    #[test]
    fn path_pieces_are_checked() {
        assert!(check_path("r", "library/nginx", "1.27-alpine").is_ok());
        assert!(check_path("r", "a/b_c/d.e", "sha256:abc").is_ok());
        assert!(check_path("r", "a/../b", "v1").is_err());
        assert!(check_path("r", "a", "v1?x=1").is_err());
        assert!(check_path("r", "a", "%2e").is_err());
        assert!(check_path("r", "a//b", "v1").is_err());
        assert!(check_path("r", "a", "").is_err());
        assert!(check_path("r", "a", &"x".repeat(MAX_REFERENCE_LEN + 1)).is_err());
    }

    #[test]
    fn digest_references_must_parse() {
        assert!(expected_digest("r", "v1").unwrap().is_none());
        assert!(expected_digest("r", &Digest::sha256_of(b"x").to_string()).unwrap().is_some());
        assert!(expected_digest("r", "sha256:short").is_err());
    }

    #[test]
    fn media_type_falls_back_to_manifest_field() {
        assert_eq!(
            media_type_field(br#"{"mediaType":"application/vnd.oci.image.index.v1+json"}"#).as_deref(),
            Some("application/vnd.oci.image.index.v1+json")
        );
        assert_eq!(media_type_field(b"{}"), None);
        assert_eq!(media_type_field(b"garbage"), None);
    }

    #[test]
    fn docker_hub_uses_its_api_host() {
        let registry = HttpRegistry::new(&RegistryConfig::default()).unwrap();
        let image: ImageRef = "nginx:1.27".parse().unwrap();
        let target = registry.target(&image, "manifests", "1.27").unwrap();
        assert_eq!(target.url.as_str(), "https://registry-1.docker.io/v2/library/nginx/manifests/1.27");
        assert_eq!(target.what, "manifest docker.io/library/nginx:1.27");
    }

    #[test]
    fn zero_timeout_and_bad_ca_file_are_build_errors() {
        let zero = RegistryConfig { timeout: std::time::Duration::ZERO, ..RegistryConfig::default() };
        assert!(matches!(HttpRegistry::new(&zero), Err(BuildError::ZeroTimeout)));
        let missing = RegistryConfig { ca_file: Some("/nonexistent/ca.pem".into()), ..RegistryConfig::default() };
        assert!(matches!(HttpRegistry::new(&missing), Err(BuildError::CaFile { .. })));
    }
}
