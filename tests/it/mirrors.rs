//! Fetching from where containerd fetches (issue 15): containerd 2.x and pullgate share one
//! `certs.d` (containerd's CRI `registry.config_path`, pullgate's `registry.config_path`), and
//! images are named on a registry host that does not exist, `registry.example.invalid`, which
//! only its mirrors serve. The mirrors are fronts on 127.0.0.1 forwarding to the lab registry;
//! they count who asked for what (containerd by its user agent, pullgate otherwise).
//!
//! | case                                                | expected                               |
//! |-----------------------------------------------------|----------------------------------------|
//! | signed, through its mirror                          | accepted, pinned, visible under its tag |
//! | unsigned, through its mirror                        | SignatureValidationFailed              |
//! | cold pull through the mirror vs. direct             | the same pullgate reads (4)            |
//! | mirror stopped                                      | RegistryUnavailable within the timeout |
//! | two mirrors, the first without the signature        | the second's signature is used          |
//! | first mirror without `resolve`                      | never asked for the tag                |
//! | signatures in another repository, `signatures_from` | accepted; refused without it           |
//! | HTTPS mirror: hosts.toml `ca` / none / `skip_verify` | accepted / RegistryUnavailable / accepted |
//! | hosts.toml: none / mirror added / broken / removed  | unavailable / accepted / refused naming the line / unavailable, no restart |
//! | mirror asking for credentials (its own 401)         | kubelet's credentials: accepted; none, or meant for another server: refused |
//! | `header` with a secret, log at trace level          | sent to the mirror, never in the log   |
//! | mirror requiring a client certificate: `client` pair / none / one file | accepted / RegistryUnavailable / accepted |

use crate::common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cosign::CosignKey;
use common::cri;
use common::front::{Front, Hostile};
use common::lab::Lab;
use common::pullgate::Running;
use common::store;
use pullgate::config::Config;
use pullgate::cri::proto::AuthConfig;

/// A registry host that cannot be reached: `.invalid` never resolves (RFC 2606).
const UPSTREAM: &str = "registry.example.invalid";
/// Long enough for a loaded CI box, short enough to show the refusal comes within it.
const TIMEOUT: Duration = Duration::from_secs(5);
/// What the refusal may take beyond the timeout: the gRPC round trip and scheduling.
const MARGIN: Duration = Duration::from_secs(3);

/// A reload is promised within 2 s of a change; this leaves room for a loaded CI box.
const RELOAD: Duration = Duration::from_secs(6);

/// containerd's host directory for UPSTREAM, in the lab's `certs.d`.
fn hosts_file(lab: &Lab) -> std::path::PathBuf {
    lab.dir.path().join("certs.d").join(UPSTREAM).join("hosts.toml")
}

fn write_hosts(lab: &Lab, hosts_toml: &str) {
    let file = hosts_file(lab);
    std::fs::create_dir_all(file.parent().expect("a parent")).expect("mkdir certs.d/registry.example.invalid");
    std::fs::write(file, hosts_toml).expect("write hosts.toml");
}

/// What pullgate routes UPSTREAM by, as text (header values show as "Sensitive").
fn routing(running: &Running) -> String {
    format!("{:?}", running.hosts.current().lookup(UPSTREAM))
}

