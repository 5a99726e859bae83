//! Images signed the way cosign v3 signs by default: a sigstore bundle attached as an OCI
//! referrer, pulled through pullgate by the real containerd 2.x from the real docker-registry
//! twice: directly, where (docker-registry 2.8 having no referrers API) cosign and pullgate use
//! the referrers tag schema, an index of referrers under the tag `sha256-<hex>`; and through a
//! front that implements the referrers API (`GET /v2/<name>/referrers/<digest>`, answered with
//! the index cosign wrote) and hides the referrers tag. Every refusal names the format.
//!
//! | image            | signed with                                          | verdict                   |
//! |------------------|------------------------------------------------------|---------------------------|
//! | b/signed         | `cosign sign` (v3 default), trusted key              | pulled, pinned            |
//! | b/multi          | `cosign sign` at the index digest of a multi-arch image | pulled, pinned         |
//! | b/message        | `cosign sign-blob --bundle` of the manifest, attached as a referrer | pulled, pinned |
//! | b/unsigned       | nothing                                              | no signatures found       |
//! | b/platform       | `cosign sign` of one platform manifest of a multi-arch image only | no signatures found |
//! | b/wrong-key      | `cosign sign`, another key                           | does not verify           |
//! | b/other-digest   | the trusted key's bundle for b/decoy, attached here  | names another digest      |
//! | b/other-message  | b/message's message-signature bundle, attached here  | over another digest       |
//! | b/attested       | `cosign attest` (SLSA provenance) only               | an attestation            |
//! | b/altered        | cosign's bundle with its DSSE payload altered        | does not verify           |
//! | b/missing        | referrer index naming a deleted manifest             | referrer is missing       |
//! | strict/signed    | `cosign sign`, under a rule that needs an identity   | names no image            |
//! | strict/referrer  | `cosign sign` simple-signing, pushed as a referrer   | pulled, pinned (referrers tag pass only: its payload names the registry, not the front) |

use crate::common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use common::cosign::{self, CosignKey};
use common::cri;
use common::fake_registry::{FakeRegistry, Reply, Request};
use common::front::{Front, Hostile};
use common::lab::{Format, Lab};
use common::store;
use pullgate::config::Config;
use pullgate::decision::{Gate, PullRequest, Verdict};
use pullgate::policy::{Policy, SharedPolicy};
use pullgate::registry::{HttpRegistry, RegistryConfig};
use pullgate::verify::{Discovery, Format as VerifyFormat};

const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";

