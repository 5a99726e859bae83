//! What containerd stores under a tag is exactly what pullgate verified, even when the registry
//! tells containerd something else for that tag than it told pullgate (a tag moved between
//! verification and pull, or a registry that lies to one client).

use crate::common;
use common::policy;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::cosign::{self, CosignKey};
use common::cri;
use common::front::{self, Client, Front};
use common::lab::Lab;
use common::store::{self, config_digest};
use pullgate::config::Config;
use pullgate::cri::proto::ListImagesRequest;

#[tokio::test(flavor = "multi_thread")]
async fn a_tag_moved_after_verification_leaves_nothing_unverified_under_the_name() {
    let lab = Lab::start();
    let front = Front::start(&lab.registry);
    front.trust_in(&lab);
    let key = CosignKey::generate();

    let good = cosign::push_signed(&lab, &key, &front.addr(), "moving/app:v1", "good");
    lab.push_image("moving/app:evil", "evil");
    let (good_manifest, _) = front::manifest(&lab.registry, "moving/app", "v1").await;
    let (evil_manifest, media_type) = front::manifest(&lab.registry, "moving/app", "evil").await;
    // containerd is told v1 is the evil image; pullgate sees the real v1.
    front.override_manifest("moving/app", "v1", evil_manifest.clone(), &media_type, Client::Containerd);

    let policy = policy::signed(&format!("{}/moving", front.addr()), &["a.pub"]);
    let mut config = Config { upstream: lab.containerd_sock.clone(), ..Config::default() };
    config.registry.insecure = vec![front.addr()];
    let pem = key.public_pem();
    let pullgate = common::pullgate::start_with(config, &[("a.pub", &pem), ("policy.toml", &policy)]).await;

    let image = format!("{}/moving/app:v1", front.addr());
    let pulled =
        cri::images(&pullgate.socket).pull_image(cri::pull_request(&image, None)).await.expect("verified pull");
    let image_ref = pulled.into_inner().image_ref;
    assert_eq!(image_ref, config_digest(&good_manifest), "containerd stored something other than the verified image");
    store::assert_pinned(&lab, &image, &good, &image_ref).await;

    let mut direct = cri::images(&lab.containerd_sock);
    let ids: Vec<String> = direct
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert!(!ids.contains(&config_digest(&evil_manifest)), "unverified image stored: {ids:?}");
    let tag_reads = front.count(|seen| seen.is_containerd() && seen.path.ends_with("/manifests/v1"));
    assert_eq!(tag_reads, 0, "containerd resolved the tag itself instead of the pinned digest");

    // Control: the front really does lie — containerd pulling the tag on its own gets the evil image.
    let control = direct.pull_image(cri::pull_request(&image, None)).await.unwrap().into_inner();
    assert_eq!(control.image_ref, config_digest(&evil_manifest));
    pullgate.stop().await;
}

const SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// A Docker schema1 manifest whose one layer is `layer` and whose image config is `config`,
/// wrapped in the JWS block schema1 manifests carry. containerd 1.6 strips that block without
/// checking it (remotes/docker/schema1), so the signature is junk; `formatLength` and
/// `formatTail` say where the signed payload ends, which is all it reads.
fn schema1_manifest(repo: &str, layer: &str, config: &serde_json::Value) -> Vec<u8> {
    let payload = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 1,
        "name": repo,
        "tag": "v1",
        "architecture": config["architecture"],
        "fsLayers": [{"blobSum": layer}],
        "history": [{"v1Compatibility": config.to_string()}],
    }))
    .expect("serialize schema1 manifest");
    let length = payload.len() - 1; // up to the closing brace, which is the tail
    let protected = serde_json::json!({"formatLength": length, "formatTail": URL_SAFE_NO_PAD.encode("}")});
    let signatures = serde_json::json!([{
        "header": {"alg": "ES256"},
        "signature": URL_SAFE_NO_PAD.encode(b"not checked by anyone"),
        "protected": URL_SAFE_NO_PAD.encode(protected.to_string()),
    }]);
    let mut manifest = payload[..length].to_vec();
    manifest.extend_from_slice(format!(",\"signatures\":{signatures}}}").as_bytes());
    manifest
}

