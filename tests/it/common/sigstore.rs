//! Keyless signing by the real cosign, offline: a test sigstore instance (a Fulcio-like CA, a
//! CT log key and a Rekor-like log key, made per test by tests/it/keyless/sigstore_stack.py)
//! and, for each signing, a local Fulcio and Rekor on 127.0.0.1 that cosign talks to. cosign
//! generates the ephemeral key, gets its certificate, logs the signature and pushes the `.sig`
//! manifest (or a v3 bundle) itself; only what the stack issues is spoiled, as [`Spoil`] says.
//!
//! The route: `cosign sign --fulcio-url --rekor-url --identity-token FILE
//! --use-signing-config=false` (the service-URL flags are deprecated in v3 but are the only way
//! to name services without a signing config from TUF). cosign reads the token's claims
//! without verifying it; SIGSTORE_CT_LOG_PUBLIC_KEY_FILE keeps it from fetching a trusted root
//! over TUF, and with no trusted root it does not verify what it signed, so spoiled material
//! gets through to the registry. [`Sigstore::cosign_verify`] checks the result with the real
//! `cosign verify` against the instance's trusted_root.json: the fixture is right independently
//! of pullgate.
#![allow(dead_code)] // each test uses a different subset

use std::fs;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use super::cosign::run;
use super::lab::peer;

/// The identity tests sign with unless told otherwise.
pub const SUBJECT: &str = "signer@example.test";
pub const ISSUER: &str = "https://issuer.example.test";

/// One part of a keyless signature spoiled, each guarded by its own check in a verifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spoil {
    /// Everything well-formed.
    None,
    /// The certificate's validity ended before the log entry's integrated time.
    ExpiredCertificate,
    /// The certificate carries no embedded SCT.
    NoSct,
    /// The embedded SCT is signed by a CT log key outside the trusted root.
    ForgedSct,
    /// The SET is signed by a log key outside the trusted root.
    ForgedSet,
    /// The log answers without a SET: cosign writes a bundle annotation whose SET is empty.
    EmptySet,
    /// Nothing logged (`--tlog-upload=false`): no bundle annotation at all.
    NoTlogEntry,
    /// The certificate is issued by a CA outside the trusted root.
    ForeignCa,
}

impl Spoil {
    /// sigstore_stack.py's `--case`.
    fn case(self) -> &'static str {
        match self {
            Spoil::None | Spoil::NoTlogEntry => "good",
            Spoil::ExpiredCertificate => "expired",
            Spoil::NoSct => "no-sct",
            Spoil::ForgedSct => "forged-sct",
            Spoil::ForgedSet => "forged-set",
            Spoil::EmptySet => "empty-set",
            Spoil::ForeignCa => "foreign-ca",
        }
    }
}

fn stack_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/keyless/sigstore_stack.py")
}

/// A test sigstore instance in a temp dir, which is also cosign's HOME: no docker credentials,
/// TUF cache or config of the host reaches it.
pub struct Sigstore {
    dir: tempfile::TempDir,
}

impl Sigstore {
    pub fn new() -> Sigstore {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cmd = Command::new("python3");
        cmd.arg(stack_script()).arg("init").arg(dir.path().join("instance"));
        run(cmd, "sigstore_stack.py init");
        Sigstore { dir }
    }

    /// The instance's `trusted_root.json`: its CA, CT log and Rekor-like log.
    pub fn trusted_root(&self) -> PathBuf {
        self.dir.path().join("instance/trusted_root.json")
    }