/// Bundles count under `b` (digest-only signatures accepted); `strict` keeps the default
/// identity rule, which a bundle cannot satisfy.
fn policy(registry: &str) -> String {
    format!(
        "[[rule]]\nscope = \"{registry}/b\"\nrequire = \"signed\"\nkeys = [\"cosign.pub\"]\nidentity = \"ignore\"\n\n\
         [[rule]]\nscope = \"{registry}/strict\"\nrequire = \"signed\"\nkeys = [\"cosign.pub\"]\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn cosign_v3_bundles_are_verified_through_the_referrers_tag_and_the_referrers_api() {
    let lab = Lab::start_containerd2(false);
    let (key, other) = (CosignKey::generate(), CosignKey::generate());
    let reg = lab.registry.clone();
    let mut images = Vec::new();
    let mut push = |repo: &str, format: Format| {
        let digest = lab.push_image_with(&format!("{repo}:v1"), repo, format);
        images.push((repo.to_owned(), digest.clone()));
        digest
    };
    let signed = push("b/signed", Format::Oci);
    key.sign_bundle(&reg, "b/signed", &signed);
    let multi = push("b/multi", Format::OciIndex);
    key.sign_bundle(&reg, "b/multi", &multi);
    let message = push("b/message", Format::Oci);
    let message_bundle = key.sign_blob_bundle(&manifest_bytes(&reg, "b/message", &message));
    attach_bundle(&reg, "b/message", &message, &message_bundle);
    push("b/unsigned", Format::Oci);
    let platform = push("b/platform", Format::OciIndex);
    key.sign_bundle(&reg, "b/platform", &first_platform(&reg, "b/platform", &platform));
    let wrong = push("b/wrong-key", Format::Oci);
    other.sign_bundle(&reg, "b/wrong-key", &wrong);
    let decoy = push("b/decoy", Format::Oci);
    key.sign_bundle(&reg, "b/decoy", &decoy);
    let target = push("b/other-digest", Format::Oci);
    attach_bundle(&reg, "b/other-digest", &target, &only_bundle(&reg, "b/decoy", &decoy));
    let other_message = push("b/other-message", Format::Oci);
    attach_bundle(&reg, "b/other-message", &other_message, &message_bundle);
    let attested = push("b/attested", Format::Oci);
    key.attest(&reg, "b/attested", &attested, "slsaprovenance1");
    let altered = push("b/altered", Format::Oci);
    key.sign_bundle(&reg, "b/altered", &altered);
    attach_bundle(&reg, "b/altered", &altered, &with_altered_payload(&only_bundle(&reg, "b/altered", &altered)));
    let missing = push("b/missing", Format::Oci);
    key.sign_bundle(&reg, "b/missing", &missing);
    delete_manifest(&reg, "b/missing", &only_referrer(&reg, "b/missing", &missing));
    let strict = push("strict/signed", Format::Oci);
    key.sign_bundle(&reg, "strict/signed", &strict);
    let referred = push("strict/referrer", Format::Oci);
    key.sign_referrer(&reg, "strict/referrer", &referred);

    let api = Front::start(&reg);
    api.trust_in(&lab);
    for (repo, digest) in &images {
        serve_referrers_api(&api, &reg, repo, digest);
    }
    let mut config = Config { upstream: lab.containerd_sock.clone(), ..Config::default() };
    config.registry.insecure = vec![reg.clone(), api.addr()];
    let (pem, policy) = (key.public_pem(), format!("{}\n{}", policy(&reg), policy(&api.addr())));
    let pullgate = common::pullgate::start_with(config, &[("cosign.pub", &pem), ("policy.toml", &policy)]).await;

    let api_host = api.addr();
    for (host, via) in [(reg.as_str(), "referrers tag"), (api_host.as_str(), "referrers API")] {
        let mut accepted = vec![("b/signed", &signed), ("b/multi", &multi), ("b/message", &message)];
        if via == "referrers tag" {
            accepted.push(("strict/referrer", &referred));
        }
        for (repo, digest) in accepted {
            let image = format!("{host}/{repo}:v1");
            let pulled = cri::images(&pullgate.socket).pull_image(cri::pull_request(&image, None)).await;
            pulled.unwrap_or_else(|status| panic!("{image} refused: {}\n{}", status.message(), lab.logs()));
            let (verified, config) = store::verified(&reg, repo, "v1").await;
            assert_eq!(&verified, digest, "{repo}: the registry's v1 is the signed digest");
            store::assert_pinned(&lab, &image, &verified, &config).await;
        }

        let refusals = [
            ("b/unsigned", "no signatures found (no .sig tag, no sigstore bundle".to_owned()),
            ("b/platform", "no signatures found (no .sig tag, no sigstore bundle".to_owned()),
            ("b/wrong-key", "sigstore bundle: signature does not verify with any of the 1 trusted key".to_owned()),
            ("b/other-digest", format!("sigstore bundle: signed statement names {decoy}, not {target}")),
            ("b/other-message", format!("sigstore bundle: message signature is over {message}, not {other_message}")),
            (
                "b/attested",
                "sigstore bundle: an attestation (predicate type \"https://slsa.dev/provenance/v1\")".to_owned(),
            ),
            ("b/altered", "sigstore bundle: signature does not verify".to_owned()),
            ("b/missing", "bundle referrer sha256:".to_owned()),
            ("b/missing", format!("listed by the {via} is missing")),
            ("strict/signed", "sigstore bundle: names no image, only its digest".to_owned()),
        ];
        for (repo, needle) in refusals {
            let image = format!("{host}/{repo}:v1");
            let refused = cri::images(&pullgate.socket).pull_image(cri::pull_request(&image, None)).await;
            let status = refused.expect_err(&format!("{image} was pulled"));
            let message = status.message();
            assert!(message.starts_with("SignatureValidationFailed: "), "{image}: {message}");
            assert!(message.contains(&needle), "{image}: {message:?} does not say {needle:?}");
            assert_eq!(store::record_target(&lab, &image).await, None, "{image}: containerd stored a refused image");
        }
    }
    for (repo, digest) in images.iter().filter(|(repo, _)| !["b/decoy", "strict/referrer"].contains(&repo.as_str())) {
        let listed = api.count(|seen| seen.path == format!("/v2/{repo}/referrers/{digest}") && !seen.is_containerd());
        assert!(listed > 0, "pullgate never asked the referrers API for {repo}");
    }
    pullgate.stop().await;
}

/// Makes `front` answer the referrers API for `repo@digest` as a registry implementing it
/// would: with the index cosign keeps under the referrers tag (an empty index when there is
/// none), while the tag itself is hidden, so only the API can list the referrers.
fn serve_referrers_api(front: &Front, registry: &str, repo: &str, digest: &str) {
    let tag = digest.replacen(':', "-", 1);
    let stored = cosign::http_get(&format!("http://{registry}/v2/{repo}/manifests/{tag}"), OCI_INDEX, None);
    let index = match stored.status {
        200 => stored.body,
        _ => serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})).expect("index"),
    };
    let path = format!("/v2/{repo}/referrers/{digest}");
    front.hostile(&path, Hostile::Body(200, OCI_INDEX.to_owned(), index.into()));
    let unknown = br#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#;
    let hidden = Hostile::Body(404, "application/json".to_owned(), unknown.to_vec().into());
    front.hostile(&format!("/v2/{repo}/manifests/{tag}"), hidden);
}

