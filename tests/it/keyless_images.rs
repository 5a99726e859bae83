//! Keyless-signed images through pullgate, in front of the real containerd 2.x and the real
//! registry. Every signature is made by the real cosign, keyless, against a test sigstore
//! instance (common/sigstore.rs: a local Fulcio and Rekor backed by a CA, CT log key and log
//! key made per run); only what the instance issues is spoiled. The same images are judged by
//! the real `cosign verify` first, so each case is known to be what it claims independently of
//! pullgate.
//!
//! Rule `k`: `identities = [{ issuer = ISSUER, subject = SUBJECT }]`, the instance's trusted
//! root; rule `w`: a workflow identity by `issuer_regex`/`subject_regex`; rule `b`: as `k`, with
//! `identity = "ignore"` (a v3 bundle's statement names the image by digest only); rule `h`:
//! HOST exactly or `web-.*\.example\.test`, host identities (DNS SANs).
//!
//! | image          | signed                                              | verdict              |
//! |----------------|-----------------------------------------------------|----------------------|
//! | k/good         | SUBJECT, ISSUER                                     | pulled, pinned       |
//! | w/workflow     | a GitHub-workflow URI identity, ISSUER              | pulled, pinned       |
//! | b/bundle       | SUBJECT, ISSUER, cosign v3 bundle referrer          | pulled, pinned       |
//! | k/other-subject| another email, ISSUER                               | refused: identity    |
//! | k/other-issuer | SUBJECT, another issuer                             | refused: issuer      |
//! | k/expired      | certificate expired before the log entry's time     | refused: chain       |
//! | k/no-tlog      | `--tlog-upload=false`: no bundle annotation, no SET | refused: SET         |
//! | k/empty-set    | the log answered without a SET                      | refused: SET         |
//! | k/forged-set   | SET signed by a key outside the root                | refused: SET         |
//! | k/no-sct       | certificate without an embedded SCT                 | refused: SCT         |
//! | k/forged-sct   | SCT signed by a CT key outside the root             | refused: SCT         |
//! | k/foreign-ca   | certificate from a CA outside the root              | refused: chain       |
//! | k/chain        | `--certificate`/`--certificate-chain` (the root CA)  | pulled, pinned       |
//! | k/chain-foreign| the same from a CA outside the root, in the chain   | refused: chain       |
//! | h/host         | HOST, ISSUER: a DNS SAN, the certificate's only SAN | pulled, pinned       |
//! | h/web          | WEB_HOST (a DNS SAN), matched by `subject_regex`    | pulled, pinned       |
//! | h/other-host   | another DNS name, ISSUER                            | refused: identity    |

use crate::common;

use std::sync::OnceLock;

use common::cosign::{self, CosignKey};
use common::cri;
use common::front::Front;
use common::lab::Lab;
use common::sigstore::{ISSUER, SUBJECT, Sigstore, Spoil};
use common::store;
use pullgate::config::Config;

const WORKFLOW: &str = "https://github.com/example/app/.github/workflows/release.yml@refs/tags/v1";
const OTHER_SUBJECT: &str = "someone@example.test";
const OTHER_ISSUER: &str = "https://other.example.test";
/// A host identity: the certificate's only SAN is this DNS name.
const HOST: &str = "host.example.test";
const WEB_HOST: &str = "web-1.example.test";
const OTHER_HOST: &str = "other.example.test";

/// How a refusal names the check that failed.
const CHAIN_CHECK: &str = "certificate chain check failed";
const TLOG_CHECK: &str = "transparency log check failed";
const SCT_CHECK: &str = "SCT check failed";

/// One signed image of the table: its repository, how it was signed, and what cosign says.
struct Case {
    repo: &'static str,
    subject: &'static str,
    issuer: &'static str,
    spoil: Spoil,
    /// Signed with `--certificate`/`--certificate-chain` (the issuing CA in the `chain`
    /// annotation) instead of through Fulcio.
    with_chain: bool,
    /// Words of `cosign verify`'s refusal, or None when cosign accepts it.
    cosign_refusal: Option<&'static str>,
}

const fn case(repo: &'static str, spoil: Spoil, cosign_refusal: Option<&'static str>) -> Case {
    Case { repo, subject: SUBJECT, issuer: ISSUER, spoil, with_chain: false, cosign_refusal }
}

