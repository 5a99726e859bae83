//! `HttpRegistry`: the OCI distribution API over one pooled HTTP client.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue, LINK, WWW_AUTHENTICATE};
use reqwest::redirect::Policy;
use reqwest::{Certificate, Client, ClientBuilder, Identity, Response, StatusCode, Url};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::auth::{AuthState, BearerChallenge, Challenge, Issuer, TokenKey, preferred_challenge};
use super::hosts::{self, HostConfig, HostsTable, Operation, Scheme, SharedHosts, TlsMaterial};
use super::insecure::InsecureHosts;
use super::limits::{
    CONNECT_TIMEOUT, IDLE_CONNECTION_TIMEOUT, MANIFEST_MAX_BYTES, MAX_ERROR_DETAIL_CHARS,
    MAX_IDLE_CONNECTIONS_PER_HOST, MAX_REDIRECTS, MAX_REFERENCE_LEN, MAX_REFERRER_PAGES, MAX_TLS_CLIENTS,
};
use super::referrers_api::ReferrersApiAbsent;
use super::response::{Origin, check_status, read_capped, transport_error, verify_digest};
use super::token::{self, TokenRequest, bearer_header};
use super::{Credentials, Manifest, ReferrerPages, Registry, RegistryConfig, RegistryError, link, media_type};
use crate::metrics::Metrics;
use crate::reference::{Digest, ImageRef, RegistryHost};

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
    /// One client for all hosts without TLS settings of their own: it pools connections per
    /// host, so consecutive manifest and blob requests reuse the TLS session.
    client: Client,
    /// What every client is built with; hosts with their own TLS settings get a client each.
    base: ClientBase,
    /// Keyed by a hash of the TLS settings and of the files they name, so an edited CA file
    /// gets a new client.
    tls_clients: Mutex<HashMap<String, Client>>,
    /// containerd's host directory as last loaded; empty when pullgate asks each registry
    /// directly. The reloader replaces it.
    hosts: SharedHosts,
    insecure: Arc<InsecureHosts>,
    auth: AuthState,
    /// Hosts that said lately they have no referrers API: not asked again for a while.
    referrers_api_absent: ReferrersApiAbsent,
    requests: AtomicU64,
    metrics: Option<Arc<Metrics>>,
}

struct ClientBase {
    timeout: Duration,
    roots: Vec<Certificate>,
    insecure: Arc<InsecureHosts>,
}

/// One host to ask for a repository: the registry itself, or a host its `hosts.toml` lists.
struct Route {
    /// `host[:port]` as asked; what messages, reports and the auth state name.
    host: String,
    /// The host a pull secret's `server_address` must name for it to be sent here: as written
    /// in hosts.toml for a mirror, as containerd compares it.
    secret_host: String,
    /// `scheme://host[:port]` and the API root (`/v2` unless `override_path`).
    base: String,
    scheme: Scheme,
    /// A host other than the registry is told which registry is meant (`?ns=`), as
    /// containerd tells it: pull-through caches serving several registries route on it.
    namespace: Option<String>,
    client: Client,
    /// Values are sensitive: never logged.
    headers: Arc<[(HeaderName, HeaderValue)]>,
}

/// One manifest or blob request, with what error messages may say about it.
struct Target<'a> {
    /// The host asked, `host[:port]`: the registry itself or one of its mirrors.
    registry: &'a str,
    repository: &'a str,
    url: Url,
    accept: Option<&'static str>,
    what: String,
    route: &'a Route,
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
        let insecure = Arc::new(InsecureHosts::new(&config.insecure));
        let roots = match &config.ca_file {
            Some(path) => load_ca_file(path)?,
            None => Vec::new(),
        };
        let base = ClientBase { timeout: config.timeout, roots, insecure: Arc::clone(&insecure) };
        let client = base.builder().build().map_err(|e| BuildError::Client(e.without_url().to_string()))?;
        let hosts = SharedHosts::new(HostsTable::load(&hosts::roots(config.config_path.as_deref())));
        Ok(HttpRegistry {
            client,
            base,
            tls_clients: Mutex::new(HashMap::new()),
            hosts,
            insecure,
            auth: AuthState::default(),
            referrers_api_absent: ReferrersApiAbsent::default(),
            requests: AtomicU64::new(0),
            metrics: None,
        })
    }

    /// Counts every response (and every request that got none) by status in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The host directory this client routes by, for the reloader to replace.
    pub fn hosts(&self) -> SharedHosts {
        self.hosts.clone()
    }

    /// Requests sent to `/v2/<name>/manifests|blobs/…` so far, retries after a 401 included
    /// (token requests are not counted).
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