/// Changes UPSTREAM's hosts.toml under a running pullgate (`None` removes it) and waits until
/// its reload has put the change in force; containerd reads the file at each pull anyway.
async fn edit_hosts(lab: &Lab, running: &Running, hosts_toml: Option<&str>) {
    let before = routing(running);
    match hosts_toml {
        Some(text) => write_hosts(lab, text),
        None => std::fs::remove_file(hosts_file(lab)).expect("remove hosts.toml"),
    }
    let started = Instant::now();
    while routing(running) == before {
        assert!(started.elapsed() < RELOAD, "hosts.toml edit not reloaded within {RELOAD:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn mirror_entry(mirror: &Front, capabilities: &[&str]) -> String {
    format!("[host.\"http://{}\"]\n  capabilities = {capabilities:?}\n", mirror.addr())
}

fn signed_rule(scope: &str, signatures_from: Option<&str>) -> String {
    let from = signatures_from.map(|repo| format!("signatures_from = \"{repo}\"\n")).unwrap_or_default();
    format!("[[rule]]\nscope = \"{scope}\"\nrequire = \"signed\"\nkeys = [\"a.pub\"]\n{from}\n")
}

async fn start(lab: &Lab, key: &CosignKey, policy: &str, insecure: Vec<String>) -> Running {
    let mut config = Config { upstream: lab.containerd_sock.clone(), ..Config::default() };
    config.registry.config_path = Some(lab.dir.path().join("certs.d").display().to_string());
    config.registry.insecure = insecure;
    config.registry.timeout = TIMEOUT;
    let pem = key.public_pem();
    common::pullgate::start_with(config, &[("a.pub", pem.as_str()), ("mirrors.toml", policy)]).await
}

/// Pulls `image` through pullgate; Err holds the status message.
async fn pull(running: &Running, image: &str) -> Result<(), String> {
    pull_on(&running.socket, image, None).await
}

/// Pulls `image` through the pullgate listening on `socket`, with the kubelet's `auth`.
async fn pull_on(socket: &std::path::Path, image: &str, auth: Option<AuthConfig>) -> Result<(), String> {
    let mut images = cri::images(socket);
    let request = pullgate::cri::proto::PullImageRequest { auth, ..cri::pull_request(image, Some("default")) };
    match images.pull_image(request).await {
        Ok(_) => Ok(()),
        Err(status) => Err(status.message().to_owned()),
    }
}

/// Pushes `repo:v1` to the lab registry and signs it, with the real cosign, for the name
/// `UPSTREAM/repo`; the signatures go to `signatures_repo` when given. Returns the digest.
fn push_signed(lab: &Lab, key: &CosignKey, repo: &str, signatures_repo: Option<&str>) -> String {
    let digest = lab.push_image(&format!("{repo}:v1"), repo);
    key.sign_as(&format!("{UPSTREAM}/{repo}"), &lab.registry, repo, &digest, signatures_repo);
    digest
}

/// Pulls `UPSTREAM/repo:v1`, expects it accepted, and checks containerd holds exactly the
/// verified manifest under the tag and under the pinned digest.
async fn assert_accepted_and_pinned(lab: &Lab, running: &Running, repo: &str, digest: &str) {
    let image = format!("{UPSTREAM}/{repo}:v1");
    pull(running, &image).await.unwrap_or_else(|e| panic!("{image} refused: {e}\n{}", lab.logs()));
    let (verified, config) = store::verified(&lab.registry, repo, "v1").await;
    assert_eq!(verified, digest);
    store::assert_pinned(lab, &image, &verified, &config).await;
}

/// pullgate's reads of `repo` at `front` (containerd's left out), as "manifests/…" or "blobs/…".
fn pullgate_reads(front: &Front, repo: &str) -> Vec<String> {
    let prefix = format!("/v2/{repo}/");
    let reads = front.requests().into_iter().filter(|seen| seen.reads_repo(repo) && !seen.is_containerd());
    reads.map(|seen| seen.path.trim_start_matches(&prefix).to_owned()).collect()
}

fn tag_reads(reads: &[String]) -> usize {
    reads.iter().filter(|read| *read == "manifests/v1").count()
}

fn signature_reads(reads: &[String]) -> usize {
    reads.iter().filter(|read| read.starts_with("manifests/sha256-") && read.ends_with(".sig")).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_only_a_mirror_serves_is_verified_there_pinned_and_refused_once_the_mirror_stops() {
    let lab = Lab::start_containerd2(false);
    let mirror = Front::start(&lab.registry);
    // The same front is also a registry of its own, for the direct pull to compare with.
    mirror.trust_in(&lab);
    let key = CosignKey::generate();
    let digest = push_signed(&lab, &key, "demo/app", None);
    let via_mirror = push_signed(&lab, &key, "demo/cold", None);
    lab.push_image("demo/unsigned:v1", "unsigned");
    let direct = lab.push_image("direct/app:v1", "direct");
    key.sign_as(&format!("{}/direct/app", mirror.addr()), &lab.registry, "direct/app", &direct, None);
    write_hosts(&lab, &mirror_entry(&mirror, &["pull", "resolve"]));
    let policy =
        signed_rule(&format!("{UPSTREAM}/demo"), None) + &signed_rule(&format!("{}/direct", mirror.addr()), None);
    let running = start(&lab, &key, &policy, vec![mirror.addr()]).await;

    assert_accepted_and_pinned(&lab, &running, "demo/app", &digest).await;
    let reads = pullgate_reads(&mirror, "demo/app");
    assert_eq!((tag_reads(&reads), signature_reads(&reads)), (1, 1), "pullgate asked the mirror: {reads:?}");
    let containerd = mirror.count(|seen| seen.is_containerd() && seen.reads_repo("demo/app"));
    assert!(containerd > 0, "containerd fetched through the same mirror");
    let containerd_tag = mirror.count(|seen| seen.is_containerd() && seen.path.ends_with("/demo/app/manifests/v1"));
    assert_eq!(containerd_tag, 0, "containerd pulled the pinned digest, it did not resolve the tag");

    let unsigned = format!("{UPSTREAM}/demo/unsigned:v1");
    let refusal = pull(&running, &unsigned).await.expect_err("an unsigned image through the mirror");
    assert!(refusal.starts_with("SignatureValidationFailed: "), "{refusal}");
    assert!(store::image_id(&lab, &unsigned).await.is_none(), "the unsigned image reached containerd");

    // Round trips: a cold pull through the mirror reads what a cold direct pull reads.
    pull(&running, &format!("{UPSTREAM}/demo/cold:v1")).await.expect("cold pull through the mirror");
    pull(&running, &format!("{}/direct/app:v1", mirror.addr())).await.expect("cold direct pull");
    let (mirrored, direct_reads) = (pullgate_reads(&mirror, "demo/cold"), pullgate_reads(&mirror, "direct/app"));
    assert_eq!(mirrored.len(), 4, "resolve, signature tag, referrers tag, payload: {mirrored:?}");
    assert_eq!(mirrored.len(), direct_reads.len(), "through the mirror {mirrored:?}, direct {direct_reads:?}");
    let (verified, config) = store::verified(&lab.registry, "demo/cold", "v1").await;
    assert_eq!(verified, via_mirror);
    store::assert_pinned(&lab, &format!("{UPSTREAM}/demo/cold:v1"), &verified, &config).await;

    // The mirror stops: the registry itself cannot be reached either, so nothing can be checked.
    drop(mirror);
    let started = Instant::now();
    let refusal = pull(&running, &format!("{UPSTREAM}/demo/app:v1")).await.expect_err("no host answers");
    assert!(refusal.starts_with("RegistryUnavailable: "), "{refusal}");
    assert!(started.elapsed() < TIMEOUT + MARGIN, "refused after {:?}", started.elapsed());
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hosts_are_tried_in_order_and_a_mirror_without_resolve_is_never_asked_for_a_tag() {
    let lab = Lab::start_containerd2(false);
    let (first, second) = (Front::start(&lab.registry), Front::start(&lab.registry));
    let key = CosignKey::generate();
    let digest = push_signed(&lab, &key, "demo/app", None);
    // The first mirror holds the image but not its signatures.
    let withheld = format!("/v2/demo/app/manifests/{}", common::cosign::signature_tag(&digest));
    first.hostile(&withheld, Hostile::Body(404, "application/json".into(), Bytes::from_static(b"{}")));
    write_hosts(&lab, &(mirror_entry(&first, &["pull"]) + &mirror_entry(&second, &["pull", "resolve"])));
    let running = start(&lab, &key, &signed_rule(&format!("{UPSTREAM}/demo"), None), Vec::new()).await;

    assert_accepted_and_pinned(&lab, &running, "demo/app", &digest).await;
    let (at_first, at_second) = (pullgate_reads(&first, "demo/app"), pullgate_reads(&second, "demo/app"));
    assert_eq!(tag_reads(&at_first), 0, "the pull-only mirror was asked to resolve: {at_first:?}");
    assert_eq!(tag_reads(&at_second), 1, "{at_second:?}");
    assert_eq!(signature_reads(&at_first), 1, "the first host is asked first: {at_first:?}");
    assert_eq!(signature_reads(&at_second), 1, "then the second, which has them: {at_second:?}");
    let containerd_tag = first.count(|seen| seen.is_containerd() && seen.path.ends_with("/manifests/v1"));
    assert_eq!(containerd_tag, 0);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn signatures_kept_in_another_repository_count_only_where_the_rule_says_so() {
    let lab = Lab::start_containerd2(false);
    let mirror = Front::start(&lab.registry);
    let key = CosignKey::generate();
    let signatures = format!("{}/sigs/app", lab.registry);
    let named = push_signed(&lab, &key, "demo/named", Some(&signatures));
    push_signed(&lab, &key, "demo/unnamed", Some(&signatures));
    write_hosts(&lab, &mirror_entry(&mirror, &["pull", "resolve"]));
    let policy = signed_rule(&format!("{UPSTREAM}/demo/named"), Some(&signatures))
        + &signed_rule(&format!("{UPSTREAM}/demo/unnamed"), None);
    let running = start(&lab, &key, &policy, vec![lab.registry.clone()]).await;

    assert_accepted_and_pinned(&lab, &running, "demo/named", &named).await;
    assert_eq!(signature_reads(&pullgate_reads(&mirror, "demo/named")), 0, "looked up beside the image");

    let unnamed = format!("{UPSTREAM}/demo/unnamed:v1");
    let refusal = pull(&running, &unnamed).await.expect_err("signatures elsewhere, and the rule does not say where");
    assert!(refusal.starts_with("SignatureValidationFailed: ") && refusal.contains("no signatures found"), "{refusal}");
    running.stop().await;
}

/// A mirror served over HTTPS by a private CA: the `ca` its hosts.toml entry names is what
/// pullgate trusts it by, as containerd does; without it the pull is refused for the
/// certificate and nothing reaches containerd; `skip_verify` trusts it without a CA.
#[tokio::test(flavor = "multi_thread")]
async fn an_https_mirror_is_trusted_by_its_hosts_toml_ca_or_skip_verify() {
    let lab = Lab::start_containerd2(false);
    let (mirror, ca) = lab.start_tls_registry();
    let key = CosignKey::generate();
    let mut digests = Vec::new();
    for repo in ["tls/with-ca", "tls/without-ca", "tls/skip-verify"] {
        let digest = lab.push_image_to(&mirror, &format!("{repo}:v1"), repo, None);
        key.signing(&mirror, repo, &digest).claiming(&format!("{UPSTREAM}/{repo}")).ca(&ca).run();
        digests.push(digest);
    }
    let policy = signed_rule(&format!("{UPSTREAM}/tls"), None);
    let entry = |tls: &str| format!("[host.\"https://{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n{tls}");
    write_hosts(&lab, &entry(&format!("  ca = {:?}\n", ca.display().to_string())));
    let running = start(&lab, &key, &policy, Vec::new()).await;

    let image = format!("{UPSTREAM}/tls/with-ca:v1");
    pull(&running, &image).await.unwrap_or_else(|e| panic!("{image} refused: {e}\n{}", lab.logs()));
    let config = store::config_over_tls(&mirror, &ca, "tls/with-ca", &digests[0]);
    store::assert_pinned(&lab, &image, &digests[0], &config).await;

    // hosts.toml is reloaded when it changes: the next pull meets the mirror without its CA.
    edit_hosts(&lab, &running, Some(&entry(""))).await;
    let image = format!("{UPSTREAM}/tls/without-ca:v1");
    let refusal = pull(&running, &image).await.expect_err("a mirror whose certificate chains to nothing trusted");
    assert!(refusal.starts_with("RegistryUnavailable: "), "{refusal}");
    assert!(refusal.to_lowercase().contains("certificate"), "{refusal}");
    store::assert_absent(&lab, &image).await;

    edit_hosts(&lab, &running, Some(&entry("  skip_verify = true\n"))).await;
    let image = format!("{UPSTREAM}/tls/skip-verify:v1");
    pull(&running, &image).await.unwrap_or_else(|e| panic!("{image} refused: {e}\n{}", lab.logs()));
    let config = store::config_over_tls(&mirror, &ca, "tls/skip-verify", &digests[2]);
    store::assert_pinned(&lab, &image, &digests[2], &config).await;
    running.stop().await;
}

/// hosts.toml is watched and reloaded, no restart: with no mirror the pull is refused (the
/// registry does not exist), a mirror added serves the next pull, a broken edit refuses
/// pulls naming the file and line (rather than keeping the old mirror, which containerd no
/// longer uses), and the file removed means no mirror again.
#[tokio::test(flavor = "multi_thread")]
async fn hosts_toml_edits_apply_to_the_next_pull_without_a_restart() {
    let lab = Lab::start_containerd2(false);
    let mirror = Front::start(&lab.registry);
    let key = CosignKey::generate();
    let first = push_signed(&lab, &key, "demo/first", None);
    push_signed(&lab, &key, "demo/second", None);
    let running = start(&lab, &key, &signed_rule(&format!("{UPSTREAM}/demo"), None), Vec::new()).await;

    let refusal = pull(&running, &format!("{UPSTREAM}/demo/first:v1")).await.expect_err("no mirror yet");
    assert!(refusal.starts_with("RegistryUnavailable: "), "{refusal}");
    assert_eq!(mirror.count(|seen| seen.reads_repo("demo/first")), 0);

    edit_hosts(&lab, &running, Some(&mirror_entry(&mirror, &["pull", "resolve"]))).await;
    assert_accepted_and_pinned(&lab, &running, "demo/first", &first).await;

    edit_hosts(
        &lab,
        &running,
        Some(&format!("# edited\n{}[host.\"http://{}\"\n", mirror_entry(&mirror, &["pull"]), mirror.addr())),
    )
    .await;
    let second = format!("{UPSTREAM}/demo/second:v1");
    let refusal = pull(&running, &second).await.expect_err("a broken hosts.toml");
    assert!(refusal.contains("certs.d/registry.example.invalid/hosts.toml") && refusal.contains("line 4"), "{refusal}");
    assert_eq!(pullgate_reads(&mirror, "demo/second").len(), 0, "the mirror of the broken file was asked");

    edit_hosts(&lab, &running, None).await;
    let refusal = pull(&running, &second).await.expect_err("the mirror is gone");
    assert!(refusal.starts_with("RegistryUnavailable: "), "{refusal}");
    assert_eq!(mirror.count(|seen| seen.reads_repo("demo/second")), 0, "the removed mirror was asked");
    store::assert_absent(&lab, &second).await;
    running.stop().await;
}

/// A mirror asking for credentials of its own (its 401): containerd's CRI offers the
/// kubelet's credentials for the image to every host it asks when the kubelet names no
/// server (its usual), and only to the named server otherwise (`ParseAuth`); pullgate does
/// the same, so the image is accepted and pulled with them, and refused without them or
/// when they are meant for the registry itself.
#[tokio::test(flavor = "multi_thread")]
async fn a_mirrors_own_challenge_is_answered_as_containerd_answers_it() {
    let lab = Lab::start_containerd2(false);
    let mirror = Front::start(&lab.registry);
    let key = CosignKey::generate();
    let digest = push_signed(&lab, &key, "demo/private", None);
    push_signed(&lab, &key, "demo/other", None);
    write_hosts(&lab, &mirror_entry(&mirror, &["pull", "resolve"]));
    let running = start(&lab, &key, &signed_rule(&format!("{UPSTREAM}/demo"), None), Vec::new()).await;
    // "Basic " + base64("kube:pull-secret")
    mirror.require_authorization("Basic a3ViZTpwdWxsLXNlY3JldA==");
    let auth = |server: &str| AuthConfig {
        username: "kube".into(),
        password: "pull-secret".into(),
        server_address: server.into(),
        ..AuthConfig::default()
    };

    let image = format!("{UPSTREAM}/demo/private:v1");
    pull_on(&running.socket, &image, Some(auth(""))).await.unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    let (verified, config) = store::verified(&lab.registry, "demo/private", "v1").await;
    assert_eq!(verified, digest);
    store::assert_pinned(&lab, &image, &verified, &config).await;

    let other = format!("{UPSTREAM}/demo/other:v1");
    let refusal = pull_on(&running.socket, &other, None).await.expect_err("no credentials");
    assert!(refusal.contains("registry denied access") && refusal.contains("HTTP 401"), "{refusal}");
    let for_upstream = Some(auth(&format!("https://{UPSTREAM}")));
    let refusal = pull_on(&running.socket, &other, for_upstream).await.expect_err("credentials for another server");
    assert!(refusal.contains("registry denied access") && refusal.contains("HTTP 401"), "{refusal}");
    store::assert_absent(&lab, &other).await;
    let containerd = mirror.count(|seen| seen.is_containerd() && seen.reads_repo("demo/other"));
    assert_eq!(containerd, 0, "pullgate let containerd try: the refusal must be pullgate's");
    let for_mirror = Some(auth(&format!("http://{}", mirror.addr())));
    pull_on(&running.socket, &other, for_mirror).await.expect("credentials named for the mirror");
    running.stop().await;
}

/// `header` values in hosts.toml often carry tokens: sent to the mirror (which refuses
/// requests without it), never written to the log, even at trace level.
#[tokio::test(flavor = "multi_thread")]
async fn header_values_are_sent_and_never_logged() {
    const SECRET: &str = "Bearer hosts-toml-header-s3cr3t";
    let lab = Lab::start_containerd2(false);
    let mirror = Front::start(&lab.registry);
    mirror.require_authorization(SECRET);
    let key = CosignKey::generate();
    let digest = push_signed(&lab, &key, "demo/app", None);
    write_hosts(
        &lab,
        &format!("{}  header = {{ Authorization = {SECRET:?} }}\n", mirror_entry(&mirror, &["pull", "resolve"])),
    );
    let certs = lab.dir.path().join("certs.d");
    let pem = key.public_pem();
    let daemon = common::process::Serve::new(&lab.containerd_sock)
        .config("[log]\nlevel = \"trace\"")
        .registry(&format!("config_path = {:?}\ntimeout = \"5s\"", certs.display().to_string()))
        .files(&[("a.pub", pem.as_str()), ("mirrors.toml", &signed_rule(&format!("{UPSTREAM}/demo"), None))])
        .spawn();

    let image = format!("{UPSTREAM}/demo/app:v1");
    pull_on(&daemon.socket, &image, None).await.unwrap_or_else(|e| panic!("{e}\n{}", daemon.log_text()));
    let (verified, config) = store::verified(&lab.registry, "demo/app", "v1").await;
    assert_eq!(verified, digest);
    store::assert_pinned(&lab, &image, &verified, &config).await;
    assert_eq!(tag_reads(&pullgate_reads(&mirror, "demo/app")), 1, "pullgate resolved on the mirror");

    let log = daemon.log_text();
    assert!(log.contains("\"level\":\"TRACE\""), "the log is not at trace level");
    assert!(!log.contains("hosts-toml-header-s3cr3t"), "a header value reached the log");
}

/// A mirror that requires a client certificate (docker-registry with `http.tls.clientcas`,
/// serving the lab registry's storage): the `client` of its hosts.toml entry is presented,
/// as a [certificate, key] pair or as one file holding both, as containerd presents it;
/// without it the pull is refused and nothing reaches containerd.
#[tokio::test(flavor = "multi_thread")]
async fn a_mirror_requiring_a_client_certificate_gets_the_hosts_toml_client() {
    let lab = Lab::start_containerd2(false);
    let (mirror, ca, cert, client_key) = lab.start_mtls_registry();
    let key = CosignKey::generate();
    let pair = push_signed(&lab, &key, "mtls/pair", None);
    push_signed(&lab, &key, "mtls/none", None);
    let single = push_signed(&lab, &key, "mtls/single", None);
    let both = lab.dir.path().join("client-both.pem");
    let pem = |path: &std::path::Path| std::fs::read(path).expect("read a client certificate file");
    std::fs::write(&both, [pem(&cert), pem(&client_key)].concat()).expect("write client-both.pem");
    let entry = |client: String| {
        format!("[host.\"https://{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = {ca:?}\n{client}")
    };
    write_hosts(&lab, &entry(format!("  client = [[{cert:?}, {client_key:?}]]\n")));
    let running = start(&lab, &key, &signed_rule(&format!("{UPSTREAM}/mtls"), None), Vec::new()).await;

    let accepted = |repo: &'static str, digest: String| {
        let (lab, running) = (&lab, &running);
        async move {
            let image = format!("{UPSTREAM}/{repo}:v1");
            pull(running, &image).await.unwrap_or_else(|e| panic!("{image} refused: {e}\n{}", lab.logs()));
            let (verified, config) = store::verified(&lab.registry, repo, "v1").await;
            assert_eq!(verified, digest);
            store::assert_pinned(lab, &image, &verified, &config).await;
        }
    };
    accepted("mtls/pair", pair).await;

    edit_hosts(&lab, &running, Some(&entry(String::new()))).await;
    let image = format!("{UPSTREAM}/mtls/none:v1");
    let refusal = pull(&running, &image).await.expect_err("no client certificate");
    assert!(refusal.starts_with("RegistryUnavailable: "), "{refusal}");
    store::assert_absent(&lab, &image).await;

    edit_hosts(&lab, &running, Some(&entry(format!("  client = {both:?}\n")))).await;
    accepted("mtls/single", single).await;
    running.stop().await;
}
