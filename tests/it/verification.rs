//! The verification matrix, end to end: kubelet-style PullImage through pullgate, in front of a
//! real containerd and a real registry, with signatures made by a cosign-format test signer.
//!
//! The cases, their images, policies and expected verdicts are in tests/it/common/matrix.rs.

use crate::common;

use common::cri;
use common::lab::Lab;
use common::matrix::{self, MATRIX};
use common::store;
use pullgate::config::Config;

fn config(lab: &Lab) -> Config {
    let mut config = Config { upstream: lab.containerd_sock.clone(), ..Config::default() };
    config.registry.insecure = vec![lab.registry.clone()];
    config
}

async fn run_matrix(lab: &Lab, socket: &std::path::Path, rows: &[(&str, bool, &str)]) {
    let mut images = cri::images(socket);
    for (repo, accepted, words) in rows {
        let image = format!("{}/{repo}:v1", lab.registry);
        let result = images.pull_image(cri::pull_request(&image, Some("default"))).await;
        match (result, accepted) {
            (Ok(response), true) => {
                let (digest, config) = store::verified(&lab.registry, repo, "v1").await;
                assert_eq!(response.into_inner().image_ref, config, "{image}: another image than the verified one");
                store::assert_stored(lab, &image, &digest, &config).await;
            }
            (Err(status), false) => {
                assert_eq!(status.code(), tonic::Code::Unknown, "{image}: {status:?}");
                let message = status.message();
                assert!(message.starts_with("SignatureValidationFailed: "), "{image}: {message}");
                assert!(message.contains(&image) && message.contains(words), "{image}: {message}");
                store::assert_absent(lab, &image).await;
            }
            (Ok(_), false) => panic!("{image} was accepted; it must be rejected"),
            (Err(status), true) => panic!("{image} was rejected: {}", status.message()),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn native_policy_matrix() {
    let matrix = matrix::shared();
    let lab = &matrix.lab;
    let pullgate = matrix.pullgate().await;
    run_matrix(lab, &pullgate.socket, MATRIX).await;
    pullgate.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_policy_json_gives_the_same_verdicts() {
    let matrix = matrix::shared();
    let lab = &matrix.lab;
    let dir = tempfile::tempdir().unwrap();
    let policy_json = dir.path().join("policy.json");
    std::fs::write(&policy_json, serde_json::to_vec_pretty(&matrix.policy_json).unwrap()).unwrap();
    let mut config = config(lab);
    config.policy_json = Some(policy_json);
    let pullgate = common::pullgate::start_with(config, &[]).await;
    let rows = matrix::policy_json_rows();
    run_matrix(lab, &pullgate.socket, &rows).await;
    pullgate.stop().await;
}
