//! Images signed the way cosign v3 signs by default: a sigstore bundle attached as an OCI
//! referrer, pulled through pullgate by the real containerd 2.x from the real docker-registry
//! twice: directly, where (docker-registry 2.8 having no referrers API) cosign and pullgate use
//! the referrers tag schema, an index of referrers under the tag `sha256-<hex>`; and through a
//! front that implements the referrers API (`GET /v2/<name>/referrers/<digest>`, answered with
//! the index cosign wrote) and hides the referrers tag. Every refusal names the format.
//!
//! | image            | signed with                                          | verdict                   |
//! |------------------|------------------------------------------------------|---------------------------|
//! | b/signed         | `cosign sign` (v3 default), trusted key              | pulled, pinned            |
//! | b/multi          | `cosign sign` at the index digest of a multi-arch image | pulled, pinned         |
//! | b/message        | `cosign sign-blob --bundle` of the manifest, attached as a referrer | a message signature never counts |
//! | b/unsigned       | nothing                                              | no signatures found       |
//! | b/platform       | `cosign sign` of one platform manifest of a multi-arch image only | no signatures found |
//! | b/wrong-key      | `cosign sign`, another key                           | does not verify           |
//! | b/other-digest   | the trusted key's bundle for b/decoy, attached here  | names another digest      |
//! | b/attested       | `cosign attest` (SLSA provenance) only               | an attestation            |
//! | b/altered        | cosign's bundle with its DSSE payload altered        | does not verify           |
//! | b/missing        | referrer index naming a deleted manifest             | referrer is missing       |
//! | strict/signed    | `cosign sign`, under a rule that needs an identity   | names no image            |
//! | strict/referrer  | `cosign sign` simple-signing, pushed as a referrer   | pulled, pinned (referrers tag pass only: its payload names the registry, not the front) |

use crate::common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use common::cosign::{self, CosignKey};
use common::cri;
use common::fake_registry::{FakeRegistry, Reply, Request};
use common::front::{Front, Hostile};
use common::lab::{Format, Lab};
use common::store;
use pullgate::config::Config;
use pullgate::decision::{Gate, PullRequest, Verdict};
use pullgate::policy::{Policy, SharedPolicy};
use pullgate::registry::limits::MAX_REFERRER_PAGES;
use pullgate::registry::{HttpRegistry, RegistryConfig};
use pullgate::verify::{Discovery, Format as VerifyFormat};

const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";

