//! The rule is chosen on what containerd will fetch, against the real containerd and registry:
//! a rule about a tag does not lend itself to a digest the tag does not name, a rule about a
//! digest applies however the image is asked for, audit pulls are pinned, and a decision a
//! policy reload overtook is not acted on.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::cosign::{self, CosignKey};
use common::front::{self, Client, Front};
use common::lab::Lab;
use common::{cri, metrics, policy};
use pullgate::config::Config;
use pullgate::cri::proto::{ImageStatusRequest, ListImagesRequest};

fn rule(scope: &str, require: &str) -> String {
    format!("[[rule]]\nscope = \"{scope}\"\nrequire = \"{require}\"\n")
}

fn signed(scope: &str) -> String {
    policy::signed(scope, &["a.pub"])
}

/// A lab whose registry is reached through a front, pullgate configured for it.
struct Setup {
    lab: Lab,
    front: Front,
    key: CosignKey,
}

impl Setup {
    fn new() -> Setup {
        let lab = Lab::start();
        let front = Front::start(&lab.registry);
        front.trust_in(&lab);
        Setup { lab, front, key: CosignKey::generate() }
    }

    fn reg(&self) -> String {
        self.front.addr()
    }

    /// Pushes `repo:tag` and signs it with cosign for pulls through the front; returns its
    /// digest.
    fn push_signed(&self, repo_tag: &str, seed: &str) -> String {
        cosign::push_signed(&self.lab, &self.key, &self.reg(), repo_tag, seed)
    }

    fn config(&self) -> Config {
        let mut config = Config { upstream: self.lab.containerd_sock.clone(), ..Config::default() };
        config.registry.insecure = vec![self.reg()];
        config
    }

    async fn start(&self, config: Config, policy: &str) -> common::pullgate::Running {
        let pem = self.key.public_pem();
        common::pullgate::start_with(config, &[("a.pub", &pem), ("policy.toml", policy)]).await
    }
}

async fn pull(socket: &Path, image: &str) -> Result<String, tonic::Status> {
    let request = cri::pull_request(image, Some("default"));
    cri::images(socket).pull_image(request).await.map(|pulled| pulled.into_inner().image_ref)
}

fn refused_as_unverified(result: Result<String, tonic::Status>, why: &str) {
    let status = result.expect_err(why);
    assert!(status.message().starts_with("SignatureValidationFailed: "), "{why}: {status:?}");
}

/// Nothing containerd has names `digest`, under any name.
async fn absent(lab: &Lab, digest: &str) {
    let images = cri::images(&lab.containerd_sock).list_images(ListImagesRequest::default()).await.unwrap();
    for image in images.into_inner().images {
        assert!(!image.repo_digests.iter().any(|name| name.ends_with(digest)), "{digest} stored: {image:?}");
    }
}

/// The CRI image id containerd records for `image`, looked up on containerd itself.
async fn stored_id(lab: &Lab, image: &str) -> Option<String> {
    let request = ImageStatusRequest { image: cri::spec(image), verbose: false };
    let status = cri::images(&lab.containerd_sock).image_status(request).await.unwrap();
    status.into_inner().image.map(|image| image.id)
}

