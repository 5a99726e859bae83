//! The verification matrix on every containerd the lab runs: containerd 2.x pulling CRI images
//! through its transfer service (its default since 2.1), 2.x with `use_local_image_pull = true`,
//! and Debian's 1.6.20. Each must give the same verdicts, and under each, the tag of an accepted
//! image names exactly the manifest pullgate verified (pinning, src/cri/tagger.rs), whatever
//! path containerd's pull took.
//!
//! The rows: tests/common/matrix.rs's table (signed, unsigned, wrong key, copied signature,
//! identity, threshold, accept/reject rules, no rule), plus a signed image on a basic-auth
//! registry (refused without the kubelet's credentials, accepted with them) and a tag that the
//! registry moves for containerd after pullgate verified it.

use crate::common;

use common::cosign;
use common::cri;
use common::front::{self, Client, Front};
use common::lab::{Containerd, Lab};
use common::matrix::{self, Keys, MATRIX};
use pullgate::config::Config;
use pullgate::cri::proto::{AuthConfig, ImageStatusRequest, ListImagesRequest};

const USER: &str = "kubelet";
const PASSWORD: &str = "s3cret-Pa55";
const PRIVATE_REPO: &str = "private/app";
const MOVING_REPO: &str = "moving/app";

/// Row name and whether pullgate let the pull through.
type Verdict = (String, bool);

#[tokio::test(flavor = "multi_thread")]
async fn every_containerd_gives_the_same_verdicts_and_pins_what_was_verified() {
    let mut all = Vec::new();
    for containerd in Containerd::ALL {
        all.push((containerd, verdicts_on(containerd).await));
    }
    let (first, expected) = &all[0];
    for (containerd, verdicts) in &all[1..] {
        assert_eq!(verdicts, expected, "{containerd:?} and {first:?} disagree");
    }
}

/// Everything the matrix needs, on one lab running `containerd`.
struct Setup {
    lab: Lab,
    front: Front,
    auth_registry: String,
    keys: Keys,
    /// The manifest the moving tag names for pullgate (the signed one).
    moving_good: Vec<u8>,
    /// The manifest the front serves containerd for that tag instead.
    moving_evil: Vec<u8>,
}

async fn verdicts_on(containerd: Containerd) -> Vec<Verdict> {
    let setup = populate(containerd).await;
    let lab = &setup.lab;
    let mut config = Config { upstream: lab.containerd_sock.clone(), ..Config::default() };
    config.registry.insecure = vec![lab.registry.clone(), setup.auth_registry.clone(), setup.front.addr()];
    let (a, c, policy) = (setup.keys.a.public_pem(), setup.keys.c.public_pem(), policy(&setup));
    let files = [("a.pub", a.as_str()), ("c.pub", c.as_str()), ("10-matrix.toml", policy.as_str())];
    let pullgate = common::pullgate::start_with(config, &files).await;

    let mut verdicts = Vec::new();
    for (repo, accepted, words) in MATRIX {
        let image = format!("{}/{repo}:v1", lab.registry);
        let verdict = pull(&pullgate.socket, &image, None, words).await;
        verdicts.push((repo.to_string(), verdict.is_some()));
        assert_eq!(verdict.is_some(), *accepted, "{containerd:?}: {image}");
        if let Some(image_ref) = verdict {
            let manifest = registry_manifest(&lab.registry, repo, None);
            assert_pinned(lab, &image, &lab.registry, repo, &image_ref, &manifest).await;
        }
    }
    verdicts.extend(private_rows(&setup, &pullgate.socket).await);
    verdicts.push(moving_row(&setup, &pullgate.socket).await);
    assert_only_accepted_in_containerd(&setup, &verdicts).await;
    assert_pulled_the_way_asked(lab);
    pullgate.stop().await;
    verdicts
}

