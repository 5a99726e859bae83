//! What containerd stored, read where it lives: its image records (images API, namespace k8s.io)
//! and the CRI image id, checked against the manifest the registry really holds.
//!
//! `repo_digests` cannot tell a pinned pull from a forwarded tag (containerd lists `repo@digest`
//! for both), and comparing the tag's image id with the id the same pull returned is circular;
//! these helpers compare with what was verified instead.
#![allow(dead_code)]

use pullgate::cri::images_proto::GetImageRequest;
use pullgate::cri::images_proto::images_client::ImagesClient;
use pullgate::cri::proto::{ImageStatusRequest, ListImagesRequest};
use tonic::Request;

use super::cri;
use super::front;
use super::lab::Lab;

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The manifest digest `reference` (tag or digest) names in `registry`, and the CRI image id a
/// faithful pull of it gives: the config digest of the manifest, or for an index or manifest
/// list, of its linux/amd64 entry's manifest. Read from `registry` directly (give the real one,
/// not a front that lies).
pub async fn verified(registry: &str, repo: &str, reference: &str) -> (String, String) {
    let (top, media_type) = front::manifest(registry, repo, reference).await;
    let digest = front::sha256(&top);
    let mut manifest = top;
    if media_type == INDEX || media_type == DOCKER_LIST {
        let index: serde_json::Value = serde_json::from_slice(&manifest).expect("index JSON");
        let entry = index["manifests"]
            .as_array()
            .expect("index manifests")
            .iter()
            .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == "amd64")
            .expect("a linux/amd64 entry in the index");
        let platform_digest = entry["digest"].as_str().expect("entry digest");
        manifest = front::manifest(registry, repo, platform_digest).await.0;
    }
    (digest, config_digest(&manifest))
}

/// The config digest inside an image manifest: the CRI image id containerd records for it.
pub fn config_digest(manifest: &[u8]) -> String {
    let manifest: serde_json::Value = serde_json::from_slice(manifest).expect("manifest JSON");
    manifest["config"]["digest"].as_str().expect("config digest").to_owned()
}

/// containerd's image record for `name` (k8s.io namespace): its target digest, or None when
/// there is no such record.
pub async fn record_target(lab: &Lab, name: &str) -> Option<String> {
    let mut request = Request::new(GetImageRequest { name: name.to_owned() });
    request.metadata_mut().insert("containerd-namespace", "k8s.io".parse().expect("metadata value"));
    match ImagesClient::new(cri::channel(&lab.containerd_sock)).get(request).await {
        Ok(response) => {
            let image = response.into_inner().image.unwrap_or_else(|| panic!("{name}: Get answered no image"));
            Some(image.target.unwrap_or_else(|| panic!("{name}: image record without a target")).digest)
        }
        Err(status) if status.code() == tonic::Code::NotFound => None,
        Err(status) => panic!("images Get {name}: {status:?}"),
    }
}

/// The CRI image id containerd shows for `name`, or None when it knows no such image.
pub async fn image_id(lab: &Lab, name: &str) -> Option<String> {
    let request = ImageStatusRequest { image: cri::spec(name), verbose: false };
    let status = cri::images(&lab.containerd_sock).image_status(request).await;
    status.unwrap_or_else(|s| panic!("ImageStatus {name}: {s:?}")).into_inner().image.map(|image| image.id)
}

/// `name` (the image as the kubelet asked for it, `registry/repo:tag` or `registry/repo@digest`)
/// was pulled pinned: containerd's records for `name` and for `registry/repo@verified_digest`
/// both target exactly the verified digest, and the CRI image id under `name` is the verified
/// manifest's config. (Records cannot tell a pinned pull from a forwarded tag that a truthful
/// registry resolved to the same digest; a test that claims containerd never resolved the tag
/// counts containerd's requests at a front, as tests/pinning.rs and tests/media_types.rs do.)
pub async fn assert_pinned(lab: &Lab, name: &str, verified_digest: &str, verified_config: &str) {
    let pinned = format!("{}@{verified_digest}", repository(name));
    assert_stored(lab, &pinned, verified_digest, verified_config).await;
    assert_stored(lab, name, verified_digest, verified_config).await;
}

/// containerd's record for `name` targets exactly `digest`, and the CRI image id under `name` is
/// `config`.
pub async fn assert_stored(lab: &Lab, name: &str, digest: &str, config: &str) {
    let target = record_target(lab, name).await;
    assert_eq!(target.as_deref(), Some(digest), "{name}: containerd's record targets other content\n{}", lab.logs());
    let id = image_id(lab, name).await;
    assert_eq!(id.as_deref(), Some(config), "{name}: the CRI image id is not the verified manifest's config");
}

