//! pullgate verifies and pins whatever a tag names, not just a single OCI manifest: an OCI image
//! index or a Docker manifest list (containerd then picks the host's platform from it) and a
//! Docker schema2 manifest too.
//! The signed digest is always the top-level one the registry serves for the tag.

use crate::common;
use common::policy;

use common::cosign::{self, CosignKey};
use common::cri;
use common::front::{self, Front};
use common::lab::{Format, Lab};
use common::store;
use pullgate::config::Config;
use pullgate::cri::proto::ImageStatusRequest;

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Signs `repo@digest` in the lab registry with cosign for pulls through `pulled_from` (the lab
/// registry or a front before it): the payload names the image as pulled.
fn sign(lab: &Lab, key: &CosignKey, pulled_from: &str, repo: &str, digest: &str) {
    key.signing(&lab.registry, repo, digest).claiming(&format!("{pulled_from}/{repo}")).run();
}

async fn start_pullgate(lab: &Lab, key: &CosignKey, registry: &str) -> common::pullgate::Running {
    let policy = policy::signed(&format!("{registry}/media"), &["a.pub"]);
    let mut config = Config { upstream: lab.containerd_sock.clone(), ..Config::default() };
    config.registry.insecure = vec![registry.to_owned()];
    let pem = key.public_pem();
    common::pullgate::start_with(config, &[("a.pub", &pem), ("policy.toml", &policy)]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_index_list_docker_and_oci_manifests_are_pulled_pinned_and_tagged() {
    let lab = Lab::start();
    // Through a front that only watches, to see that containerd never resolves the tag itself.
    let front = Front::start(&lab.registry);
    front.trust_in(&lab);
    let key = CosignKey::generate();
    let cases = [
        ("media/oci", Format::Oci, "application/vnd.oci.image.manifest.v1+json"),
        ("media/index", Format::OciIndex, INDEX),
        ("media/docker", Format::Docker, DOCKER_MANIFEST),
    ];
    let mut pushed = Vec::new();
    for (repo, format, media_type) in cases {
        let digest = lab.push_image_with(&format!("{repo}:v1"), repo, format);
        let (body, served_type) = front::manifest(&lab.registry, repo, "v1").await;
        assert_eq!(served_type, media_type, "{repo}: the registry serves another media type");
        assert_eq!(cosign::sha256_digest(&body), digest, "{repo}: push-image printed another digest");
        sign(&lab, &key, &front.addr(), repo, &digest);
        let (verified, config) = store::verified(&lab.registry, repo, "v1").await;
        assert_eq!(verified, digest, "{repo}: the registry serves another digest for the tag");
        pushed.push((repo, digest, config));
    }
    let list_digest = push_docker_list(&lab, "media/list").await;
    sign(&lab, &key, &front.addr(), "media/list", &list_digest);
    let (_, list_config) = store::verified(&lab.registry, "media/list", &list_digest).await;
    pushed.push(("media/list", list_digest, list_config));
    let pullgate = start_pullgate(&lab, &key, &front.addr()).await;

    let mut images = cri::images(&pullgate.socket);
    for (repo, digest, image_id) in pushed {
        let image = format!("{}/{repo}:v1", front.addr());
        let pulled = images.pull_image(cri::pull_request(&image, None)).await;
        let image_ref = pulled
            .unwrap_or_else(|s| panic!("{image} rejected: {}\n{}", s.message(), lab.logs()))
            .into_inner()
            .image_ref;
        assert_eq!(image_ref, image_id, "{image}: containerd stored another image than the verified one");
        // Pinned to the verified top-level digest (the index's, not a platform manifest's).
        store::assert_pinned(&lab, &image, &digest, &image_id).await;
        let tag_reads = front.count(|seen| seen.is_containerd() && seen.path == format!("/v2/{repo}/manifests/v1"));
        assert_eq!(tag_reads, 0, "{image}: containerd resolved the tag itself instead of the pinned digest");
    }
    assert!(front.count(|seen| seen.is_containerd()) > 0, "containerd never pulled through the front");
    pullgate.stop().await;
}

/// Pushes a Docker schema2 image, then a Docker manifest list naming it for linux/amd64 under
/// `repo:v1` (skopeo's layouts cannot carry one as it is); returns the list's digest.
async fn push_docker_list(lab: &Lab, repo: &str) -> String {
    let platform_digest = lab.push_image_with(&format!("{repo}:platform"), repo, Format::Docker);
    let (manifest, _) = front::manifest(&lab.registry, repo, &platform_digest).await;
    let list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [{
            "mediaType": DOCKER_MANIFEST,
            "digest": platform_digest,
            "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
        }],
    }))
    .expect("serialize the list");
    cosign::put_manifest(&lab.registry, repo, "v1", DOCKER_LIST, &list, None);
    let (served, served_type) = front::manifest(&lab.registry, repo, "v1").await;
    assert_eq!((served_type.as_str(), &served[..]), (DOCKER_LIST, &list[..]), "the registry changed the list");
    cosign::sha256_digest(&list)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unsigned_index_is_rejected() {
    let lab = Lab::start();
    let key = CosignKey::generate();
    let digest = lab.push_image_with("media/unsigned:v1", "unsigned", Format::OciIndex);
    // Signing one platform's manifest is not signing the index the tag names.
    let (index, _) = front::manifest(&lab.registry, "media/unsigned", &digest).await;
    let index: serde_json::Value = serde_json::from_slice(&index).expect("index JSON");
    let platform_digest = index["manifests"][0]["digest"].as_str().expect("entry digest").to_owned();
    sign(&lab, &key, &lab.registry, "media/unsigned", &platform_digest);
    let pullgate = start_pullgate(&lab, &key, &lab.registry).await;

    let image = format!("{}/media/unsigned:v1", lab.registry);
    let status = cri::images(&pullgate.socket).pull_image(cri::pull_request(&image, None)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unknown, "{status:?}");
    assert!(status.message().starts_with("SignatureValidationFailed: "), "{}", status.message());
    assert!(status.message().contains(&image), "{}", status.message());
    assert!(status.message().contains("no signatures found"), "{}", status.message());
    let request = ImageStatusRequest { image: cri::spec(&image), verbose: false };
    let shown = cri::images(&lab.containerd_sock).image_status(request).await.unwrap().into_inner().image;
    assert!(shown.is_none(), "a rejected image reached containerd: {shown:?}");
    pullgate.stop().await;
}
