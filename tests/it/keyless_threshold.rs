//! A threshold that mixes a key and a keyless identity, through pullgate in front of the real
//! containerd 2.x and the real registry: each counts once, and neither alone is enough. The
//! key signature is the real cosign's with a key; the keyless one the real cosign's against a
//! test sigstore instance (common/sigstore.rs).

use crate::common;

use common::cosign::CosignKey;
use common::cri;
use common::lab::Lab;
use common::sigstore::{ISSUER, SUBJECT, Sigstore};
use common::store;
use pullgate::config::Config;

#[tokio::test(flavor = "multi_thread")]
async fn a_threshold_of_two_needs_the_key_and_the_identity() {
    let lab = Lab::start();
    let sigstore = Sigstore::new();
    let key = CosignKey::generate();
    let both = lab.push_image("t/both:v1", "both");
    key.sign(&lab.registry, "t/both", &both);
    sigstore.signing(&lab.registry, "t/both", &both).run();
    let keyless_only = lab.push_image("t/keyless:v1", "keyless");
    sigstore.signing(&lab.registry, "t/keyless", &keyless_only).run();
    let key_only = lab.push_image("t/key:v1", "key");
    key.sign(&lab.registry, "t/key", &key_only);
    // Signed keyless twice by the same signer: still one signer.
    let twice = lab.push_image("t/twice:v1", "twice");
    sigstore.signing(&lab.registry, "t/twice", &twice).run();
    sigstore.signing(&lab.registry, "t/twice", &twice).run();

    let mut config = Config { upstream: lab.containerd_sock.clone(), ..Config::default() };
    config.registry.insecure = vec![lab.registry.clone()];
    // A second, broader identity the same signer also matches: one signer must not count twice.
    let policy = format!(
        "[[rule]]\nscope = \"{}/t\"\nrequire = \"signed\"\nkeys = [\"a.pub\"]\n\
         identities = [\n  {{ issuer = \"{ISSUER}\", subject = \"{SUBJECT}\" }},\n  \
         {{ issuer = \"{ISSUER}\", subject_regex = '.*@example\\.test' }},\n]\n\
         trusted_root = \"{}\"\nthreshold = 2\n",
        lab.registry,
        sigstore.trusted_root().display()
    );
    let pem = key.public_pem();
    let running = common::pullgate::start_with(config, &[("a.pub", &pem), ("t.toml", &policy)]).await;
    let pull = |repo: &str| {
        let image = format!("{}/{repo}:v1", lab.registry);
        let socket = running.socket.clone();
        async move { (cri::images(&socket).pull_image(cri::pull_request(&image, None)).await, image) }
    };

    let (pulled, image) = pull("t/both").await;
    pulled.unwrap_or_else(|status| panic!("{image} refused: {}", status.message()));
    let (verified, config_digest) = store::verified(&lab.registry, "t/both", "v1").await;
    store::assert_pinned(&lab, &image, &verified, &config_digest).await;

    for (repo, missing) in [("t/keyless", "a.pub"), ("t/key", SUBJECT), ("t/twice", "a.pub")] {
        let (refused, image) = pull(repo).await;
        let message = refused.expect_err(&format!("{image} was pulled")).message().to_owned();
        assert!(message.contains("only 1 of 2 required keys signed"), "{repo}: {message}");
        assert!(message.contains(missing), "{repo}: {message:?} does not name {missing:?} as missing");
        store::assert_absent(&lab, &image).await;
    }
    running.stop().await;
}
