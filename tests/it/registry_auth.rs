//! A registry with basic auth: pullgate uses the credentials the kubelet put in the
//! PullImageRequest for the signature fetch, and fails cleanly without them.

use crate::common;

use common::cri;
use common::private;
use pullgate::config::Config;
use pullgate::cri::proto::AuthConfig;

const USER: &str = "kubelet";
const PASSWORD: &str = "s3cret-Pa55";

#[tokio::test(flavor = "multi_thread")]
async fn credentials_from_the_pull_request_reach_the_registry_and_never_an_error() {
    let private::PrivateImage { lab, registry, image, key, policy, .. } = private::signed_image(USER, PASSWORD);

    let mut config = Config { upstream: lab.containerd_sock.clone(), ..Config::default() };
    config.registry.insecure = vec![registry.clone()];
    let pem = key.public_pem();
    let pullgate = common::pullgate::start_with(config, &[("a.pub", &pem), ("policy.toml", &policy)]).await;
    let mut images = cri::images(&pullgate.socket);

    let mut anonymous = cri::pull_request(&image, None);
    anonymous.auth = None;
    let status = images.pull_image(anonymous).await.expect_err("pulled without credentials");
    assert!(status.message().starts_with("SignatureValidationFailed: "), "{}", status.message());
    assert!(status.message().contains("denied"), "{}", status.message());

    let mut wrong = cri::pull_request(&image, None);
    wrong.auth = Some(AuthConfig { username: USER.into(), password: "not-it".into(), ..Default::default() });
    let status = images.pull_image(wrong).await.expect_err("pulled with a wrong password");
    assert!(!status.message().contains("not-it"), "password leaked: {}", status.message());

    for auth in [
        AuthConfig { username: USER.into(), password: PASSWORD.into(), ..Default::default() },
        AuthConfig { auth: base64_user_pass(), ..Default::default() },
    ] {
        let mut request = cri::pull_request(&image, None);
        request.auth = Some(auth);
        images.pull_image(request).await.expect("pull with credentials");
    }
    pullgate.stop().await;
}

fn base64_user_pass() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
}

// === credentials stay with their registry ===

mod foreign {
    use std::time::Duration;

    use super::common::fake_registry::{FakeRegistry, Reply, Request};
    use pullgate::reference::{Digest, ImageRef};
    use pullgate::registry::{Credentials, HttpRegistry, Registry, RegistryConfig, RegistryError};

    const MANIFEST: &[u8] = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;
    const BLOB: &[u8] = b"signature payload";
    /// "alice:alice-pw" and "bob:bob-pw".
    const ALICE: &str = "Basic YWxpY2U6YWxpY2UtcHc=";
    const BOB: &str = "Basic Ym9iOmJvYi1wdw==";

    fn user(name: &str) -> Credentials {
        Credentials { username: name.into(), password: format!("{name}-pw"), ..Credentials::default() }
    }

