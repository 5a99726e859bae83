//! Keyless signatures through `pullgate verify-bundle`, against a sigstore instance made by
//! the test (test_sigstore.py: a Fulcio-like CA, a CT log and a Rekor-like log key, all
//! generated per run). Each spoiled part must be refused by the check that guards it, and the
//! refusal must name that check; the sigstore-conformance suite covers the rest offline (see
//! docs/keyless.md).

use std::path::{Path, PathBuf};
use std::process::Command;

const SUBJECT: &str = "signer@example.test";
const ISSUER: &str = "https://issuer.example.test";

/// A fresh test instance and one signature, spoiled as `case` says.
fn material(case: &str, extra: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("m");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/keyless/test_sigstore.py");
    let status = Command::new("python3")
        .arg(&script)
        .arg(&out)
        .args(["--case", case])
        .args(extra)
        .status()
        .expect("python3 with cryptography");
    assert!(status.success(), "test_sigstore.py --case {case}");
    (dir, out)
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn verify_bundle(dir: &Path, subject: &str, issuer: &str, artifact: &str) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_pullgate"))
        .arg("verify-bundle")
        .arg("--bundle")
        .arg(dir.join("bundle.json"))
        .args(["--certificate-identity", subject, "--certificate-oidc-issuer", issuer])
        .arg("--trusted-root")
        .arg(dir.join("trusted_root.json"))
        .arg(artifact)
        .output()
        .expect("run pullgate");
    Run {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn artifact(dir: &Path) -> String {
    dir.join("artifact.txt").to_string_lossy().into_owned()
}

fn assert_refused(run: &Run, check: &str) {
    assert_eq!(run.code, 1, "expected a refusal naming {check:?}; stdout {} stderr {}", run.stdout, run.stderr);
    assert!(run.stderr.contains(check), "refusal should name {check:?}: {}", run.stderr);
}

#[test]
fn the_right_identity_is_accepted_and_reported() {
    let (_tmp, dir) = material("good", &[]);
    let run = verify_bundle(&dir, SUBJECT, ISSUER, &artifact(&dir));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains(&format!("identity {SUBJECT}, issuer {ISSUER}, signed at 20")), "{}", run.stdout);
}

#[test]
fn a_workflow_uri_identity_is_matched_exactly() {
    let uri = "https://github.com/example/app/.github/workflows/release.yml@refs/tags/v1";
    let (_tmp, dir) = material("good", &["--subject-uri", uri]);
    assert_eq!(verify_bundle(&dir, uri, ISSUER, &artifact(&dir)).code, 0);
    // A prefix is not the identity: matching is exact.
    let prefix = "https://github.com/example/app/.github/workflows/release.yml";
    assert_refused(&verify_bundle(&dir, prefix, ISSUER, &artifact(&dir)), "identity mismatch");
}

#[test]
fn another_subject_or_issuer_is_refused() {
    let (_tmp, dir) = material("good", &[]);
    let file = artifact(&dir);
    assert_refused(&verify_bundle(&dir, "someone@example.test", ISSUER, &file), "identity mismatch");
    assert_refused(&verify_bundle(&dir, SUBJECT, "https://other.example.test", &file), "issuer mismatch");
}

#[test]
fn each_spoiled_part_is_refused_by_its_check() {
    let cases = [
        ("expired", "certificate chain is invalid"),
        ("foreign-ca", "certificate chain is invalid"),
        ("no-sct", "missing SCT"),
        ("forged-sct", "SCT signature verification failed"),
        ("forged-set", "SET verification failed"),
        ("no-set", "must have an inclusion promise"),
        ("other-artifact", "artifact hash mismatch for hashedrekord entry"),
    ];
    for (case, check) in cases {
        let (_tmp, dir) = material(case, &[]);
        let run = verify_bundle(&dir, SUBJECT, ISSUER, &artifact(&dir));
        assert_eq!(run.code, 1, "{case}: {}", run.stderr);
        assert!(run.stderr.contains(check), "{case} should be refused by {check:?}: {}", run.stderr);
    }
}

#[test]
fn a_digest_stands_for_the_artifact() {
    use sha2::Digest as _;
    let (_tmp, dir) = material("good", &[]);
    let bytes = std::fs::read(dir.join("artifact.txt")).expect("artifact");
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)));
    assert_eq!(verify_bundle(&dir, SUBJECT, ISSUER, &digest).code, 0);
    let other = format!("sha256:{}", hex::encode(sha2::Sha256::digest(b"something else")));
    assert_refused(&verify_bundle(&dir, SUBJECT, ISSUER, &other), "artifact");
}

/// The root's validity windows count at the signing time, not now: a CA whose window closed
/// before the signature was logged vouches for nothing, though its certificate is still valid.
#[test]
fn a_ca_outside_its_trusted_window_at_signing_time_is_refused() {
    let (_tmp, dir) = material("good", &[]);
    let path = dir.join("trusted_root.json");
    let mut root: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).expect("root")).expect("root JSON");
    let window = &mut root["certificateAuthorities"][0]["validFor"];
    window["start"] = "2020-01-01T00:00:00Z".into();
    window["end"] = "2021-01-01T00:00:00Z".into();
    std::fs::write(&path, serde_json::to_vec(&root).expect("JSON")).expect("write root");
    assert_refused(
        &verify_bundle(&dir, SUBJECT, ISSUER, &artifact(&dir)),
        "no trusted certificate authority is valid at",
    );
}

#[test]
fn unusable_inputs_are_errors_not_verdicts() {
    let (_tmp, dir) = material("good", &[]);
    std::fs::write(dir.join("trusted_root.json"), "{\"mediaType\": 1}").expect("write");
    let run = verify_bundle(&dir, SUBJECT, ISSUER, &artifact(&dir));
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("trusted root unusable"), "{}", run.stderr);

    let (_tmp, dir) = material("good", &[]);
    std::fs::write(dir.join("bundle.json"), "not json").expect("write");
    assert_refused(&verify_bundle(&dir, SUBJECT, ISSUER, &artifact(&dir)), "not a sigstore bundle");
}