fn config_digest(manifest: &[u8]) -> String {
    let manifest: serde_json::Value = serde_json::from_slice(manifest).expect("manifest JSON");
    manifest["config"]["digest"].as_str().expect("config digest").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tag_rule_does_not_admit_a_digest_the_tag_does_not_name() {
    let setup = Setup::new();
    let reg = setup.reg();
    let unsigned = setup.lab.push_image("team/app:unsigned", "rule-choice-unsigned");
    // The tag `debug` does not even exist; its accept rule must not apply to a digest.
    let policy = format!("{}{}", rule(&format!("{reg}/team/app:debug"), "accept"), signed(&format!("{reg}/team")));
    let pullgate = setup.start(setup.config(), &policy).await;

    let result = pull(&pullgate.socket, &format!("{reg}/team/app:debug@{unsigned}")).await;
    refused_as_unverified(result, "repo:tag@digest borrowed the tag's accept rule");
    absent(&setup.lab, &unsigned).await;
    pullgate.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_digest_rule_applies_to_the_tag_that_resolves_to_it() {
    let setup = Setup::new();
    let reg = setup.reg();
    let revoked = setup.push_signed("team/app:good", "rule-choice-revoked");
    let policy = format!("{}{}", rule(&format!("{reg}/team/app@{revoked}"), "reject"), signed(&format!("{reg}/team")));
    let pullgate = setup.start(setup.config(), &policy).await;

    let by_tag = pull(&pullgate.socket, &format!("{reg}/team/app:good")).await;
    let status = by_tag.as_ref().expect_err("a pull by tag dodged the digest's reject rule").clone();
    assert!(status.message().contains(&revoked), "the refusal names the digest: {status:?}");
    refused_as_unverified(by_tag, "by tag");
    refused_as_unverified(pull(&pullgate.socket, &format!("{reg}/team/app@{revoked}")).await, "by digest");
    absent(&setup.lab, &revoked).await;
    pullgate.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_audit_pull_is_pinned_to_the_digest_it_records() {
    let setup = Setup::new();
    let reg = setup.reg();
    setup.lab.push_image("audited/app:v1", "rule-choice-audited");
    setup.lab.push_image("audited/app:other", "rule-choice-other");
    let (seen, _) = front::manifest(&setup.lab.registry, "audited/app", "v1").await;
    let (other, media_type) = front::manifest(&setup.lab.registry, "audited/app", "other").await;
    // The registry answers by client: containerd would be told v1 is the other image.
    setup.front.override_manifest("audited/app", "v1", other.clone(), &media_type, Client::Containerd);
    let policy = format!("{}mode = \"audit\"\n", signed(&format!("{reg}/audited")));
    let pullgate = setup.start(setup.config(), &policy).await;

    let image = format!("{reg}/audited/app:v1");
    let id = pull(&pullgate.socket, &image).await.expect("audit mode lets the unsigned image through");
    assert_eq!(id, config_digest(&seen), "containerd stored another image than the one the audit record names");
    assert_eq!(stored_id(&setup.lab, &image).await, Some(id), "the tag is not pointed at the audited image");
    let tag_reads = setup.front.count(|seen| seen.is_containerd() && seen.path.ends_with("/manifests/v1"));
    assert_eq!(tag_reads, 0, "containerd resolved the tag itself: the audit pull was not pinned");
    pullgate.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_during_a_verification_decides_under_the_new_policy() {
    let setup = Setup::new();
    let reg = setup.reg();
    let digest = setup.push_signed("team/app:v1", "rule-choice-reload");
    let mut config = setup.config();
    config.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    let pullgate = setup.start(config, &signed(&format!("{reg}/team"))).await;
    let scrape = || metrics::scrape(pullgate.metrics.expect("metrics endpoint"));
    const RELOADS: &str = r#"pullgate_policy_reloads_total{result="success"}"#;
    let reloads = scrape().await.value(RELOADS);

    // The signature manifest is held until the key is revoked.
    let signature_tag = cosign::signature_tag(&digest);
    let hold = setup.front.hold(&format!("/v2/team/app/manifests/{signature_tag}"));
    let socket = pullgate.socket.clone();
    let image = format!("{reg}/team/app:v1");
    let pulling = tokio::spawn(async move { pull(&socket, &image).await });
    let asked = |seen: &front::Seen| seen.path.ends_with(&signature_tag);
    let started = Instant::now();
    while setup.front.count(asked) == 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "the verification never asked for the signatures");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    std::fs::write(pullgate.policy_dir.join("policy.toml"), rule(&format!("{reg}/team"), "reject")).unwrap();
    pullgate.reload.request();
    while scrape().await.value(RELOADS) <= reloads {
        assert!(started.elapsed() < Duration::from_secs(10), "the new policy was never loaded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    hold.release();

    let result = pulling.await.unwrap();
    let status = result.as_ref().expect_err("a verdict of the revoked policy was acted on").clone();
    assert!(status.message().contains("rejects every image"), "decided under the new policy: {status:?}");
    absent(&setup.lab, &digest).await;
    pullgate.stop().await;
}