impl ClientBase {
    fn builder(&self) -> ClientBuilder {
        let mut builder = Client::builder()
            .user_agent(USER_AGENT)
            .timeout(self.timeout)
            .connect_timeout(CONNECT_TIMEOUT.min(self.timeout))
            .pool_max_idle_per_host(MAX_IDLE_CONNECTIONS_PER_HOST)
            .pool_idle_timeout(IDLE_CONNECTION_TIMEOUT)
            .redirect(redirect_policy(Arc::clone(&self.insecure)));
        for cert in &self.roots {
            builder = builder.add_root_certificate(cert.clone());
        }
        builder
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
fn redirect_policy(insecure: Arc<InsecureHosts>) -> Policy {
    Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error("too many redirects");
        }
        if attempt.url().scheme() != "https" && !insecure.covers_url(attempt.url()) {
            return attempt.error("refusing redirect to a non-https URL");
        }
        attempt.follow()
    })
}

// === impl HttpRegistry: requests ===

impl HttpRegistry {
    /// The hosts to ask, in containerd's order, for `operation` on `image`'s repository: the
    /// ones its registry's `hosts.toml` lists with the capability, or the registry itself.
    fn routes(&self, image: &ImageRef, operation: Operation) -> Result<Vec<Route>, RegistryError> {
        // The host as written: what containerd looks its host directory up by.
        let registry = image.registry().as_str();
        // Memory only: the directory was read when it was (re)loaded.
        let configs = self
            .hosts
            .current()
            .lookup(registry)
            .map_err(|e| RegistryError::Protocol(format!("{registry}: cannot use its host directory: {e}")))?;
        let configs = configs.unwrap_or_else(|| vec![HostConfig::registry_itself()]);
        let mut routes: Vec<Route> = configs
            .into_iter()
            .filter(|config| operation.allowed_on(config.capabilities))
            .map(|config| self.route(image.registry(), config))
            .collect::<Result<_, _>>()?;
        // A hosts.toml that lists the registry itself as a host and as `server` would have every
        // miss (an image without bundles, say) asked twice of the same URL.
        let mut seen = std::collections::HashSet::new();
        routes.retain(|route| seen.insert(route.base.clone()));
        if routes.is_empty() {
            let verb = if operation == Operation::Resolve { "resolve tags" } else { "pull" };
            return Err(RegistryError::Protocol(format!("{registry}: no host in its hosts.toml may {verb}")));
        }
        Ok(routes)
    }

    fn route(&self, written: &RegistryHost, config: HostConfig) -> Result<Route, RegistryError> {
        let registry = written.as_str();
        let (scheme, host, secret_host, path) = match config.server {
            Some(server) => (server.scheme, server.authority, server.written, server.path),
            None => {
                // The registry itself, reached as without a host directory: `insecure` decides.
                let scheme = if self.insecure.covers(written) { Scheme::Http } else { Scheme::Https };
                let host = if registry == DOCKER_HUB { DOCKER_HUB_API } else { registry };
                (scheme, host.to_owned(), host.to_owned(), "/v2".to_owned())
            }
        };
        let is_registry = host == registry || registry == DOCKER_HUB && host == DOCKER_HUB_API;
        let client = self.client_for(registry, config.material.as_deref())?;
        Ok(Route {
            base: format!("{}://{host}{path}", scheme.as_str()),
            host,
            secret_host,
            scheme,
            namespace: (!is_registry).then(|| registry.to_owned()),
            client,
            headers: config.headers.into(),
        })
    }

    /// The shared client, or one with the host's own CAs, client certificates and
    /// `skip_verify`, reused while those settings and files stay the same.
    fn client_for(&self, registry: &str, tls: Option<&TlsMaterial>) -> Result<Client, RegistryError> {
        let Some(tls) = tls else { return Ok(self.client.clone()) };
        let fail = |reason: String| RegistryError::Protocol(format!("{registry}: hosts.toml TLS settings: {reason}"));
        let key = tls_key(tls);
        let mut clients = self.tls_clients.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let client = tls_client(self.base.builder(), tls).map_err(fail)?;
        if clients.len() >= MAX_TLS_CLIENTS {
            clients.clear();
        }
        clients.insert(key, client.clone());
        Ok(client)
    }

