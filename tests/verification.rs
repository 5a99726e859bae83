//! The verification matrix, end to end: kubelet-style PullImage through pullgate, in front of a
//! real containerd and a real registry, with signatures made by a cosign-format test signer.
//!
//! | image (under the lab registry)   | rule                          | signatures              | verdict  |
//! |----------------------------------|-------------------------------|-------------------------|----------|
//! | team/signed:v1                   | team: signed by A             | A                       | accepted |
//! | team/unsigned:v1                 | team: signed by A             | none                    | rejected |
//! | team/by-b:v1                     | team: signed by A             | B                       | rejected |
//! | team/copied:v1                   | team: signed by A             | A's, copied from signed | rejected |
//! | team/renamed:v1                  | team: match-repository        | A, payload names other  | rejected |
//! | loose/renamed:v1                 | loose: identity = ignore      | A, payload names other  | accepted |
//! | pair/one:v1                      | pair: A and C, threshold 2    | A                       | rejected |
//! | pair/both:v1                     | pair: A and C, threshold 2    | A, C                    | accepted |
//! | open/unsigned:v1                 | open: accept                  | none                    | accepted |
//! | closed/signed:v1                 | closed: reject                | A                       | rejected |
//! | stray/signed:v1                  | (no rule)                     | A                       | rejected |

mod common;

use common::cosign::{self, TestKey};
use common::cri;
use common::lab::Lab;
use pullgate::config::Config;
use pullgate::cri::proto::{ImageStatusRequest, ListImagesRequest};

struct Keys {
    a: TestKey,
    b: TestKey,
    c: TestKey,
}

/// Pushes `repo:v1` and returns its digest.
fn push(lab: &Lab, repo: &str) -> String {
    lab.push_image(&format!("{repo}:v1"), repo)
}

/// Signs `digest` of `repo` with each key; the payload claims `claimed_repo`.
fn sign(lab: &Lab, repo: &str, digest: &str, claimed_repo: &str, keys: &[&TestKey]) {
    let payload = cosign::payload(&format!("{}/{claimed_repo}", lab.registry), digest);
    let sigs: Vec<_> = keys.iter().map(|key| (payload.clone(), key.sign_payload(&payload))).collect();
    cosign::push_signatures(&lab.registry, repo, digest, &sigs);
}

/// Pushes and signs every image of the matrix.
fn populate(lab: &Lab, keys: &Keys) {
    let signed = push(lab, "team/signed");
    sign(lab, "team/signed", &signed, "team/signed", &[&keys.a]);
    push(lab, "team/unsigned");
    let by_b = push(lab, "team/by-b");
    sign(lab, "team/by-b", &by_b, "team/by-b", &[&keys.b]);
    // A valid signature by A, but for team/signed's digest, stored under copied's .sig tag.
    let copied = push(lab, "team/copied");
    let payload = cosign::payload(&format!("{}/team/signed", lab.registry), &signed);
    cosign::push_signatures(&lab.registry, "team/copied", &copied, &[(payload.clone(), keys.a.sign_payload(&payload))]);
    for repo in ["team/renamed", "loose/renamed"] {
        let digest = push(lab, repo);
        sign(lab, repo, &digest, "elsewhere/app", &[&keys.a]);
    }
    let one = push(lab, "pair/one");
    sign(lab, "pair/one", &one, "pair/one", &[&keys.a]);
    let both = push(lab, "pair/both");
    sign(lab, "pair/both", &both, "pair/both", &[&keys.a, &keys.c]);
    push(lab, "open/unsigned");
    for repo in ["closed/signed", "stray/signed"] {
        let digest = push(lab, repo);
        sign(lab, repo, &digest, repo, &[&keys.a]);
    }
}

fn native_policy(registry: &str) -> String {
    format!(
        r#"
[[rule]]
scope = "{registry}/team"
require = "signed"
keys = ["a.pub"]

[[rule]]
scope = "{registry}/loose"
require = "signed"
keys = ["a.pub"]
identity = "ignore"

[[rule]]
scope = "{registry}/pair"
require = "signed"
keys = ["a.pub", "c.pub"]
threshold = 2

[[rule]]
scope = "{registry}/open"
require = "accept"

[[rule]]
scope = "{registry}/closed"
require = "reject"
"#
    )
}