/// The manifest bytes of `repo@digest`, as `cosign sign-blob` signs them.
fn manifest_bytes(registry: &str, repo: &str, digest: &str) -> Vec<u8> {
    let url = format!("http://{registry}/v2/{repo}/manifests/{digest}");
    let got = cosign::http_get(&url, common::front::ACCEPT_MANIFESTS, None);
    assert_eq!(cosign::sha256_digest(&got.body), digest, "{url}");
    got.body
}

/// The digest of the first platform manifest the index `repo@digest` lists.
fn first_platform(registry: &str, repo: &str, digest: &str) -> String {
    let index: serde_json::Value = serde_json::from_slice(&manifest_bytes(registry, repo, digest)).expect("index");
    index["manifests"][0]["digest"].as_str().expect("entry digest").to_owned()
}

/// A registry with the referrers API (an in-process fake following the distribution spec)
/// serving what cosign pushed to docker-registry: the referrers list comes from
/// `GET /v2/<name>/referrers/<digest>`, and there is no referrers tag to fall back on. A list
/// naming a manifest the registry does not have counts for nothing and says so.
#[tokio::test(flavor = "multi_thread")]
async fn the_referrers_api_is_used_where_the_registry_has_it() {
    let lab = Lab::start();
    let key = CosignKey::generate();
    let reg = lab.registry.clone();
    let digest = lab.push_image("b/api:v1", "api");
    key.sign_bundle(&reg, "b/api", &digest);
    let manifest =
        cosign::http_get(&format!("http://{reg}/v2/b/api/manifests/v1"), common::front::ACCEPT_MANIFESTS, None);
    let index = referrer_index(&reg, "b/api", &digest);
    let referrer = only_referrer(&reg, "b/api", &digest);
    let referrer_manifest =
        cosign::http_get(&format!("http://{reg}/v2/b/api/manifests/{referrer}"), cosign::OCI_MANIFEST_MEDIA_TYPE, None);
    let bundle = only_bundle(&reg, "b/api", &digest);
    let bundle_digest = cosign::sha256_digest(&bundle);
    let index = serde_json::to_vec(&index).expect("index");
    let (image_type, image_bytes) = (manifest.content_type.clone(), manifest.body.clone());
    let (digest_seen, referrer_seen) = (digest.clone(), referrer.clone());
    let served = move |path: &str| -> Option<(String, Vec<u8>)> {
        let (digest, referrer) = (&digest_seen, &referrer_seen);
        let image_path = |p: &str| format!("/v2/b/{p}/manifests/v1");
        if path == image_path("api") || path == image_path("gone") {
            return Some((image_type.clone(), image_bytes.clone()));
        }
        if path == format!("/v2/b/api/referrers/{digest}") || path == format!("/v2/b/gone/referrers/{digest}") {
            return Some((OCI_INDEX.to_owned(), index.clone()));
        }
        if path == format!("/v2/b/api/manifests/{referrer}") {
            return Some((cosign::OCI_MANIFEST_MEDIA_TYPE.to_owned(), referrer_manifest.body.clone()));
        }
        (path == format!("/v2/b/api/blobs/{bundle_digest}"))
            .then(|| ("application/octet-stream".into(), bundle.clone()))
    };
    let fake = FakeRegistry::start(move |request: &Request| match served(request.path()) {
        Some((content_type, body)) => Reply::ok(&content_type, &body),
        None if request.path() == "/v2/" => Reply::ok("application/json", b"{}"),
        None => Reply::status(404),
    })
    .await;

    let dir = tempfile::tempdir().expect("policy dir");
    std::fs::write(dir.path().join("cosign.pub"), key.public_pem()).expect("write key");
    std::fs::write(dir.path().join("policy.toml"), policy(&fake.authority())).expect("write policy");
    let policy = Policy::load(dir.path(), None).expect("policy loads");
    let config = RegistryConfig { insecure: vec![fake.authority()], ..RegistryConfig::default() };
    let registry = Arc::new(HttpRegistry::new(&config).expect("registry client"));
    let gate = Gate::new(SharedPolicy::new(policy), registry, Duration::from_secs(10));

    let decide = |repo: &str| PullRequest { image: format!("{}/b/{repo}:v1", fake.authority()), ..Default::default() };
    let accepted = gate.decide(&decide("api")).await;
    assert_eq!(accepted.verdict, Verdict::Accepted, "{}", accepted.reason);
    let signatures = &accepted.evaluation.as_ref().expect("an evaluation").signatures;
    assert_eq!(signatures.len(), 1, "{signatures:?}");
    assert_eq!(signatures[0].format, VerifyFormat::Bundle(Discovery::ReferrersApi));
    let tag = digest.replacen(':', "-", 1);
    assert!(fake.count(&format!("/v2/b/api/referrers/{digest}")) > 0, "the referrers API was never asked");
    assert!(fake.count(&format!("/v2/b/api/manifests/{tag}")) > 0, "the referrers tag was not asked at once");

    let refused = gate.decide(&decide("gone")).await;
    assert_eq!(refused.verdict, Verdict::Rejected, "{}", refused.reason);
    assert!(
        refused.reason.contains(&format!("bundle referrer {referrer} listed by the referrers API is missing")),
        "{}",
        refused.reason
    );
}