const CASES: &[Case] = &[
    case("k/good", Spoil::None, None),
    Case { subject: WORKFLOW, ..case("w/workflow", Spoil::None, None) },
    Case { subject: OTHER_SUBJECT, ..case("k/other-subject", Spoil::None, Some("none of the expected identities")) },
    Case { issuer: OTHER_ISSUER, ..case("k/other-issuer", Spoil::None, Some("none of the expected identities")) },
    case("k/expired", Spoil::ExpiredCertificate, Some("certificate expired before observed time")),
    // cosign, finding no log entry in the signature, would search the public Rekor (offline:
    // unreachable); pullgate never asks a log.
    case("k/no-tlog", Spoil::NoTlogEntry, Some("rekor.sigstore.dev")),
    case("k/empty-set", Spoil::EmptySet, Some("unable to verify SET")),
    case("k/forged-set", Spoil::ForgedSet, Some("unable to verify SET")),
    case("k/no-sct", Spoil::NoSct, Some("certificate does not include required embedded SCT")),
    case("k/forged-sct", Spoil::ForgedSct, Some("only able to verify 0 SCT entries")),
    case("k/foreign-ca", Spoil::ForeignCa, Some("leaf certificate verification failed")),
    Case { with_chain: true, ..case("k/chain", Spoil::None, None) },
    // The foreign CA is in the signature's own chain annotation: it is still not trusted.
    Case {
        with_chain: true,
        ..case("k/chain-foreign", Spoil::ForeignCa, Some("leaf certificate verification failed"))
    },
    Case { subject: HOST, ..case("h/host", Spoil::None, None) },
    Case { subject: WEB_HOST, ..case("h/web", Spoil::None, None) },
    Case { subject: OTHER_HOST, ..case("h/other-host", Spoil::None, Some("none of the expected identities")) },
];

/// The lab, the instance and every case's image, signed once per test process: the tests only
/// pull through their own pullgate, and containerd keeps nothing a refusal could change.
struct Shared {
    lab: Lab,
    sigstore: Sigstore,
    /// `b/bundle`'s digest: signed in cosign v3's default format.
    bundle: String,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let lab = Lab::start();
        let sigstore = Sigstore::new();
        for case in CASES {
            let digest = lab.push_image(&format!("{}:v1", case.repo), case.repo);
            let signing = sigstore.signing(&lab.registry, case.repo, &digest);
            let signing = signing.identity(case.subject, case.issuer).spoil(case.spoil);
            if case.with_chain { signing.with_chain().run() } else { signing.run() }
        }
        let bundle = lab.push_image("b/bundle:v1", "b/bundle");
        sigstore.signing(&lab.registry, "b/bundle", &bundle).bundle().run();
        Shared { lab, sigstore, bundle }
    })
}

/// The keyless rules: `k` and `b` for SUBJECT exactly, `w` for a release workflow by regexes.
fn policy(scope_registry: &str, trusted_root: &std::path::Path) -> String {
    let root = trusted_root.display();
    format!(
        "[[rule]]\nscope = \"{scope_registry}/k\"\nrequire = \"signed\"\n\
         identities = [{{ issuer = \"{ISSUER}\", subject = \"{SUBJECT}\" }}]\ntrusted_root = \"{root}\"\n\n\
         [[rule]]\nscope = \"{scope_registry}/w\"\nrequire = \"signed\"\n\
         identities = [{{ issuer_regex = 'https://issuer\\.example\\.test', \
         subject_regex = 'https://github\\.com/example/app/\\.github/workflows/release\\.yml@refs/tags/v.*' }}]\n\
         trusted_root = \"{root}\"\n\n\
         [[rule]]\nscope = \"{scope_registry}/b\"\nrequire = \"signed\"\nidentity = \"ignore\"\n\
         identities = [{{ issuer = \"{ISSUER}\", subject = \"{SUBJECT}\" }}]\ntrusted_root = \"{root}\"\n\n\
         [[rule]]\nscope = \"{scope_registry}/h\"\nrequire = \"signed\"\n\
         identities = [{{ issuer = \"{ISSUER}\", subject = \"{HOST}\" }}, \
         {{ issuer = \"{ISSUER}\", subject_regex = 'web-.*\\.example\\.test' }}]\ntrusted_root = \"{root}\"\n"
    )
}

async fn start_pullgate(shared: &Shared) -> common::pullgate::Running {
    let lab = &shared.lab;
    let mut config = Config { upstream: lab.containerd_sock.clone(), ..Config::default() };
    config.registry.insecure = vec![lab.registry.clone()];
    let policy = policy(&lab.registry, &shared.sigstore.trusted_root());
    common::pullgate::start_with(config, &[("keyless.toml", &policy)]).await
}

