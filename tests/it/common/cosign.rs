//! Signing for the tests. Well-formed signatures come from the real cosign ([`CosignKey`],
//! [`push_signed`]); [`HostileSigner`] and the manifest builders below exist only for what
//! cosign would never write (malformed, oversized, lying payloads), pushed with skopeo or plain
//! HTTP PUTs via curl. Panics freely: it is test code.
#![allow(dead_code)] // each test binary uses a different subset

use std::fs;
use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::lab::Lab;

pub const SIMPLESIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
pub const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// A home-made P-256 signer for signatures cosign would never produce: payloads it would not
/// write (hostile JSON, padding, lies about the digest) signed by a key the policy trusts, so
/// the test reaches the check it means to hit. Never for a well-formed signature: that is
/// [`CosignKey`]'s job.
pub struct HostileSigner {
    signing: p256::ecdsa::SigningKey,
}

impl HostileSigner {
    pub fn generate() -> HostileSigner {
        HostileSigner { signing: p256::ecdsa::SigningKey::random(&mut rand_core::OsRng) }
    }

    /// PEM SubjectPublicKeyInfo, as in cosign.pub.
    pub fn public_pem(&self) -> String {
        self.signing.verifying_key().to_public_key_pem(LineEnding::LF).expect("encode public key")
    }

    pub fn write_public_pem(&self, path: &Path) {
        fs::write(path, self.public_pem()).expect("write public key");
    }

    /// ASN.1 DER ECDSA signature over SHA-256(payload), as cosign produces.
    pub fn sign_payload(&self, payload: &[u8]) -> Vec<u8> {
        let sig: p256::ecdsa::Signature = self.signing.sign(payload);
        sig.to_der().as_bytes().to_vec()
    }
}

/// The SimpleSigning payload `cosign sign` creates for `docker_reference` (repository, no tag).
pub fn payload(docker_reference: &str, digest: &str) -> Vec<u8> {
    let doc = json!({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": null,
    });
    serde_json::to_vec(&doc).expect("serialize payload")
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex_lower(&Sha256::digest(bytes)))
}

/// The tag cosign stores signatures under: "sha256:abc…" → "sha256-abc….sig".
pub fn signature_tag(image_digest: &str) -> String {
    format!("{}.sig", image_digest.replacen(':', "-", 1))
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A manifest plus every blob it references (config first, then one payload per layer).
pub struct Artifact {
    pub manifest: Vec<u8>,
    pub media_type: String,
    pub blobs: Vec<Vec<u8>>,
}

impl Artifact {
    pub fn manifest_digest(&self) -> String {
        sha256_digest(&self.manifest)
    }
}

fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    json!({"mediaType": media_type, "size": bytes.len(), "digest": sha256_digest(bytes)})
}

