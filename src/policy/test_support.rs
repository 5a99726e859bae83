//! Test-only helpers: throwaway directories and real public keys.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

// Throwaway P-256 and Ed25519 public keys (private halves discarded), made with openssl.
pub const KEY_A: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEd2n3LEAcaXEPXtMZTkN3SMPdgoDz
GRGzFcR1qKdNbT9+Xc/A3Ees7XYbtcIlWsO9abvg3DrxPsKXNhrNPV4EgA==
-----END PUBLIC KEY-----
";
pub const KEY_B: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEOZrSbg3HelDPqUV8am/9XgwIttZm
R02idvVIfC/nmEx7Ogsz7h7lk7eAxVpkDooJJDrEraV4vVT8Pf6IWwkGZw==
-----END PUBLIC KEY-----
";
pub const KEY_ED: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAHUo5l4U+jaESK8rKSQwX0yX0WCE2OkSs0FXbRVQlszE=
-----END PUBLIC KEY-----
";

/// The Sigstore public-good Fulcio CA certificates in force (intermediate and root), as a
/// containers-policy.json `caPath` file holds them: real certificates, without a network.
pub fn public_good_fulcio_pem() -> String {
    use sigstore_verify::trust_root::{SIGSTORE_PRODUCTION_TRUSTED_ROOT, TrustedRoot};
    let root = TrustedRoot::from_json(SIGSTORE_PRODUCTION_TRUSTED_ROOT).unwrap();
    let current = root.certificate_authorities.iter().find(|ca| ca.valid_for.is_some_and(|w| w.end.is_none()));
    current.unwrap().cert_chain.certificates.iter().map(|c| c.raw_bytes.to_pem()).collect()
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under the system temp dir, removed on drop.
pub struct TestDir(PathBuf);

impl TestDir {
    pub fn new() -> TestDir {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pullgate-policy-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TestDir(dir)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }

    /// Write `content` to `rel`, creating parent directories.
    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let path = self.0.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, content).unwrap();
        path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
