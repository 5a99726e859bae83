//! A threshold that mixes a key and a keyless identity, through pullgate in front of the real
//! containerd 2.x and the real registry: each counts once, and neither alone is enough. The
//! key signature is the real cosign's with a key; the keyless one the real cosign's against a
//! test sigstore instance (common/sigstore.rs).

use crate::common;

use common::cosign::CosignKey;
use common::cri;
use common::lab::Lab;
use common::sigstore::{ISSUER, SUBJECT, Sigstore, Spoil};
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
    let no_sct = lab.push_image("t/no-sct:v1", "no-sct");
    sigstore.signing(&lab.registry, "t/no-sct", &no_sct).spoil(Spoil::NoSct).run();
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
        // Identities count towards the threshold: it counts signers, not keys.
        assert!(message.contains("only 1 of 2 required signers signed"), "{repo}: {message}");
        assert!(message.contains(missing), "{repo}: {message:?} does not name {missing:?} as missing");
        store::assert_absent(&lab, &image).await;
    }
    running.stop().await;
    explained(&lab, &policy, &pem);
}

/// `pullgate verify` says, for each certificate signature, whom it names, by which issuer, the
/// signing time and log entry used, or which check failed.
fn explained(lab: &Lab, policy: &str, pem: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let policy_dir = dir.path().join("policy.d");
    std::fs::create_dir_all(&policy_dir).expect("policy dir");
    std::fs::write(policy_dir.join("a.pub"), pem).expect("key");
    std::fs::write(policy_dir.join("t.toml"), policy).expect("policy");
    let config = dir.path().join("pullgate.toml");
    let text = format!("policy_dir = {policy_dir:?}\n[registry]\ninsecure = [{:?}]\n", lab.registry);
    std::fs::write(&config, text).expect("config");
    let verify = |repo: &str| {
        let image = format!("{}/{repo}:v1", lab.registry);
        common::process::run(&["verify", &image, "--config", config.to_str().unwrap()], "")
    };
    let run = verify("t/keyless");
    let counted = format!("counts, verified by certificate of {SUBJECT} from {ISSUER} (signed at ");
    assert!(run.stdout.contains(&counted), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains(", log index "), "{}", run.stdout);
    assert!(run.stdout.contains("1 found; 1 of 2 required signers satisfied"), "{}", run.stdout);
    let rule = format!("signed by 2 of: a.pub, subject {SUBJECT:?} from issuer {ISSUER:?}, subject ~");
    assert!(run.stdout.contains(&rule), "{}", run.stdout);
    let run = verify("t/no-sct");
    let failed = "does not count: keyless signature: SCT check failed: ";
    assert!(run.stdout.contains(failed), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!("(certificate of {SUBJECT:?} from {ISSUER:?}, unverified)")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("untrusted-certificate") || run.stdout.contains("threshold"), "{}", run.stdout);
}

/// A v3 bundle signed keyless (cosign's default format): counts for the identity under a rule
/// that accepts digest-only signatures, and for no other subject. And `ignore_sct = true` lets
/// a certificate without an SCT count.
#[tokio::test(flavor = "multi_thread")]
async fn a_keyless_bundle_counts_for_its_identity() {
    let lab = Lab::start();
    let sigstore = Sigstore::new();
    let digest = lab.push_image("b/app:v1", "bundle");
    sigstore.signing(&lab.registry, "b/app", &digest).bundle().run();
    let no_sct = lab.push_image("s/no-sct:v1", "no-sct");
    sigstore.signing(&lab.registry, "s/no-sct", &no_sct).spoil(Spoil::NoSct).run();
    let mut config = Config { upstream: lab.containerd_sock.clone(), ..Config::default() };
    config.registry.insecure = vec![lab.registry.clone()];
    let rule = |subject: &str| {
        format!(
            "[[rule]]\nscope = \"{}/b\"\nrequire = \"signed\"\nidentity = \"ignore\"\n\
             identities = [{{ issuer = \"{ISSUER}\", subject = \"{subject}\" }}]\ntrusted_root = \"{}\"\n",
            lab.registry,
            sigstore.trusted_root().display()
        )
    };
    let image = format!("{}/b/app:v1", lab.registry);

    let running = common::pullgate::start_with(config.clone(), &[("b.toml", &rule("someone@example.test"))]).await;
    let refused = cri::images(&running.socket).pull_image(cri::pull_request(&image, None)).await;
    let message = refused.expect_err("pulled for another subject").message().to_owned();
    assert!(message.contains("sigstore bundle: keyless signature: identity mismatch"), "{message}");
    store::assert_absent(&lab, &image).await;
    running.stop().await;

    // ignore_sct = true: a certificate without an SCT counts (a private CA without a CT log).
    let without_sct = format!(
        "[[rule]]\nscope = \"{}/s\"\nrequire = \"signed\"\nignore_sct = true\n\
         identities = [{{ issuer = \"{ISSUER}\", subject = \"{SUBJECT}\" }}]\ntrusted_root = \"{}\"\n",
        lab.registry,
        sigstore.trusted_root().display()
    );
    let files = [("b.toml", rule(SUBJECT)), ("s.toml", without_sct)];
    let files: Vec<(&str, &str)> = files.iter().map(|(name, text)| (*name, text.as_str())).collect();
    let running = common::pullgate::start_with(config, &files).await;
    for (repo, image) in [("b/app", image), ("s/no-sct", format!("{}/s/no-sct:v1", lab.registry))] {
        let pulled = cri::images(&running.socket).pull_image(cri::pull_request(&image, None)).await;
        pulled.unwrap_or_else(|status| panic!("{image} refused: {}", status.message()));
        let (verified, config_digest) = store::verified(&lab.registry, repo, "v1").await;
        store::assert_pinned(&lab, &image, &verified, &config_digest).await;
    }
    running.stop().await;
}
