//! Registry round trips per verified pull, counted at a front between pullgate and the lab
//! registry: only pullgate's reads of `/v2/<repo>/manifests|blobs/…` are counted (containerd's
//! own pull through the front, the `/v2/` ping and token fetches are not).
//!
//! The `.sig` tag and the referrers tag (`sha256-<hex>`, where docker-registry 2.8 keeps cosign
//! v3's referrers) are read at once, so each costs a read but not a round trip of its own.
//! The referrers API (not a manifests or blobs read) is asked beside them until the registry
//! has answered it 404 once: then not for a while (`registry::referrers_api`).
//!
//! | pull                                          | pullgate's registry reads             |
//! |-----------------------------------------------|---------------------------------------|
//! | cold, by tag                                  | 4: resolve, (signature manifest ‖ referrers tag), payload |
//! | again within the cache TTL                    | 1: resolve (a tag can move)           |
//! | cold, by digest                               | 3: (signature manifest ‖ referrers tag), payload |
//! | again within the cache TTL                    | 0                                     |
//! | cold, by tag, cosign v3 bundle                | 5: resolve, (signature manifest ‖ referrers tag), bundle manifest, bundle |
//! | the same, in wall time                        | one round trip more than a `.sig`-signed image: 4 against 3 |
//! | again within the cache TTL                    | 1: resolve                            |
//! | 48 at once, uncached                          | 1 signature manifest for all of them  |
//! | cold, by tag, through a hosts.toml mirror     | 4, the same as direct, all at the mirror (`mirrors.rs`) |
//!
//! The referrers API (`/v2/<repo>/referrers/<digest>`, 404 on docker-registry) is asked at once
//! with the referrers tag; it is not a manifest or blob read, so not counted above.

use crate::common;
use common::policy;

use std::sync::Arc;
use std::time::Duration;

use common::cosign::{self, CosignKey};
use common::cri;
use common::fake_registry::{FakeRegistry, Reply, Request};
use common::front::{Front, Hostile};
use common::lab::Lab;
use common::pullgate::Running;
use pullgate::config::Config;
use pullgate::decision::{Gate, PullRequest, Verdict};
use pullgate::policy::{Policy, SharedPolicy};
use pullgate::registry::{HttpRegistry, RegistryConfig};

/// Pushes `repo:v1` (content from `seed`) to the lab registry and signs it with `key` for the
/// name it is pulled by through the front. Returns the image digest.
fn push_signed(lab: &Lab, front: &Front, repo: &str, seed: &str, key: &CosignKey) -> String {
    cosign::push_signed(lab, key, &front.addr(), &format!("{repo}:v1"), seed)
}

async fn start(lab: &Lab, front: &Front, key: &CosignKey, budget: Duration) -> Running {
    let mut config = Config { upstream: lab.containerd_sock.clone(), ..Config::default() };
    config.registry.insecure = vec![front.addr()];
    config.registry.timeout = budget;
    let policy = policy::signed(&format!("{}/rt", front.addr()), &["a.pub"]);
    let pem = key.public_pem();
    common::pullgate::start_with(config, &[("a.pub", pem.as_str()), ("rt.toml", policy.as_str())]).await
}

/// Pulls `image` through pullgate on a connection of its own; Err holds the status message.
async fn pull(running: &Running, image: &str) -> Result<(), String> {
    let mut images = cri::images(&running.socket);
    match images.pull_image(cri::pull_request(image, Some("default"))).await {
        Ok(_) => Ok(()),
        Err(status) => Err(status.message().to_owned()),
    }
}

/// pullgate's reads of `repo`, as "manifests/<ref>" or "blobs/<digest>", and forgets them.
fn take_reads(front: &Front, repo: &str) -> Vec<String> {
    let prefix = format!("/v2/{repo}/");
    let reads = front
        .requests()
        .into_iter()
        .filter(|seen| seen.reads_repo(repo) && !seen.is_containerd())
        .map(|seen| seen.path.trim_start_matches(&prefix).to_owned())
        .collect();
    front.clear_requests();
    reads
}

fn signature_manifest(digest: &str) -> String {
    format!("manifests/{}", cosign::signature_tag(digest))
}

fn referrers_tag(digest: &str) -> String {
    format!("manifests/{}", digest.replacen(':', "-", 1))
}