/// A signed image under `repo:v1`, signed for pulls from `pulled_from`, and an unsigned one
/// under `repo:evil` in the same repository (so its layer can be fetched through `repo`);
/// returns the signed digest and config, and a schema1 manifest listing the unsigned image's
/// layer and config.
async fn signed_and_schema1(lab: &Lab, pulled_from: &str, key: &CosignKey, repo: &str) -> (String, String, Vec<u8>) {
    let good = cosign::push_signed(lab, key, pulled_from, &format!("{repo}:v1"), &format!("{repo}/good"));
    lab.push_image(&format!("{repo}:evil"), &format!("{repo}/evil"));
    let (evil, _) = front::manifest(&lab.registry, repo, "evil").await;
    let evil: serde_json::Value = serde_json::from_slice(&evil).expect("manifest JSON");
    let layer = evil["layers"][0]["digest"].as_str().expect("layer digest");
    let config_path = format!("/v2/{repo}/blobs/{}", evil["config"]["digest"].as_str().expect("config digest"));
    let config = front::fetch(&lab.registry, "GET", &config_path, "pullgate-tests").await.body;
    let config: serde_json::Value = serde_json::from_slice(&config).expect("config JSON");
    let (_, good_config) = store::verified(&lab.registry, repo, &good).await;
    (good, good_config, schema1_manifest(repo, layer, &config))
}

/// pullgate requiring signatures by `key` for `registry/scope`, which it reads over plain HTTP.
async fn start_signed(lab: &Lab, registry: &str, key: &CosignKey, scope: &str) -> common::pullgate::Running {
    let policy = policy::signed(&format!("{registry}/{scope}"), &["a.pub"]);
    let mut config = Config { upstream: lab.containerd_sock.clone(), ..Config::default() };
    config.registry.insecure = vec![registry.to_owned()];
    let pem = key.public_pem();
    common::pullgate::start_with(config, &[("a.pub", &pem), ("policy.toml", &policy)]).await
}

/// The registry (or a mirror, or anyone on the path to a plain-HTTP one) answers containerd's
/// `GET manifests/<verified digest>` with a Docker schema1 manifest listing an unsigned image's
/// layer. containerd 1.6 converts schema1 without checking it against the digest it asked for,
/// so the pull "succeeds" with unsigned content under the verified name. pullgate must refuse
/// it, by tag and by digest, under both content types containerd reads as schema1, and leave
/// nothing of it under either name.
#[tokio::test(flavor = "multi_thread")]
async fn schema1_served_for_the_verified_digest_is_refused_and_removed() {
    // containerd 1.6 only: 2.x no longer converts schema1 (it refuses the pull itself), so
    // there the substitute is no attack and the control below would fail.
    let lab = Lab::start_1_6();
    let front = Front::start(&lab.registry);
    front.trust_in(&lab);
    let key = CosignKey::generate();
    let pullgate = start_signed(&lab, &front.addr(), &key, "subst").await;
    let mut images = cri::images(&pullgate.socket);

    for (case, content_type, by_digest) in [
        ("jws-tag", SCHEMA1_SIGNED, false),
        ("jws-digest", SCHEMA1_SIGNED, true),
        ("plain-tag", "text/plain", false),
        ("plain-digest", "text/plain", true),
    ] {
        let repo = format!("subst/{case}");
        let (good, good_config, schema1) = signed_and_schema1(&lab, &front.addr(), &key, &repo).await;
        front.override_manifest(&repo, &good, schema1, content_type, Client::Containerd);

        let tag = format!("{}/{repo}:v1", front.addr());
        let pinned = format!("{}/{repo}@{good}", front.addr());
        let image = if by_digest { &pinned } else { &tag };
        let status = images.pull_image(cri::pull_request(image, None)).await.expect_err(&format!(
            "{case}: containerd stored a schema1 substitute for the verified digest and pullgate let it through"
        ));
        let message = status.message();
        assert_eq!(status.code(), tonic::Code::Unknown, "{case}: {status:?}");
        assert!(message.starts_with("SignatureValidationFailed: "), "{case}: {message}");
        assert!(message.contains(&pinned) && message.contains("not the verified"), "{case}: {message}");
        let served = front.count(|seen| seen.is_containerd() && seen.path == format!("/v2/{repo}/manifests/{good}"));
        assert!(served > 0, "{case}: containerd never asked the front for the digest: {:#?}", front.requests());
        for name in [&pinned, &tag] {
            store::assert_nothing_else_under(&lab, name, &good, &good_config).await;
        }
        let stray: Vec<_> = store::records(&lab).into_iter().filter(|(_, target)| *target != good).collect();
        assert!(stray.is_empty(), "{case}: containerd keeps records of the substitute: {stray:?}");
    }
    pullgate.stop().await;

    // Control: the front's substitute is a working attack on containerd itself.
    let repo = "subst/control";
    let (good, good_config, schema1) = signed_and_schema1(&lab, &front.addr(), &key, repo).await;
    front.override_manifest(repo, &good, schema1, SCHEMA1_SIGNED, Client::Containerd);
    let pinned = format!("{}/{repo}@{good}", front.addr());
    let direct = cri::images(&lab.containerd_sock).pull_image(cri::pull_request(&pinned, None)).await;
    let stored = direct.unwrap_or_else(|s| panic!("control pull: {s:?}\n{}", lab.logs())).into_inner().image_ref;
    assert_ne!(stored, good_config, "containerd refused the substitute on its own");
    assert_ne!(store::record_target(&lab, &pinned).await.as_deref(), Some(good.as_str()));
}