    /// A keyless `cosign sign` of `registry/repo@digest` (plain HTTP), for [`SUBJECT`] and
    /// [`ISSUER`], to adjust before [`KeylessSigning::run`].
    pub fn signing(&self, registry: &str, repo: &str, digest: &str) -> KeylessSigning<'_> {
        KeylessSigning {
            sigstore: self,
            image: format!("{registry}/{repo}@{digest}"),
            subject: SUBJECT.into(),
            issuer: ISSUER.into(),
            spoil: Spoil::None,
            bundle: false,
            with_chain: false,
            extra: Vec::new(),
        }
    }

    /// The real `cosign verify` of `image`, offline against the instance's trusted root, for
    /// `subject` and `issuer`: Ok with its output, or Err with why it refused.
    pub fn cosign_verify(&self, image: &str, subject: &str, issuer: &str) -> Result<String, String> {
        let root = self.trusted_root();
        let mut cmd = self.cosign();
        cmd.args(["verify", "--certificate-identity", subject, "--certificate-oidc-issuer", issuer]);
        cmd.arg("--trusted-root").arg(&root).args(["--allow-http-registry", image]);
        let out = cmd.output().expect("run cosign verify");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if out.status.success() { Ok(text) } else { Err(text) }
    }

    fn cosign(&self) -> Command {
        let home = self.dir.path();
        let mut cmd = Command::new(peer("cosign"));
        cmd.current_dir(home).env_clear();
        cmd.env("PATH", std::env::var_os("PATH").unwrap_or_default()).env("HOME", home);
        cmd.env("DOCKER_CONFIG", home.join("docker")).env("TUF_ROOT", home.join("tuf"));
        cmd
    }
}

/// One keyless `cosign sign`, in the legacy format (a `.sig` manifest whose layer carries the
/// certificate, chain and Rekor bundle annotations) unless [`KeylessSigning::bundle`].
pub struct KeylessSigning<'a> {
    sigstore: &'a Sigstore,
    image: String,
    subject: String,
    issuer: String,
    spoil: Spoil,
    bundle: bool,
    with_chain: bool,
    extra: Vec<String>,
}

impl KeylessSigning<'_> {
    /// The identity token's claims: an email (a SAN email), a URI (a SAN URI, as for GitHub
    /// workflow identities) or anything else (a SAN DNS name, as a private CA issues to a
    /// host), and the OIDC issuer.
    pub fn identity(mut self, subject: &str, issuer: &str) -> Self {
        (self.subject, self.issuer) = (subject.into(), issuer.into());
        self
    }

    pub fn spoil(mut self, spoil: Spoil) -> Self {
        self.spoil = spoil;
        self
    }

    /// The payload's `docker-reference`, when containerd pulls by another name (a front).
    pub fn claiming(mut self, docker_reference: &str) -> Self {
        self.extra.extend(["--sign-container-identity".into(), docker_reference.into()]);
        self
    }

    /// cosign v3's default format: a sigstore bundle (certificate, tlog entry with inclusion
    /// promise and proof) attached as an OCI referrer.
    pub fn bundle(mut self) -> Self {
        self.bundle = true;
        self
    }

    /// The `--certificate`/`--certificate-chain` route instead of Fulcio, which is the only
    /// one that fills the `chain` annotation (cosign keeps only the leaf Fulcio returns): cosign
    /// makes a key pair, the instance issues a certificate for it (the issuing CA as the
    /// chain), `cosign sign-blob` signs cosign's own payload for the image and logs it, and
    /// `cosign attach signature` writes the `.sig` layer with all three annotations. (`cosign
    /// sign --certificate-chain` checks the chain but, in v3.1.3's legacy format, writes it
    /// empty.) Legacy format only.
    pub fn with_chain(mut self) -> Self {
        self.with_chain = true;
        self
    }

    pub fn run(self) {
        let instance = self.sigstore.dir.path().join("instance");
        let stack = Stack::start(&instance, self.spoil.case());
        let work = tempfile::tempdir_in(self.sigstore.dir.path()).expect("signing dir");
        let token = work.path().join("token");
        fs::write(&token, identity_token(&self.subject, &self.issuer)).expect("write token");
        if self.with_chain {
            return self.run_with_chain(work.path(), &token, &stack);
        }
        let mut cmd = self.sigstore.cosign();
        cmd.env("SIGSTORE_CT_LOG_PUBLIC_KEY_FILE", instance.join("ctfe.pub"));
        cmd.args(["sign", "--yes", "--use-signing-config=false", "--allow-http-registry"]);
        cmd.args(["--fulcio-url", &stack.url, "--rekor-url", &stack.url]).arg("--identity-token").arg(&token);
        cmd.arg(format!("--new-bundle-format={}", self.bundle));
        cmd.args(self.tlog_upload()).args(&self.extra).arg(&self.image);
        run(cmd, &format!("keyless cosign sign of {} ({:?})", self.image, self.spoil));
    }

    fn tlog_upload(&self) -> &'static [&'static str] {
        if self.spoil == Spoil::NoTlogEntry { &["--tlog-upload=false"] } else { &[] }
    }

    fn run_with_chain(&self, work: &Path, token: &Path, stack: &Stack) {
        assert!(!self.bundle && self.extra.is_empty(), "the chain route writes the legacy format only");
        let cosign = |args: &[&str]| {
            let mut cmd = self.sigstore.cosign();
            cmd.current_dir(work).env("COSIGN_PASSWORD", COSIGN_PASSWORD).args(args);
            run(cmd, &format!("cosign {}", args.join(" ")))
        };
        cosign(&["generate-key-pair"]);
        let mut issue = Command::new("python3");
        issue.arg(stack_script()).arg("issue").arg(self.sigstore.dir.path().join("instance"));
        issue.args(["--case", self.spoil.case(), "--public-key", "cosign.pub"]).arg("--token").arg(token);
        issue.current_dir(work).args(["--out", "."]);
        run(issue, "sigstore_stack.py issue");
        fs::write(work.join("payload.json"), cosign(&["generate", &self.image]).trim_end()).expect("write payload");
        let certificate = ["--certificate", "leaf.pem", "--certificate-chain", "chain.pem"];
        let sign =
            ["sign-blob", "--yes", "--key", "cosign.key", "--use-signing-config=false", "--rekor-url", &stack.url];
        let outputs = ["--new-bundle-format=false", "--bundle", "local.json", "--output-signature", "payload.sig"];
        cosign(&[&sign[..], &certificate, &outputs, self.tlog_upload(), &["payload.json"]].concat());
        let attach = ["attach", "signature", "--payload", "payload.json", "--signature", "payload.sig"];
        let rekor = ["--rekor-response", "local.json", "--allow-http-registry", &self.image];
        cosign(&[&attach[..], &certificate, &rekor].concat());
    }
}

