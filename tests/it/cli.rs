//! `pullgate verify` and `pullgate policy check`, run as the built binary: verify against the
//! verification matrix in a real lab registry (and against the daemon's own verdicts through
//! a real containerd), exit codes, JSON output, credentials; policy check's table and errors.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::cosign::unused_public_pem;
use common::cri;
use common::lab::Lab;
use common::matrix::{self, Keys, MATRIX, Row};
use common::private;
use common::process::{self, Run};
use serde_json::Value;

// === running the binary ===

fn pullgate(args: &[&str]) -> Run {
    process::run(args, "")
}

/// A node's /etc/pullgate in a temp dir: pullgate.toml, policy.d with `files`, maybe policy.json.
struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new(registry: &str, files: &[(&str, &str)], policy_json: Option<&Value>) -> Node {
        let node = Node { dir: tempfile::tempdir().expect("temp dir") };
        std::fs::create_dir_all(node.policy_dir()).expect("policy dir");
        for (name, content) in files {
            std::fs::write(node.policy_dir().join(name), content).expect("write policy file");
        }
        let mut config = format!("policy_dir = {:?}\n", node.policy_dir());
        if let Some(json) = policy_json {
            std::fs::write(node.policy_json(), serde_json::to_vec_pretty(json).unwrap()).expect("write policy.json");
            config.push_str(&format!("policy_json = {:?}\n", node.policy_json()));
        }
        config.push_str(&format!("[registry]\ninsecure = [{registry:?}]\n"));
        std::fs::write(node.config(), config).expect("write config");
        node
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("pullgate.toml")
    }

    fn policy_dir(&self) -> PathBuf {
        self.dir.path().join("policy.d")
    }

    fn policy_json(&self) -> PathBuf {
        self.dir.path().join("policy.json")
    }

    fn verify(&self, image: &str, extra: &[&str]) -> Run {
        let config = self.config();
        let mut args = vec!["verify", image, "--config", config.to_str().unwrap(), "--namespace", "default"];
        args.extend(extra);
        pullgate(&args)
    }
}

fn native_node(lab: &Lab, keys: &Keys) -> Node {
    let policy = matrix::native_policy(&lab.registry);
    let (a, c) = (keys.a.public_pem(), keys.c.public_pem());
    Node::new(&lab.registry, &[("a.pub", &a), ("c.pub", &c), ("10-team.toml", &policy)], None)
}

/// The rule scope a matrix row falls under, None for the row no rule covers.
fn scope_of(registry: &str, repo: &str) -> Option<String> {
    let top = repo.split('/').next().unwrap_or_default();
    (top != "stray").then(|| format!("{registry}/{top}"))
}

// === verify: the matrix ===

#[tokio::test(flavor = "multi_thread")]
async fn verify_gives_the_daemons_verdict_for_every_matrix_row() {
    let matrix = matrix::shared();
    let (lab, keys) = (&matrix.lab, &matrix.keys);
    let node = native_node(&lab, &keys);
    let file = node.policy_dir().join("10-team.toml");
    for row in MATRIX {
        assert_text_explains(&lab, &node, row, &file);
        assert_json_explains(&lab, &node, row, &file);
    }
    let daemon = daemon_verdicts(lab).await;
    let cli: Vec<bool> = MATRIX.iter().map(|(repo, ..)| node.verify(&image(&lab, repo), &[]).code == 0).collect();
    assert_eq!(cli, daemon, "verify and the daemon disagree; rows: {MATRIX:?}");
}

fn image(lab: &Lab, repo: &str) -> String {
    format!("{}/{repo}:v1", lab.registry)
}

fn assert_text_explains(lab: &Lab, node: &Node, &(repo, accepted, words): &Row, file: &Path) {
    let image = image(lab, repo);
    let run = node.verify(&image, &[]);
    assert_eq!(run.code, if accepted { 0 } else { 1 }, "{image}:\n{}{}", run.stdout, run.stderr);
    assert_eq!(run.field("image"), image);
    let verdict = run.field("verdict");
    let expected = if accepted { "accepted: " } else { "rejected: " };
    assert!(verdict.starts_with(expected) && verdict.contains(words), "{image}: {verdict}");
    match scope_of(&lab.registry, repo) {
        Some(scope) => {
            assert_eq!(run.field("rule"), scope, "{image}");
            assert_at_a_line_of(run.field("file"), file, &image);
        }
        None => assert!(run.field("rule").starts_with("none matches"), "{image}"),
    }
    if !accepted {
        let daemon = run.field("daemon");
        assert!(daemon.contains("SignatureValidationFailed: ") && daemon.contains(words), "{image}: {daemon}");
    }
}

