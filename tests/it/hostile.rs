//! Hostile registries: the pullgate binary in front of a real containerd, pulling through a
//! registry front that lies or misbehaves. Every pull must fail within the time budget with the
//! kubelet prefix that fits, containerd must never be asked for the image, pullgate's memory
//! stays bounded (read from /proc while it runs), and other CRI calls do not queue behind a
//! stalled verification.
//!
//! | repository (under the front)  | what the front does                               | prefix                    |
//! |-------------------------------|---------------------------------------------------|---------------------------|
//! | hostile/oversized-manifest    | 100 MiB manifest for the tag (Content-Length set) | SignatureValidationFailed |
//! | hostile/oversized-sig         | 100 MiB `.sig` manifest                           | SignatureValidationFailed |
//! | hostile/endless-manifest      | chunked manifest body that never ends             | SignatureValidationFailed |
//! | hostile/endless-sig           | chunked `.sig` manifest body that never ends      | SignatureValidationFailed |
//! | hostile/endless-payload       | chunked signature payload blob that never ends    | SignatureValidationFailed |
//! | hostile/huge-head            | 16 MiB of response headers for the tag's manifest | RegistryUnavailable       |
//! | hostile/many-layers           | `.sig` manifest with 10,000 signature layers      | SignatureValidationFailed |
//! | hostile/html-sig              | HTML page (200) instead of the `.sig` manifest    | SignatureValidationFailed |
//! | hostile/non-json-payload      | (nothing) trusted key signed a non-JSON payload   | SignatureValidationFailed |
//! | hostile/stall-manifest        | headers, then silence, for the tag's manifest     | RegistryUnavailable       |
//! | hostile/stall-sig             | headers, then silence, for the `.sig` manifest    | RegistryUnavailable       |
//! | hostile/stall-payload         | headers, then silence, for the payload blob       | RegistryUnavailable       |
//! | hostile/control               | (nothing) signed by the trusted key               | accepted                  |
//!
//! And a hostile client: a PullImage request that prost and containerd's protobuf would read as
//! two different images is refused with InvalidArgument, never forwarded.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cosign::{self, CosignKey, HostileSigner};
use common::cri;
use common::front::{Front, Hostile};
use common::lab::Lab;
use common::process::{Daemon, Serve};
use common::{policy, store};
use pullgate::cri::proto::{ImageStatusRequest, ListImagesRequest};

/// pullgate's registry timeout, which is also its budget for one pull's whole verification.
const TIMEOUT: Duration = Duration::from_secs(3);
/// Scheduling slack on a loaded 2-core CI machine, on top of the budget.
const MARGIN: Duration = Duration::from_secs(1);
/// The registry timeout of the tests that order other calls against stalled verifications:
/// the stalls end when it passes, so it leaves room for the calls that must finish before
/// them on a loaded 2-core machine, where one pull into containerd can take seconds.
const STALL_TIMEOUT: Duration = Duration::from_secs(12);
/// The bound on pullgate's resident memory while under attack.
const RSS_LIMIT_KIB: u64 = 64 * 1024;
const HUNDRED_MIB: usize = 100 * 1024 * 1024;

/// The two tests take turns: the latency one measures pullgate, not the other's load on two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// === the pullgate binary, watched ===

/// The pullgate binary with the registry timeout `timeout`, its memory watched.
fn start(serve: Serve, timeout: Duration) -> Daemon {
    serve.registry(&format!("timeout = \"{}s\"", timeout.as_secs())).watch_memory().spawn()
}

// === the cases ===

#[derive(Clone, Copy, Debug, PartialEq)]
enum Stage {
    /// GET /v2/<repo>/manifests/v1: resolving the tag.
    Resolve,
    /// GET /v2/<repo>/manifests/sha256-<hex>.sig: the signature manifest.
    SignatureManifest,
    /// GET /v2/<repo>/blobs/<digest>: a signature payload.
    Payload,
}