/// The OCI signature manifest cosign writes: one simplesigning layer per (payload, DER signature).
pub fn signature_manifest(sigs: &[(Vec<u8>, Vec<u8>)]) -> Artifact {
    let diff_ids: Vec<String> = sigs.iter().map(|(p, _)| sha256_digest(p)).collect();
    let config = serde_json::to_vec(&json!({
        "architecture": "", "os": "", "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("serialize config");
    let layers: Vec<serde_json::Value> = sigs
        .iter()
        .map(|(payload, sig)| {
            let mut layer = descriptor(SIMPLESIGNING_MEDIA_TYPE, payload);
            layer["annotations"] = json!({ SIGNATURE_ANNOTATION: STANDARD.encode(sig) });
            layer
        })
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "config": descriptor(OCI_CONFIG_MEDIA_TYPE, &config),
        "layers": layers,
    });
    let mut blobs = vec![config];
    blobs.extend(sigs.iter().map(|(p, _)| p.clone()));
    Artifact {
        manifest: serde_json::to_vec(&manifest).expect("serialize manifest"),
        media_type: OCI_MANIFEST_MEDIA_TYPE.into(),
        blobs,
    }
}

/// Pushes the signatures for `image_digest` to `REGISTRY/REPO:sha256-<hex>.sig` over plain HTTP.
/// Returns the signature manifest digest.
pub fn push_signatures(registry: &str, repo: &str, image_digest: &str, sigs: &[(Vec<u8>, Vec<u8>)]) -> String {
    push_signatures_with_creds(registry, repo, image_digest, sigs, None)
}

/// `creds` is "user:password".
pub fn push_signatures_with_creds(
    registry: &str,
    repo: &str,
    image_digest: &str,
    sigs: &[(Vec<u8>, Vec<u8>)],
    creds: Option<&str>,
) -> String {
    let artifact = signature_manifest(sigs);
    push_artifact(registry, repo, &signature_tag(image_digest), &artifact, creds);
    artifact.manifest_digest()
}

/// Writes `artifact` as an OCI layout and copies it with skopeo, digests preserved.
pub fn push_artifact(registry: &str, repo: &str, tag: &str, artifact: &Artifact, creds: Option<&str>) {
    let work = tempfile::tempdir().expect("temp dir");
    let layout = work.path().join("layout");
    write_oci_layout(&layout, artifact);
    let mut cmd = skopeo(&work);
    cmd.args(["copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false"]);
    cmd.arg("--dest-authfile").arg(work.path().join("auth.json"));
    if let Some(creds) = creds {
        cmd.args(["--dest-creds", creds]);
    }
    cmd.arg(format!("oci:{}:pushed", layout.display())).arg(format!("docker://{registry}/{repo}:{tag}"));
    run(cmd, "skopeo copy");
}

/// skopeo with its state in `work`: it must not consult the host's policy, registries or auth
/// files.
fn skopeo(work: &tempfile::TempDir) -> Command {
    let policy = work.path().join("policy.json");
    fs::write(&policy, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).expect("write policy");
    fs::write(work.path().join("registries.conf"), "").expect("write registries.conf");
    fs::create_dir_all(work.path().join("registries.d")).expect("create registries.d");
    let mut cmd = Command::new("skopeo");
    cmd.env("CONTAINERS_REGISTRIES_CONF", work.path().join("registries.conf"));
    cmd.arg("--policy").arg(&policy).arg("--registries.d").arg(work.path().join("registries.d"));
    cmd.arg("--tmpdir").arg(work.path());
    cmd
}

pub fn write_oci_layout(dir: &Path, artifact: &Artifact) {
    let blob_dir = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blob_dir).expect("create blob dir");
    for blob in artifact.blobs.iter().chain(std::iter::once(&artifact.manifest)) {
        let digest = sha256_digest(blob);
        fs::write(blob_dir.join(&digest["sha256:".len()..]), blob).expect("write blob");
    }
    let mut entry = descriptor(&artifact.media_type, &artifact.manifest);
    entry["annotations"] = json!({"org.opencontainers.image.ref.name": "pushed"});
    let index =
        json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [entry]});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).expect("serialize index")).expect("write index");
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("write oci-layout");
}

/// Uploads a blob (POST for an upload session, then one PUT with the bytes); for hostile
/// manifests that skopeo would refuse to copy.
pub fn put_blob(registry: &str, repo: &str, bytes: &[u8], creds: Option<&str>) -> String {
    let digest = sha256_digest(bytes);
    let headers = curl_send(
        "POST",
        &format!("http://{registry}/v2/{repo}/blobs/uploads/"),
        "application/octet-stream",
        b"",
        creds,
    );
    let location = headers
        .lines()
        .find_map(|l| {
            l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("location")).map(|(_, v)| v.trim().to_string())
        })
        .expect("upload session Location header");
    let location = if location.starts_with('/') { format!("http://{registry}{location}") } else { location };
    let separator = if location.contains('?') { '&' } else { '?' };
    curl_send("PUT", &format!("{location}{separator}digest={digest}"), "application/octet-stream", bytes, creds);
    digest
}

/// PUTs raw manifest bytes under `reference` (tag or digest) with the given Content-Type. The
/// registry still checks that referenced blobs exist, so put those first with `put_blob`.
pub fn put_manifest(registry: &str, repo: &str, reference: &str, media_type: &str, bytes: &[u8], creds: Option<&str>) {
    let url = format!("http://{registry}/v2/{repo}/manifests/{reference}");
    curl_send("PUT", &url, media_type, bytes, creds);
}

pub fn push_artifact_http(registry: &str, repo: &str, reference: &str, artifact: &Artifact, creds: Option<&str>) {
    for blob in &artifact.blobs {
        put_blob(registry, repo, blob, creds);
    }
    put_manifest(registry, repo, reference, &artifact.media_type, &artifact.manifest, creds);
}