fn assert_json_explains(lab: &Lab, node: &Node, &(repo, accepted, words): &Row, file: &Path) {
    let image = image(lab, repo);
    let run = node.verify(&image, &["--output", "json"]);
    assert_eq!(run.code, if accepted { 0 } else { 1 }, "{image}: {}", run.stderr);
    let json = run.json();
    assert_eq!(json["requested"], image.as_str());
    assert_eq!(json["image"], image.as_str());
    assert_eq!(json["namespace"], "default");
    assert_eq!(json["verdict"], if accepted { "accepted" } else { "rejected" }, "{json:#}");
    assert!(json["reason"].as_str().unwrap().contains(words), "{json:#}");
    match scope_of(&lab.registry, repo) {
        Some(scope) => {
            assert_eq!(json["rule"]["scope"], scope.as_str(), "{json:#}");
            assert_eq!(json["rule"]["file"], file.to_str().unwrap(), "{json:#}");
        }
        None => assert!(json["rule"].is_null(), "{json:#}"),
    }
    let action = json["daemon"]["action"].as_str().unwrap();
    let signed_rule = json["rule"]["require"] == "signed";
    let expected_action = match (accepted, signed_rule) {
        (true, true) => "pull-pinned",
        (true, false) => "forward",
        (false, _) => "refuse",
    };
    assert_eq!(action, expected_action, "{json:#}");
    if signed_rule {
        let digest = json["digest"].as_str().unwrap();
        assert!(digest.starts_with("sha256:"), "{json:#}");
        if accepted {
            assert_eq!(json["daemon"]["pinned"], format!("{}/{repo}@{digest}", lab.registry));
            assert_eq!(json["daemon"]["tag"], image.as_str());
        }
    }
}

/// The daemon's own verdicts, pulling every row through pullgate into the lab's containerd.
async fn daemon_verdicts(lab: &Lab) -> Vec<bool> {
    let pullgate = matrix::shared().pullgate().await;
    let mut images = cri::images(&pullgate.socket);
    let mut verdicts = Vec::new();
    for (repo, ..) in MATRIX {
        let result = images.pull_image(cri::pull_request(&image(lab, repo), Some("default"))).await;
        verdicts.push(result.is_ok());
    }
    pullgate.stop().await;
    verdicts
}

// === verify: what each signature did ===