    fn target<'a>(
        &self,
        route: &'a Route,
        image: &'a ImageRef,
        kind: &str,
        reference: &str,
    ) -> Result<Target<'a>, RegistryError> {
        let (registry, repository) = (image.registry().as_str(), image.repository());
        check_path(registry, repository, reference)?;
        let mut url = format!("{}/{repository}/{kind}/{reference}", route.base);
        if let Some(namespace) = &route.namespace {
            url.push_str("?ns=");
            url.push_str(namespace);
        }
        let url = Url::parse(&url)
            .map_err(|_| RegistryError::Protocol(format!("{}: cannot form a URL for {repository}", route.host)))?;
        let sep = if reference.contains(':') { '@' } else { ':' };
        let what = format!("{} {registry}/{repository}{sep}{reference}", kind.trim_end_matches('s'));
        Ok(Target { registry: &route.host, repository, url, accept: None, what, route })
    }

    /// Sends with the best authorization we know, answers one 401 challenge, and returns
    /// whatever the registry says last; the caller maps the status.
    async fn send(&self, target: &Target<'_>, creds: &Credentials) -> Result<Response, RegistryError> {
        // A mirror gets the image's credentials only where containerd would offer them.
        let anonymous = Credentials::anonymous();
        let creds = if creds.offered_to(&target.route.secret_host) { creds } else { &anonymous };
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
        let mut request = target.route.client.get(target.url.clone());
        for (name, value) in target.route.headers.iter() {
            request = request.header(name, value);
        }
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
        // A host configured for plain http may name a realm on itself over http.
        let same_http_host = |url: &Url| target.route.scheme == Scheme::Http && Issuer::of(url) == target.issuer();
        let allow_http = |url: &Url| self.insecure.covers_url(url) || same_http_host(url);
        let request = TokenRequest {
            challenge,
            registry: target.registry,
            repository: target.repository,
            allow_http: &allow_http,
        };
        let token = token::fetch(&target.route.client, &request, creds).await?;
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
        // A tag is resolved; anything named by its digest is pulled.
        let operation = if expected.is_some() { Operation::Pull } else { Operation::Resolve };
        self.manifest_on(operation, image, reference, expected.as_ref(), creds).await
    }

    async fn artifact_manifest(
        &self,
        image: &ImageRef,
        tag: &str,
        creds: &Credentials,
    ) -> Result<Option<Manifest>, RegistryError> {
        let expected = expected_digest(image.registry().as_str(), tag)?;
        self.manifest_on(Operation::Pull, image, tag, expected.as_ref(), creds).await
    }

    async fn referrers(
        &self,
        image: &ImageRef,
        digest: &Digest,
        creds: &Credentials,
    ) -> Result<Option<ReferrerPages>, RegistryError> {
        // Named by the digest: asked where digests are pulled, as the referrers tag is.
        let routes = self.routes(image, Operation::Pull)?;
        first_answer(&routes, |route| self.referrers_unless_absent(route, image, digest, creds)).await
    }

    async fn blob(
        &self,
        image: &ImageRef,
        digest: &Digest,
        max_bytes: usize,
        creds: &Credentials,
    ) -> Result<Bytes, RegistryError> {
        let routes = self.routes(image, Operation::Pull)?;
        let found = first_answer(&routes, |route| self.blob_from(route, image, digest, max_bytes, creds)).await?;
        found.ok_or_else(|| {
            let name = image.name();
            RegistryError::Protocol(format!("blob {name}@{digest} not found"))
        })
    }
}

impl HttpRegistry {
    async fn manifest_on(
        &self,
        operation: Operation,
        image: &ImageRef,
        reference: &str,
        expected: Option<&Digest>,
        creds: &Credentials,
    ) -> Result<Option<Manifest>, RegistryError> {
        let routes = self.routes(image, operation)?;
        first_answer(&routes, |route| self.manifest_from(route, image, reference, expected, creds)).await
    }

    async fn manifest_from(
        &self,
        route: &Route,
        image: &ImageRef,
        reference: &str,
        expected: Option<&Digest>,
        creds: &Credentials,
    ) -> Result<Option<Manifest>, RegistryError> {
        self.document_from(route, image, ("manifests", reference), MANIFEST_ACCEPT, expected, creds).await
    }