    /// Hands a token to anyone: a realm that collects whatever is sent to it.
    async fn recording_realm() -> FakeRegistry {
        FakeRegistry::start(|_: &Request| Reply::ok("application/json", br#"{"token":"foreign"}"#)).await
    }

    /// A blob store that wants a bearer token from `realm`, and serves the blob to anyone
    /// who brings one.
    async fn blob_host(realm: &FakeRegistry) -> FakeRegistry {
        let challenge = format!("Bearer realm=\"http://{}/token\",service=\"blobs\"", realm.authority());
        FakeRegistry::start(move |req: &Request| match req.header("authorization") {
            Some("Bearer foreign") => Reply::ok("application/octet-stream", BLOB),
            _ => Reply::status(401).header("WWW-Authenticate", &challenge),
        })
        .await
    }

    /// A Basic-auth registry for alice and bob that sends blob requests to `blobs`.
    async fn basic_registry(blobs: &FakeRegistry) -> FakeRegistry {
        let blobs = blobs.authority();
        FakeRegistry::start(move |req: &Request| {
            if !matches!(req.header("authorization"), Some(ALICE | BOB)) {
                return Reply::status(401).header("WWW-Authenticate", "Basic realm=\"registry\"");
            }
            match req.path().split_once("/blobs/") {
                Some((_, digest)) => Reply::status(302).header("Location", &format!("http://{blobs}/store/{digest}")),
                None => Reply::ok("application/vnd.oci.image.manifest.v1+json", MANIFEST),
            }
        })
        .await
    }

    fn client(servers: &[&FakeRegistry]) -> HttpRegistry {
        // Plain HTTP for all three, so that only the credentials rule stands between them and
        // the foreign realm (TLS-only would stop the realm for another reason).
        let insecure = servers.iter().map(|s| s.authority()).collect();
        let config = RegistryConfig { insecure, timeout: Duration::from_secs(5), ..RegistryConfig::default() };
        HttpRegistry::new(&config).expect("client")
    }

    fn image(registry: &FakeRegistry, repository: &str) -> ImageRef {
        format!("{}/{repository}:v1", registry.authority()).parse().expect("image ref")
    }

    #[tokio::test]
    async fn a_challenge_from_the_blob_host_gets_no_credentials_and_is_not_remembered() {
        let realm = recording_realm().await;
        let blobs = blob_host(&realm).await;
        let registry = basic_registry(&blobs).await;
        let client = client(&[&realm, &blobs, &registry]);

        // alice's pull: the registry's own Basic challenge is answered, then the signature
        // blob is redirected to a host that asks for a token from a realm of its own.
        let app = image(&registry, "team/app");
        assert!(client.manifest(&app, "v1", &user("alice")).await.expect("manifest").is_some());
        let blob = client.blob(&app, &Digest::sha256_of(BLOB), 1024, &user("alice")).await;
        // bob's pull of another repository starts with the registry's own scheme.
        let other = image(&registry, "team/other");
        let bobs_manifest = client.manifest(&other, "v1", &user("bob")).await;

        assert_eq!(realm.requests().len(), 0, "the foreign realm was asked: {:?}", realm.requests());
        for request in blobs.requests() {
            assert_eq!(request.header("authorization"), None, "credentials reached the blob host: {request:?}");
        }
        let err = blob.expect_err("the blob host's challenge was answered");
        let text = format!("{err} {err:?}");
        assert!(matches!(err, RegistryError::Unauthorized(_)), "{text}");
        assert!(text.contains(&blobs.authority()), "the message does not name the host: {text}");
        assert!(!text.contains("alice"), "{text}");
        assert!(bobs_manifest.expect("bob's manifest").is_some());
        let to_registry = registry.requests();
        let bobs: Vec<_> = to_registry.iter().filter(|r| r.path().starts_with("/v2/team/other/")).collect();
        assert_eq!(bobs.len(), 1, "bob's pull was not answered up front with Basic: {bobs:?}");
        assert_eq!(bobs[0].header("authorization"), Some(BOB));
    }

    /// Docker Hub's shape: the registry itself names a token service on another host.
    #[tokio::test]
    async fn a_token_service_the_registry_names_gets_the_credentials() {
        let realm = FakeRegistry::start(|req: &Request| match req.header("authorization") {
            Some(ALICE) => Reply::ok("application/json", br#"{"token":"issued"}"#),
            _ => Reply::status(401),
        })
        .await;
        let challenge = format!("Bearer realm=\"http://{}/token\",service=\"registry\"", realm.authority());
        let registry = FakeRegistry::start(move |req: &Request| match req.header("authorization") {
            Some("Bearer issued") => Reply::ok("application/vnd.oci.image.manifest.v1+json", MANIFEST),
            _ => Reply::status(401).header("WWW-Authenticate", &challenge),
        })
        .await;
        let client = client(&[&realm, &registry]);
        for repository in ["team/app", "team/other"] {
            let manifest = client.manifest(&image(&registry, repository), "v1", &user("alice")).await;
            assert!(manifest.expect("manifest").is_some());
        }
        // The second repository's token was fetched up front: the challenge was remembered.
        assert_eq!(realm.requests().len(), 2);
        assert_eq!(registry.requests().len(), 3);
    }

    /// A Basic-auth registry for alice and bob whose images carry one signature each, its
    /// payload blob sent off to `blobs` as the blob redirect of a CDN would.
    async fn signing_registry(blobs: &FakeRegistry) -> FakeRegistry {
        let blobs = blobs.authority();
        let signature = super::common::cosign::signature_manifest(&[(BLOB.to_vec(), b"sig".to_vec())]).manifest;
        FakeRegistry::start(move |req: &Request| {
            if !matches!(req.header("authorization"), Some(ALICE | BOB)) {
                return Reply::status(401).header("WWW-Authenticate", "Basic realm=\"registry\"");
            }
            let path = req.path();
            match path.split_once("/blobs/") {
                Some((_, digest)) => Reply::status(302).header("Location", &format!("http://{blobs}/store/{digest}")),
                None if path.ends_with(".sig") => Reply::ok("application/vnd.oci.image.manifest.v1+json", &signature),
                None => Reply::ok("application/vnd.oci.image.manifest.v1+json", MANIFEST),
            }
        })
        .await
    }

    /// The same leak, driven as the kubelet drives it: two users' PullImage requests, with
    /// their pull secrets, through pullgate in front of the real containerd.
    #[tokio::test(flavor = "multi_thread")]
    async fn through_the_daemon_no_users_secret_reaches_a_foreign_realm() {
        use super::common::{cri, lab::Lab};
        use pullgate::config::Config;
        use pullgate::cri::proto::AuthConfig;

        let lab = Lab::start();
        let realm = recording_realm().await;
        let blobs = blob_host(&realm).await;
        let registry = signing_registry(&blobs).await;
        let mut config = Config { upstream: lab.containerd_sock.clone(), ..Config::default() };
        config.registry.insecure = [&realm, &blobs, &registry].iter().map(|s| s.authority()).collect();
        let policy = &super::common::policy::signed("*", &["a.pub"]);
        let pem = super::common::cosign::unused_public_pem();
        let pullgate = super::common::pullgate::start_with(config, &[("a.pub", &pem), ("policy.toml", policy)]).await;

        for (user, repository) in [("alice", "team/app"), ("bob", "team/other")] {
            let image = format!("{}/{repository}:v1", registry.authority());
            let mut request = cri::pull_request(&image, Some("default"));
            let password = format!("{user}-pw");
            request.auth = Some(AuthConfig { username: user.into(), password: password.clone(), ..Default::default() });
            let status = cri::images(&pullgate.socket).pull_image(request).await.expect_err("pulled unverified");
            assert!(!status.message().contains(&password), "{user}'s password in the error: {}", status.message());
        }
        assert_eq!(realm.requests().len(), 0, "the foreign realm was asked: {:?}", realm.requests());
        assert!(blobs.count("/store/") > 0, "the signature blob was never fetched: the test proves nothing");
        for request in blobs.requests() {
            assert_eq!(request.header("authorization"), None, "credentials reached the blob host: {request:?}");
        }
        pullgate.stop().await;
    }
}
