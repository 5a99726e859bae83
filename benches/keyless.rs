//! CPU cost of one keyless verification: certificate chain, SCT, Rekor SET, entry binding,
//! signature and identity, on material from the test instance (tests/it/keyless/test_sigstore.py).
//!
//! `cargo bench --bench keyless` prints the median and 90th percentile per verification of a
//! digest (the daemon's case: the artifact is already hashed), and the cost of loading the
//! trusted root, which a reload pays once.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pullgate::verify::keyless::{self, Signer, Subject, TrustRoot};
use sha2::Digest as _;

const ROUNDS: usize = 2000;

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("m");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/keyless/test_sigstore.py");
    let status = Command::new("python3").arg(&script).arg(&out).status().expect("python3 with cryptography");
    assert!(status.success(), "test_sigstore.py");
    let root_json = std::fs::read_to_string(out.join("trusted_root.json")).expect("root");
    let bundle = std::fs::read_to_string(out.join("bundle.json")).expect("bundle");
    let artifact = std::fs::read(out.join("artifact.txt")).expect("artifact");
    let digest = keyless_digest(&artifact);
    let signer =
        Signer::Identity { subject: "signer@example.test".into(), issuer: "https://issuer.example.test".into() };

    let load = time(200, || {
        TrustRoot::from_json(&root_json).expect("root");
    });
    let root = TrustRoot::from_json(&root_json).expect("root");
    let verify = time(ROUNDS, || {
        keyless::verify_bundle(&root, &bundle, Subject::Digest(digest), &signer).expect("verified");
    });
    println!("| keyless, per signature (P-256 chain, SCT, SET) | median {:?} | p90 {:?} |", verify.0, verify.1);
    println!("| trusted root load (test root) | median {:?} | p90 {:?} |", load.0, load.1);
}

fn keyless_digest(artifact: &[u8]) -> sigstore_verify::types::Sha256Hash {
    sigstore_verify::types::Sha256Hash::from_hex(&hex::encode(sha2::Sha256::digest(artifact))).expect("digest")
}

/// Median and 90th percentile of `rounds` runs of `f`.
fn time(rounds: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    let mut samples: Vec<Duration> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    samples.sort();
    (samples[rounds / 2], samples[rounds * 9 / 10])
}