#[tokio::test(flavor = "multi_thread")]
async fn verify_names_the_key_behind_each_signature_or_why_it_did_not_count() {
    let matrix = matrix::shared();
    let (lab, keys) = (&matrix.lab, &matrix.keys);
    let node = native_node(&lab, &keys);
    let a_pub = node.policy_dir().join("a.pub").display().to_string();
    let signatures = |repo: &str| node.verify(&image(&lab, repo), &["--output", "json"]).json()["signatures"].clone();

    let signed = signatures("team/signed");
    assert_eq!(signed.as_array().map(Vec::len), Some(1), "{signed:#}");
    assert_eq!((&signed[0]["verified_by"], &signed[0]["counted"]), (&Value::from(a_pub.as_str()), &Value::Bool(true)));
    assert_eq!(signed[0]["signed_name"], format!("{}/team/signed", lab.registry), "{signed:#}");

    let by_b = signatures("team/by-b");
    assert!(by_b[0]["verified_by"].is_null() && by_b[0]["counted"] == false, "{by_b:#}");
    assert!(by_b[0]["signed_name"].is_null(), "an untrusted payload is not read: {by_b:#}");
    assert!(by_b[0]["rejected_because"].as_str().unwrap().contains("does not verify with any of the 1 trusted key"));

    let copied = signatures("team/copied");
    assert_eq!(copied[0]["verified_by"], a_pub.as_str(), "signed by the right key, but for another digest");
    assert!(copied[0]["rejected_because"].as_str().unwrap().contains("names digest"), "{copied:#}");

    let pair = node.verify(&image(&lab, "pair/one"), &[]);
    assert_eq!(pair.field("signatures"), "1 found; 1 of 2 required keys satisfied");
    assert_eq!(pair.field("require"), "signed by 2 of: a.pub, c.pub");
    assert!(pair.stdout.contains(&format!(": counts, verified by {a_pub}\n")), "{}", pair.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_json_gives_a_reason_code_and_the_keys_that_did_not_sign() {
    let matrix = matrix::shared();
    let (lab, keys) = (&matrix.lab, &matrix.keys);
    let node = native_node(&lab, &keys);
    let c_pub = node.policy_dir().join("c.pub").display().to_string();
    let verify = |reference: &str| node.verify(&format!("{}/{reference}", lab.registry), &["--output", "json"]).json();
    let codes = [
        ("team/signed:v1", "verified"),
        ("team/unsigned:v1", "no-signatures"),
        ("team/by-b:v1", "untrusted-key"),
        ("team/copied:v1", "digest-mismatch"),
        ("pair/one:v1", "threshold"),
        ("open/unsigned:v1", "accept-rule"),
        ("closed/signed:v1", "rejected-scope"),
        ("stray/signed:v1", "no-rule"),
        ("team/signed:no-such-tag", "not-found"),
    ];
    for (reference, code) in codes {
        let json = verify(reference);
        assert_eq!((json["schema_version"].as_u64(), json["reason_code"].as_str()), (Some(1), Some(code)), "{json:#}");
    }

    let pair = verify("pair/one:v1");
    assert_eq!(pair["missing_keys"], serde_json::json!([c_pub]), "{pair:#}");
    let message = pair["daemon"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("only 1 of 2 required keys signed; missing: {c_pub}")), "{message}");

    // A tag that does not exist is not a signature failure: the kubelet must show it as the
    // image not being found, as it does without pullgate.
    let missing = verify("team/signed:no-such-tag");
    let message = missing["daemon"]["message"].as_str().unwrap();
    let expected = format!("pullgate: image {}/team/signed:no-such-tag not found: ", lab.registry);
    assert!(message.starts_with(&expected), "{message}");
    // The daemon answers the kubelet exactly so, through the real containerd.
    let pullgate = matrix.pullgate().await;
    let image = format!("{}/team/signed:no-such-tag", lab.registry);
    let status = cri::images(&pullgate.socket)
        .pull_image(cri::pull_request(&image, Some("default")))
        .await
        .expect_err("a missing tag pulled");
    assert_eq!((status.code(), status.message()), (tonic::Code::NotFound, message), "{status:?}");
    pullgate.stop().await;

    // The lab registry speaks plain HTTP: without it in registry.insecure, say what to do.
    let config = std::fs::read_to_string(node.config()).unwrap();
    let https_only = config.replace(&format!("insecure = [{:?}]", lab.registry), "insecure = []");
    assert_ne!(config, https_only);
    std::fs::write(node.config(), https_only).unwrap();
    let plain = verify("team/signed:v1");
    assert_eq!(plain["reason_code"], "registry-unavailable", "{plain:#}");
    let reason = plain["reason"].as_str().unwrap();
    assert!(reason.contains("the registry answered in plain HTTP; add it to registry.insecure"), "{reason}");
}

// === verify: registry.insecure ===

#[test]
fn an_insecure_registry_is_reached_however_an_image_spells_its_host() {
    let lab = Lab::start();
    let digest = lab.push_image("team/app:v1", "insecure-spellings");
    let port = lab.registry.strip_prefix("127.0.0.1:").expect("the lab registry listens on 127.0.0.1");
    let key = unused_public_pem();
    let policy = format!("[[rule]]\nscope = \"{}/team\"\nrequire = \"signed\"\nkeys = [\"a.pub\"]\n", lab.registry);
    // Both ways round: the entry as the registry is named, the image by its other spelling.
    for (entry, host) in [
        (format!("127.0.0.1:{port}"), format!("localhost:{port}")),
        (format!("localhost:{port}"), format!("127.0.0.1:{port}")),
    ] {
        let node = Node::new(&entry, &[("a.pub", &key), ("policy.toml", &policy)], None);
        let json = node.verify(&format!("{host}/team/app:v1"), &["--output", "json"]).json();
        assert_eq!(
            (json["reason_code"].as_str(), json["digest"].as_str()),
            (Some("no-signatures"), Some(digest.as_str())),
            "insecure = [{entry:?}], image on {host}: {json:#}"
        );
    }
}

// === verify: containers-policy.json and audit mode ===

#[tokio::test(flavor = "multi_thread")]
async fn verify_judges_policy_json_and_notes_audit_mode() {
    let matrix = matrix::shared();
    let (lab, keys) = (&matrix.lab, &matrix.keys);
    let node = Node::new(&lab.registry, &[], Some(&matrix.policy_json));
    for &(repo, accepted, words) in &matrix::policy_json_rows() {
        let run = node.verify(&image(&lab, repo), &[]);
        assert_eq!(run.code, if accepted { 0 } else { 1 }, "{repo}:\n{}{}", run.stdout, run.stderr);
        assert!(run.field("verdict").contains(words), "{repo}: {}", run.stdout);
        assert_at_a_line_of(run.field("file"), &node.policy_json(), repo);
    }

    let audit = format!(
        "[[rule]]\nscope = \"{}/team\"\nrequire = \"signed\"\nkeys = [\"a.pub\"]\nmode = \"audit\"\n",
        lab.registry
    );
    let node = Node::new(&lab.registry, &[("a.pub", &keys.a.public_pem()), ("audit.toml", &audit)], None);
    let run = node.verify(&image(&lab, "team/unsigned"), &[]);
    assert_eq!(run.code, 1, "the exit status follows the verdict, even in audit mode:\n{}", run.stdout);
    assert!(run.field("verdict").starts_with("rejected: no signature by a trusted key"), "{}", run.stdout);
    // Audit pulls are pinned like enforced ones, to the digest the verdict is about.
    let daemon = run.field("daemon");
    assert!(
        daemon.starts_with("pulls ")
            && daemon.contains("@sha256:")
            && daemon.contains("anyway: the rule is in audit mode"),
        "{daemon}"
    );
    assert_eq!(run.field("mode"), "audit");
    let json = node.verify(&image(&lab, "team/unsigned"), &["--output", "json"]).json();
    assert_eq!(json["daemon"]["action"], "pull-pinned");
    assert_eq!(json["daemon"]["audit"], true);
    assert_eq!(
        json["daemon"]["pinned"],
        format!("{}/team/unsigned@{}", lab.registry, json["digest"].as_str().unwrap())
    );
    assert_eq!(json["rule"]["mode"], "audit");
}

// === verify: credentials ===

#[tokio::test(flavor = "multi_thread")]
async fn verify_fetches_signatures_with_the_given_credentials() {
    const USER: &str = "operator";
    const PASSWORD: &str = "pa55-w0rd";
    let private::PrivateImage { lab: _lab, registry, image, digest, key, policy } =
        private::signed_image(USER, PASSWORD);
    let node = Node::new(&registry, &[("a.pub", &key.public_pem()), ("policy.toml", &policy)], None);

    let anonymous = node.verify(&image, &[]);
    assert_eq!(anonymous.code, 1, "{}", anonymous.stdout);
    assert!(anonymous.field("verdict").contains("denied"), "{}", anonymous.stdout);
    let wrong = node.verify(&image, &["--username", USER, "--password", "not-it"]);
    assert_eq!(wrong.code, 1, "{}", wrong.stdout);
    assert!(!wrong.stdout.contains("not-it") && !wrong.stderr.contains("not-it"), "password leaked:\n{}", wrong.stdout);

    let given = node.verify(&image, &["--username", USER, "--password", PASSWORD]);
    assert_eq!(given.code, 0, "{}{}", given.stdout, given.stderr);
    assert_eq!(given.field("digest"), digest);
    let config = node.config();
    let args = ["verify", image.as_str(), "-c", config.to_str().unwrap(), "--username", USER, "--password-stdin"];
    let piped = process::run(&args, &format!("{PASSWORD}\n"));
    assert_eq!(piped.code, 0, "{}{}", piped.stdout, piped.stderr);
}

// === verify: errors ===

#[test]
fn verify_exits_2_when_the_registry_refuses_connections() {
    // A port that was just free on loopback refuses connections.
    let registry = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let key = unused_public_pem();
    let policy = format!("[[rule]]\nscope = \"{registry}\"\nrequire = \"signed\"\nkeys = [\"a.pub\"]\n");
    let node = Node::new(&registry, &[("a.pub", &key), ("policy.toml", &policy)], None);
    let image = format!("{registry}/team/app:v1");
    let run = node.verify(&image, &[]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.field("verdict").starts_with("unavailable: cannot resolve the image: registry unreachable"),
        "{}",
        run.stdout
    );
    assert!(run.field("daemon").contains("RegistryUnavailable: "), "{}", run.stdout);
    let json = node.verify(&image, &["--output", "json"]);
    assert_eq!((json.code, json.json()["verdict"].clone()), (2, Value::from("unavailable")));
}

#[test]
fn verify_exits_2_on_a_bad_config_or_policy() {
    let node = Node::new("127.0.0.1:5000", &[("policy.toml", "[[rule]]\nscope = \"*\"\nrequire = \"accept\"\n")], None);
    assert_eq!(node.verify("nginx", &[]).code, 0, "the good node accepts");

    std::fs::write(node.config(), "policy_dri = \"/etc\"\n").unwrap();
    let run = node.verify("nginx", &[]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(run.stderr.contains("policy_dri") && run.stdout.is_empty(), "{}", run.stderr);

    let missing = pullgate(&["verify", "nginx", "--config", "/nonexistent/pullgate.toml"]);
    assert_eq!(missing.code, 2, "{}", missing.stderr);

    let node = Node::new("127.0.0.1:5000", &[("policy.toml", "[[rule]]\nscope = \"*\"\nrequire = \"maybe\"\n")], None);
    let run = node.verify("nginx", &[]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    let location = format!("{}:3:", node.policy_dir().join("policy.toml").display());
    assert!(run.stderr.contains(&location), "{}", run.stderr);
}

#[test]
fn verify_json_reports_a_config_or_policy_that_does_not_load_as_an_error_object() {
    let node = Node::new("127.0.0.1:5000", &[("policy.toml", "[[rule]]\nscope = \"*\"\nrequire = \"maybe\"\n")], None);
    let run = node.verify("nginx", &["--output", "json"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let json = run.json();
    assert_eq!(
        (json["schema_version"].as_u64(), json["error"]["kind"].as_str()),
        (Some(1), Some("policy")),
        "{json:#}"
    );
    let problem = &json["error"]["problems"][0];
    assert_eq!(problem["file"], node.policy_dir().join("policy.toml").to_str().unwrap(), "{json:#}");
    assert_eq!(problem["line"], 3, "{json:#}");

    std::fs::write(node.config(), "policy_dri = \"/etc\"\n").unwrap();
    let run = node.verify("nginx", &["--output", "json"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let json = run.json();
    assert_eq!(json["error"]["kind"], "config", "{json:#}");
    assert!(json["error"]["message"].as_str().unwrap().contains("policy_dri"), "{json:#}");
}

#[test]
fn verify_refuses_a_namespace_no_pod_can_have() {
    let node = Node::new("127.0.0.1:5000", &[("policy.toml", "[[rule]]\nscope = \"*\"\nrequire = \"accept\"\n")], None);
    let config = node.config();
    let run = pullgate(&["verify", "nginx", "--config", config.to_str().unwrap(), "--namespace", "Default"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("\"Default\" is not a Kubernetes namespace name"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);

    // Asked for JSON, a tool gets JSON even when the command line itself is refused.
    let args = ["verify", "nginx", "--config", config.to_str().unwrap(), "--namespace", "Default", "--output", "json"];
    let run = pullgate(&args);
    assert_eq!((run.code, run.stderr.as_str()), (2, ""), "{}", run.stdout);
    let json = run.json();
    assert_eq!((json["schema_version"].as_u64(), json["error"]["kind"].as_str()), (Some(1), Some("usage")), "{json:#}");
    let message = json["error"]["message"].as_str().unwrap();
    assert!(message.contains("\"Default\" is not a Kubernetes namespace name"), "{message}");
    assert!(!message.contains("Usage:") && !message.starts_with("error:"), "{message}");
    let run = pullgate(&["policy", "check", "--output=json", "--no-such-flag"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.json()["error"]["message"], "unexpected argument '--no-such-flag' found", "{}", run.stdout);
}

#[test]
fn a_rules_message_ends_the_kubelets_error() {
    let rule = "[[rule]]\nscope = \"r.example/team\"\nrequire = \"reject\"\nmessage = \"revoked build, see INC-123\"\n";
    let node = Node::new("127.0.0.1:5000", &[("policy.toml", rule)], None);
    let run = node.verify("r.example/team/app:1", &["--output", "json"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let message = run.json()["daemon"]["message"].as_str().unwrap().to_owned();
    assert!(message.starts_with("SignatureValidationFailed: image r.example/team/app:1 refused"), "{message}");
    assert!(message.ends_with(". revoked build, see INC-123"), "{message}");
    let rule = &run.json()["rule"];
    let file = node.policy_dir().join("policy.toml");
    assert_eq!((&rule["file"], &rule["line"]), (&Value::from(file.to_str().unwrap()), &Value::from(2)), "{rule:#}");
}

#[test]
fn policy_json_can_be_given_on_the_command_line() {
    let json = serde_json::json!({"default": [{"type": "reject"}], "transports": {"docker": {
        "r.example/open": [{"type": "insecureAcceptAnything"}]}}});
    let node = Node::new("127.0.0.1:5000", &[], None);
    let path = node.dir.path().join("elsewhere.json");
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    let (config, path) = (node.config(), path.to_str().unwrap().to_owned());
    let verify = |image: &str| {
        pullgate(&["verify", image, "-c", config.to_str().unwrap(), "--policy-json", &path, "--output", "json"])
    };
    let open = verify("r.example/open/app:1");
    assert_eq!((open.code, open.json()["reason_code"].clone()), (0, Value::from("accept-rule")), "{}", open.stdout);
    assert_eq!(open.json()["rule"]["file"], path.as_str());
    assert_eq!(verify("r.example/other/app:1").json()["reason_code"], "rejected-scope");
    let check = pullgate(&["policy", "check", "-c", config.to_str().unwrap(), "--policy-json", &path]);
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);
    assert!(
        check.stdout.ends_with(&format!("2 rules from {} and {path}\n", node.policy_dir().display())),
        "{}",
        check.stdout
    );
}

// === policy check ===

#[test]
fn policy_check_names_ignored_files_and_rules_that_cannot_do_what_they_say() {
    let key = unused_public_pem();
    let hub = "[[rule]]\nscope = \"docker.io/nginx\"\nrequire = \"reject\"\n";
    let files = [
        ("10-hub.toml", hub),
        ("policy.json", "{}"),
        ("20-extra.TOML", hub),
        ("30-extra.yaml", ""),
        ("README", ""),
        ("a.pub", key.as_str()),
    ];
    let node = Node::new("127.0.0.1:5000", &files, None);
    let json = serde_json::json!({"default": [{"type": "sigstoreSigned", "keyPath": node.policy_dir().join("a.pub")}]});
    let (policy_json, config) = (node.dir.path().join("containers.json"), node.config());
    std::fs::write(&policy_json, serde_json::to_vec(&json).unwrap()).unwrap();
    let args = ["policy", "check", "-c", config.to_str().unwrap(), "--policy-json", policy_json.to_str().unwrap()];
    let run = pullgate(&args);
    assert_eq!(run.code, 0, "warnings do not fail the check:\n{}{}", run.stdout, run.stderr);
    let dir = node.policy_dir();
    for name in ["20-extra.TOML", "30-extra.yaml", "policy.json"] {
        assert!(
            run.stdout.contains(&format!("ignored: {}: only", dir.join(name).display())),
            "{name}:\n{}",
            run.stdout
        );
    }
    assert!(!run.stdout.contains("README"), "{}", run.stdout);
    let hub_warning = format!("warning: {}: scope \"docker.io/nginx\"", dir.join("10-hub.toml").display());
    assert!(run.stdout.contains(&hub_warning) && run.stdout.contains("docker.io/library/nginx"), "{}", run.stdout);
    let json_warning =
        format!("warning: {}: scope \"*\": signedIdentity is matchRepoDigestOrExact", policy_json.display());
    assert!(run.stdout.contains(&json_warning), "{}", run.stdout);

    let run = pullgate(&[&args[..], &["--output", "json"]].concat());
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = run.json();
    assert_eq!(report["schema_version"], 1);
    assert_eq!(report["rules"].as_array().map(Vec::len), Some(2), "{report:#}");
    let kinds: Vec<&str> = report["warnings"].as_array().unwrap().iter().map(|w| w["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ignored", "ignored", "ignored", "rule", "rule", "alias"], "{report:#}");
    let alias = &report["warnings"][5];
    assert_eq!(
        alias["message"], "scopes on \"docker.io\" also cover index.docker.io, registry-1.docker.io",
        "{alias:#}"
    );
    assert_eq!(alias["file"], dir.join("10-hub.toml").to_str().unwrap(), "{alias:#}");
}

#[test]
fn policy_check_says_what_a_key_file_is_when_it_is_no_public_key() {
    let rule = "[[rule]]\nscope = \"r.example/team\"\nrequire = \"signed\"\nkeys = [\"id.pub\", \"empty.pub\"]\n";
    let ssh = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE op@node\n";
    let node = Node::new("127.0.0.1:5000", &[("policy.toml", rule), ("id.pub", ssh), ("empty.pub", "")], None);
    let run = pullgate(&["policy", "check", "-c", node.config().to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let key = |name: &str| node.policy_dir().join(name).display().to_string();
    assert!(run.stderr.contains(&format!("key file {}: this is an SSH public key", key("id.pub"))), "{}", run.stderr);
    assert!(run.stderr.contains(&format!("key file {}: the file is empty", key("empty.pub"))), "{}", run.stderr);
}

#[test]
fn policy_check_json_lists_every_problem_of_a_broken_policy() {
    let broken = "[[rule]]\nscope = \"nginx\"\nrequire = \"reject\"\n\n[[rule]]\nscope = \"*\"\nrequire = \"maybe\"\n";
    let node = Node::new("127.0.0.1:5000", &[("10-broken.toml", broken)], None);
    let run = pullgate(&["policy", "check", "-c", node.config().to_str().unwrap(), "--output", "json"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let json = run.json();
    assert_eq!(json["error"]["kind"], "policy", "{json:#}");
    let lines: Vec<u64> =
        json["error"]["problems"].as_array().unwrap().iter().map(|p| p["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [2, 7], "{json:#}");
    let missing = pullgate(&["policy", "check", "-c", "/nonexistent/pullgate.toml", "--output", "json"]);
    assert_eq!((missing.code, missing.json()["error"]["kind"].clone()), (2, Value::from("config")));
}

#[test]
fn policy_check_prints_the_rules_as_serve_would_load_them() {
    let (a, c) = (unused_public_pem(), unused_public_pem());
    let policy = matrix::native_policy("127.0.0.1:5000");
    let limited = "[[rule]]\nscope = \"*\"\nnamespaces = [\"dev\", \"ci\"]\nrequire = \"accept\"\nmode = \"audit\"\n";
    let files = [("a.pub", a.as_str()), ("c.pub", c.as_str()), ("10-team.toml", &policy), ("20-dev.toml", limited)];
    let node = Node::new("127.0.0.1:5000", &files, None);
    let config = node.config();
    let run = pullgate(&["policy", "check", "--config", config.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let lines: Vec<Vec<&str>> =
        run.stdout.lines().map(|line| line.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect()).collect();
    assert_eq!(lines[0], ["SCOPE", "NAMESPACES", "REQUIRE", "KEYS", "THRESHOLD", "IDENTITY", "MODE", "FILE"]);
    let team = node.policy_dir().join("10-team.toml").display().to_string();
    let dev = node.policy_dir().join("20-dev.toml").display().to_string();
    let expected = [
        ["127.0.0.1:5000/team", "all", "signed", "a.pub", "1", "match-repository", "enforce", team.as_str()],
        ["127.0.0.1:5000/loose", "all", "signed", "a.pub", "1", "ignore", "enforce", team.as_str()],
        ["127.0.0.1:5000/pair", "all", "signed", "a.pub, c.pub", "2", "match-repository", "enforce", team.as_str()],
        ["127.0.0.1:5000/open", "all", "accept", "-", "-", "-", "enforce", team.as_str()],
        ["127.0.0.1:5000/closed", "all", "reject", "-", "-", "-", "enforce", team.as_str()],
        ["*", "dev, ci", "accept", "-", "-", "-", "audit", dev.as_str()],
    ];
    assert_eq!(lines[1..=expected.len()], expected, "{}", run.stdout);
    assert!(run.stdout.ends_with(&format!("6 rules from {}\n", node.policy_dir().display())), "{}", run.stdout);
    // The scopes name a loopback registry, which other spellings reach too; said once.
    let note = "pullgate: note: scopes on \"127.0.0.1:5000\" also cover localhost:5000, [::1]:5000\n";
    assert_eq!(run.stderr, note);
}

#[test]
fn policy_check_reports_a_broken_file_with_its_path_and_line() {
    let good = "[[rule]]\nscope = \"*\"\nrequire = \"reject\"\n";
    let broken = "# team rules\n[[rule]]\nscope = \"registry.example/team\"\nrequire = \"signed\"\nkeys = [\"missing.pub\"]\nthreshold = \"one\"\n";
    let node = Node::new("127.0.0.1:5000", &[("10-good.toml", good), ("20-broken.toml", broken)], None);
    let config = node.config();
    let run = pullgate(&["policy", "check", "--config", config.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.is_empty(), "no table for a broken policy:\n{}", run.stdout);
    let broken_path = node.policy_dir().join("20-broken.toml").display().to_string();
    assert!(run.stderr.contains(&format!("{broken_path}:6: ")), "{}", run.stderr);

    // --policy-dir overrides the file's policy_dir, as for serve.
    let other = Node::new("127.0.0.1:5000", &[("10-good.toml", good)], None);
    let dir = other.policy_dir();
    let run =
        pullgate(&["policy", "check", "--config", config.to_str().unwrap(), "--policy-dir", dir.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.ends_with(&format!("1 rule from {}\n", dir.display())), "{}", run.stdout);
}

#[test]
fn policy_check_exits_2_for_an_unusable_config() {
    let missing = pullgate(&["policy", "check", "--config", "/nonexistent/pullgate.toml"]);
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    assert!(missing.stderr.contains("/nonexistent/pullgate.toml"), "{}", missing.stderr);
    let node = Node::new("127.0.0.1:5000", &[], None);
    std::fs::write(node.config(), "[registry]\ntimeout = \"soon\"\n").unwrap();
    let bad = pullgate(&["policy", "check", "--config", node.config().to_str().unwrap()]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("timeout"), "{}", bad.stderr);

    // Every type error of the file at once, each at its line, in the file's words.
    let config = "polcy_dir = \"/p\"\n[cache]\nmax_entries = \"many\"\n[registry]\ninsecure = \"a:1\"\n";
    std::fs::write(node.config(), config).unwrap();
    let bad = pullgate(&["policy", "check", "--config", node.config().to_str().unwrap()]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    let path = node.config().display().to_string();
    let expected = format!(
        "pullgate: invalid configuration, 3 problems:\n  {path}:1: unknown key \"polcy_dir\"; the keys here are listen, \
         upstream, shutdown_grace, connect_timeout, max_connections, policy_dir, policy_json, registry, cache, log, \
         metrics\n  {path}:3: \"cache.max_entries\" must be a whole number, not the string \"many\"\n  {path}:5: \
         \"registry.insecure\" must be a list, not the string \"a:1\"\n"
    );
    assert_eq!(bad.stderr, expected);
    let json = pullgate(&["policy", "check", "--config", node.config().to_str().unwrap(), "--output", "json"]);
    assert_eq!((json.code, json.json()["error"]["kind"].clone()), (2, Value::from("config")), "{}", json.stdout);
    assert!(json.json()["error"]["message"].as_str().unwrap().contains(&format!("{path}:3: ")), "{}", json.stdout);
}

#[test]
fn policy_check_refuses_a_fifo_key_and_a_device_policy_json_promptly_naming_them() {
    // A refusal takes milliseconds; a blocked open or an endless read would take forever.
    const PROMPT: std::time::Duration = std::time::Duration::from_secs(10);
    let signed = "[[rule]]\nscope = \"registry.example/team\"\nrequire = \"signed\"\nkeys = [\"team.pub\"]\n";
    let node = Node::new("127.0.0.1:5000", &[("team.toml", signed)], None);
    let key = node.policy_dir().join("team.pub");
    assert!(Command::new("mkfifo").arg(&key).status().expect("run mkfifo").success());
    let config = node.config();
    let run = process::run_within(&["policy", "check", "--config", config.to_str().unwrap()], PROMPT);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let policy_file = node.policy_dir().join("team.toml");
    let expected =
        format!("{}:4: key file {}: is a FIFO (named pipe), not a regular file", policy_file.display(), key.display());
    assert!(run.stderr.contains(&expected), "{}", run.stderr);

    std::fs::remove_file(&key).unwrap();
    std::fs::write(&key, unused_public_pem()).unwrap();
    std::fs::write(&config, format!("policy_dir = {:?}\npolicy_json = \"/dev/zero\"\n", node.policy_dir())).unwrap();
    let run = process::run_within(&["policy", "check", "--config", config.to_str().unwrap()], PROMPT);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("/dev/zero: is a character device, not a regular file"), "{}", run.stderr);
}

/// `verify` names a rule as "file:line", where operators look it up.
fn assert_at_a_line_of(shown: &str, file: &std::path::Path, image: &str) {
    let line = shown.strip_prefix(&format!("{}:", file.display()));
    let numbered = line.is_some_and(|n| n.parse::<usize>().is_ok_and(|n| n > 0));
    assert!(numbered, "{image}: rule shown at {shown:?}, not at a line of {}", file.display());
}

/// The trusted roots keyless rules verify against, listed with their authorities' windows;
/// one whose CAs stop within 30 days is a warning, which does not fail the check.
#[test]
fn policy_check_lists_the_trusted_roots_in_force_and_warns_before_one_expires() {
    use sigstore_verify::trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT;
    let mut soon: Value = serde_json::from_str(SIGSTORE_PRODUCTION_TRUSTED_ROOT).unwrap();
    let end = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 20);
    for ca in soon["certificateAuthorities"].as_array_mut().unwrap() {
        ca["validFor"]["end"] = end.to_string().into();
    }
    let fulcio_pem: String = serde_json::from_str::<Value>(SIGSTORE_PRODUCTION_TRUSTED_ROOT).unwrap()
        ["certificateAuthorities"][1]["certChain"]["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let der = sigstore_verify::types::DerCertificate::from_base64(c["rawBytes"].as_str().unwrap()).unwrap();
            der.to_pem()
        })
        .collect();
    let identity = "identities = [{ issuer = \"https://accounts.example.com\", subject = \"dev@example.com\" }]\n";
    let rules = format!(
        "[[rule]]\nscope = \"r.example/a\"\nrequire = \"signed\"\n{identity}\n\
         [[rule]]\nscope = \"r.example/b\"\nrequire = \"signed\"\ntrusted_root = \"soon.json\"\n{identity}"
    );
    let rekor = unused_public_pem();
    let soon = soon.to_string();
    let files =
        [("10-keyless.toml", rules.as_str()), ("soon.json", &soon), ("fulcio.pem", &fulcio_pem), ("rekor.pub", &rekor)];
    let json = serde_json::json!({"default": [{"type": "reject"}], "transports": {"docker": {"r.example/c": [{
        "type": "sigstoreSigned", "signedIdentity": {"type": "matchRepository"},
        "fulcio": {"caPath": "policy.d/fulcio.pem", "oidcIssuer": "https://accounts.example.com", "subjectEmail": "dev@example.com"},
        "rekorPublicKeyPath": "policy.d/rekor.pub"}]}}});
    let node = Node::new("127.0.0.1:5000", &files, Some(&json));
    let config = node.config();
    let run = pullgate(&["policy", "check", "-c", config.to_str().unwrap()]);
    assert_eq!(run.code, 0, "warnings do not fail the check:\n{}{}", run.stdout, run.stderr);
    let soon_path = node.policy_dir().join("soon.json").display().to_string();
    let expected = [
        "trusted root: the built-in Sigstore public-good root (1 rule, from sigstore-trust-root 0.15.1, newest authority from 20".to_owned(),
        "  certificate authority: https://fulcio.sigstore.dev, valid 2022-04-13 to -, certificates until 20".to_owned(),
        "  transparency log: https://rekor.sigstore.dev, valid 2021-01-12 to -".to_owned(),
        "  CT log: https://ctfe.sigstore.dev/2022, valid 2022-10-20 to -".to_owned(),
        "  timestamp authority: https://timestamp.sigstore.dev/api/v1/timestamp, valid 2025-07-04 to -".to_owned(),
        format!("trusted root: {soon_path} (1 rule, newest authority from 20"),
        format!("trusted root: the fulcio CA and Rekor keys of {} (1 rule", node.policy_json().display()),
        "  certificate authority: policy.json fulcio CA #1, valid 2022-04-13 to 2031-10-05".to_owned(),
        "  transparency log: policy.json fulcio Rekor key #1, valid - to -".to_owned(),
        format!(
            "warning: {soon_path}: trusted root {soon_path}: certificate authority https://fulcio.sigstore.dev: stops being valid on {} (in 19 days)",
            end.strftime("%Y-%m-%d")
        ),
    ];
    for line in expected {
        assert!(run.stdout.contains(&line), "{line}\n{}", run.stdout);
    }

    let run = pullgate(&["policy", "check", "-c", config.to_str().unwrap(), "--output", "json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = run.json();
    let roots = report["trusted_roots"].as_array().unwrap();
    let sources: Vec<&str> = roots.iter().map(|r| r["source"].as_str().unwrap()).collect();
    assert_eq!(sources, ["built-in", "file", "policy-json"], "{report:#}");
    assert_eq!(roots[0]["built_in_from"], "sigstore-trust-root 0.15.1", "{report:#}");
    let ca = &roots[1]["authorities"][0];
    assert_eq!(
        (ca["kind"].as_str(), ca["valid_until"].as_str()),
        (Some("certificate-authority"), Some(end.to_string().as_str())),
        "{ca:#}"
    );
    let root_warnings: Vec<&Value> =
        report["warnings"].as_array().unwrap().iter().filter(|w| w["kind"] == "root").collect();
    assert_eq!(root_warnings.len(), 2, "both CAs of the file root: {report:#}");
    assert!(root_warnings.iter().all(|w| w["file"] == soon_path.as_str()), "{report:#}");
}