/// (image, accepted, words the refusal must contain)
const MATRIX: &[(&str, bool, &str)] = &[
    ("team/signed", true, ""),
    ("team/unsigned", false, "no signature by a trusted key"),
    ("team/by-b", false, "no signature by a trusted key"),
    ("team/copied", false, "names digest"),
    ("team/renamed", false, "elsewhere/app"),
    ("loose/renamed", true, ""),
    ("pair/one", false, "1 of 2"),
    ("pair/both", true, ""),
    ("open/unsigned", true, ""),
    ("closed/signed", false, "rejects every image"),
    ("stray/signed", false, "no policy rule matches"),
];

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
            (Ok(response), true) => assert_tag_shows(lab, &image, &response.into_inner().image_ref).await,
            (Err(status), false) => {
                assert_eq!(status.code(), tonic::Code::Unknown, "{image}: {status:?}");
                let message = status.message();
                assert!(message.starts_with("SignatureValidationFailed: "), "{image}: {message}");
                assert!(message.contains(&image) && message.contains(words), "{image}: {message}");
            }
            (Ok(_), false) => panic!("{image} was accepted; it must be rejected"),
            (Err(status), true) => panic!("{image} was rejected: {}", status.message()),
        }
    }
    assert_rejected_never_reached_containerd(lab, rows).await;
}

/// The kubelet's follow-up: ImageStatus by the tag it asked for finds the pulled image.
async fn assert_tag_shows(lab: &Lab, image: &str, image_ref: &str) {
    let request = ImageStatusRequest { image: cri::spec(image), verbose: false };
    let status = cri::images(&lab.containerd_sock).image_status(request).await.unwrap().into_inner();
    let shown = status.image.unwrap_or_else(|| panic!("{image} not visible under its tag after the pull"));
    assert_eq!(shown.id, image_ref);
    assert!(shown.repo_tags.contains(&image.to_owned()), "{:?}", shown.repo_tags);
}

async fn assert_rejected_never_reached_containerd(lab: &Lab, rows: &[(&str, bool, &str)]) {
    let listed = cri::images(&lab.containerd_sock).list_images(ListImagesRequest::default()).await.unwrap();
    let names: Vec<String> = listed.into_inner().images.iter().flat_map(|i| [&i.repo_tags[..], &i.repo_digests[..]].concat()).collect();
    for (repo, accepted, _) in rows {
        let present = names.iter().any(|name| name.starts_with(&format!("{}/{repo}", lab.registry)));
        assert_eq!(present, *accepted, "{repo} in containerd: {present}; names: {names:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn native_policy_matrix() {
    let lab = Lab::start();
    let keys = Keys { a: TestKey::generate(), b: TestKey::generate(), c: TestKey::generate() };
    populate(&lab, &keys);
    let policy = native_policy(&lab.registry);
    let (a, c) = (keys.a.public_pem(), keys.c.public_pem());
    let files = [("a.pub", a.as_str()), ("c.pub", c.as_str()), ("10-team.toml", policy.as_str())];
    let pullgate = common::pullgate::start_with(config(&lab), &files).await;
    run_matrix(&lab, &pullgate.socket, MATRIX).await;
    pullgate.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_policy_json_gives_the_same_verdicts() {
    let lab = Lab::start();
    let keys = Keys { a: TestKey::generate(), b: TestKey::generate(), c: TestKey::generate() };
    populate(&lab, &keys);
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("a.pub");
    keys.a.write_public_pem(&key_path);
    let registry = &lab.registry;
    let policy = serde_json::json!({
        "default": [{"type": "reject"}],
        "transports": {"docker": {
            format!("{registry}/team"): [{"type": "sigstoreSigned", "keyPath": key_path, "signedIdentity": {"type": "matchRepository"}}],
            format!("{registry}/open"): [{"type": "insecureAcceptAnything"}],
            format!("{registry}/closed"): [{"type": "reject"}],
        }}
    });
    let policy_json = dir.path().join("policy.json");
    std::fs::write(&policy_json, serde_json::to_vec_pretty(&policy).unwrap()).unwrap();
    let mut config = config(&lab);
    config.policy_json = Some(policy_json);
    let pullgate = common::pullgate::start_with(config, &[]).await;
    // policy.json has no `ignore` identity and no thresholds, and its default rejects, so the
    // rows it can express are compared; the default-reject replaces "no rule matches".
    let rows: Vec<_> = MATRIX
        .iter()
        .filter(|(repo, ..)| repo.starts_with("team/") || repo.starts_with("open/") || repo.starts_with("closed/"))
        .map(|&(repo, accepted, words)| (repo, accepted, if repo.starts_with("closed/") { "rejects every image" } else { words }))
        .collect();
    run_matrix(&lab, &pullgate.socket, &rows).await;
    pullgate.stop().await;
}