/// A registry that serves containerd another manifest for the pinned digest, with the signed
/// image's very config (only an annotation differs): containerd's own digest check on the bytes
/// refuses it, and nothing is stored under either name. This pins down the containerd behaviour
/// pullgate relies on (no pullgate change makes it fail); were containerd to store such bytes
/// under the digest, the store check's hash would refuse them (`Mismatch::Corrupt`).
#[tokio::test(flavor = "multi_thread")]
async fn another_manifest_with_the_same_config_is_not_stored() {
    let lab = Lab::start();
    let front = Front::start(&lab.registry);
    front.trust_in(&lab);
    let key = CosignKey::generate();
    let repo = "same/config";
    let good = cosign::push_signed(&lab, &key, &front.addr(), &format!("{repo}:v1"), "same-config");
    let (manifest, media_type) = front::manifest(&lab.registry, repo, &good).await;
    let (_, good_config) = store::verified(&lab.registry, repo, &good).await;
    let mut other: serde_json::Value = serde_json::from_slice(&manifest).expect("manifest JSON");
    other["annotations"] = serde_json::json!({"substituted": "yes"});
    let other = serde_json::to_vec(&other).expect("serialize manifest");
    assert_eq!(config_digest(&other), good_config);
    front.override_manifest(repo, &good, other, &media_type, Client::Containerd);
    let pullgate = start_signed(&lab, &front.addr(), &key, "same").await;

    let tag = format!("{}/{repo}:v1", front.addr());
    let pinned = format!("{}/{repo}@{good}", front.addr());
    for image in [&tag, &pinned] {
        let pulled = cri::images(&pullgate.socket).pull_image(cri::pull_request(image, None)).await;
        assert!(pulled.is_err(), "{image}: a substituted manifest was accepted: {pulled:?}");
        for name in [&pinned, &tag] {
            assert_eq!(store::record_target(&lab, name).await, None, "{image}: {name} recorded");
        }
    }
    pullgate.stop().await;
}

/// The same substitute from a mirror in containerd's `certs.d`: pullgate verifies at the
/// registry itself and never talks to the mirror, which answers containerd's request for the
/// verified digest with schema1. The store check is what catches it.
#[tokio::test(flavor = "multi_thread")]
async fn schema1_from_a_mirror_in_certs_d_is_refused_and_removed() {
    // containerd 1.6 only, as above: the attack needs its schema1 conversion.
    let lab = Lab::start_1_6();
    let mirror = Front::start(&lab.registry);
    let key = CosignKey::generate();
    let repo = "mirrored/app";
    let (good, good_config, schema1) = signed_and_schema1(&lab, &lab.registry, &key, repo).await;
    mirror.override_manifest(repo, &good, schema1, SCHEMA1_SIGNED, Client::Containerd);
    // containerd asks the mirror first, and the registry only when the mirror fails.
    let hosts = format!(
        "server = \"http://{}\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
        lab.registry,
        mirror.addr()
    );
    std::fs::write(lab.dir.path().join("certs.d").join(&lab.registry).join("hosts.toml"), hosts).expect("hosts.toml");
    let pullgate = start_signed(&lab, &lab.registry, &key, "mirrored").await;

    let tag = format!("{}/{repo}:v1", lab.registry);
    let pinned = format!("{}/{repo}@{good}", lab.registry);
    for image in [&tag, &pinned] {
        let pulled = cri::images(&pullgate.socket).pull_image(cri::pull_request(image, None)).await;
        let status = pulled.expect_err(&format!("{image}: the mirror's schema1 substitute was let through"));
        let message = status.message();
        assert!(message.starts_with("SignatureValidationFailed: "), "{image}: {message}");
        assert!(message.contains(&pinned) && message.contains("not the verified"), "{image}: {message}");
        for name in [&pinned, &tag] {
            store::assert_nothing_else_under(&lab, name, &good, &good_config).await;
        }
        let stray: Vec<_> = store::records(&lab).into_iter().filter(|(_, target)| *target != good).collect();
        assert!(stray.is_empty(), "{image}: containerd keeps records of the substitute: {stray:?}");
    }
    let served = mirror.count(|seen| seen.is_containerd() && seen.path == format!("/v2/{repo}/manifests/{good}"));
    assert!(served > 0, "containerd never asked the mirror: {:#?}", mirror.requests());
    assert_eq!(mirror.count(|seen| !seen.is_containerd()), 0, "pullgate asked the mirror");
    pullgate.stop().await;
}
