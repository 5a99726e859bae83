//! pullgate driven and fed by the real tools of the field, as `lab.sh install` builds them:
//! crictl (the CLI operators type) pulls, lists, inspects and removes images through pullgate,
//! and cosign (the signer image publishers run) makes the keys and signatures pullgate judges.
//! Both run in front of containerd 2.x, pulling through its transfer service.

use crate::common;

use std::path::Path;
use std::process::Output;

use common::cosign::CosignKey;
use common::lab::{self, Lab};
use pullgate::config::Config;

/// pullgate with one rule: images under `REGISTRY/team` need a signature by `key`.
async fn pullgate_trusting(lab: &Lab, key: &CosignKey) -> common::pullgate::Running {
    let mut config = Config { upstream: lab.containerd_sock.clone(), ..Config::default() };
    config.registry.insecure = vec![lab.registry.clone()];
    let policy =
        format!("[[rule]]\nscope = \"{}/team\"\nrequire = \"signed\"\nkeys = [\"cosign.pub\"]\n", lab.registry);
    let pem = key.public_pem();
    common::pullgate::start_with(config, &[("cosign.pub", &pem), ("policy.toml", &policy)]).await
}

/// The config digest of `repo:v1`'s manifest: the image id containerd gives it.
fn image_id(lab: &Lab, repo: &str) -> String {
    let url = format!("http://{}/v2/{repo}/manifests/v1", lab.registry);
    let manifest = common::cosign::http_get(&url, common::front::ACCEPT_MANIFESTS, None);
    assert_eq!(manifest.status, 200, "GET {url}");
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.body).expect("manifest JSON");
    manifest["config"]["digest"].as_str().expect("config digest").to_owned()
}

/// `crictl ARGS` against pullgate's socket, with no crictl.yaml of the host's.
async fn crictl(socket: &Path, args: &[&str]) -> Output {
    let endpoint = format!("unix://{}", socket.display());
    let config = tempfile::NamedTempFile::new().expect("temp file");
    tokio::process::Command::new(lab::peer("crictl"))
        .arg("--config")
        .arg(config.path())
        .args(["--image-endpoint", &endpoint, "--runtime-endpoint", &endpoint, "--timeout", "60s"])
        .args(args)
        .output()
        .await
        .expect("run crictl")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

async fn crictl_ok(socket: &Path, args: &[&str]) -> String {
    let output = crictl(socket, args).await;
    assert!(output.status.success(), "crictl {}: {}", args.join(" "), text(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn crictl_pulls_lists_inspects_and_removes_through_pullgate() {
    let lab = Lab::start_containerd2(false);
    let key = CosignKey::generate();
    let digest = lab.push_image("team/signed:v1", "signed");
    key.sign(&lab.registry, "team/signed", &digest);
    lab.push_image("team/unsigned:v1", "unsigned");
    let pullgate = pullgate_trusting(&lab, &key).await;
    let (signed, unsigned) = (format!("{}/team/signed:v1", lab.registry), format!("{}/team/unsigned:v1", lab.registry));
    let id = image_id(&lab, "team/signed");

    let pulled = crictl_ok(&pullgate.socket, &["pull", &signed]).await;
    assert!(pulled.contains(&id), "crictl pull: {pulled}");

    let refused = crictl(&pullgate.socket, &["pull", &unsigned]).await;
    assert!(!refused.status.success(), "unsigned image pulled: {}", text(&refused));
    let message = text(&refused);
    assert!(message.contains("SignatureValidationFailed") && message.contains(&unsigned), "{message}");

    let listed = crictl_ok(&pullgate.socket, &["images", "--output", "json"]).await;
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("crictl images JSON");
    let tags: Vec<&str> = listed["images"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|i| i["repoTags"].as_array().into_iter().flatten())
        .filter_map(|t| t.as_str())
        .collect();
    assert_eq!(tags, [signed.as_str()], "crictl images");

    let inspected = crictl_ok(&pullgate.socket, &["inspecti", "--output", "json", &signed]).await;
    let inspected: serde_json::Value = serde_json::from_str(&inspected).expect("crictl inspecti JSON");
    assert_eq!(inspected["status"]["id"], id.as_str(), "crictl inspecti: {inspected}");

    crictl_ok(&pullgate.socket, &["rmi", &signed]).await;
    let gone = crictl(&pullgate.socket, &["inspecti", &signed]).await;
    assert!(!gone.status.success(), "still there after rmi: {}", text(&gone));
    pullgate.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cosign_signed_image_is_accepted_by_its_key_and_refused_under_another() {
    let lab = Lab::start_containerd2(false);
    let (signer, other) = (CosignKey::generate(), CosignKey::generate());
    let digest = lab.push_image("team/app:v1", "app");
    signer.sign(&lab.registry, "team/app", &digest);
    let image = format!("{}/team/app:v1", lab.registry);

    let pullgate = pullgate_trusting(&lab, &other).await;
    let refused = common::cri::images(&pullgate.socket).pull_image(common::cri::pull_request(&image, None)).await;
    let status = refused.expect_err("accepted under a key that never signed it");
    assert!(status.message().starts_with("SignatureValidationFailed: "), "{}", status.message());
    assert!(status.message().contains("no signature by a trusted key"), "{}", status.message());
    pullgate.stop().await;

    let pullgate = pullgate_trusting(&lab, &signer).await;
    let pulled = common::cri::images(&pullgate.socket).pull_image(common::cri::pull_request(&image, None)).await;
    let image_ref = pulled.unwrap_or_else(|status| panic!("refused under its signer's key: {}", status.message()));
    assert_eq!(image_ref.into_inner().image_ref, image_id(&lab, "team/app"));
    pullgate.stop().await;
}