/// Returns the response headers followed by the body.
fn curl_send(method: &str, url: &str, content_type: &str, body: &[u8], creds: Option<&str>) -> String {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    fs::write(file.path(), body).expect("write request body");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--fail-with-body", "-D", "-", "-X", method, "-H"]).arg(format!("Content-Type: {content_type}"));
    cmd.arg("--data-binary").arg(format!("@{}", file.path().display()));
    if let Some(creds) = creds {
        cmd.args(["-u", creds]);
    }
    cmd.arg(url);
    run(cmd, &format!("curl {method} {url}"))
}

pub struct HttpResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// Plain-HTTP GET with curl, so the test checks the registry independently of our own client.
pub fn http_get(url: &str, accept: &str, creds: Option<&str>) -> HttpResponse {
    let out = tempfile::NamedTempFile::new().expect("temp file");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-L", "-H"]).arg(format!("Accept: {accept}"));
    cmd.arg("-o").arg(out.path()).args(["-w", "%{http_code}\n%{content_type}"]);
    if let Some(creds) = creds {
        cmd.args(["-u", creds]);
    }
    cmd.arg(url);
    let stdout = run(cmd, &format!("curl GET {url}"));
    let (status, content_type) = stdout.split_once('\n').unwrap_or((&stdout, ""));
    HttpResponse {
        status: status.trim().parse().expect("curl status code"),
        content_type: content_type.trim().to_string(),
        body: fs::read(out.path()).expect("read response body"),
    }
}

/// Runs `cmd` to completion; its stdout, or a panic naming `what` with both outputs.
pub fn run(mut cmd: Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

// === the real cosign CLI ===

/// What `cosign generate-key-pair` encrypts test keys with, and `cosign sign` decrypts them
/// with (both read COSIGN_PASSWORD).
const COSIGN_PASSWORD: &str = "pullgate-test-key";

/// A key pair made by the real cosign (`lab.sh install` builds it), in a temp dir that is also
/// cosign's HOME: no docker credentials, sigstore cache or config of the host reaches it.
pub struct CosignKey {
    dir: tempfile::TempDir,
}

impl CosignKey {
    pub fn generate() -> CosignKey {
        let key = CosignKey { dir: tempfile::tempdir().expect("temp dir") };
        key.cosign(&["generate-key-pair"]);
        key
    }

    /// The key of `signer`, imported into cosign (`cosign import-key-pair`): for tests that
    /// need cosign's well-formed signatures and a hostile one by the same trusted key.
    pub fn import(signer: &HostileSigner) -> CosignKey {
        let key = CosignKey { dir: tempfile::tempdir().expect("temp dir") };
        let private = signer.signing.to_pkcs8_pem(LineEnding::LF).expect("encode private key");
        fs::write(key.dir.path().join("signer.pem"), private.as_bytes()).expect("write private key");
        key.cosign(&["import-key-pair", "--yes", "--key", "signer.pem", "--output-key-prefix", "cosign"]);
        key
    }

    /// cosign.pub: PEM SubjectPublicKeyInfo.
    pub fn public_pem(&self) -> String {
        fs::read_to_string(self.dir.path().join("cosign.pub")).expect("read cosign.pub")
    }

    pub fn write_public_pem(&self, path: &Path) {
        fs::write(path, self.public_pem()).expect("write public key");
    }

    /// `cosign sign` of `registry/repo@digest`, the payload naming `registry/repo`.
    pub fn sign(&self, registry: &str, repo: &str, digest: &str) {
        self.signing(registry, repo, digest).run();
    }

    /// `cosign sign-blob` of `payload`, offline: the DER signature cosign makes, for tests that
    /// judge signatures without a registry (an in-memory one).
    pub fn sign_blob(&self, payload: &[u8]) -> Vec<u8> {
        fs::write(self.dir.path().join("payload"), payload).expect("write payload");
        let flags = ["--tlog-upload=false", "--new-bundle-format=false", "--use-signing-config=false"];
        let out = self.cosign(&[&["sign-blob", "--key", "cosign.key", "--yes"][..], &flags, &["payload"]].concat());
        STANDARD.decode(out.trim()).expect("cosign sign-blob prints base64")
    }

    /// A `cosign sign` of `registry/repo@digest` to adjust before [`Signing::run`].
    pub fn signing(&self, registry: &str, repo: &str, digest: &str) -> Signing<'_> {
        Signing { key: self, image: format!("{registry}/{repo}@{digest}"), extra: Vec::new() }
    }

    /// A signature for `identity@digest` made by the real cosign where `identity`'s registry
    /// cannot be reached (a name that only a mirror serves): `cosign generate` writes the
    /// payload for that name offline, `cosign sign-blob` signs it, and `cosign attach
    /// signature` stores both beside `registry/repo@digest`, or in `signatures_repo` (cosign's
    /// COSIGN_REPOSITORY) when given. `registry` is plain HTTP.
    pub fn sign_as(&self, identity: &str, registry: &str, repo: &str, digest: &str, signatures_repo: Option<&str>) {
        let payload = self.cosign(&["generate", &format!("{identity}@{digest}")]);
        fs::write(self.dir.path().join("payload.json"), payload.trim_end()).expect("write payload.json");
        self.cosign(&[
            "sign-blob",
            "--key",
            "cosign.key",
            "--yes",
            "--tlog-upload=false",
            "--new-bundle-format=false",
            "--use-signing-config=false",
            "--output-signature",
            "payload.sig",
            "payload.json",
        ]);
        let image = format!("{registry}/{repo}@{digest}");
        let args = ["attach", "signature", "--payload", "payload.json", "--signature", "payload.sig"];
        let mut args = args.to_vec();
        args.extend(["--allow-http-registry", &image]);
        match signatures_repo {
            Some(repository) => self.cosign_with(&args, &[("COSIGN_REPOSITORY", repository)]),
            None => self.cosign(&args),
        };
    }

    fn cosign(&self, args: &[&str]) -> String {
        self.cosign_with(args, &[])
    }

    fn cosign_with(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let home = self.dir.path();
        let mut cmd = Command::new(super::lab::peer("cosign"));
        cmd.args(args).current_dir(home).env_clear();
        cmd.env("PATH", std::env::var_os("PATH").unwrap_or_default()).env("HOME", home);
        cmd.env("DOCKER_CONFIG", home.join("docker")).env("TUF_ROOT", home.join("tuf"));
        cmd.env("COSIGN_PASSWORD", COSIGN_PASSWORD).envs(env.iter().copied());
        run(cmd, &format!("cosign {}", args.join(" ")))
    }
}