    /// The referrers API of one host, unless it said lately that it has none: then "none"
    /// without asking, so the referrers tag (read in any case) decides. See `referrers_api`.
    async fn referrers_unless_absent(
        &self,
        route: &Route,
        image: &ImageRef,
        digest: &Digest,
        creds: &Credentials,
    ) -> Result<Option<ReferrerPages>, RegistryError> {
        // Per repository: a registry with the API may still answer 404 for a repository it
        // hides from these credentials, and that must not turn the API off for its neighbours.
        let repository = match &route.namespace {
            Some(namespace) => format!("{}/{}?ns={namespace}", route.base, image.repository()),
            None => format!("{}/{}", route.base, image.repository()),
        };
        if self.referrers_api_absent.remembers(&repository, Instant::now()) {
            return Ok(None);
        }
        let list = self.referrers_from(route, image, digest, creds).await?;
        if list.is_none() {
            self.referrers_api_absent.remember(&repository, Instant::now());
        }
        Ok(list)
    }

    async fn referrers_from(
        &self,
        route: &Route,
        image: &ImageRef,
        digest: &Digest,
        creds: &Credentials,
    ) -> Result<Option<ReferrerPages>, RegistryError> {
        let mut target = self.target(route, image, "referrers", digest.as_str())?;
        target.accept = Some(media_type::OCI_INDEX);
        let mut pages = Vec::new();
        // Every page is an image index; all of them together are bounded like one manifest.
        let mut room = MANIFEST_MAX_BYTES;
        loop {
            let response = self.send(&target, creds).await?;
            if response.status() == StatusCode::NOT_FOUND && pages.is_empty() {
                return Ok(None);
            }
            check_status(response.status(), &target.origin(), creds.is_anonymous())?;
            let links = response.headers().get_all(LINK).iter().filter_map(|value| value.to_str().ok());
            let next = link::next_page(&target.url, links);
            let header_type = content_type(&response);
            let bytes = read_capped(response, room, &target.origin()).await?;
            room -= bytes.len();
            let media_type = header_type.or_else(|| media_type_field(&bytes)).unwrap_or_default();
            pages.push(Manifest { digest: Digest::sha256_of(&bytes), media_type, bytes, host: route.host.clone() });
            let unread = match next {
                Ok(None) => None,
                Ok(Some(_)) if pages.len() >= MAX_REFERRER_PAGES => {
                    Some(format!("more than {MAX_REFERRER_PAGES} pages"))
                }
                Ok(Some(url)) => {
                    target.url = url;
                    continue;
                }
                Err(why) => Some(why),
            };
            return Ok(Some(ReferrerPages { pages, unread }));
        }
    }

    /// A manifest or an index at `kind/reference` on one host, bounded; checked against
    /// `expected` when it is named by its digest. Ok(None) when the host has none.
    async fn document_from(
        &self,
        route: &Route,
        image: &ImageRef,
        (kind, reference): (&str, &str),
        accept: &'static str,
        expected: Option<&Digest>,
        creds: &Credentials,
    ) -> Result<Option<Manifest>, RegistryError> {
        let mut target = self.target(route, image, kind, reference)?;
        target.accept = Some(accept);
        let response = self.send(&target, creds).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        check_status(response.status(), &target.origin(), creds.is_anonymous())?;
        let header_type = content_type(&response);
        let bytes = read_capped(response, MANIFEST_MAX_BYTES, &target.origin()).await?;
        if let Some(expected) = expected {
            verify_digest(expected, &bytes, &target.what)?;
        }
        let media_type = header_type.or_else(|| media_type_field(&bytes)).unwrap_or_default();
        Ok(Some(Manifest { digest: Digest::sha256_of(&bytes), media_type, bytes, host: route.host.clone() }))
    }

    async fn blob_from(
        &self,
        route: &Route,
        image: &ImageRef,
        digest: &Digest,
        max_bytes: usize,
        creds: &Credentials,
    ) -> Result<Option<Bytes>, RegistryError> {
        let target = self.target(route, image, "blobs", digest.as_str())?;
        let response = self.send(&target, creds).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        check_status(response.status(), &target.origin(), creds.is_anonymous())?;
        let bytes = read_capped(response, max_bytes, &target.origin()).await?;
        verify_digest(digest, &bytes, &target.what)?;
        Ok(Some(bytes))
    }
}

