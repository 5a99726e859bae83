//! A registry with basic auth: pullgate uses the credentials the kubelet put in the
//! PullImageRequest for the signature fetch, and fails cleanly without them.

mod common;

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