const SVF: &str = "SignatureValidationFailed: ";
const UNAVAILABLE: &str = "RegistryUnavailable: ";

struct Case {
    name: &'static str,
    /// What the front does, and where; None for an image that is hostile by its own content.
    hostile: Option<(Stage, Hostile)>,
    prefix: &'static str,
    /// Words the refusal must contain, so the test knows which limit stopped the pull.
    words: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    let case = |name, hostile, prefix, words| Case { name, hostile, prefix, words };
    use Stage::*;
    vec![
        case(
            "oversized-manifest",
            Some((Resolve, Hostile::OversizedManifest(HUNDRED_MIB))),
            SVF,
            &["resolve", "larger than the limit"],
        ),
        case(
            "oversized-sig",
            Some((SignatureManifest, Hostile::OversizedManifest(HUNDRED_MIB))),
            SVF,
            &["signatures", "larger than the limit"],
        ),
        case("endless-manifest", Some((Resolve, Hostile::EndlessBody)), SVF, &["resolve", "larger than the limit"]),
        case(
            "endless-sig",
            Some((SignatureManifest, Hostile::EndlessBody)),
            SVF,
            &["signatures", "larger than the limit"],
        ),
        case(
            "endless-payload",
            Some((Payload, Hostile::EndlessBody)),
            SVF,
            &["1 signature is unusable", "larger than the limit"],
        ),
        case(
            "huge-head",
            Some((Resolve, Hostile::HugeHead(16 * 1024))),
            UNAVAILABLE,
            &["resolve", "message head is too large"],
        ),
        case(
            "many-layers",
            Some((SignatureManifest, Hostile::SignatureLayers(10_000))),
            SVF,
            &["10000 signature layers"],
        ),
        case(
            "html-sig",
            Some((
                SignatureManifest,
                Hostile::Body(200, "text/html".into(), Bytes::from_static(b"<html>login</html>")),
            )),
            SVF,
            &["not valid manifest JSON"],
        ),
        case("non-json-payload", None, SVF, &["not a cosign SimpleSigning document"]),
        case("stall-manifest", Some((Resolve, Hostile::StallAfterHeaders)), UNAVAILABLE, &[]),
        case("stall-sig", Some((SignatureManifest, Hostile::StallAfterHeaders)), UNAVAILABLE, &[]),
        case("stall-payload", Some((Payload, Hostile::StallAfterHeaders)), UNAVAILABLE, &[]),
    ]
}

fn repo(name: &str) -> String {
    format!("hostile/{name}")
}

fn hostile_path(repo: &str, stage: Stage, digest: &str) -> String {
    match stage {
        Stage::Resolve => format!("/v2/{repo}/manifests/v1"),
        Stage::SignatureManifest => format!("/v2/{repo}/manifests/{}", cosign::signature_tag(digest)),
        Stage::Payload => format!("/v2/{repo}/blobs/"),
    }
}

/// The trusted key, both as cosign's (well-formed signatures) and by hand (a payload cosign
/// would never sign).
struct Key {
    hostile: HostileSigner,
    cosign: CosignKey,
}

impl Key {
    fn generate() -> Key {
        let hostile = HostileSigner::generate();
        Key { cosign: CosignKey::import(&hostile), hostile }
    }

    fn public_pem(&self) -> String {
        self.cosign.public_pem()
    }
}

/// Pushes `repo:v1` signed by cosign for pulls through the front, or, when `payload` is given,
/// with that payload signed by hand. Returns the image digest.
fn push_signed(lab: &Lab, front: &Front, repo: &str, key: &Key, payload: Option<&[u8]>) -> String {
    let Some(payload) = payload else {
        return cosign::push_signed(lab, &key.cosign, &front.addr(), &format!("{repo}:v1"), repo);
    };
    let digest = lab.push_image(&format!("{repo}:v1"), repo);
    let signature = key.hostile.sign_payload(payload);
    cosign::push_signatures(&lab.registry, repo, &digest, &[(payload.to_vec(), signature)]);
    digest
}