/// Asks each host in turn, as containerd does: after any failure of a host, and after "not
/// found" too, the next one is asked. Nothing a host says is trusted (digests are checked,
/// signatures verified), so moving on lets a mirror withhold, never forge; what one host
/// lacks may be on the next (a mirror holding images but not their signatures).
///
/// When no host has it, the answers rank as containerd ranks them: a host's refusal or broken
/// answer first (the first such error), then "not found", then "unreachable". So a mirror
/// without an image's signatures, in front of an upstream registry an air-gapped node cannot
/// reach, means "no signatures" (refused), not an outage to retry forever.
async fn first_answer<'r, T, F, Fut>(routes: &'r [Route], mut ask: F) -> Result<Option<T>, RegistryError>
where
    F: FnMut(&'r Route) -> Fut,
    Fut: Future<Output = Result<Option<T>, RegistryError>>,
{
    let mut failures = Vec::new();
    for route in routes {
        match ask(route).await {
            Ok(Some(found)) => return Ok(Some(found)),
            Ok(None) => tracing::debug!(host = %route.host, "not found there; asking the next host"),
            Err(error) => {
                tracing::debug!(host = %route.host, %error, "failed there; asking the next host");
                failures.push(error);
            }
        }
    }
    if let Some(first) = failures.iter().position(|e| !e.is_unavailable()) {
        return Err(failures.swap_remove(first));
    }
    let said_not_found = failures.len() < routes.len();
    if said_not_found {
        return Ok(None);
    }
    if routes.len() == 1 {
        return Err(failures.remove(0));
    }
    let all: Vec<String> =
        failures.iter().map(|e| e.to_string().chars().take(MAX_ERROR_DETAIL_CHARS).collect()).collect();
    Err(RegistryError::Unreachable(format!("no host of {} answered: {}", routes.len(), all.join("; "))))
}

fn tls_key(tls: &TlsMaterial) -> String {
    let mut hash = Sha256::new();
    hash.update([u8::from(tls.skip_verify)]);
    for file in tls.ca.iter().chain(&tls.identities) {
        hash.update((file.len() as u64).to_be_bytes());
        hash.update(file);
    }
    hex::encode(hash.finalize())
}

fn tls_client(mut builder: ClientBuilder, tls: &TlsMaterial) -> Result<Client, String> {
    for pem in &tls.ca {
        for cert in Certificate::from_pem_bundle(pem).map_err(|e| format!("a CA file: {e}"))? {
            builder = builder.add_root_certificate(cert);
        }
    }
    for pem in &tls.identities {
        builder = builder.identity(Identity::from_pem(pem).map_err(|e| format!("a client certificate: {e}"))?);
    }
    if tls.skip_verify {
        // The operator's explicit choice for this host, as containerd honours it; the
        // signature check does not depend on the transport.
        builder = builder.danger_accept_invalid_certs(true);
    }
    builder.build().map_err(|e| e.without_url().to_string())
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
        let routes = registry.routes(&image, Operation::Resolve).unwrap();
        let target = registry.target(&routes[0], &image, "manifests", "1.27").unwrap();
        assert_eq!(target.url.as_str(), "https://registry-1.docker.io/v2/library/nginx/manifests/1.27");
        assert_eq!(target.what, "manifest docker.io/library/nginx:1.27");
    }

    #[test]
    fn routes_follow_hosts_toml_with_namespace_api_root_and_headers() {
        let dir = tempfile::tempdir().unwrap();
        let host_dir = dir.path().join("r.example");
        std::fs::create_dir_all(&host_dir).unwrap();
        let hosts = "server = \"https://r.example\"\n\
                     [host.\"http://pull-only:5000\"]\ncapabilities = [\"pull\"]\n\
                     [host.\"https://cache/api\"]\noverride_path = true\n[host.\"https://cache/api\".header]\nx-token = \"t0ken\"\n";
        std::fs::write(host_dir.join("hosts.toml"), hosts).unwrap();
        let config =
            RegistryConfig { config_path: Some(dir.path().display().to_string()), ..RegistryConfig::default() };
        let registry = HttpRegistry::new(&config).unwrap();
        let image: ImageRef = "r.example/team/app:v1".parse().unwrap();
        let url = |route: &Route| registry.target(route, &image, "manifests", "v1").unwrap().url.to_string();

        let resolve = registry.routes(&image, Operation::Resolve).unwrap();
        let urls: Vec<String> = resolve.iter().map(url).collect();
        assert_eq!(
            urls,
            ["https://cache/api/team/app/manifests/v1?ns=r.example", "https://r.example/v2/team/app/manifests/v1",],
            "the pull-only host resolves nothing; the registry itself gets no ns"
        );
        assert_eq!(resolve[0].headers.len(), 1);
        assert!(format!("{:?}", resolve[0].headers).contains("Sensitive"));
        let pull = registry.routes(&image, Operation::Pull).unwrap();
        let hosts: Vec<&str> = pull.iter().map(|route| route.host.as_str()).collect();
        assert_eq!(hosts, ["pull-only:5000", "cache", "r.example"]);
        assert_eq!(pull[0].scheme, Scheme::Http);

        let other: ImageRef = "elsewhere.example/app:v1".parse().unwrap();
        let direct = registry.routes(&other, Operation::Resolve).unwrap();
        assert_eq!(direct.len(), 1, "no host directory: the registry itself");
        std::fs::write(host_dir.join("hosts.toml"), "[host.\"m\"]\ncapabilities = [\"bogus\"]\n").unwrap();
        registry.hosts().replace(HostsTable::load(&[dir.path().to_owned()]));
        let broken = registry.routes(&image, Operation::Resolve).err().unwrap().to_string();
        assert!(broken.contains("unknown capability"), "a hosts.toml pullgate cannot use refuses: {broken}");
    }

    /// The request path reads no file: with the whole host directory gone (and a FIFO, which
    /// a read would refuse, where a `hosts.toml` was), routes stay what was loaded, until the
    /// table is replaced. (`hosts::tests` shows the same for the certificate files.)
    /// containerd's CRI sends a pull secret with a `server_address` to a mirror only when the
    /// address names the mirror as hosts.toml writes it (case and default port kept).
    #[test]
    fn a_mirror_is_offered_secrets_by_its_host_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("certs.d");
        std::fs::create_dir_all(root.join("r.example")).unwrap();
        std::fs::write(root.join("r.example/hosts.toml"), "[host.\"https://M.example:443\"]\n").unwrap();
        let config = RegistryConfig { config_path: Some(root.display().to_string()), ..RegistryConfig::default() };
        let registry = HttpRegistry::new(&config).unwrap();
        let image: ImageRef = "r.example/app:v1".parse().unwrap();
        let routes = registry.routes(&image, Operation::Pull).unwrap();
        let hosts: Vec<_> = routes.iter().map(|route| (route.host.as_str(), route.secret_host.as_str())).collect();
        assert_eq!(hosts, [("m.example", "M.example:443"), ("r.example", "r.example")]);
    }

    #[test]
    fn routes_are_looked_up_in_memory_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("certs.d");
        let host_dir = root.join("r.example");
        std::fs::create_dir_all(&host_dir).unwrap();
        std::fs::write(host_dir.join("hosts.toml"), "[host.\"https://m\"]\nskip_verify = true\n").unwrap();
        let config = RegistryConfig { config_path: Some(root.display().to_string()), ..RegistryConfig::default() };
        let registry = HttpRegistry::new(&config).unwrap();
        let image: ImageRef = "r.example/app:v1".parse().unwrap();
        let hosts = |registry: &HttpRegistry| -> Vec<String> {
            let routes = registry.routes(&image, Operation::Pull).unwrap();
            routes.iter().map(|route| route.host.clone()).collect()
        };
        assert_eq!(hosts(&registry), ["m", "r.example"]);

        std::fs::remove_dir_all(&root).unwrap();
        std::fs::create_dir_all(&host_dir).unwrap();
        let fifo = std::process::Command::new("mkfifo").arg(host_dir.join("hosts.toml")).status().unwrap();
        assert!(fifo.success());
        for _ in 0..3 {
            assert_eq!(hosts(&registry), ["m", "r.example"], "a lookup read the directory");
        }
        registry.hosts().replace(HostsTable::load(std::slice::from_ref(&root)));
        let refused = registry.routes(&image, Operation::Pull).err().unwrap().to_string();
        assert!(refused.contains("FIFO"), "{refused}");
        std::fs::remove_dir_all(&root).unwrap();
        registry.hosts().replace(HostsTable::load(&[root]));
        assert_eq!(hosts(&registry), ["r.example"], "a removed hosts.toml means no mirror");
    }

    #[test]
    fn zero_timeout_and_bad_ca_file_are_build_errors() {
        let zero = RegistryConfig { timeout: std::time::Duration::ZERO, ..RegistryConfig::default() };
        assert!(matches!(HttpRegistry::new(&zero), Err(BuildError::ZeroTimeout)));
        let missing = RegistryConfig { ca_file: Some("/nonexistent/ca.pem".into()), ..RegistryConfig::default() };
        assert!(matches!(HttpRegistry::new(&missing), Err(BuildError::CaFile { .. })));
    }
}