/// The real `cosign verify` judges every case as the table says: the fixture's spoiled parts
/// are spoiled for sigstore's own client, and its good signatures are good.
#[test]
fn cosign_itself_judges_the_fixture_as_the_table_says() {
    let shared = shared();
    let registry = &shared.lab.registry;
    for case in CASES {
        let image = format!("{registry}/{}:v1", case.repo);
        // What the policy asks: the workflow for its own rule, SUBJECT and ISSUER for the rest.
        let subject = match case.subject {
            WORKFLOW | WEB_HOST => case.subject,
            HOST | OTHER_HOST => HOST,
            _ => SUBJECT,
        };
        match (shared.sigstore.cosign_verify(&image, subject, ISSUER), case.cosign_refusal) {
            (Ok(_), None) => {}
            (Err(why), Some(words)) => assert!(why.contains(words), "{}: cosign said {why}", case.repo),
            (Ok(out), Some(words)) => panic!("{}: cosign accepted it ({out}), expected {words:?}", case.repo),
            (Err(why), None) => panic!("{}: cosign refused it: {why}", case.repo),
        }
    }
    // The routes differ where the table says: only `--certificate-chain` fills the chain.
    assert_eq!(chain_annotation(registry, "k/good"), "", "cosign keeps no chain from Fulcio");
    assert!(chain_annotation(registry, "k/chain").starts_with("-----BEGIN CERTIFICATE-----"));
    let bundle = format!("{registry}/b/bundle@{}", shared.bundle);
    shared.sigstore.cosign_verify(&bundle, SUBJECT, ISSUER).expect("cosign verifies the v3 bundle");
}