fn hostile_policy(front: &Front) -> String {
    policy::signed(&format!("{}/hostile", front.addr()), &["a.pub"])
}

/// pullgate in front of the lab's containerd, trusting the key `public` (PEM) for the front's
/// `hostile/`.
fn serve_hostile(lab: &Lab, front: &Front, public: &str) -> Serve {
    let policy = hostile_policy(front);
    Serve::new(&lab.containerd_sock)
        .insecure(&[&front.addr()])
        .files(&[("a.pub", public), ("10-hostile.toml", &policy)])
}

/// Pushes every case's image (in parallel: each push is a skopeo run) and arms the front.
fn arm(lab: &Lab, front: &Front, key: &Key, cases: &[Case]) {
    std::thread::scope(|scope| {
        for case in cases {
            scope.spawn(move || {
                let repo = repo(case.name);
                let payload = (case.name == "non-json-payload").then_some(&b"this is not JSON {"[..]);
                let digest = push_signed(lab, front, &repo, key, payload);
                if let Some((stage, hostile)) = &case.hostile {
                    front.hostile(&hostile_path(&repo, *stage, &digest), hostile.clone());
                }
            });
        }
    });
}

/// Pulls the case's image through pullgate; Err names everything wrong with the outcome.
async fn run_case(socket: &Path, front: &Front, case: &Case) -> Result<(), String> {
    let image = format!("{}/{}:v1", front.addr(), repo(case.name));
    let started = Instant::now();
    let mut images = cri::images(socket);
    let pull = images.pull_image(cri::pull_request(&image, Some("default")));
    // Bounded, so a pull that reached containerd (which may wait on a stalled body for ever)
    // fails this case instead of hanging the test.
    let result = tokio::time::timeout(TIMEOUT + MARGIN, pull).await;
    let elapsed = started.elapsed();
    let status = match result {
        Err(_) => return Err(format!("{}: still pulling after {elapsed:?}", case.name)),
        Ok(Ok(_)) => return Err(format!("{}: pulled; it must be refused", case.name)),
        Ok(Err(status)) => status,
    };
    let message = status.message();
    let mut problems = Vec::new();
    if status.code() != tonic::Code::Unknown {
        problems.push(format!("code {:?}", status.code()));
    }
    if !message.starts_with(case.prefix) || !case.words.iter().all(|words| message.contains(words)) {
        problems.push(format!("want {:?}…{:?}", case.prefix, case.words));
    }
    if elapsed >= TIMEOUT + MARGIN {
        problems.push(format!("took {elapsed:?}, budget {TIMEOUT:?} + {MARGIN:?}"));
    }
    let reached = |stage: Stage| {
        front.count(|s| {
            s.path.contains(&format!("/{}/", repo(case.name))) && stage_of(&s.path) == Some(stage) && !s.is_containerd()
        })
    };
    if let Some((stage, _)) = &case.hostile
        && reached(*stage) == 0
    {
        problems.push(format!("pullgate never reached the hostile {stage:?} request"));
    }
    eprintln!("{:<20} {:>5} ms  {message}", case.name, elapsed.as_millis());
    if problems.is_empty() { Ok(()) } else { Err(format!("{}: {}; got {message:?}", case.name, problems.join(", "))) }
}

fn stage_of(path: &str) -> Option<Stage> {
    if path.contains("/blobs/") {
        return Some(Stage::Payload);
    }
    let (_, reference) = path.split_once("/manifests/")?;
    Some(if reference.ends_with(".sig") { Stage::SignatureManifest } else { Stage::Resolve })
}