/// containerd 2.x took the pull path its mode names (it logs the path at debug level), so a
/// config it silently falls back on cannot turn the transfer-service rows into local ones.
fn assert_pulled_the_way_asked(lab: &Lab) {
    const TRANSFER: &str = "using transfer service";
    const LOCAL: &str = "using client.Pull()";
    let (expected, other) = match lab.containerd {
        Containerd::V1_6 => return,
        Containerd::V2Transfer => (TRANSFER, LOCAL),
        Containerd::V2Local => (LOCAL, TRANSFER),
    };
    let log = lab.containerd_log();
    assert!(log.contains(expected) && !log.contains(other), "{:?} did not pull {expected}", lab.containerd);
}

// === setup ===

async fn populate(containerd: Containerd) -> Setup {
    let lab = Lab::start_on(containerd, Some((USER, PASSWORD)));
    let keys = Keys::generate();
    matrix::populate(&lab, &keys);

    let auth_registry = lab.auth_registry.clone().expect("auth registry");
    let creds = Some((USER, PASSWORD));
    let digest = lab.push_image_to(&auth_registry, &format!("{PRIVATE_REPO}:v1"), "private", creds);
    keys.a.signing(&auth_registry, PRIVATE_REPO, &digest).creds(&format!("{USER}:{PASSWORD}")).run();

    let front = Front::start(&lab.registry);
    front.trust_in(&lab);
    cosign::push_signed(&lab, &keys.a, &front.addr(), &format!("{MOVING_REPO}:v1"), "good");
    lab.push_image(&format!("{MOVING_REPO}:evil"), "evil");
    let (moving_good, _) = front::manifest(&lab.registry, MOVING_REPO, "v1").await;
    let (moving_evil, media_type) = front::manifest(&lab.registry, MOVING_REPO, "evil").await;
    // containerd is told v1 is the evil image; pullgate sees the real v1.
    front.override_manifest(MOVING_REPO, "v1", moving_evil.clone(), &media_type, Client::Containerd);

    Setup { lab, front, auth_registry, keys, moving_good: moving_good.to_vec(), moving_evil: moving_evil.to_vec() }
}

/// The matrix's rules, plus key A for the private registry and the front's moving repository.
fn policy(setup: &Setup) -> String {
    let signed_by_a =
        |scope: String| format!("\n[[rule]]\nscope = \"{scope}\"\nrequire = \"signed\"\nkeys = [\"a.pub\"]\n");
    let mut policy = matrix::native_policy(&setup.lab.registry);
    policy.push_str(&signed_by_a(format!("{}/private", setup.auth_registry)));
    policy.push_str(&signed_by_a(format!("{}/moving", setup.front.addr())));
    policy
}

// === rows beyond the shared matrix ===

/// The basic-auth registry: refused without credentials, accepted and pinned with them.
async fn private_rows(setup: &Setup, socket: &std::path::Path) -> Vec<Verdict> {
    let image = format!("{}/{PRIVATE_REPO}:v1", setup.auth_registry);
    let anonymous = pull(socket, &image, None, "denied").await;
    assert!(anonymous.is_none(), "{:?}: {image} pulled without credentials", setup.lab.containerd);
    let auth = AuthConfig { username: USER.into(), password: PASSWORD.into(), ..Default::default() };
    let image_ref = pull(socket, &image, Some(auth), "").await;
    let image_ref = image_ref.unwrap_or_else(|| panic!("{:?}: {image} refused with credentials", setup.lab.containerd));
    let manifest = registry_manifest(&setup.auth_registry, PRIVATE_REPO, Some(&format!("{USER}:{PASSWORD}")));
    assert_pinned(&setup.lab, &image, &setup.auth_registry, PRIVATE_REPO, &image_ref, &manifest).await;
    vec![("private, no credentials".into(), false), ("private, credentials".into(), true)]
}

/// The moving tag: containerd stores what pullgate verified, never what the registry told it.
async fn moving_row(setup: &Setup, socket: &std::path::Path) -> Verdict {
    let image = format!("{}/{MOVING_REPO}:v1", setup.front.addr());
    let image_ref = pull(socket, &image, None, "").await;
    let image_ref = image_ref.unwrap_or_else(|| panic!("{:?}: {image} refused", setup.lab.containerd));
    assert_pinned(&setup.lab, &image, &setup.front.addr(), MOVING_REPO, &image_ref, &setup.moving_good).await;
    let tag_reads = setup.front.count(|seen| seen.is_containerd() && seen.path.ends_with("/manifests/v1"));
    assert_eq!(tag_reads, 0, "{:?}: containerd resolved the tag itself", setup.lab.containerd);
    ("moving tag".into(), true)
}