/// Bundles count under `b` (digest-only signatures accepted); `strict` keeps the default
/// identity rule, which a bundle cannot satisfy.
fn policy(registry: &str) -> String {
    format!(
        "[[rule]]\nscope = \"{registry}/b\"\nrequire = \"signed\"\nkeys = [\"cosign.pub\"]\nidentity = \"ignore\"\n\n\
         [[rule]]\nscope = \"{registry}/strict\"\nrequire = \"signed\"\nkeys = [\"cosign.pub\"]\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn cosign_v3_bundles_are_verified_through_the_referrers_tag_and_the_referrers_api() {
    let lab = Lab::start_containerd2(false);
    let (key, other) = (CosignKey::generate(), CosignKey::generate());
    let reg = lab.registry.clone();
    let mut images = Vec::new();
    let mut push = |repo: &str, format: Format| {
        let digest = lab.push_image_with(&format!("{repo}:v1"), repo, format);
        images.push((repo.to_owned(), digest.clone()));
        digest
    };
    let signed = push("b/signed", Format::Oci);
    key.sign_bundle(&reg, "b/signed", &signed);
    let multi = push("b/multi", Format::OciIndex);
    key.sign_bundle(&reg, "b/multi", &multi);
    let message = push("b/message", Format::Oci);
    let message_bundle = key.sign_blob_bundle(&manifest_bytes(&reg, "b/message", &message));
    attach_bundle(&reg, "b/message", &message, &message_bundle);
    push("b/unsigned", Format::Oci);
    let platform = push("b/platform", Format::OciIndex);
    key.sign_bundle(&reg, "b/platform", &first_platform(&reg, "b/platform", &platform));
    let wrong = push("b/wrong-key", Format::Oci);
    other.sign_bundle(&reg, "b/wrong-key", &wrong);
    let decoy = push("b/decoy", Format::Oci);
    key.sign_bundle(&reg, "b/decoy", &decoy);
    let target = push("b/other-digest", Format::Oci);
    attach_bundle(&reg, "b/other-digest", &target, &only_bundle(&reg, "b/decoy", &decoy));
    let attested = push("b/attested", Format::Oci);
    key.attest(&reg, "b/attested", &attested, "slsaprovenance1");
    let altered = push("b/altered", Format::Oci);
    key.sign_bundle(&reg, "b/altered", &altered);
    attach_bundle(&reg, "b/altered", &altered, &with_altered_payload(&only_bundle(&reg, "b/altered", &altered)));
    let missing = push("b/missing", Format::Oci);
    key.sign_bundle(&reg, "b/missing", &missing);
    delete_manifest(&reg, "b/missing", &only_referrer(&reg, "b/missing", &missing));
    let strict = push("strict/signed", Format::Oci);
    key.sign_bundle(&reg, "strict/signed", &strict);
    let referred = push("strict/referrer", Format::Oci);
    key.sign_referrer(&reg, "strict/referrer", &referred);

    let api = Front::start(&reg);
    api.trust_in(&lab);
    for (repo, digest) in &images {
        serve_referrers_api(&api, &reg, repo, digest);
    }
    let mut config = Config { upstream: lab.containerd_sock.clone(), ..Config::default() };
    config.registry.insecure = vec![reg.clone(), api.addr()];
    let (pem, policy) = (key.public_pem(), format!("{}\n{}", policy(&reg), policy(&api.addr())));
    let pullgate = common::pullgate::start_with(config, &[("cosign.pub", &pem), ("policy.toml", &policy)]).await;

    let api_host = api.addr();
    for (host, via) in [(reg.as_str(), "referrers tag"), (api_host.as_str(), "referrers API")] {
        let mut accepted = vec![("b/signed", &signed), ("b/multi", &multi)];
        if via == "referrers tag" {
            accepted.push(("strict/referrer", &referred));
        }
        for (repo, digest) in accepted {
            let image = format!("{host}/{repo}:v1");
            let pulled = cri::images(&pullgate.socket).pull_image(cri::pull_request(&image, None)).await;
            pulled.unwrap_or_else(|status| panic!("{image} refused: {}\n{}", status.message(), lab.logs()));
            let (verified, config) = store::verified(&reg, repo, "v1").await;
            assert_eq!(&verified, digest, "{repo}: the registry's v1 is the signed digest");
            store::assert_pinned(&lab, &image, &verified, &config).await;
        }

        let refusals = [
            ("b/unsigned", "no signatures found (no .sig tag, no sigstore bundle".to_owned()),
            ("b/platform", "no signatures found (no .sig tag, no sigstore bundle".to_owned()),
            ("b/wrong-key", "sigstore bundle: signature does not verify with any of the 1 trusted key".to_owned()),
            ("b/other-digest", format!("sigstore bundle: signed statement names {decoy}, not {target}")),
            ("b/message", "sigstore bundle: holds a message signature, which signs bytes, not an image".to_owned()),
            (
                "b/attested",
                "sigstore bundle: an attestation (predicate type \"https://slsa.dev/provenance/v1\")".to_owned(),
            ),
            ("b/altered", "sigstore bundle: signature does not verify".to_owned()),
            ("b/missing", "bundle referrer sha256:".to_owned()),
            ("b/missing", format!("listed by the {via} is missing")),
            ("strict/signed", "sigstore bundle: names no image, only its digest".to_owned()),
        ];
        for (repo, needle) in refusals {
            let image = format!("{host}/{repo}:v1");
            let refused = cri::images(&pullgate.socket).pull_image(cri::pull_request(&image, None)).await;
            let status = refused.expect_err(&format!("{image} was pulled"));
            let message = status.message();
            assert!(message.starts_with("SignatureValidationFailed: "), "{image}: {message}");
            assert!(message.contains(&needle), "{image}: {message:?} does not say {needle:?}");
            assert_eq!(store::record_target(&lab, &image).await, None, "{image}: containerd stored a refused image");
        }
    }
    for (repo, digest) in images.iter().filter(|(repo, _)| !["b/decoy", "strict/referrer"].contains(&repo.as_str())) {
        let listed = api.count(|seen| seen.path == format!("/v2/{repo}/referrers/{digest}") && !seen.is_containerd());
        assert!(listed > 0, "pullgate never asked the referrers API for {repo}");
    }
    pullgate.stop().await;
}

/// Makes `front` answer the referrers API for `repo@digest` as a registry implementing it
/// would: with the index cosign keeps under the referrers tag (an empty index when there is
/// none), while the tag itself is hidden, so only the API can list the referrers.
fn serve_referrers_api(front: &Front, registry: &str, repo: &str, digest: &str) {
    let tag = digest.replacen(':', "-", 1);
    let stored = cosign::http_get(&format!("http://{registry}/v2/{repo}/manifests/{tag}"), OCI_INDEX, None);
    let index = match stored.status {
        200 => stored.body,
        _ => serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})).expect("index"),
    };
    let path = format!("/v2/{repo}/referrers/{digest}");
    front.hostile(&path, Hostile::Body(200, OCI_INDEX.to_owned(), index.into()));
    let unknown = br#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#;
    let hidden = Hostile::Body(404, "application/json".to_owned(), unknown.to_vec().into());
    front.hostile(&format!("/v2/{repo}/manifests/{tag}"), hidden);
}