/// Neither containerd's store nor the front (which containerd may pull from: `Front::trust_in`)
/// shows containerd touching a `hostile/` image.
async fn assert_never_reached_containerd(lab: &Lab, front: &Front) {
    let asked = front.count(|s| s.is_containerd() && s.path.starts_with("/v2/hostile/"));
    assert_eq!(asked, 0, "containerd asked the registry for a refused image: {:?}", front.requests());
    store::assert_none_named(lab, "/hostile/").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_registries_fail_fast_with_the_right_prefix_and_bounded_memory() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let lab = Lab::start();
    let front = Front::start(&lab.registry);
    let key = Key::generate();
    let cases = cases();
    arm(&lab, &front, &key, &cases);
    // containerd can pull from the front from the start, so a refused pull that pullgate
    // forwarded would show in the front's records and in containerd's store.
    front.trust_in(&lab);
    // A slot for every case: all run at once against one registry, and the stalling ones would
    // otherwise hold the default four for the whole budget while the rest queue and time out.
    let serve =
        serve_hostile(&lab, &front, &key.public_pem()).registry(&format!("checks_per_registry = {}", cases.len()));
    let daemon = start(serve, TIMEOUT);

    // All at once: the memory bound must hold with every attack in flight together.
    let results = futures_util::future::join_all(cases.iter().map(|case| run_case(&daemon.socket, &front, case))).await;
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    assert!(failures.is_empty(), "{}\n--- pullgate log ---\n{}", failures.join("\n"), daemon.log_text());

    assert_never_reached_containerd(&lab, &front).await;

    // The same setup with a well-behaved registry accepts, so the refusals above are the attacks' doing.
    push_signed(&lab, &front, "hostile/control", &key, None);
    let control = format!("{}/hostile/control:v1", front.addr());
    let pulled = cri::images(&daemon.socket).pull_image(cri::pull_request(&control, Some("default"))).await;
    assert!(pulled.is_ok(), "control image refused: {pulled:?}\n{}", daemon.log_text());

    daemon.assert_memory_below(RSS_LIMIT_KIB);
}

