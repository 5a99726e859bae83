//! A registry served over HTTPS by a private CA, as an edge site's own registry often is:
//! pullgate verifies through it once `registry.ca_file` names that CA, and without it refuses
//! the pull, naming the registry, rather than fetch signatures from a server it cannot
//! authenticate.

use crate::common;
use common::policy;

use common::cosign::CosignKey;
use common::cri;
use common::lab::Lab;
use common::store;
use pullgate::config::Config;
use pullgate::cri::proto::ImageStatusRequest;

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_behind_a_private_ca_is_verified_only_with_that_ca() {
    let lab = Lab::start();
    let (registry, ca) = lab.start_tls_registry();
    let key = CosignKey::generate();
    let digest = lab.push_image_to(&registry, "edge/app:v1", "edge", None);
    key.signing(&registry, "edge/app", &digest).ca(&ca).run();
    let unsigned_digest = lab.push_image_to(&registry, "edge/unsigned:v1", "unsigned", None);

    let policy = policy::signed(&format!("{registry}/edge"), &["a.pub"]);
    let pem = key.public_pem();
    let files = [("a.pub", pem.as_str()), ("policy.toml", policy.as_str())];
    let image = format!("{registry}/edge/app:v1");

    // No CA configured: the registry's certificate chains to nothing pullgate trusts.
    let config = Config { upstream: lab.containerd_sock.clone(), ..Config::default() };
    let pullgate = common::pullgate::start_with(config, &files).await;
    let status = cri::images(&pullgate.socket).pull_image(cri::pull_request(&image, None)).await.expect_err("pulled");
    assert!(status.message().starts_with("RegistryUnavailable: "), "{}", status.message());
    assert!(status.message().contains(&registry), "{}", status.message());
    assert!(status.message().to_lowercase().contains("certificate"), "{}", status.message());
    assert!(status.message().contains("set registry.ca_file"), "{}", status.message());
    pullgate.stop().await;
    assert!(image_status(&lab, &image).await.is_none(), "refused image reached containerd");

    // With the CA: HTTPS verification works, the signed image is pulled and pinned, the
    // unsigned one is still refused.
    let mut config = Config { upstream: lab.containerd_sock.clone(), ..Config::default() };
    config.registry.ca_file = Some(ca.clone());
    let pullgate = common::pullgate::start_with(config, &files).await;
    let mut images = cri::images(&pullgate.socket);
    let pulled = images.pull_image(cri::pull_request(&image, None)).await.expect("signed pull over HTTPS");
    let config = store::config_over_tls(&registry, &ca, "edge/app", &digest);
    assert_eq!(pulled.into_inner().image_ref, config, "containerd stored another image than the verified one");
    store::assert_pinned(&lab, &image, &digest, &config).await;
    let unsigned = format!("{registry}/edge/unsigned:v1");
    let status = images.pull_image(cri::pull_request(&unsigned, None)).await.expect_err("unsigned pulled");
    assert!(status.message().starts_with("SignatureValidationFailed: "), "{}", status.message());
    assert!(image_status(&lab, &unsigned).await.is_none(), "{unsigned_digest} reached containerd");
    pullgate.stop().await;
}

async fn image_status(lab: &Lab, image: &str) -> Option<pullgate::cri::proto::Image> {
    let request = ImageStatusRequest { image: cri::spec(image), verbose: false };
    cri::images(&lab.containerd_sock).image_status(request).await.expect("ImageStatus").into_inner().image
}
