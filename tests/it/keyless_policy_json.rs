//! A containers-policy.json `fulcio` requirement, through pullgate in front of the real
//! containerd 2.x and the real registry, for images the real cosign signed keyless against a
//! test sigstore instance (common/sigstore.rs). The CA file and the Rekor key are cut from the
//! instance's trusted_root.json, as an operator would hold them. containers/image's semantics:
//! the SET and the chain at its time are required, the email and issuer must match, the SCT
//! is not checked.

use crate::common;

use std::path::Path;

use common::lab::Lab;
use common::sigstore::{ISSUER, SUBJECT, Sigstore, Spoil};
use common::store;
use pullgate::config::Config;
use serde_json::Value;
use sigstore_verify::types::{DerCertificate, DerPublicKey};

/// The instance's CA certificates and Rekor key as PEM files in `dir`: (caPath, rekor key path).
fn cut_files(trusted_root: &Path, dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let root: Value = serde_json::from_slice(&std::fs::read(trusted_root).unwrap()).unwrap();
    let ca: String = root["certificateAuthorities"][0]["certChain"]["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| DerCertificate::from_base64(c["rawBytes"].as_str().unwrap()).unwrap().to_pem())
        .collect();
    let rekor = DerPublicKey::from_base64(root["tlogs"][0]["publicKey"]["rawBytes"].as_str().unwrap()).unwrap();
    let (ca_path, rekor_path) = (dir.join("fulcio.pem"), dir.join("rekor.pub"));
    std::fs::write(&ca_path, ca).unwrap();
    std::fs::write(&rekor_path, rekor.to_pem()).unwrap();
    (ca_path, rekor_path)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fulcio_requirement_admits_its_signer_and_refuses_others_as_containers_image_does() {
    let lab = Lab::start();
    let sigstore = Sigstore::new();
    let sign = |repo: &str, spoil: Spoil, subject: &str| {
        let digest = lab.push_image(&format!("{repo}:v1"), repo);
        sigstore.signing(&lab.registry, repo, &digest).identity(subject, ISSUER).spoil(spoil).run();
    };
    sign("t/good", Spoil::None, SUBJECT);
    sign("t/no-sct", Spoil::NoSct, SUBJECT);
    sign("t/other", Spoil::None, "other@example.test");
    sign("t/forged-set", Spoil::ForgedSet, SUBJECT);
    sign("t/foreign-ca", Spoil::ForeignCa, SUBJECT);

    let files = tempfile::tempdir().unwrap();
    let (ca, rekor) = cut_files(&sigstore.trusted_root(), files.path());
    let json = serde_json::json!({"default": [{"type": "reject"}], "transports": {"docker": {
        format!("{}/t", lab.registry): [{"type": "sigstoreSigned",
            "fulcio": {"caPath": ca, "oidcIssuer": ISSUER, "subjectEmail": SUBJECT},
            "rekorPublicKeyPath": rekor, "signedIdentity": {"type": "matchRepository"}}]}}});
    let running = start_with_policy_json(&lab, files.path(), &json).await;

    // An SCT is not required: containers/image does not check one.
    for repo in ["t/good", "t/no-sct"] {
        store::pull_pinned(&lab, &running.socket, repo).await;
    }
    // Each refusal names the check that failed.
    let refusals = [
        ("t/other", "identity mismatch"),
        ("t/forged-set", "invalid inclusion promise"),
        ("t/foreign-ca", "certificate chain is invalid"),
    ];
    for (repo, check) in refusals {
        store::pull_refused(&lab, &running.socket, repo, &[check]).await;
    }
    running.stop().await;
}

/// The real cosign signing `image` with a company-PKI certificate: its key imported from the
/// PKI's PEM (cosign takes only its own encrypted format), the certificate and chain given as
/// `--certificate`/`--certificate-chain`, no log, the legacy `.sig` format.
fn pki_sign(pki: &Path, image: &str, leaf: &str, chain: &str) {
    let home = tempfile::tempdir().unwrap();
    let cosign = |args: &[&str]| {
        let mut cmd = std::process::Command::new(common::lab::peer("cosign"));
        cmd.current_dir(home.path()).env_clear().env("HOME", home.path()).env("COSIGN_PASSWORD", "pki-test");
        cmd.env("PATH", std::env::var_os("PATH").unwrap_or_default());
        let out = cmd.args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "cosign {}: {err}", args.join(" "));
    };
    let path = |file: &str| pki.join(file).display().to_string();
    cosign(&["import-key-pair", "--key", &path("leaf.key")]);
    let certificate = ["--certificate", &path(leaf), "--certificate-chain", &path(chain)];
    let sign = ["sign", "--yes", "--key", "import-cosign.key", "--tlog-upload=false", "--new-bundle-format=false"];
    let registry = ["--use-signing-config=false", "--allow-http-registry", image];
    cosign(&[&sign[..], &certificate, &registry].concat());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pki_requirement_admits_its_signer_at_the_current_time_and_refuses_others() {
    let lab = Lab::start();
    let pki = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/keyless/test_pki.py");
    assert!(std::process::Command::new("python3").arg(script).arg(pki.path()).status().unwrap().success());
    std::fs::write(pki.path().join("outside-chain.pem"), std::fs::read(pki.path().join("outside-root.pem")).unwrap())
        .unwrap();
    let sign = |repo: &str, leaf: &str, chain: &str| {
        let digest = lab.push_image(&format!("{repo}:v1"), repo);
        pki_sign(pki.path(), &format!("{}/{repo}@{digest}", lab.registry), leaf, chain);
    };
    sign("t/good", "leaf.pem", "chain.pem");
    sign("t/outside", "outside.pem", "outside-chain.pem");
    sign("other/good", "leaf.pem", "chain.pem");

    let requirement = |email: &str| {
        serde_json::json!([{"type": "sigstoreSigned",
            "pki": {"caRootsPath": pki.path().join("root.pem"), "caIntermediatesPath": pki.path().join("intermediate.pem"),
                    "subjectEmail": email, "subjectHostname": "ci.build.example.com"},
            "signedIdentity": {"type": "matchRepository"}}])
    };
    let json = serde_json::json!({"default": [{"type": "reject"}], "transports": {"docker": {
        format!("{}/t", lab.registry): requirement("dev@example.com"),
        format!("{}/other", lab.registry): requirement("ops@example.com")}}});
    let running = start_with_policy_json(&lab, pki.path(), &json).await;

    store::pull_pinned(&lab, &running.socket, "t/good").await;
    let refusals = [
        ("t/outside", "pki certificate: certificate chain check failed"),
        ("other/good", "pki certificate: identity mismatch: required email \"ops@example.com\""),
    ];
    for (repo, check) in refusals {
        store::pull_refused(&lab, &running.socket, repo, &[check]).await;
    }
    running.stop().await;

    // `pullgate verify` shows whom the certificate names and when its chain was checked, or
    // which check failed.
    let policy_dir = pki.path().join("policy.d");
    std::fs::create_dir_all(&policy_dir).unwrap();
    let config = pki.path().join("pullgate.toml");
    let toml = format!(
        "policy_dir = {policy_dir:?}\npolicy_json = {:?}\n[registry]\ninsecure = [{:?}]\n",
        pki.path().join("policy.json"),
        lab.registry
    );
    std::fs::write(&config, toml).unwrap();
    let verify = |repo: &str| {
        let image = format!("{}/{repo}:v1", lab.registry);
        common::process::run(&["verify", &image, "--config", config.to_str().unwrap()], "")
    };
    let good = verify("t/good");
    assert_eq!(good.code, 0, "{}{}", good.stdout, good.stderr);
    let shown = "for email dev@example.com and hostname ci.build.example.com (chain checked at ";
    assert!(good.stdout.contains("pki certificate sha256:") && good.stdout.contains(shown), "{}", good.stdout);
    let outside = verify("t/outside");
    assert_ne!(outside.code, 0);
    assert!(outside.stdout.contains("pki certificate: certificate chain check failed"), "{}", outside.stdout);
}

/// pullgate in front of the lab's containerd with `json` as its containers-policy.json
/// (written into `dir`), and no policy.d rules.
async fn start_with_policy_json(lab: &Lab, dir: &Path, json: &Value) -> common::pullgate::Running {
    let policy_json = dir.join("policy.json");
    std::fs::write(&policy_json, json.to_string()).unwrap();
    let mut config = Config { upstream: lab.containerd_sock.clone(), ..Config::default() };
    config.registry.insecure = vec![lab.registry.clone()];
    config.policy_json = Some(policy_json);
    common::pullgate::start_with(config, &[("README", "")]).await
}