/// Ordered against the stalls, not timed: every ImageStatus call is answered while all the
/// stalled verifications are still waiting on the registry (which they do until
/// `STALL_TIMEOUT`). Were the calls queued behind a verification, none could come back
/// before the stalls end. The latencies are printed, not bounded: on a loaded 2-core machine
/// a percentile says more about the neighbours than about pullgate.
#[tokio::test(flavor = "multi_thread")]
async fn passthrough_calls_do_not_wait_behind_stalled_verifications() {
    const STALLED: usize = 4;
    const CALLS: usize = 100;
    let _turn = ONE_AT_A_TIME.lock().await;
    let lab = Lab::start();
    let front = Front::start(&lab.registry);
    let key = CosignKey::generate();
    // Every tag stalls; the images need not exist, as no verification gets past the headers.
    front.hostile("/v2/hostile/slow/manifests/", Hostile::StallAfterHeaders);
    let daemon = start(serve_hostile(&lab, &front, &key.public_pem()), STALL_TIMEOUT);
    // One connection for everything, as the kubelet has: the calls share it with the stalled pulls.
    let mut images = cri::images(&daemon.socket);
    images.list_images(ListImagesRequest::default()).await.expect("warm-up ListImages");

    // Distinct tags: pulls of one image would share a single verification.
    let image = |n: usize| format!("{}/hostile/slow:v{n}", front.addr());
    let stalled_since = Instant::now();
    let pulls: Vec<_> = (0..STALLED)
        .map(|n| {
            let (mut client, request) = (images.clone(), cri::pull_request(&image(n), Some("default")));
            tokio::spawn(async move { client.pull_image(request).await })
        })
        .collect();
    let stalled = || front.count(|s| s.path.starts_with("/v2/hostile/slow/manifests/") && !s.is_containerd());
    while stalled() < STALLED {
        assert!(
            stalled_since.elapsed() < STALL_TIMEOUT,
            "only {} of {STALLED} verifications reached the registry",
            stalled()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let mut latencies = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let started = Instant::now();
        images
            .image_status(ImageStatusRequest { image: cri::spec(&image(0)), verbose: false })
            .await
            .expect("ImageStatus");
        latencies.push(started.elapsed());
    }
    let unfinished = pulls.iter().filter(|pull| !pull.is_finished()).count();
    assert_eq!(unfinished, STALLED, "stalled pulls ended before the ImageStatus calls did");
    latencies.sort();
    let (p50, p99) = (latencies[CALLS / 2], latencies[CALLS * 99 / 100 - 1]);
    eprintln!(
        "ImageStatus during {STALLED} stalled verifications: p50 {p50:?}, p99 {p99:?}, max {:?}",
        latencies[CALLS - 1]
    );

    for pull in pulls {
        let status = pull.await.expect("pull task").expect_err("a stalled pull succeeded");
        assert!(status.message().starts_with(UNAVAILABLE), "{}", status.message());
    }
    daemon.assert_memory_below(RSS_LIMIT_KIB);
}

/// The healthy pull is ordered against the stalled ones, not timed: it must be done while
/// every stalled check still waits (until `STALL_TIMEOUT`), which it could not be if it had
/// queued for their slots. That the stalled pulls then end within their budget is a time
/// bound because the budget is the claim, checked with `MARGIN`.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalling_registry_holds_only_its_own_verification_slots() {
    const SLOTS: usize = 2;
    let _turn = ONE_AT_A_TIME.lock().await;
    let lab = Lab::start();
    let front = Front::start(&lab.registry);
    let key = CosignKey::generate();
    front.hostile("/v2/hostile/slow/manifests/", Hostile::StallAfterHeaders);
    // containerd could pull from the front, so a forwarded refusal would show in its records.
    front.trust_in(&lab);
    // A healthy registry (the lab's, not through the front) with a signed image on it.
    cosign::push_signed(&lab, &key, &lab.registry, "healthy/app:v1", "healthy");
    let healthy_policy = policy::signed(&format!("{}/healthy", lab.registry), &["a.pub"]);
    let serve = serve_hostile(&lab, &front, &key.public_pem())
        .insecure(&[&lab.registry])
        .files(&[("20-healthy.toml", &healthy_policy)])
        .registry(&format!("checks_per_registry = {SLOTS}"));
    let daemon = start(serve, STALL_TIMEOUT);

    // One more stalled pull than the registry has slots; distinct tags, so no check is shared.
    let started = Instant::now();
    let pulls: Vec<_> = (0..=SLOTS)
        .map(|n| {
            let (socket, image) = (daemon.socket.clone(), format!("{}/hostile/slow:v{n}", front.addr()));
            tokio::spawn(async move {
                let result = cri::images(&socket).pull_image(cri::pull_request(&image, Some("default"))).await;
                (result, started.elapsed())
            })
        })
        .collect();
    let stalled = || front.count(|s| s.path.starts_with("/v2/hostile/slow/manifests/") && !s.is_containerd());
    while stalled() < SLOTS {
        assert!(started.elapsed() < STALL_TIMEOUT, "only {} of {SLOTS} checks reached the registry", stalled());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // The healthy registry's pull goes through while the stalled one's slots are all taken.
    let healthy = format!("{}/healthy/app:v1", lab.registry);
    let pulled = cri::images(&daemon.socket).pull_image(cri::pull_request(&healthy, Some("default"))).await;
    let healthy_done = started.elapsed();
    assert!(pulled.is_ok(), "healthy image refused: {pulled:?}\n{}", daemon.log_text());
    let unfinished = pulls.iter().filter(|pull| !pull.is_finished()).count();
    assert_eq!(unfinished, SLOTS + 1, "stalled pulls ended before the healthy one: it waited for their slots");
    assert_eq!(stalled(), SLOTS, "a check beyond the registry's {SLOTS} slots reached it");

    // The queued check starts only when a slot frees, and all of them end within the budget
    // (awaited no longer than that: a pull forwarded to containerd would stall there for ever).
    let deadline = tokio::time::Instant::from_std(started + STALL_TIMEOUT + MARGIN);
    let mut outcomes = Vec::with_capacity(pulls.len());
    for pull in pulls {
        outcomes.push(tokio::time::timeout_at(deadline, pull).await);
    }
    assert_never_reached_containerd(&lab, &front).await;
    for outcome in outcomes {
        let (result, elapsed) = outcome.expect("a stalled pull outlived its budget").expect("pull task");
        let status = result.expect_err("a stalled pull succeeded");
        assert!(status.message().starts_with(UNAVAILABLE), "{}", status.message());
        assert!(elapsed < STALL_TIMEOUT + MARGIN, "a stalled pull took {elapsed:?}");
    }
    eprintln!("healthy pull done after {healthy_done:?} with {SLOTS} checks stalled and one queued");
    daemon.assert_memory_below(RSS_LIMIT_KIB);
}

// === a hostile client ===

/// A PullImage request that prost and containerd's Go protobuf read as two different images:
/// inside `image`, an annotations entry whose key claims a 64-bit value. Go skips those 8
/// bytes and sees `evil.example/x:1`; prost reads an empty map entry, then an `image` field
/// hidden in the 8 bytes, `a.b/c`, which the policy accepts unverified.
fn ambiguous_pull() -> Vec<u8> {
    let evil = b"evil.example/x:1";
    let mut spec = vec![0x0a, evil.len() as u8];
    spec.extend_from_slice(evil);
    spec.extend_from_slice(&[0x11, 0x00, 0x0a, 0x05]);
    spec.extend_from_slice(b"a.b/c");
    let mut message = vec![0x0a, spec.len() as u8];
    message.extend_from_slice(&spec);
    message
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_read_two_ways_is_refused_not_forwarded() {
    use common::raw::{self, RecordingUpstream};
    use prost::Message as _;
    use pullgate::cri::proto::PullImageRequest;

    let dir = tempfile::tempdir().expect("temp dir");
    let upstream_socket = dir.path().join("upstream.sock");
    let upstream = RecordingUpstream::start(&upstream_socket);
    let config = pullgate::config::Config { upstream: upstream_socket, ..Default::default() };
    let pullgate = common::pullgate::start_with(config, &[("p.toml", &policy::accept("a.b"))]).await;
    let path = "/runtime.v1.ImageService/PullImage";

    let message = ambiguous_pull();
    assert_eq!(PullImageRequest::decode(&message[..]).expect("prost reads it").image.expect("image").image, "a.b/c");
    let response = raw::call(&pullgate.socket, path, raw::frame(&message), &[]).await;
    assert_eq!(response.grpc_status(), Some("3"), "{}", response.grpc_message());
    assert!(response.grpc_message().contains("image field reads differently"), "{}", response.grpc_message());
    assert!(upstream.calls.lock().expect("calls").is_empty(), "the ambiguous request reached containerd");

    // The same image, encoded plainly, goes through: the refusal is about the encoding.
    let plain = PullImageRequest { image: cri::spec("a.b/c"), ..Default::default() }.encode_to_vec();
    let response = raw::call(&pullgate.socket, path, raw::frame(&plain), &[]).await;
    assert_eq!(upstream.calls.lock().expect("calls").len(), 1, "{response:?}");
    pullgate.stop().await;
}

/// containerd's gRPC server routes a call by the last two parts of its path, with or without
/// the leading slash, and containerd 1.6 still serves the deprecated runtime.v1alpha2 API,
/// whose PullImageRequest is the same on the wire. Neither spelling may pull past the gate.
#[tokio::test(flavor = "multi_thread")]
async fn pull_image_under_another_name_is_refused_not_forwarded() {
    use prost::Message as _;

    // containerd 1.6: the v1alpha2 bypass is real only on a containerd that serves v1alpha2;
    // 2.x dropped it and answers Unimplemented itself.
    let lab = Lab::start_1_6();
    lab.push_image("unsigned/app:v1", "unsigned-other-path");
    let image = format!("{}/unsigned/app:v1", lab.registry);
    let policy = policy::reject(&lab.registry);
    let config = pullgate::config::Config { upstream: lab.containerd_sock.clone(), ..Default::default() };
    let pullgate = common::pullgate::start_with(config, &[("p.toml", &policy)]).await;
    let message = cri::pull_request(&image, Some("default")).encode_to_vec();

    // containerd itself answers the old name: the bypass would be real.
    let direct = common::raw::call(
        &lab.containerd_sock,
        "/runtime.v1alpha2.ImageService/ImageFsInfo",
        common::raw::frame(&[]),
        &[],
    )
    .await;
    assert_eq!(direct.grpc_status(), Some("0"), "containerd no longer serves v1alpha2: {}", direct.grpc_message());

    let response = common::raw::call(
        &pullgate.socket,
        "/runtime.v1alpha2.ImageService/PullImage",
        common::raw::frame(&message),
        &[],
    )
    .await;
    assert_ne!(response.grpc_status(), Some("0"), "pulled through the v1alpha2 name");
    assert!(response.grpc_message().contains("pullgate"), "{}", response.grpc_message());
    // A path without its leading slash cannot be sent with an HTTP library; it is written by hand.
    let status = call_by_hand(&pullgate.socket, &["runtime.v1.ImageService/PullImage"], &message).await;
    assert_eq!(status.0, "7", "slash-less PullImage: {status:?}");
    // Two paths: judged by one and served by the other would be a bypass either way round.
    let paths = ["/runtime.v1.ImageService/PullImage", "/runtime.v1.ImageService/ImageStatus"];
    let status = call_by_hand(&pullgate.socket, &paths, &message).await;
    assert_eq!(status.0, "7", "PullImage with a second :path: {status:?}");
    store::assert_absent(&lab, &image).await;
    pullgate.stop().await;
}

/// One gRPC call written frame by frame, with `paths` as they are (one `:path` field each);
/// returns (grpc-status, grpc-message).
async fn call_by_hand(socket: &Path, paths: &[&str], message: &[u8]) -> (String, String) {
    use bytes::BytesMut;
    use pullgate::cri::frame;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut out = BytesMut::from(frame::PREFACE);
    frame::put_head(&mut out, 0, frame::kind::SETTINGS, 0, 0);
    let mut block = Vec::new();
    let pseudo = [(":method", "POST"), (":scheme", "http"), (":authority", "pullgate")];
    let fields = pseudo.into_iter().chain(paths.iter().map(|path| (":path", *path)));
    for (name, value) in fields.chain([("content-type", "application/grpc"), ("te", "trailers")]) {
        frame::put_literal(&mut block, name.as_bytes(), value.as_bytes());
    }
    frame::put_header_block(&mut out, 1, &block, false);
    frame::put_data(&mut out, 1, &common::raw::frame(message), true);
    let mut stream = tokio::net::UnixStream::connect(socket).await.expect("connect");
    stream.write_all(&out).await.expect("write");
    let mut decoder = pullgate::cri::hpack::Decoder::default();
    let mut received = BytesMut::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        while let Some(frame) = frame::next(&mut received, 1 << 20).expect("frame") {
            if frame.kind != frame::kind::HEADERS || frame.stream != 1 {
                continue;
            }
            let (mut code, mut text) = (String::new(), String::new());
            decoder
                .decode(frame.fragment().expect("fragment"), |name, value| match name {
                    b"grpc-status" => code = String::from_utf8_lossy(value).into_owned(),
                    b"grpc-message" => text = String::from_utf8_lossy(value).into_owned(),
                    _ => {}
                })
                .expect("hpack");
            if frame.has(frame::flag::END_STREAM) {
                return (code, text);
            }
        }
        let read = tokio::time::timeout_at(deadline.into(), stream.read_buf(&mut received)).await;
        assert!(matches!(read, Ok(Ok(n)) if n > 0), "no answer on stream 1: {read:?}");
    }
}