/// The manifest bytes of `repo@digest`, as `cosign sign-blob` signs them.
fn manifest_bytes(registry: &str, repo: &str, digest: &str) -> Vec<u8> {
    let url = format!("http://{registry}/v2/{repo}/manifests/{digest}");
    let got = cosign::http_get(&url, common::front::ACCEPT_MANIFESTS, None);
    assert_eq!(cosign::sha256_digest(&got.body), digest, "{url}");
    got.body
}

/// The digest of the first platform manifest the index `repo@digest` lists.
fn first_platform(registry: &str, repo: &str, digest: &str) -> String {
    let index: serde_json::Value = serde_json::from_slice(&manifest_bytes(registry, repo, digest)).expect("index");
    index["manifests"][0]["digest"].as_str().expect("entry digest").to_owned()
}

/// What cosign pushed to docker-registry for one bundle-signed image, served again by an
/// in-process fake registry that follows the distribution spec where the tests say so.
struct Pushed {
    digest: String,
    manifest: (String, Vec<u8>),
    /// The referrer index entries cosign wrote.
    entries: serde_json::Value,
    referrer: String,
    referrer_manifest: Vec<u8>,
    bundle_digest: String,
    bundle: Vec<u8>,
}

impl Pushed {
    /// `b/api:v1` pushed to the lab registry and signed with `cosign sign` (a bundle).
    fn sign(lab: &Lab, key: &CosignKey) -> Pushed {
        let reg = &lab.registry;
        let digest = lab.push_image("b/api:v1", "api");
        key.sign_bundle(reg, "b/api", &digest);
        let manifest =
            cosign::http_get(&format!("http://{reg}/v2/b/api/manifests/v1"), common::front::ACCEPT_MANIFESTS, None);
        let referrer = only_referrer(reg, "b/api", &digest);
        let url = format!("http://{reg}/v2/b/api/manifests/{referrer}");
        let referrer_manifest = cosign::http_get(&url, cosign::OCI_MANIFEST_MEDIA_TYPE, None).body;
        let bundle = only_bundle(reg, "b/api", &digest);
        Pushed {
            entries: referrer_index(reg, "b/api", &digest)["manifests"].clone(),
            manifest: (manifest.content_type, manifest.body),
            bundle_digest: cosign::sha256_digest(&bundle),
            digest,
            referrer,
            referrer_manifest,
            bundle,
        }
    }

