//! The verification matrix: images pushed and signed in a lab registry, the policies that judge
//! them, and the verdict each must get. Shared by the daemon's end-to-end test
//! (tests/verification.rs) and `pullgate verify`'s (tests/cli.rs), so both judge the same cases.
//!
//! | image (under the lab registry)   | rule                          | signatures              | verdict  |
//! |----------------------------------|-------------------------------|-------------------------|----------|
//! | team/signed:v1                   | team: signed by A             | A                       | accepted |
//! | team/unsigned:v1                 | team: signed by A             | none                    | rejected |
//! | team/by-b:v1                     | team: signed by A             | B                       | rejected |
//! | team/copied:v1                   | team: signed by A             | A's, copied from signed | rejected |
//! | team/renamed:v1                  | team: match-repository        | A, payload names other  | rejected |
//! | loose/renamed:v1                 | loose: identity = ignore      | A, payload names other  | accepted |
//! | pair/one:v1                      | pair: A and C, threshold 2 ¹  | A                       | rejected |
//! | pair/both:v1                     | pair: A and C, threshold 2 ¹  | A, C                    | accepted |
//! | open/unsigned:v1                 | open: accept                  | none                    | accepted |
//! | closed/signed:v1                 | closed: reject                | A                       | rejected |
//! | stray/signed:v1                  | (no rule)                     | A                       | rejected |
//!
//! ¹ In containers-policy.json: two `sigstoreSigned` requirements in one scope, one per key.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::cosign::{self, CosignKey};
use super::lab::Lab;

/// The matrix's images, pushed and signed once per test process (about twenty skopeo runs)
/// in a lab every matrix test shares: they only pull through pullgate, whose verdicts are
/// the same for every test, so one containerd serves them all.
pub struct Shared {
    pub lab: Lab,
    pub keys: Keys,
    /// Holds `a.pub` and `c.pub`, which `policy_json` names.
    pub key_dir: PathBuf,
    /// The matrix policy in its containers-policy.json form.
    pub policy_json: serde_json::Value,
}

/// The shared matrix, built by the first test that asks (the others wait for it). It lives
/// as long as the process: a static is never dropped, so the lab's daemons are stopped by
/// lab.sh's watchdog when the test process exits; they are plain processes, not tasks of one
/// test's runtime, so every test, on whichever runtime, can use them.
pub fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let lab = Lab::start();
        let keys = Keys::generate();
        let key_dir = lab.dir.path().join("matrix-keys");
        std::fs::create_dir_all(&key_dir).expect("matrix key dir");
        let policy_json = populate_for_policy_json(&lab, &keys, &key_dir);
        Shared { lab, keys, key_dir, policy_json }
    })
}

/// (image under the lab registry, accepted, words the refusal must contain)
pub type Row = (&'static str, bool, &'static str);

pub const MATRIX: &[Row] = &[
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

/// A and C are trusted by the policies; B never is. Made and used by the real cosign.
pub struct Keys {
    pub a: CosignKey,
    pub b: CosignKey,
    pub c: CosignKey,
}

impl Keys {
    pub fn generate() -> Keys {
        Keys { a: CosignKey::generate(), b: CosignKey::generate(), c: CosignKey::generate() }
    }
}

/// Pushes `repo:v1` and returns its digest.
fn push(lab: &Lab, repo: &str) -> String {
    lab.push_image(&format!("{repo}:v1"), repo)
}

/// Signs `digest` of `repo` with each key (cosign adds one layer per signer); the payload
/// claims `claimed_repo`.
fn sign(lab: &Lab, repo: &str, digest: &str, claimed_repo: &str, keys: &[&CosignKey]) {
    for key in keys {
        key.signing(&lab.registry, repo, digest).claiming(&format!("{}/{claimed_repo}", lab.registry)).run();
    }
}

/// Pushes and signs every image of the matrix.
pub fn populate(lab: &Lab, keys: &Keys) {
    let signed = push(lab, "team/signed");
    sign(lab, "team/signed", &signed, "team/signed", &[&keys.a]);
    push(lab, "team/unsigned");
    let by_b = push(lab, "team/by-b");
    sign(lab, "team/by-b", &by_b, "team/by-b", &[&keys.b]);
    // A valid signature by A, but for team/signed's digest, stored under copied's .sig tag.
    let copied = push(lab, "team/copied");
    cosign::copy_signatures(&lab.registry, "team/signed", &signed, "team/copied", &copied);
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

impl Shared {
    /// pullgate (in-process) in front of the shared lab's containerd, judging by the matrix's
    /// native policy.
    pub async fn pullgate(&self) -> super::pullgate::Running {
        let mut config = pullgate::config::Config { upstream: self.lab.containerd_sock.clone(), ..Default::default() };
        config.registry.insecure = vec![self.lab.registry.clone()];
        let policy = native_policy(&self.lab.registry);
        let (a, c) = (self.keys.a.public_pem(), self.keys.c.public_pem());
        let files = [("a.pub", a.as_str()), ("c.pub", c.as_str()), ("10-team.toml", policy.as_str())];
        super::pullgate::start_with(config, &files).await
    }
}

/// The matrix's rules as a native TOML policy file; keys `a.pub` and `c.pub` lie beside it.
pub fn native_policy(registry: &str) -> String {
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

/// The matrix's images pushed to `lab`, keys A and C written into `dir`, and the matrix policy
/// in its containers-policy.json form, naming those key files.
pub fn populate_for_policy_json(lab: &Lab, keys: &Keys, dir: &Path) -> serde_json::Value {
    populate(lab, keys);
    let (a, c) = (dir.join("a.pub"), dir.join("c.pub"));
    keys.a.write_public_pem(&a);
    keys.c.write_public_pem(&c);
    containers_policy_json(&lab.registry, &a, &c)
}

/// The same rules in containers-policy.json, as far as it can say them; `a` and `c` hold the
/// keys. "A and C, threshold 2" is two requirements in one scope: every one must hold.
fn containers_policy_json(registry: &str, a: &Path, c: &Path) -> serde_json::Value {
    let signed_by = |key: &Path| serde_json::json!({"type": "sigstoreSigned", "keyPath": key, "signedIdentity": {"type": "matchRepository"}});
    serde_json::json!({
        "default": [{"type": "reject"}],
        "transports": {"docker": {
            format!("{registry}/team"): [signed_by(a)],
            format!("{registry}/pair"): [signed_by(a), signed_by(c)],
            format!("{registry}/open"): [{"type": "insecureAcceptAnything"}],
            format!("{registry}/closed"): [{"type": "reject"}],
        }}
    })
}

/// The rows containers-policy.json can express: it has no `ignore` identity, and its default
/// rejects, so "no rule matches" cannot happen either.
pub fn policy_json_rows() -> Vec<Row> {
    let expressible = |repo: &str| ["team/", "pair/", "open/", "closed/"].iter().any(|prefix| repo.starts_with(prefix));
    MATRIX.iter().copied().filter(|(repo, ..)| expressible(repo)).collect()
}