/// After a refused pull: `name` has no record in containerd, or one that still targets the
/// verified digest (an earlier, verified pull), and the CRI shows no other image under it.
pub async fn assert_nothing_else_under(lab: &Lab, name: &str, verified_digest: &str, verified_config: &str) {
    if let Some(target) = record_target(lab, name).await {
        assert_eq!(target, verified_digest, "{name}: containerd's record targets unverified content");
    }
    if let Some(id) = image_id(lab, name).await {
        assert_eq!(id, verified_config, "{name}: the CRI shows an unverified image under this name");
    }
}

/// containerd holds nothing under `name`: no image record, and the CRI shows no image by it.
pub async fn assert_absent(lab: &Lab, name: &str) {
    let target = record_target(lab, name).await;
    assert_eq!(target, None, "{name}: containerd holds a record for an image that must not be there");
    let id = image_id(lab, name).await;
    assert_eq!(id, None, "{name}: the CRI shows an image that must not be there");
}

/// No image containerd holds has a name containing `part`: neither its image records (read
/// with `ctr`) nor the tags and digests the CRI lists.
pub async fn assert_none_named(lab: &Lab, part: &str) {
    let records = records(lab);
    assert!(!records.iter().any(|(name, _)| name.contains(part)), "containerd holds {part}: {records:?}");
    let listed = cri::images(&lab.containerd_sock).list_images(ListImagesRequest::default()).await;
    let listed = listed.expect("ListImages").into_inner().images;
    let names: Vec<&String> =
        listed.iter().flat_map(|image| image.repo_tags.iter().chain(&image.repo_digests)).collect();
    assert!(!names.iter().any(|name| name.contains(part)), "the CRI lists {part}: {names:?}");
}

/// `registry/repo` of `registry/repo:tag` or `registry/repo@digest`.
fn repository(name: &str) -> &str {
    if let Some((repository, _)) = name.split_once('@') {
        return repository;
    }
    let slash = name.rfind('/').unwrap_or(0);
    match name[slash..].rfind(':') {
        Some(colon) => &name[..slash + colon],
        None => name,
    }
}

/// Every image record containerd holds in the CRI's namespace, as (name, target digest); read
/// with containerd's own `ctr`, independently of pullgate's client.
pub fn records(lab: &Lab) -> Vec<(String, String)> {
    let out = std::process::Command::new("ctr")
        .arg("--address")
        .arg(&lab.containerd_sock)
        .args(["--namespace", "k8s.io", "images", "ls"])
        .output()
        .expect("run ctr");
    assert!(out.status.success(), "ctr images ls: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("ctr prints UTF-8");
    // Columns: REF TYPE DIGEST SIZE PLATFORMS LABELS, after a header line.
    let rows = text.lines().skip(1).filter_map(|line| {
        let columns: Vec<&str> = line.split_whitespace().collect();
        Some((columns.first()?.to_string(), columns.get(2)?.to_string()))
    });
    rows.collect()
}

/// The config digest of `repo@digest` on the HTTPS registry, read with curl trusting `ca`, after
/// checking the registry serves the digest's own bytes.
pub fn config_over_tls(registry: &str, ca: &std::path::Path, repo: &str, digest: &str) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(ca)
        .args(["-H", "Accept: application/vnd.oci.image.manifest.v1+json"])
        .arg(format!("https://{registry}/v2/{repo}/manifests/{digest}"))
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(super::cosign::sha256_digest(&out.stdout), digest, "the registry served other bytes");
    config_digest(&out.stdout)
}

/// Pulls `repo:v1` of the lab registry through the pullgate at `socket`; asserts it was pulled
/// pinned to what the registry really holds.
pub async fn pull_pinned(lab: &Lab, socket: &std::path::Path, repo: &str) {
    let image = format!("{}/{repo}:v1", lab.registry);
    let pulled = cri::images(socket).pull_image(cri::pull_request(&image, None)).await;
    pulled.unwrap_or_else(|status| panic!("{image} refused: {}", status.message()));
    let (verified, config) = verified(&lab.registry, repo, "v1").await;
    assert_pinned(lab, &image, &verified, &config).await;
}

/// Pulls `repo:v1` of the lab registry through the pullgate at `socket`; asserts the refusal
/// is a signature refusal that says each of `words`, and containerd has nothing of it.
pub async fn pull_refused(lab: &Lab, socket: &std::path::Path, repo: &str, words: &[&str]) {
    let image = format!("{}/{repo}:v1", lab.registry);
    let refused = cri::images(socket).pull_image(cri::pull_request(&image, None)).await;
    let status = refused.expect_err(&format!("{image} was pulled"));
    let message = status.message();
    assert!(message.starts_with("SignatureValidationFailed: "), "{repo}: {message}");
    for word in words {
        assert!(message.contains(word), "{repo}: {message:?} does not say {word:?}");
    }
    assert_absent(lab, &image).await;
}
