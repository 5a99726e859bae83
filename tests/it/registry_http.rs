//! HttpRegistry against a hand-written HTTP server on loopback: status handling, limits,
//! digest checks, the auth flows and timeouts.

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fake_registry::{FakeRegistry, Reply, Request};
use futures_util::future::BoxFuture;
use pullgate::reference::{Digest, ImageRef};
use pullgate::registry::buffering::{self, Buffering};
use pullgate::registry::limits::MANIFEST_MAX_BYTES;
use pullgate::registry::{Credentials, HttpRegistry, Registry, RegistryConfig, RegistryError};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Odd whitespace on purpose: the digest must be over these bytes, not a re-serialisation.
const MANIFEST: &[u8] =
    b"{\n  \"schemaVersion\":2,   \"mediaType\": \"application/vnd.oci.image.manifest.v1+json\" }\n";

fn client(server: &FakeRegistry, timeout: Duration) -> HttpRegistry {
    let config = RegistryConfig { insecure: vec![server.authority()], timeout, ..RegistryConfig::default() };
    HttpRegistry::new(&config).expect("client")
}

fn image(server: &FakeRegistry) -> ImageRef {
    format!("{}/team/app:v1", server.authority()).parse().expect("image ref")
}

fn anonymous() -> Credentials {
    Credentials::anonymous()
}

fn user(username: &str, password: &str) -> Credentials {
    Credentials { username: username.into(), password: password.into(), ..Credentials::default() }
}

fn manifest_server() -> impl Fn(&Request) -> Reply + Send + Sync + 'static {
    |req: &Request| match req.path() {
        "/v2/team/app/manifests/v1" => {
            Reply::ok(OCI_MANIFEST, MANIFEST).header("Docker-Content-Digest", &Digest::sha256_of(b"lie").to_string())
        }
        _ => Reply::status(404),
    }
}

// === manifests ===

#[tokio::test]
async fn manifest_digest_is_computed_over_received_bytes() {
    let server = FakeRegistry::start(manifest_server()).await;
    let registry = client(&server, Duration::from_secs(5));
    let manifest = registry.manifest(&image(&server), "v1", &anonymous()).await.unwrap().unwrap();
    assert_eq!(&manifest.bytes[..], MANIFEST);
    assert_eq!(manifest.digest, Digest::sha256_of(MANIFEST));
    assert_eq!(manifest.media_type, OCI_MANIFEST);
    let accept = server.requests()[0].header("accept").unwrap_or_default().to_owned();
    for media_type in [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ] {
        assert!(accept.contains(media_type), "{accept}");
    }
    assert_eq!(registry.request_count(), 1);
}

#[tokio::test]
async fn media_type_falls_back_to_manifest_field() {
    let server = FakeRegistry::start(|_: &Request| Reply::ok("application/json", MANIFEST)).await;
    let registry = client(&server, Duration::from_secs(5));
    let manifest = registry.manifest(&image(&server), "v1", &anonymous()).await.unwrap().unwrap();
    assert_eq!(manifest.media_type, OCI_MANIFEST);
}

#[tokio::test]
async fn missing_manifest_is_none() {
    let server = FakeRegistry::start(manifest_server()).await;
    let registry = client(&server, Duration::from_secs(5));
    let none = registry.manifest(&image(&server), "sha256-abc.sig", &anonymous()).await.unwrap();
    assert!(none.is_none());
}