/// The lookup of an image's signatures: its `.sig` tag and its referrers tag, issued at once,
/// then what they list. The referrers tag may arrive after the payload: it can wait for a
/// connection of its own while the `.sig` tag's is reused.
fn assert_lookup(reads: &[String], digest: &str, then: &[&str]) {
    let position = |read: &str| reads.iter().position(|r| r == read);
    let (sig, referrers) = (position(&signature_manifest(digest)), position(&referrers_tag(digest)));
    assert!(sig.is_some() && referrers.is_some(), "{reads:?}");
    let rest: Vec<&String> =
        reads.iter().filter(|r| **r != signature_manifest(digest) && **r != referrers_tag(digest)).collect();
    assert_eq!(rest.len(), then.len(), "{reads:?}");
    for (read, prefix) in rest.iter().zip(then) {
        assert!(read.starts_with(prefix), "{read} is not {prefix}…: {reads:?}");
    }
}

/// How often pullgate read rt/popular's tag and its signature manifest, and forgets the reads.
fn resolves_and_signature_reads(front: &Front, digest: &str) -> (usize, usize) {
    let reads = take_reads(front, "rt/popular");
    let count = |path: &str| reads.iter().filter(|read| *read == path).count();
    (count("manifests/v1"), count(&signature_manifest(digest)))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_verified_pull_costs_the_fewest_round_trips() {
    let lab = Lab::start();
    let front = Front::start(&lab.registry);
    front.trust_in(&lab);
    let key = CosignKey::generate();
    let by_tag = push_signed(&lab, &front, "rt/tagged", "tagged", &key);
    let by_digest = push_signed(&lab, &front, "rt/pinned", "pinned", &key);
    let running = start(&lab, &front, &key, Duration::from_secs(10)).await;

    let tagged = format!("{}/rt/tagged:v1", front.addr());
    pull(&running, &tagged).await.expect("signed image by tag");
    let reads = take_reads(&front, "rt/tagged");
    assert_eq!(reads.len(), 4, "cold pull by tag: {reads:?}");
    assert_eq!(reads[0], "manifests/v1", "{reads:?}");
    assert_lookup(&reads[1..], &by_tag, &["blobs/sha256:"]);

    pull(&running, &tagged).await.expect("signed image by tag, again");
    assert_eq!(take_reads(&front, "rt/tagged"), ["manifests/v1"], "warm pull by tag");

    let pinned = format!("{}/rt/pinned@{by_digest}", front.addr());
    pull(&running, &pinned).await.expect("signed image by digest");
    let reads = take_reads(&front, "rt/pinned");
    assert_eq!(reads.len(), 3, "cold pull by digest: {reads:?}");
    assert_lookup(&reads, &by_digest, &["blobs/sha256:"]);

    pull(&running, &pinned).await.expect("signed image by digest, again");
    assert_eq!(take_reads(&front, "rt/pinned"), Vec::<String>::new(), "warm pull by digest");
    running.stop().await;
}

/// cosign v3's default: a bundle referrer, listed by the referrers tag (docker-registry has no
/// referrers API). The bundle costs two reads after the concurrent pair, none when warm.
#[tokio::test(flavor = "multi_thread")]
async fn a_bundle_signed_pull_costs_two_reads_more_than_the_lookup() {
    let lab = Lab::start();
    let front = Front::start(&lab.registry);
    front.trust_in(&lab);
    let key = CosignKey::generate();
    let digest = lab.push_image("rtb/bundled:v1", "bundled");
    key.sign_bundle(&lab.registry, "rtb/bundled", &digest);
    let mut config = Config { upstream: lab.containerd_sock.clone(), ..Config::default() };
    config.registry.insecure = vec![front.addr()];
    let policy = format!(
        "[[rule]]\nscope = \"{}/rtb\"\nrequire = \"signed\"\nkeys = [\"a.pub\"]\nidentity = \"ignore\"\n",
        front.addr()
    );
    let pem = key.public_pem();
    let running = common::pullgate::start_with(config, &[("a.pub", pem.as_str()), ("rtb.toml", policy.as_str())]).await;

    let image = format!("{}/rtb/bundled:v1", front.addr());
    pull(&running, &image).await.expect("bundle-signed image by tag");
    let reads = take_reads(&front, "rtb/bundled");
    assert_eq!(reads.len(), 5, "cold pull by tag: {reads:?}");
    assert_eq!(reads[0], "manifests/v1", "{reads:?}");
    assert_lookup(&reads[1..], &digest, &["manifests/sha256:", "blobs/sha256:"]);

    pull(&running, &image).await.expect("bundle-signed image by tag, again");
    assert_eq!(take_reads(&front, "rtb/bundled"), ["manifests/v1"], "warm pull by tag");
    running.stop().await;
}

/// With every registry request a fixed round trip away, a cold check of a bundle-signed image
/// (resolve, then the `.sig` tag, the referrers API and the referrers tag at once, then the bundle
/// manifest, then the bundle) takes one round trip more than that of a `.sig`-signed one
/// (resolve, the same concurrent lookup, the payload): four round trips, not one per request.
/// Wall-clock bounds because the bound is the claim, each with half a round trip of margin.
#[tokio::test(flavor = "multi_thread")]
async fn a_cold_bundle_check_costs_one_round_trip_more_than_a_legacy_one() {
    const ROUND_TRIP: Duration = Duration::from_millis(250);
    let lab = Lab::start();
    let front = Front::start(&lab.registry);
    let key = CosignKey::generate();
    push_signed(&lab, &front, "rtw/legacy", "legacy", &key);
    let digest = lab.push_image("rtw/bundled:v1", "bundled");
    key.sign_bundle(&lab.registry, "rtw/bundled", &digest);
    front.delay("/v2/rtw/", ROUND_TRIP);

    let dir = tempfile::tempdir().expect("policy dir");
    let registry = front.addr();
    let rules = format!(
        "{}\n{}identity = \"ignore\"\n",
        policy::signed(&format!("{registry}/rtw/legacy"), &["a.pub"]),
        policy::signed(&format!("{registry}/rtw/bundled"), &["a.pub"]),
    );
    std::fs::write(dir.path().join("a.pub"), key.public_pem()).expect("write key");
    std::fs::write(dir.path().join("rtw.toml"), rules).expect("write policy");
    let policy = Policy::load(dir.path(), None).expect("policy loads");
    let config = RegistryConfig { insecure: vec![registry.clone()], ..RegistryConfig::default() };
    let client = Arc::new(HttpRegistry::new(&config).expect("registry client"));
    let gate = Gate::new(SharedPolicy::new(policy), client, Duration::from_secs(10));
    let check = |repo: &str| {
        let pull = PullRequest { image: format!("{registry}/rtw/{repo}:v1"), ..Default::default() };
        let (gate, repo) = (&gate, repo.to_owned());
        async move {
            let decision = gate.decide(&pull).await;
            assert_eq!(decision.verdict, Verdict::Accepted, "{repo}: {}", decision.reason);
            decision.elapsed
        }
    };

    let legacy = check("legacy").await;
    let bundled = check("bundled").await;
    let margin = ROUND_TRIP / 2;
    assert!(legacy >= ROUND_TRIP * 3, "legacy check in {legacy:?}: the delay did not apply");
    assert!(legacy < ROUND_TRIP * 3 + margin, "legacy check in {legacy:?}: more than 3 round trips");
    assert!(bundled >= ROUND_TRIP * 4, "bundle check in {bundled:?}: the delay did not apply");
    assert!(bundled < legacy + ROUND_TRIP + margin, "bundle check in {bundled:?}, legacy in {legacy:?}");
    eprintln!("round trip {ROUND_TRIP:?}: legacy check {legacy:?}, bundle check {bundled:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_moved_tag_is_verified_again_despite_the_cache() {
    let lab = Lab::start();
    let front = Front::start(&lab.registry);
    front.trust_in(&lab);
    let key = CosignKey::generate();
    push_signed(&lab, &front, "rt/moving", "first", &key);
    let running = start(&lab, &front, &key, Duration::from_secs(10)).await;
    let image = format!("{}/rt/moving:v1", front.addr());
    pull(&running, &image).await.expect("signed image");

    let unsigned = lab.push_image("rt/moving:v1", "second");
    let message = pull(&running, &image).await.expect_err("the tag now names an unsigned image");
    assert!(message.starts_with("SignatureValidationFailed: "), "{message}");
    assert!(message.contains(&unsigned), "{message}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pulls_of_one_image_fetch_its_signatures_once() {
    let lab = Lab::start();
    let front = Front::start(&lab.registry);
    front.trust_in(&lab);
    let key = CosignKey::generate();
    let digest = push_signed(&lab, &front, "rt/popular", "popular", &key);
    let budget = Duration::from_secs(3);
    let running = start(&lab, &front, &key, budget).await;
    let image = format!("{}/rt/popular:v1", front.addr());
    // A few connections, kept for both rounds, each carrying a share of the pulls at once: fresh
    // connections per pull would count against max_connections (64) while the previous round's
    // are still closing, and the claim is about pulls, not connections.
    const PULLS: usize = 48;
    const CONNECTIONS: usize = 4;
    let clients: Vec<_> = (0..CONNECTIONS).map(|_| cri::images(&running.socket)).collect();
    let all_at_once = || {
        futures_util::future::join_all((0..PULLS).map(|n| {
            let mut client = clients[n % CONNECTIONS].clone();
            let request = cri::pull_request(&image, Some("default"));
            async move { client.pull_image(request).await.map(drop).map_err(|status| status.message().to_owned()) }
        }))
    };

    // While the signature manifest stalls, every pull that arrives joins the one check, and its
    // timeout reaches all of them. (Stalling makes the overlap certain, not a matter of speed.)
    let stalled_path = format!("/v2/rt/popular/{}", signature_manifest(&digest));
    front.hostile(&stalled_path, Hostile::StallAfterHeaders);
    let started = std::time::Instant::now();
    for result in all_at_once().await {
        let message = result.expect_err("the signature fetch never finishes");
        assert!(message.starts_with("RegistryUnavailable: "), "{message}");
    }
    assert!(started.elapsed() < budget * 2, "took {:?}", started.elapsed());
    let (resolves, signatures) = resolves_and_signature_reads(&front, &digest);
    assert_eq!((resolves, signatures), (1, 1), "resolves and signature manifest reads of one shared check");

    // The failure was not kept; the image is still uncached, and now verifies.
    front.clear_rules();
    for result in all_at_once().await {
        result.expect("signed image");
    }
    let (_, signatures) = resolves_and_signature_reads(&front, &digest);
    assert_eq!(signatures, 1, "signature manifest reads for {PULLS} concurrent pulls");
    running.stop().await;
}

/// The registry client keeps its connections across checks: a cold check asks for several
/// documents at once (the `.sig` tag, the referrers tag and the referrers API), each on a
/// connection, and the next cold check against the same registry opens none. A repository
/// that answered 404 to the referrers API is not asked it again, for another image; its
/// referrers tag still is read. Another repository of the same registry still is asked.
/// (On the current-thread runtime a connection is back in the pool before the check ends.)
#[tokio::test]
async fn cold_checks_reuse_connections_and_remember_a_missing_referrers_api() {
    const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[],"annotations":{"tag":"TAG"}}"#;
    let fake = FakeRegistry::start(|request: &Request| match request.path().rsplit_once("/manifests/") {
        Some((_, tag @ ("v1" | "v2"))) => {
            Reply::ok("application/vnd.oci.image.manifest.v1+json", MANIFEST.replace("TAG", tag).as_bytes())
        }
        _ => Reply::status(404),
    })
    .await;
    let dir = tempfile::tempdir().expect("policy dir");
    std::fs::write(dir.path().join("a.pub"), cosign::unused_public_pem()).expect("write key");
    let rule = policy::signed(&format!("{}/rt", fake.authority()), &["a.pub"]);
    std::fs::write(dir.path().join("rt.toml"), rule).expect("write policy");
    let policy = Policy::load(dir.path(), None).expect("policy loads");
    let config = RegistryConfig { insecure: vec![fake.authority()], ..RegistryConfig::default() };
    let registry = Arc::new(HttpRegistry::new(&config).expect("registry client"));
    let gate = Gate::new(SharedPolicy::new(policy), registry, Duration::from_secs(10));
    let decide = |image: &str| PullRequest { image: format!("{}/{image}", fake.authority()), ..Default::default() };
    let api = |repo: &str| fake.count(&format!("/v2/{repo}/referrers/"));
    let tags = |repo: &str| fake.count(&format!("/v2/{repo}/manifests/sha256-"));

    let first = gate.decide(&decide("rt/first:v1")).await;
    assert_eq!(first.verdict, Verdict::Rejected, "{}", first.reason);
    assert_eq!((api("rt/first"), tags("rt/first")), (1, 2), "referrers API, then `.sig` and referrers tags");
    let opened = fake.connections();
    assert!(opened <= 3, "the resolve, then three documents at once, opened {opened} connections");

    let second = gate.decide(&decide("rt/first:v2")).await;
    assert_eq!(second.verdict, Verdict::Rejected, "{}", second.reason);
    assert_eq!(fake.connections(), opened, "a second cold check opened connections of its own");
    assert_eq!(api("rt/first"), 1, "the referrers API was asked again after its 404");
    assert_eq!(tags("rt/first"), 4, "the `.sig` tag and the referrers tag are still read");

    let other = gate.decide(&decide("rt/other:v1")).await;
    assert_eq!(other.verdict, Verdict::Rejected, "{}", other.reason);
    assert_eq!(api("rt/other"), 1, "one repository's 404 turned the API off for another");
}
