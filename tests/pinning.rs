//! What containerd stores under a tag is exactly what pullgate verified, even when the registry
//! tells containerd something else for that tag than it told pullgate (a tag moved between
//! verification and pull, or a registry that lies to one client).

mod common;

use common::cosign::{self, TestKey};
use common::cri;
use common::front::{self, Client, Front};
use common::lab::Lab;
use pullgate::config::Config;
use pullgate::cri::proto::{ImageStatusRequest, ListImagesRequest};

/// The config digest inside an image manifest: the CRI image id containerd would record.
fn config_digest(manifest: &[u8]) -> String {
    let manifest: serde_json::Value = serde_json::from_slice(manifest).expect("manifest JSON");
    manifest["config"]["digest"].as_str().expect("config digest").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tag_moved_after_verification_leaves_nothing_unverified_under_the_name() {
    let lab = Lab::start();
    let front = Front::start(&lab.registry);
    front.trust_in(&lab);
    let key = TestKey::generate();

    let good = lab.push_image("moving/app:v1", "good");
    let payload = cosign::payload(&format!("{}/moving/app", front.addr()), &good);
    cosign::push_signatures(&lab.registry, "moving/app", &good, &[(payload.clone(), key.sign_payload(&payload))]);
    lab.push_image("moving/app:evil", "evil");
    let (good_manifest, _) = front::manifest(&lab.registry, "moving/app", "v1").await;
    let (evil_manifest, media_type) = front::manifest(&lab.registry, "moving/app", "evil").await;
    // containerd is told v1 is the evil image; pullgate sees the real v1.
    front.override_manifest("moving/app", "v1", evil_manifest.clone(), &media_type, Client::Containerd);

    let policy = format!("[[rule]]\nscope = \"{}/moving\"\nrequire = \"signed\"\nkeys = [\"a.pub\"]\n", front.addr());
    let mut config = Config { upstream: lab.containerd_sock.clone(), ..Config::default() };
    config.registry.insecure = vec![front.addr()];
    let pem = key.public_pem();
    let pullgate = common::pullgate::start_with(config, &[("a.pub", &pem), ("policy.toml", &policy)]).await;

    let image = format!("{}/moving/app:v1", front.addr());
    let pulled =
        cri::images(&pullgate.socket).pull_image(cri::pull_request(&image, None)).await.expect("verified pull");
    let image_ref = pulled.into_inner().image_ref;
    assert_eq!(image_ref, config_digest(&good_manifest), "containerd stored something other than the verified image");

    let mut direct = cri::images(&lab.containerd_sock);
    let status = direct.image_status(ImageStatusRequest { image: cri::spec(&image), verbose: false }).await.unwrap();
    assert_eq!(status.into_inner().image.expect("tag visible").id, image_ref);
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