/// One `cosign sign --key`, offline (no transparency log, no Fulcio) and in the format pullgate
/// reads: a simple-signing payload under the `sha256-….sig` tag. cosign v3 writes a sigstore
/// bundle by default; the legacy format needs the bundle and the signing config turned off.
/// Signing an image that already has signatures adds a layer to its signature manifest, as
/// cosign does for a second signer.
pub struct Signing<'a> {
    key: &'a CosignKey,
    image: String,
    extra: Vec<String>,
}

impl Signing<'_> {
    /// The payload's `docker-reference` (`--sign-container-identity`): the name containerd pulls
    /// by when that is not where cosign pushes, e.g. a front's address, or another repository
    /// for an identity mismatch.
    pub fn claiming(mut self, docker_reference: &str) -> Self {
        self.extra.extend(["--sign-container-identity".into(), docker_reference.into()]);
        self
    }

    /// `-a key=value`: an entry in the payload's free-form `optional` section.
    pub fn annotate(mut self, key: &str, value: &str) -> Self {
        self.extra.extend(["-a".into(), format!("{key}={value}")]);
        self
    }

    /// Basic-auth credentials for the registry, "user:password".
    pub fn creds(mut self, creds: &str) -> Self {
        let (user, password) = creds.split_once(':').expect("creds are user:password");
        self.extra.extend([format!("--registry-username={user}"), format!("--registry-password={password}")]);
        self
    }

    /// The registry serves HTTPS with a certificate from this CA.
    pub fn ca(mut self, ca_pem: &Path) -> Self {
        self.extra.push(format!("--registry-cacert={}", ca_pem.display()));
        self
    }

    pub fn run(self) {
        let mut args = vec!["sign"];
        args.extend(OFFLINE_WITH_KEY);
        args.extend(["--new-bundle-format=false"]);
        args.extend(self.extra.iter().map(String::as_str));
        args.push(&self.image);
        self.key.cosign(&args);
    }
}

/// What every signing run here passes: the test key, no prompt, no transparency log (offline),
/// and the plain-HTTP lab registry. `--tlog-upload=false` alone is refused while cosign's
/// default signing config is in use, so that is turned off too.
const OFFLINE_WITH_KEY: &[&str] =
    &["--key", "cosign.key", "--yes", "--tlog-upload=false", "--use-signing-config=false", "--allow-http-registry"];