    /// The image, its referrer manifest and bundle under `b/<repo>` for any repo; referrer
    /// lists come from `referrers`, given the request and the `b/<repo>` it is for.
    fn fake(self, referrers: impl Fn(&Request, &str) -> Reply + Send + Sync + 'static) -> impl Fn(&Request) -> Reply {
        move |request: &Request| {
            let Some(rest) = request.path().strip_prefix("/v2/b/") else {
                return if request.path() == "/v2/" {
                    Reply::ok("application/json", b"{}")
                } else {
                    Reply::status(404)
                };
            };
            let Some((repo, kind_reference)) = rest.split_once('/') else { return Reply::status(404) };
            match kind_reference.split_once('/') {
                Some(("manifests", "v1")) => Reply::ok(&self.manifest.0, &self.manifest.1),
                Some(("referrers", digest)) if digest == self.digest => referrers(request, repo),
                Some(("manifests", referrer)) if referrer == self.referrer && repo != "gone" => {
                    Reply::ok(cosign::OCI_MANIFEST_MEDIA_TYPE, &self.referrer_manifest)
                }
                Some(("blobs", blob)) if blob == self.bundle_digest => {
                    Reply::ok("application/octet-stream", &self.bundle)
                }
                _ => Reply::status(404),
            }
        }
    }
}

fn index_of(entries: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})).expect("index")
}

/// A gate deciding pulls of `registry`'s images under [`policy`], trusting `key`.
fn gate(registry: &str, key: &CosignKey) -> Gate<HttpRegistry> {
    let dir = tempfile::tempdir().expect("policy dir");
    std::fs::write(dir.path().join("cosign.pub"), key.public_pem()).expect("write key");
    std::fs::write(dir.path().join("policy.toml"), policy(registry)).expect("write policy");
    let policy = Policy::load(dir.path(), None).expect("policy loads");
    let config = RegistryConfig { insecure: vec![registry.to_owned()], ..RegistryConfig::default() };
    let registry = Arc::new(HttpRegistry::new(&config).expect("registry client"));
    Gate::new(SharedPolicy::new(policy), registry, Duration::from_secs(10))
}

fn pull(registry: &str, repo: &str) -> PullRequest {
    PullRequest { image: format!("{registry}/b/{repo}:v1"), ..Default::default() }
}

/// A registry with the referrers API (an in-process fake following the distribution spec)
/// serving what cosign pushed to docker-registry: the referrers list comes from
/// `GET /v2/<name>/referrers/<digest>`, and there is no referrers tag to fall back on. A list
/// naming a manifest the registry does not have counts for nothing and says so.
#[tokio::test(flavor = "multi_thread")]
async fn the_referrers_api_is_used_where_the_registry_has_it() {
    let lab = Lab::start();
    let key = CosignKey::generate();
    let pushed = Pushed::sign(&lab, &key);
    let (digest, referrer) = (pushed.digest.clone(), pushed.referrer.clone());
    let index = index_of(pushed.entries.clone());
    let fake = FakeRegistry::start(pushed.fake(move |_, repo| match repo {
        "api" | "gone" => Reply::ok(OCI_INDEX, &index),
        _ => Reply::status(404),
    }))
    .await;
    let gate = gate(&fake.authority(), &key);

    let accepted = gate.decide(&pull(&fake.authority(), "api")).await;
    assert_eq!(accepted.verdict, Verdict::Accepted, "{}", accepted.reason);
    let signatures = &accepted.evaluation.as_ref().expect("an evaluation").signatures;
    assert_eq!(signatures.len(), 1, "{signatures:?}");
    assert_eq!(signatures[0].format, VerifyFormat::Bundle(Discovery::ReferrersApi));
    let tag = digest.replacen(':', "-", 1);
    assert!(fake.count(&format!("/v2/b/api/referrers/{digest}")) > 0, "the referrers API was never asked");
    assert!(fake.count(&format!("/v2/b/api/manifests/{tag}")) > 0, "the referrers tag was not asked at once");

    // `gone` lists the referrer, but its manifest is only under `api`.
    let refused = gate.decide(&pull(&fake.authority(), "gone")).await;
    assert_eq!(refused.verdict, Verdict::Rejected, "{}", refused.reason);
    assert!(
        refused.reason.contains(&format!("bundle referrer {referrer} listed by the referrers API is missing")),
        "{}",
        refused.reason
    );
}