// === home-made referrers, for what cosign never writes ===

/// The referrer index cosign keeps under the referrers tag of `digest`.
fn referrer_index(registry: &str, repo: &str, digest: &str) -> serde_json::Value {
    let tag = digest.replacen(':', "-", 1);
    let got = cosign::http_get(&format!("http://{registry}/v2/{repo}/manifests/{tag}"), OCI_INDEX, None);
    assert_eq!(got.status, 200, "no referrers tag for {repo}@{digest}");
    serde_json::from_slice(&got.body).expect("referrer index JSON")
}

/// The digest of the one referrer cosign listed for `digest`.
fn only_referrer(registry: &str, repo: &str, digest: &str) -> String {
    let index = referrer_index(registry, repo, digest);
    let entries = index["manifests"].as_array().expect("index entries");
    assert_eq!(entries.len(), 1, "{index}");
    entries[0]["digest"].as_str().expect("entry digest").to_owned()
}

/// The bundle JSON of the one bundle referrer cosign attached to `digest`.
fn only_bundle(registry: &str, repo: &str, digest: &str) -> Vec<u8> {
    let referrer = only_referrer(registry, repo, digest);
    let url = format!("http://{registry}/v2/{repo}/manifests/{referrer}");
    let manifest = cosign::http_get(&url, "application/vnd.oci.image.manifest.v1+json", None);
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.body).expect("referrer manifest JSON");
    assert_eq!(manifest["artifactType"], BUNDLE_MEDIA_TYPE, "{manifest}");
    let layer = manifest["layers"][0]["digest"].as_str().expect("bundle layer digest");
    let blob = cosign::http_get(&format!("http://{registry}/v2/{repo}/blobs/{layer}"), "*/*", None);
    assert_eq!(blob.status, 200);
    blob.body
}