/// Signatures in the formats cosign v3 writes besides the `.sig` tag.
impl CosignKey {
    /// `cosign sign` of `registry/repo@digest` as cosign v3 does by default: a sigstore bundle
    /// (v0.3) attached as an OCI referrer, under the referrers tag `sha256-<hex>` on a registry
    /// without the referrers API (docker-registry 2.8). Offline: `--tlog-upload=false` alone is
    /// refused while the default signing config is in use, so it is turned off too.
    pub fn sign_bundle(&self, registry: &str, repo: &str, digest: &str) {
        let image = format!("{registry}/{repo}@{digest}");
        self.cosign(&[&["sign"], OFFLINE_WITH_KEY, &[&image]].concat());
    }

    /// `cosign sign` in the legacy simple-signing format, pushed as an OCI referrer instead of
    /// under the `.sig` tag (`--registry-referrers-mode=oci-1-1`, an experimental flag).
    pub fn sign_referrer(&self, registry: &str, repo: &str, digest: &str) {
        let image = format!("{registry}/{repo}@{digest}");
        let legacy_as_referrer = ["--new-bundle-format=false", "--registry-referrers-mode=oci-1-1"];
        let args = [&["sign"], OFFLINE_WITH_KEY, &legacy_as_referrer, &[&image]].concat();
        self.cosign_with(&args, &[("COSIGN_EXPERIMENTAL", "1")]);
    }

    /// `cosign sign-blob --bundle` of `blob`, offline: a sigstore bundle (v0.3) holding a
    /// message signature over the blob's SHA-256, as cosign v3 writes one for a blob. cosign
    /// never attaches such a bundle to an image (`cosign attach` takes only DSSE bundles).
    pub fn sign_blob_bundle(&self, blob: &[u8]) -> Vec<u8> {
        fs::write(self.dir.path().join("blob"), blob).expect("write blob");
        let flags = ["--tlog-upload=false", "--use-signing-config=false", "--bundle", "blob.bundle"];
        self.cosign(&[&["sign-blob", "--key", "cosign.key", "--yes"][..], &flags, &["blob"]].concat());
        fs::read(self.dir.path().join("blob.bundle")).expect("read the bundle cosign wrote")
    }

    /// `cosign attest` of a `predicate_type` attestation (e.g. "slsaprovenance1") to
    /// `registry/repo@digest`: a bundle referrer like a signature's, with another predicate.
    pub fn attest(&self, registry: &str, repo: &str, digest: &str, predicate_type: &str) {
        let image = format!("{registry}/{repo}@{digest}");
        fs::write(self.dir.path().join("predicate.json"), br#"{"buildType":"pullgate-test"}"#)
            .expect("write predicate");
        let predicate = ["--type", predicate_type, "--predicate", "predicate.json"];
        self.cosign(&[&["attest"], OFFLINE_WITH_KEY, &predicate, &[&image]].concat());
    }
}

/// The one way tests make a signed image: pushes `repo:tag` (made from `seed`) to the lab's open
/// registry and signs it with the real cosign, the payload naming `pulled_from/repo` (the lab
/// registry, or the front containerd pulls through). Returns the image's digest.
pub fn push_signed(lab: &Lab, key: &CosignKey, pulled_from: &str, name_tag: &str, seed: &str) -> String {
    let digest = lab.push_image(name_tag, seed);
    let repo = name_tag.split_once(':').map_or(name_tag, |(repo, _)| repo);
    key.signing(&lab.registry, repo, &digest).claiming(&format!("{pulled_from}/{repo}")).run();
    digest
}

/// Copies the signatures of `from_repo@from_digest` to the signature tag of
/// `to_repo@to_digest`, bytes unchanged: a valid signature replayed onto another image.
pub fn copy_signatures(registry: &str, from_repo: &str, from_digest: &str, to_repo: &str, to_digest: &str) {
    let from = format!("docker://{registry}/{from_repo}:{}", signature_tag(from_digest));
    let to = format!("docker://{registry}/{to_repo}:{}", signature_tag(to_digest));
    let work = tempfile::tempdir().expect("temp dir");
    let mut cmd = skopeo(&work);
    cmd.args(["copy", "--quiet", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false"]);
    cmd.arg("--authfile").arg(work.path().join("auth.json")).arg(&from).arg(&to);
    run(cmd, "skopeo copy");
}

/// PEM of a fresh P-256 public key nobody signs with, for configs that only need a valid key.
pub fn unused_public_pem() -> String {
    HostileSigner::generate().public_pem()
}