/// The referrers API pages with `Link: <…>; rel="next"`. pullgate follows the next pages, up to
/// `MAX_REFERRER_PAGES`, on the same list of the same host only: a signature on a later page
/// counts; one beyond the bound, or behind a link to another host, is not seen, and the
/// refusal says that the list was not read to its end.
#[tokio::test(flavor = "multi_thread")]
async fn referrers_api_pages_are_followed_within_a_bound_on_the_same_host() {
    let lab = Lab::start();
    let key = CosignKey::generate();
    let pushed = Pushed::sign(&lab, &key);
    let digest = pushed.digest.clone();
    let elsewhere = FakeRegistry::start(|_: &Request| Reply::status(404)).await;
    let foreign = format!("http://{}/v2/b/far/referrers/{digest}?page=2", elsewhere.authority());
    let (signature, sbom) = (
        pushed.entries[0].clone(),
        json!({
            "mediaType": cosign::OCI_MANIFEST_MEDIA_TYPE, "artifactType": "application/spdx+json", "size": 2,
            "digest": cosign::sha256_digest(b"{}"),
        }),
    );
    let last = MAX_REFERRER_PAGES;
    let fake = FakeRegistry::start(pushed.fake(move |request, repo| {
        let page: usize = request.params().get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
        let path = request.path().to_owned();
        // `paged`: the signature on the last page read; `beyond`: on the page after it;
        // `loop`: every page names itself as the next; `far`: the next page is on another host.
        let (signed_page, next) = match repo {
            "paged" => (last, (page < last).then(|| format!("{path}?page={}", page + 1))),
            "beyond" => (last + 1, (page <= last).then(|| format!("{path}?page={}", page + 1))),
            "loop" => (0, Some(format!("{path}?page=1"))),
            "far" => (2, (page == 1).then(|| foreign.clone())),
            _ => return Reply::status(404),
        };
        let entries = if page == signed_page { json!([sbom, signature]) } else { json!([sbom]) };
        let reply = Reply::ok(OCI_INDEX, &index_of(entries));
        match next {
            Some(next) => reply.header("Link", &format!("<{next}>; rel=\"next\"")),
            None => reply,
        }
    }))
    .await;
    let gate = gate(&fake.authority(), &key);
    let pages = |repo: &str| fake.count(&format!("/v2/b/{repo}/referrers/"));

    let accepted = gate.decide(&pull(&fake.authority(), "paged")).await;
    assert_eq!(accepted.verdict, Verdict::Accepted, "{}", accepted.reason);
    assert_eq!(pages("paged"), MAX_REFERRER_PAGES, "pages read");

    for (repo, read) in [("beyond", MAX_REFERRER_PAGES), ("loop", MAX_REFERRER_PAGES), ("far", 1)] {
        let refused = gate.decide(&pull(&fake.authority(), repo)).await;
        assert_eq!(refused.verdict, Verdict::Rejected, "{repo}: {}", refused.reason);
        assert_eq!(pages(repo), read, "{repo}: pages read");
        let reason = &refused.reason;
        assert!(reason.starts_with("no signature by a trusted key: no signatures found"), "{repo}: {reason}");
        assert!(reason.contains("referrers API: not read to its end"), "{repo}: {reason}");
        let why = if repo == "far" { "leaves the referrers list" } else { "more than 8 pages" };
        assert!(reason.contains(why), "{repo}: {reason}");
        assert!(refused.answered.iter().any(|a| a.contains("not read to its end")), "{repo}: {:?}", refused.answered);
    }
    assert_eq!(elsewhere.requests().len(), 0, "pullgate followed a next page to another host");
}

// === home-made referrers, for what cosign never writes ===

/// The referrer index cosign keeps under the referrers tag of `digest`.
fn referrer_index(registry: &str, repo: &str, digest: &str) -> serde_json::Value {
    let tag = digest.replacen(':', "-", 1);
    let got = cosign::http_get(&format!("http://{registry}/v2/{repo}/manifests/{tag}"), OCI_INDEX, None);
    assert_eq!(got.status, 200, "no referrers tag for {repo}@{digest}");
    serde_json::from_slice(&got.body).expect("referrer index JSON")
}