/// `bundle` with one byte of its DSSE payload changed (the statement's predicate), the
/// signature left as cosign made it.
fn with_altered_payload(bundle: &[u8]) -> Vec<u8> {
    let mut bundle: serde_json::Value = serde_json::from_slice(bundle).expect("bundle JSON");
    let encoded = bundle["dsseEnvelope"]["payload"].as_str().expect("DSSE payload");
    let mut statement: serde_json::Value =
        serde_json::from_slice(&STANDARD.decode(encoded).expect("base64 payload")).expect("statement JSON");
    statement["predicate"] = json!({"altered": true});
    bundle["dsseEnvelope"]["payload"] = STANDARD.encode(serde_json::to_vec(&statement).expect("statement")).into();
    serde_json::to_vec(&bundle).expect("bundle")
}

/// Attaches `bundle` to `subject` the way cosign does (empty config, one bundle layer,
/// `subject`), and makes the referrers tag list it alone.
fn attach_bundle(registry: &str, repo: &str, subject: &str, bundle: &[u8]) {
    let (config, layer) = (b"{}", bundle);
    cosign::put_blob(registry, repo, config, None);
    cosign::put_blob(registry, repo, layer, None);
    let subject_manifest = cosign::http_get(
        &format!("http://{registry}/v2/{repo}/manifests/{subject}"),
        common::front::ACCEPT_MANIFESTS,
        None,
    );
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": cosign::OCI_MANIFEST_MEDIA_TYPE,
        "artifactType": BUNDLE_MEDIA_TYPE,
        "config": {"mediaType": EMPTY_CONFIG, "size": 2, "digest": cosign::sha256_digest(config)},
        "layers": [{"mediaType": BUNDLE_MEDIA_TYPE, "size": layer.len(), "digest": cosign::sha256_digest(layer)}],
        "subject": {"mediaType": subject_manifest.content_type, "size": subject_manifest.body.len(), "digest": subject},
    });
    let manifest = serde_json::to_vec(&manifest).expect("manifest");
    let digest = cosign::sha256_digest(&manifest);
    cosign::put_manifest(registry, repo, &digest, cosign::OCI_MANIFEST_MEDIA_TYPE, &manifest, None);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": cosign::OCI_MANIFEST_MEDIA_TYPE, "size": manifest.len(), "digest": digest,
            "artifactType": BUNDLE_MEDIA_TYPE,
        }],
    });
    let tag = subject.replacen(':', "-", 1);
    cosign::put_manifest(registry, repo, &tag, OCI_INDEX, &serde_json::to_vec(&index).expect("index"), None);
}

/// Deletes a manifest the referrers tag still lists (docker-registry has deletes enabled).
fn delete_manifest(registry: &str, repo: &str, digest: &str) {
    let url = format!("http://{registry}/v2/{repo}/manifests/{digest}");
    let out = Command::new("curl").args(["-sS", "--fail-with-body", "-X", "DELETE", &url]).output().expect("run curl");
    assert!(out.status.success(), "DELETE {url}: {}", String::from_utf8_lossy(&out.stdout));
}