// === pulls and what containerd then holds ===

/// Pulls `image` through pullgate: Some(image ref) if accepted; a refusal must be
/// SignatureValidationFailed naming the image and containing `words`.
async fn pull(socket: &std::path::Path, image: &str, auth: Option<AuthConfig>, words: &str) -> Option<String> {
    let mut request = cri::pull_request(image, Some("default"));
    request.auth = auth;
    match cri::images(socket).pull_image(request).await {
        Ok(response) => Some(response.into_inner().image_ref),
        Err(status) => {
            let message = status.message();
            assert_eq!(status.code(), tonic::Code::Unknown, "{image}: {status:?}");
            assert!(message.starts_with("SignatureValidationFailed: "), "{image}: {message}");
            assert!(message.contains(image) && message.contains(words), "{image}: {message}");
            None
        }
    }
}

/// `repo:v1`'s manifest as the registry serves it to anyone but containerd.
fn registry_manifest(registry: &str, repo: &str, creds: Option<&str>) -> Vec<u8> {
    let url = format!("http://{registry}/v2/{repo}/manifests/v1");
    let response = cosign::http_get(&url, front::ACCEPT_MANIFESTS, creds);
    assert_eq!(response.status, 200, "GET {url}");
    response.body
}

/// containerd holds `image` (by its tag) as exactly `manifest`: the CRI image id is the
/// manifest's config and the repo digest is the manifest's own digest.
async fn assert_pinned(lab: &Lab, image: &str, registry: &str, repo: &str, image_ref: &str, manifest: &[u8]) {
    let parsed: serde_json::Value = serde_json::from_slice(manifest).expect("manifest JSON");
    let config = parsed["config"]["digest"].as_str().expect("config digest");
    let which = lab.containerd;
    assert_eq!(image_ref, config, "{which:?}: {image}: pull answered another image id");
    let request = ImageStatusRequest { image: cri::spec(image), verbose: false };
    let status = cri::images(&lab.containerd_sock).image_status(request).await.expect("ImageStatus").into_inner();
    let shown = status.image.unwrap_or_else(|| panic!("{which:?}: {image} not found under its tag"));
    assert_eq!(shown.id, config, "{which:?}: {image}: the tag names another image");
    let repo_digest = format!("{registry}/{repo}@{}", cosign::sha256_digest(manifest));
    assert!(shown.repo_digests.contains(&repo_digest), "{which:?}: {image}: {:?}", shown.repo_digests);
    assert!(shown.repo_tags.contains(&image.to_owned()), "{which:?}: {image}: {:?}", shown.repo_tags);
}

/// Nothing refused reached containerd, and neither did the moving tag's unverified image.
async fn assert_only_accepted_in_containerd(setup: &Setup, verdicts: &[Verdict]) {
    let listed = cri::images(&setup.lab.containerd_sock).list_images(ListImagesRequest::default()).await;
    let images = listed.expect("ListImages").into_inner().images;
    let names: Vec<&String> = images.iter().flat_map(|i| i.repo_tags.iter().chain(&i.repo_digests)).collect();
    let which = setup.lab.containerd;
    for (repo, accepted) in verdicts.iter().filter(|(row, _)| MATRIX.iter().any(|(repo, ..)| repo == row)) {
        let present = names.iter().any(|name| name.starts_with(&format!("{}/{repo}", setup.lab.registry)));
        assert_eq!(present, *accepted, "{which:?}: {repo} in containerd: {present}; names: {names:?}");
    }
    let evil = serde_json::from_slice::<serde_json::Value>(&setup.moving_evil).expect("manifest JSON");
    let evil_config = evil["config"]["digest"].as_str().expect("config digest");
    assert!(images.iter().all(|i| i.id != evil_config), "{which:?}: the unverified image was stored");
}