/// What cosign encrypts the `--certificate` route's key with, and decrypts it with.
const COSIGN_PASSWORD: &str = "pullgate-test-key";

/// An unsigned JWT with the claims cosign reads (it never verifies the token: Fulcio would).
/// cosign takes a token inline only if it parses as an RS256 JWT, so it is passed as a file.
fn identity_token(subject: &str, issuer: &str) -> String {
    let claims = if subject.contains('@') && !subject.contains("://") {
        json!({"iss": issuer, "sub": subject, "email": subject, "email_verified": true, "aud": "sigstore"})
    } else {
        json!({"iss": issuer, "sub": subject, "aud": "sigstore"})
    };
    let part = |value: serde_json::Value| URL_SAFE_NO_PAD.encode(value.to_string());
    format!("{}.{}.{}", part(json!({"alg": "none", "typ": "JWT"})), part(claims), URL_SAFE_NO_PAD.encode("unsigned"))
}

/// sigstore_stack.py serving Fulcio and Rekor for one signing; stops when dropped (its stdin
/// closes).
struct Stack {
    child: Child,
    stdin: Option<ChildStdin>,
    url: String,
}

impl Stack {
    fn start(instance: &Path, case: &str) -> Stack {
        let mut child = Command::new("python3")
            .arg(stack_script())
            .arg("serve")
            .arg(instance)
            .args(["--case", case])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run sigstore_stack.py serve");
        let stdin = child.stdin.take();
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stack stdout")).read_line(&mut line).expect("read stack port");
        let port: u16 = line.trim().parse().unwrap_or_else(|_| panic!("sigstore_stack.py printed {line:?}"));
        Stack { child, stdin, url: format!("http://127.0.0.1:{port}") }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