#[tokio::test]
async fn manifest_by_digest_must_match_its_bytes() {
    let server = FakeRegistry::start(|_: &Request| Reply::ok(OCI_MANIFEST, MANIFEST)).await;
    let registry = client(&server, Duration::from_secs(5));
    let good = Digest::sha256_of(MANIFEST).to_string();
    let found = registry.manifest(&image(&server), &good, &anonymous()).await.unwrap().unwrap();
    assert_eq!(found.digest.as_str(), good);
    let wanted = Digest::sha256_of(b"another manifest");
    match registry.manifest(&image(&server), wanted.as_str(), &anonymous()).await {
        Err(RegistryError::DigestMismatch { expected, actual, .. }) => {
            assert_eq!(expected, wanted);
            assert_eq!(actual, Digest::sha256_of(MANIFEST));
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
    assert!(server.requests().iter().all(|r| r.path().contains("/manifests/sha256:")));
}

#[tokio::test]
async fn endless_manifest_is_too_large_quickly() {
    let server = FakeRegistry::start(|_: &Request| Reply::Endless).await;
    let registry = client(&server, Duration::from_secs(30));
    let started = Instant::now();
    let err = registry.manifest(&image(&server), "v1", &anonymous()).await.unwrap_err();
    assert!(matches!(err, RegistryError::TooLarge { limit, .. } if limit == MANIFEST_MAX_BYTES), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn declared_oversize_is_refused_before_the_body() {
    let declared = MANIFEST_MAX_BYTES + 1;
    let server = FakeRegistry::start(move |_: &Request| Reply::StallAfterHeaders { content_length: declared }).await;
    let registry = client(&server, Duration::from_secs(30));
    let started = Instant::now();
    let err = registry.manifest(&image(&server), "v1", &anonymous()).await.unwrap_err();
    assert!(matches!(err, RegistryError::TooLarge { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn stall_after_headers_times_out_within_the_configured_time() {
    let server = FakeRegistry::start(|_: &Request| Reply::StallAfterHeaders { content_length: 100 }).await;
    let registry = client(&server, Duration::from_millis(500));
    let started = Instant::now();
    let err = registry.manifest(&image(&server), "v1", &anonymous()).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(err.is_unavailable(), "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(2), "took {elapsed:?}");
}

/// Adds up what a request reserves for the bodies it keeps.
#[derive(Default)]
struct Reservations(Mutex<usize>);

impl Buffering for Reservations {
    fn reserve(&self, bytes: usize) -> BoxFuture<'_, ()> {
        *self.0.lock().unwrap() += bytes;
        Box::pin(async {})
    }
}

impl Reservations {
    fn total(&self) -> usize {
        *self.0.lock().unwrap()
    }
}

#[tokio::test]
async fn body_bytes_are_reserved_as_they_arrive_and_never_on_a_declared_length() {
    let server = FakeRegistry::start(manifest_server()).await;
    let (registry, image, creds) = (client(&server, Duration::from_secs(5)), image(&server), anonymous());
    let reserved = Arc::new(Reservations::default());
    let fetched = buffering::scope(reserved.clone(), registry.manifest(&image, "v1", &creds)).await;
    assert!(fetched.unwrap().is_some());
    assert_eq!(reserved.total(), MANIFEST.len());

    // Declares the largest manifest allowed, sends one byte, then stalls.
    let stalling = |_: &Request| Reply::StallAfterHeaders { content_length: MANIFEST_MAX_BYTES };
    let server = FakeRegistry::start(stalling).await;
    let (registry, image) = (client(&server, Duration::from_millis(500)), self::image(&server));
    let reserved = Arc::new(Reservations::default());
    let fetched = buffering::scope(reserved.clone(), registry.manifest(&image, "v1", &creds)).await;
    let err = fetched.unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
    assert_eq!(reserved.total(), 1);
}

#[tokio::test]
async fn server_errors_and_refused_connections_are_unreachable() {
    let server = FakeRegistry::start(|_: &Request| Reply::status(503)).await;
    let registry = client(&server, Duration::from_secs(5));
    let err = registry.manifest(&image(&server), "v1", &anonymous()).await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");

    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let config = RegistryConfig { insecure: vec![closed.to_string()], ..RegistryConfig::default() };
    let image: ImageRef = format!("{closed}/team/app:v1").parse().unwrap();
    let err = HttpRegistry::new(&config).unwrap().manifest(&image, "v1", &anonymous()).await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(err.to_string().contains(&closed.to_string()), "{err}");
}

#[tokio::test]
async fn hosts_not_listed_insecure_get_tls_only() {
    let server = FakeRegistry::start(manifest_server()).await;
    // The fake server waits for a request head that a TLS ClientHello never completes, so a
    // short timeout keeps the test quick.
    let config = RegistryConfig { timeout: Duration::from_millis(300), ..RegistryConfig::default() };
    let registry = HttpRegistry::new(&config).unwrap();
    let err = registry.manifest(&image(&server), "v1", &anonymous()).await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    // The TLS ClientHello is not an HTTP request, so the server never logged one.
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn connections_are_reused() {
    let server = FakeRegistry::start(manifest_server()).await;
    let registry = client(&server, Duration::from_secs(5));
    for _ in 0..3 {
        registry.manifest(&image(&server), "v1", &anonymous()).await.unwrap();
    }
    assert_eq!(server.connections(), 1);
}

// === blobs ===

const BLOB: &[u8] = b"{\"critical\":{}}";

fn blob_server() -> impl Fn(&Request) -> Reply + Send + Sync + 'static {
    let blob_path = format!("/v2/team/app/blobs/{}", Digest::sha256_of(BLOB));
    move |req: &Request| match req.path() {
        p if p == blob_path => Reply::status(307).header("Location", "/storage/hop1"),
        "/storage/hop1" => Reply::status(302).header("Location", "/storage/blob"),
        "/storage/blob" => Reply::ok("application/octet-stream", BLOB),
        "/storage/loop" => Reply::status(302).header("Location", "/storage/loop"),
        p if p.starts_with("/v2/team/app/blobs/") => Reply::status(302).header("Location", "/storage/loop"),
        _ => Reply::status(404),
    }
}

#[tokio::test]
async fn blob_follows_redirects_and_checks_digest() {
    let server = FakeRegistry::start(blob_server()).await;
    let registry = client(&server, Duration::from_secs(5));
    let bytes = registry.blob(&image(&server), &Digest::sha256_of(BLOB), 1024, &anonymous()).await.unwrap();
    assert_eq!(&bytes[..], BLOB);
    assert_eq!(registry.request_count(), 1);
}

#[tokio::test]
async fn blob_with_wrong_bytes_is_a_mismatch() {
    let server = FakeRegistry::start(|_: &Request| Reply::ok("application/octet-stream", b"tampered")).await;
    let registry = client(&server, Duration::from_secs(5));
    let err = registry.blob(&image(&server), &Digest::sha256_of(BLOB), 1024, &anonymous()).await.unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
}

#[tokio::test]
async fn blob_larger_than_the_callers_cap_is_too_large() {
    let server = FakeRegistry::start(blob_server()).await;
    let registry = client(&server, Duration::from_secs(5));
    let err = registry.blob(&image(&server), &Digest::sha256_of(BLOB), BLOB.len() - 1, &anonymous()).await.unwrap_err();
    assert!(matches!(err, RegistryError::TooLarge { limit, .. } if limit == BLOB.len() - 1), "{err}");
}

#[tokio::test]
async fn redirect_loops_stop_after_three_hops() {
    let server = FakeRegistry::start(blob_server()).await;
    let registry = client(&server, Duration::from_secs(5));
    let err = registry.blob(&image(&server), &Digest::sha256_of(b"other"), 1024, &anonymous()).await.unwrap_err();
    assert!(matches!(err, RegistryError::Protocol(_)), "{err}");
    assert_eq!(server.count("/storage/loop"), 3);
}

#[tokio::test]
async fn missing_blob_is_an_error() {
    let server = FakeRegistry::start(|_: &Request| Reply::status(404)).await;
    let registry = client(&server, Duration::from_secs(5));
    let err = registry.blob(&image(&server), &Digest::sha256_of(BLOB), 1024, &anonymous()).await.unwrap_err();
    assert!(matches!(err, RegistryError::Protocol(m) if m.contains("not found")));
}

// === bearer auth ===

/// Registry + token endpoint on one server. The registry accepts only `Bearer <good_token>`;
/// the token endpoint hands out `tok-<n>` (n counts issued tokens) with the given lifetime.
fn bearer_server(expires_in: u64, good_token: &'static str) -> impl Fn(&Request) -> Reply + Send + Sync + 'static {
    let issued = Arc::new(AtomicUsize::new(0));
    move |req: &Request| {
        if req.path() == "/token" {
            let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
            let body = format!("{{\"token\":\"tok-{n}\",\"expires_in\":{expires_in}}}");
            return Reply::ok("application/json", body.as_bytes());
        }
        let host = req.header("host").unwrap_or_default();
        let challenge = format!(
            "Bearer realm=\"http://{host}/token\",service=\"fake-registry\",scope=\"repository:team/app:pull\""
        );
        if req.header("authorization") != Some(&format!("Bearer {good_token}")) {
            return Reply::status(401).header("WWW-Authenticate", &challenge);
        }
        manifest_server()(req)
    }
}

#[tokio::test]
async fn bearer_token_is_requested_once_for_two_fetches() {
    let server = FakeRegistry::start(bearer_server(300, "tok-1")).await;
    let registry = client(&server, Duration::from_secs(5));
    for _ in 0..2 {
        let manifest = registry.manifest(&image(&server), "v1", &anonymous()).await.unwrap();
        assert!(manifest.is_some());
    }
    assert_eq!(server.count("/token"), 1);
    // 401, retry with the token, then the second fetch sends the cached token up front.
    assert_eq!(registry.request_count(), 3);
    let token_request = server.requests().into_iter().find(|r| r.path() == "/token").unwrap();
    let params = token_request.params();
    assert_eq!(params.get("scope").map(String::as_str), Some("repository:team/app:pull"));
    assert_eq!(params.get("service").map(String::as_str), Some("fake-registry"));
    assert_eq!(token_request.header("authorization"), None);
}

#[tokio::test]
async fn known_bearer_registry_gets_a_token_up_front_for_a_new_repository() {
    let server = FakeRegistry::start(bearer_server(300, "tok-2")).await;
    let registry = client(&server, Duration::from_secs(5));
    let other: ImageRef = format!("{}/team/other:v1", server.authority()).parse().unwrap();
    // First fetch learns the scheme (token tok-1 accepted nowhere: repo "other" 404s after auth).
    let _ = registry.manifest(&other, "v1", &anonymous()).await;
    let before = registry.request_count();
    assert!(registry.manifest(&image(&server), "v1", &anonymous()).await.unwrap().is_some());
    assert_eq!(registry.request_count() - before, 1, "no 401 round-trip for the new repository");
}

#[tokio::test]
async fn bearer_token_request_carries_basic_credentials() {
    let server = FakeRegistry::start(bearer_server(300, "tok-1")).await;
    let registry = client(&server, Duration::from_secs(5));
    registry.manifest(&image(&server), "v1", &user("alice", "s3cret")).await.unwrap();
    let token_request = server.requests().into_iter().find(|r| r.path() == "/token").unwrap();
    assert_eq!(token_request.header("authorization"), Some("Basic YWxpY2U6czNjcmV0"));
}

#[tokio::test]
async fn tokens_are_not_shared_between_credentials() {
    let server = FakeRegistry::start(bearer_server(300, "tok-1")).await;
    let registry = client(&server, Duration::from_secs(5));
    registry.manifest(&image(&server), "v1", &user("alice", "a")).await.unwrap();
    // Bob gets tok-2, which this registry rejects: he must not ride on alice's tok-1.
    let err = registry.manifest(&image(&server), "v1", &user("bob", "b")).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized(_)), "{err}");
    assert_eq!(server.count("/token"), 2);
}

#[tokio::test]
async fn expired_token_is_fetched_again() {
    let server = FakeRegistry::start(bearer_server(1, "tok-2")).await;
    let registry = client(&server, Duration::from_secs(5));
    // tok-1 is rejected, so the first fetch fails after one token; the next gets tok-2.
    assert!(registry.manifest(&image(&server), "v1", &anonymous()).await.is_err());
    assert!(registry.manifest(&image(&server), "v1", &anonymous()).await.unwrap().is_some());
    let tokens_after_refresh = server.count("/token");
    assert_eq!(tokens_after_refresh, 2);
    // A 1 s token is used for half its life at most.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let _ = registry.manifest(&image(&server), "v1", &anonymous()).await;
    assert_eq!(server.count("/token"), 3);
}

/// An OAuth2 token endpoint that wants the refresh-token grant and answers `access_token`.
fn oauth_server() -> impl Fn(&Request) -> Reply + Send + Sync + 'static {
    |req: &Request| {
        if req.path() == "/oauth2/token" {
            return Reply::ok("application/json", br#"{"access_token":"acc","expires_in":300}"#);
        }
        if req.header("authorization") != Some("Bearer acc") {
            let host = req.header("host").unwrap_or_default();
            let realm = format!("Bearer realm=\"http://{host}/oauth2/token\",service=\"svc\"");
            return Reply::status(401).header("WWW-Authenticate", &realm);
        }
        manifest_server()(req)
    }
}

#[tokio::test]
async fn identity_token_uses_the_refresh_token_grant() {
    let server = FakeRegistry::start(oauth_server()).await;
    let registry = client(&server, Duration::from_secs(5));
    let creds = Credentials { identity_token: "refresh-me".into(), ..Credentials::default() };
    let found = registry.manifest(&image(&server), "v1", &creds).await.unwrap();
    assert!(found.is_some());
    let requests = server.requests();
    let token_request = requests.iter().find(|r| r.path() == "/oauth2/token").unwrap();
    assert_eq!(token_request.method, "POST");
    let form = token_request.params();
    let field = |name: &str| form.get(name).map(String::as_str);
    assert_eq!(field("grant_type"), Some("refresh_token"));
    assert_eq!(field("refresh_token"), Some("refresh-me"));
    assert_eq!(field("scope"), Some("repository:team/app:pull"));
    assert_eq!(field("service"), Some("svc"));
}

#[tokio::test]
async fn registry_token_is_sent_as_bearer_directly() {
    let server = FakeRegistry::start(bearer_server(300, "given-token")).await;
    let registry = client(&server, Duration::from_secs(5));
    let creds = Credentials { registry_token: "given-token".into(), ..Credentials::default() };
    assert!(registry.manifest(&image(&server), "v1", &creds).await.unwrap().is_some());
    assert_eq!(registry.request_count(), 1);
    assert_eq!(server.count("/token"), 0);
}

#[tokio::test]
async fn plain_http_realm_of_a_tls_registry_is_refused() {
    // The registry itself is insecure here, but the realm points at a host that is not.
    let server = FakeRegistry::start(|_: &Request| {
        Reply::status(401).header("WWW-Authenticate", "Bearer realm=\"http://auth.invalid/token\"")
    })
    .await;
    let registry = client(&server, Duration::from_secs(5));
    let err = registry.manifest(&image(&server), "v1", &user("alice", "s3cret")).await.unwrap_err();
    assert!(matches!(&err, RegistryError::Protocol(m) if m.contains("https")), "{err}");
}

// === basic auth and refusals ===

fn basic_server() -> impl Fn(&Request) -> Reply + Send + Sync + 'static {
    |req: &Request| {
        // alice:s3cret
        if req.header("authorization") != Some("Basic YWxpY2U6czNjcmV0") {
            return Reply::status(401).header("WWW-Authenticate", "Basic realm=\"fake\"");
        }
        manifest_server()(req)
    }
}

#[tokio::test]
async fn basic_auth_from_username_and_password() {
    let server = FakeRegistry::start(basic_server()).await;
    let registry = client(&server, Duration::from_secs(5));
    for _ in 0..2 {
        assert!(registry.manifest(&image(&server), "v1", &user("alice", "s3cret")).await.unwrap().is_some());
    }
    // 401 + retry, then Basic up front.
    assert_eq!(registry.request_count(), 3);
    assert_eq!(server.requests()[0].header("authorization"), None);
}

#[tokio::test]
async fn basic_auth_from_the_auth_field() {
    let server = FakeRegistry::start(basic_server()).await;
    let registry = client(&server, Duration::from_secs(5));
    let creds = Credentials { auth: "YWxpY2U6czNjcmV0".into(), ..Credentials::default() };
    assert!(registry.manifest(&image(&server), "v1", &creds).await.unwrap().is_some());
}

#[tokio::test]
async fn missing_credentials_are_unauthorized() {
    let server = FakeRegistry::start(basic_server()).await;
    let registry = client(&server, Duration::from_secs(5));
    let err = registry.manifest(&image(&server), "v1", &anonymous()).await.unwrap_err();
    match &err {
        RegistryError::Unauthorized(m) => {
            assert!(m.contains(&server.authority()) && m.contains("no credentials"), "{m}")
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    assert_eq!(registry.request_count(), 1);
}

#[tokio::test]
async fn wrong_credentials_are_unauthorized_without_echoing_them() {
    let server = FakeRegistry::start(basic_server()).await;
    let registry = client(&server, Duration::from_secs(5));
    let err = registry.manifest(&image(&server), "v1", &user("mallory", "hunter2")).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(matches!(err, RegistryError::Unauthorized(_)), "{text}");
    for secret in ["mallory", "hunter2", "bWFsbG9yeTpodW50ZXIy"] {
        assert!(!text.contains(secret), "{text}");
    }
}

#[tokio::test]
async fn forbidden_is_unauthorized() {
    let server = FakeRegistry::start(|_: &Request| Reply::status(403)).await;
    let registry = client(&server, Duration::from_secs(5));
    let err = registry.manifest(&image(&server), "v1", &user("alice", "s3cret")).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized(_)), "{err}");
}

#[tokio::test]
async fn rejected_bearer_token_is_unauthorized_and_not_reused() {
    let server = FakeRegistry::start(bearer_server(300, "never")).await;
    let registry = client(&server, Duration::from_secs(5));
    for _ in 0..2 {
        let err = registry.manifest(&image(&server), "v1", &user("alice", "s3cret")).await.unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(matches!(err, RegistryError::Unauthorized(_)), "{text}");
        assert!(!text.contains("tok-") && !text.contains("s3cret"), "{text}");
    }
}