/// The digest of the one referrer cosign listed for `digest`.
fn only_referrer(registry: &str, repo: &str, digest: &str) -> String {
    let index = referrer_index(registry, repo, digest);
    let entries = index["manifests"].as_array().expect("index entries");
    assert_eq!(entries.len(), 1, "{index}");
    entries[0]["digest"].as_str().expect("entry digest").to_owned()
}

/// The bundle JSON of the one bundle referrer cosign attached to `digest`.
fn only_bundle(registry: &str, repo: &str, digest: &str) -> Vec<u8> {
    let referrer = only_referrer(registry, repo, digest);
    let url = format!("http://{registry}/v2/{repo}/manifests/{referrer}");
    let manifest = cosign::http_get(&url, "application/vnd.oci.image.manifest.v1+json", None);
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.body).expect("referrer manifest JSON");
    assert_eq!(manifest["artifactType"], BUNDLE_MEDIA_TYPE, "{manifest}");
    let layer = manifest["layers"][0]["digest"].as_str().expect("bundle layer digest");
    let blob = cosign::http_get(&format!("http://{registry}/v2/{repo}/blobs/{layer}"), "*/*", None);
    assert_eq!(blob.status, 200);
    blob.body
}

/// `bundle` with one byte of its DSSE payload changed (the statement's predicate), the
/// signature left as cosign made it.
fn with_altered_payload(bundle: &[u8]) -> Vec<u8> {
    let mut bundle: serde_json::Value = serde_json::from_slice(bundle).expect("bundle JSON");
    let encoded = bundle["dsseEnvelope"]["payload"].as_str().expect("DSSE payload");
    let mut statement: serde_json::Value =
        serde_json::from_slice(&STANDARD.decode(encoded).expect("base64 payload")).expect("statement JSON");
    statement["predicate"] = json!({"altered": true});
    bundle["dsseEnvelope"]["payload"] = STANDARD.encode(serde_json::to_vec(&statement).expect("statement")).into();
    serde_json::to_vec(&bundle).expect("bundle")
}

/// Attaches `bundle` to `subject` the way cosign does (empty config, one bundle layer,
/// `subject`), and makes the referrers tag list it alone.
fn attach_bundle(registry: &str, repo: &str, subject: &str, bundle: &[u8]) {
    let (config, layer) = (b"{}", bundle);
    cosign::put_blob(registry, repo, config, None);
    cosign::put_blob(registry, repo, layer, None);
    let subject_manifest = cosign::http_get(
        &format!("http://{registry}/v2/{repo}/manifests/{subject}"),
        common::front::ACCEPT_MANIFESTS,
        None,
    );
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": cosign::OCI_MANIFEST_MEDIA_TYPE,
        "artifactType": BUNDLE_MEDIA_TYPE,
        "config": {"mediaType": EMPTY_CONFIG, "size": 2, "digest": cosign::sha256_digest(config)},
        "layers": [{"mediaType": BUNDLE_MEDIA_TYPE, "size": layer.len(), "digest": cosign::sha256_digest(layer)}],
        "subject": {"mediaType": subject_manifest.content_type, "size": subject_manifest.body.len(), "digest": subject},
    });
    let manifest = serde_json::to_vec(&manifest).expect("manifest");
    let digest = cosign::sha256_digest(&manifest);
    cosign::put_manifest(registry, repo, &digest, cosign::OCI_MANIFEST_MEDIA_TYPE, &manifest, None);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": cosign::OCI_MANIFEST_MEDIA_TYPE, "size": manifest.len(), "digest": digest,
            "artifactType": BUNDLE_MEDIA_TYPE,
        }],
    });
    let tag = subject.replacen(':', "-", 1);
    cosign::put_manifest(registry, repo, &tag, OCI_INDEX, &serde_json::to_vec(&index).expect("index"), None);
}

/// Deletes a manifest the referrers tag still lists (docker-registry has deletes enabled).
fn delete_manifest(registry: &str, repo: &str, digest: &str) {
    let url = format!("http://{registry}/v2/{repo}/manifests/{digest}");
    let out = Command::new("curl").args(["-sS", "--fail-with-body", "-X", "DELETE", &url]).output().expect("run curl");
    assert!(out.status.success(), "DELETE {url}: {}", String::from_utf8_lossy(&out.stdout));
}