/// The `dev.sigstore.cosign/chain` annotation of `repo:v1`'s one `.sig` layer.
fn chain_annotation(registry: &str, repo: &str) -> String {
    let get = |reference: &str| {
        let url = format!("http://{registry}/v2/{repo}/manifests/{reference}");
        let got = cosign::http_get(&url, common::front::ACCEPT_MANIFESTS, None);
        assert_eq!(got.status, 200, "{url}");
        got.body
    };
    let signatures: serde_json::Value =
        serde_json::from_slice(&get(&cosign::signature_tag(&cosign::sha256_digest(&get("v1"))))).expect("JSON");
    let annotation = &signatures["layers"][0]["annotations"]["dev.sigstore.cosign/chain"];
    annotation.as_str().unwrap_or_else(|| panic!("{repo}: no chain annotation: {signatures}")).to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_right_identity_is_accepted_and_pinned() {
    let shared = shared();
    let pullgate = start_pullgate(shared).await;
    store::pull_pinned(&shared.lab, &pullgate.socket, "k/good").await;
    store::pull_pinned(&shared.lab, &pullgate.socket, "w/workflow").await;
    store::pull_pinned(&shared.lab, &pullgate.socket, "k/chain").await;
    pullgate.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_v3_bundle_with_a_certificate_is_accepted_and_pinned() {
    let shared = shared();
    let pullgate = start_pullgate(shared).await;
    store::pull_pinned(&shared.lab, &pullgate.socket, "b/bundle").await;
    pullgate.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn another_subject_or_issuer_is_refused() {
    let shared = shared();
    let pullgate = start_pullgate(shared).await;
    store::pull_refused(&shared.lab, &pullgate.socket, "k/other-subject", &["identity mismatch", OTHER_SUBJECT]).await;
    store::pull_refused(&shared.lab, &pullgate.socket, "k/other-issuer", &["issuer mismatch", OTHER_ISSUER]).await;
    pullgate.stop().await;
}

/// A certificate whose only SAN is a DNS name (sigstore-crypto reads only email and URI SANs)
/// counts for a rule naming that host, and names its host when it is another.
#[tokio::test(flavor = "multi_thread")]
async fn a_host_identity_is_matched_by_its_dns_name() {
    let shared = shared();
    let pullgate = start_pullgate(shared).await;
    store::pull_pinned(&shared.lab, &pullgate.socket, "h/host").await;
    store::pull_pinned(&shared.lab, &pullgate.socket, "h/web").await;
    store::pull_refused(&shared.lab, &pullgate.socket, "h/other-host", &["identity mismatch", OTHER_HOST]).await;
    pullgate.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_chain_or_a_ca_outside_the_root_is_refused() {
    let shared = shared();
    let pullgate = start_pullgate(shared).await;
    store::pull_refused(&shared.lab, &pullgate.socket, "k/expired", &[CHAIN_CHECK, "expired"]).await;
    store::pull_refused(&shared.lab, &pullgate.socket, "k/foreign-ca", &[CHAIN_CHECK]).await;
    store::pull_refused(&shared.lab, &pullgate.socket, "k/chain-foreign", &[CHAIN_CHECK]).await;
    pullgate.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_or_forged_set_is_refused() {
    let shared = shared();
    let pullgate = start_pullgate(shared).await;
    store::pull_refused(&shared.lab, &pullgate.socket, "k/no-tlog", &[TLOG_CHECK, "no transparency-log entry"]).await;
    store::pull_refused(&shared.lab, &pullgate.socket, "k/empty-set", &[TLOG_CHECK, "no SET"]).await;
    store::pull_refused(&shared.lab, &pullgate.socket, "k/forged-set", &[TLOG_CHECK, "SET verification failed"]).await;
    pullgate.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_or_forged_sct_is_refused() {
    let shared = shared();
    let pullgate = start_pullgate(shared).await;
    store::pull_refused(&shared.lab, &pullgate.socket, "k/no-sct", &[SCT_CHECK, "missing SCT"]).await;
    store::pull_refused(
        &shared.lab,
        &pullgate.socket,
        "k/forged-sct",
        &[SCT_CHECK, "SCT signature verification failed"],
    )
    .await;
    pullgate.stop().await;
}

// === round trips ===

/// pullgate's reads of `repo` at `front` (not containerd's), as "manifests/<ref>" or
/// "blobs/<digest>" with the digests of `digest` shown as `<image>`, and forgets them.
fn take_reads(front: &Front, repo: &str, digest: &str) -> Vec<String> {
    let prefix = format!("/v2/{repo}/");
    let (hex, tag) = (digest.trim_start_matches("sha256:"), digest.replacen(':', "-", 1));
    let reads = front
        .requests()
        .into_iter()
        .filter(|seen| seen.reads_repo(repo) && !seen.is_containerd())
        .map(|seen| seen.path.trim_start_matches(&prefix).replace(&tag, "<image>").replace(hex, "<image>"))
        .map(|read| if read.starts_with("blobs/sha256:") { "blobs/<payload>".to_owned() } else { read })
        .collect();
    front.clear_requests();
    reads
}

/// A cold keyless verification reads what a cold key-signed one does: the tag, the `.sig`
/// manifest and the referrers tag (at once), and the payload. The certificate, chain and SET
/// travel in the `.sig` manifest's annotations and the trust material is local, so nothing
/// more is fetched, from the registry or anywhere.
#[tokio::test(flavor = "multi_thread")]
async fn a_cold_keyless_pull_reads_what_a_key_signed_one_does() {
    let lab = Lab::start();
    let front = Front::start(&lab.registry);
    front.trust_in(&lab);
    let sigstore = Sigstore::new();
    let key = CosignKey::generate();
    let keyed = cosign::push_signed(&lab, &key, &front.addr(), "rt/keyed:v1", "keyed");
    let keyless = lab.push_image("rt/keyless:v1", "keyless");
    let claimed = format!("{}/rt/keyless", front.addr());
    sigstore.signing(&lab.registry, "rt/keyless", &keyless).claiming(&claimed).run();

    let mut config = Config { upstream: lab.containerd_sock.clone(), ..Config::default() };
    config.registry.insecure = vec![front.addr()];
    let root = sigstore.trusted_root();
    let policy = format!(
        "{}keys = [\"a.pub\"]\n\n[[rule]]\nscope = \"{}/rt/keyless\"\nrequire = \"signed\"\n\
         identities = [{{ issuer = \"{ISSUER}\", subject = \"{SUBJECT}\" }}]\ntrusted_root = \"{}\"\n",
        common::policy::rule(&format!("{}/rt/keyed", front.addr()), "signed"),
        front.addr(),
        root.display()
    );
    let pem = key.public_pem();
    let running = common::pullgate::start_with(config, &[("a.pub", &pem), ("rt.toml", &policy)]).await;

    let mut reads = Vec::new();
    for (repo, digest) in [("rt/keyed", &keyed), ("rt/keyless", &keyless)] {
        let image = format!("{}/{repo}:v1", front.addr());
        let pulled = cri::images(&running.socket).pull_image(cri::pull_request(&image, None)).await;
        pulled.unwrap_or_else(|status| panic!("{image} refused: {}", status.message()));
        let mut seen = take_reads(&front, repo, digest);
        // The `.sig` manifest and the referrers tag are asked at once; either may come last.
        seen[1..].sort();
        reads.push(seen);
    }
    let expected = ["manifests/v1", "blobs/<payload>", "manifests/<image>", "manifests/<image>.sig"];
    assert_eq!(reads[0], expected, "a cold key-signed pull by tag");
    assert_eq!(reads[1], reads[0], "a cold keyless pull reads what a key-signed one does");

    let image = format!("{}/rt/keyless:v1", front.addr());
    let pulled = cri::images(&running.socket).pull_image(cri::pull_request(&image, None)).await;
    pulled.unwrap_or_else(|status| panic!("{image} refused again: {}", status.message()));
    assert_eq!(take_reads(&front, "rt/keyless", &keyless), ["manifests/v1"], "a warm keyless pull by tag");
    running.stop().await;
}
