//! Hot reload in a running daemon: policy edits apply to the next pull within 2 s, pulls the
//! edit does not concern keep working meanwhile, a broken edit leaves the last good policy in
//! force, and SIGHUP reloads the binary.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::lab::Lab;
use common::metrics;
use common::policy::{self, rule};
use common::process::{self, Serve};
use common::{cri, raw};
use pullgate::config::Config;

/// What pullgate promises for a policy change.
const LIMIT: Duration = Duration::from_secs(2);
const FAILED_RELOADS: &str = r#"pullgate_policy_reloads_total{result="failure"}"#;
const RELOADS: &str = r#"pullgate_policy_reloads_total{result="success"}"#;

/// Saves as editors do: a new file renamed over the old one.
fn replace(path: &Path, content: &str) {
    let tmp = path.with_extension("swp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn pull(socket: &Path, image: &str) -> Result<(), tonic::Status> {
    cri::images(socket).pull_image(cri::pull_request(image, Some("default"))).await.map(drop)
}

/// Pulls `image` until its outcome is `accepted`; returns how long that took.
async fn until_outcome(socket: &Path, image: &str, accepted: bool) -> Duration {
    let started = Instant::now();
    loop {
        let result = pull(socket, image).await;
        if result.is_ok() == accepted {
            if let Err(status) = &result {
                assert!(status.message().starts_with("SignatureValidationFailed: "), "{status:?}");
            }
            return started.elapsed();
        }
        assert!(started.elapsed() < LIMIT, "{image}: still {result:?} after {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Pulls `image` over and over until `stop` (or a bound on time and count, should the test
/// fail before it stops the loop); returns the failures and the number of pulls.
fn steady_pulls(socket: &Path, image: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(Vec<String>, usize)> {
    const MAX_PULLS: usize = 2000;
    const MAX_TIME: Duration = Duration::from_secs(60);
    let socket = socket.to_owned();
    tokio::spawn(async move {
        let (started, mut failures, mut pulls) = (Instant::now(), Vec::new(), 0);
        while !stop.load(Ordering::Relaxed) && pulls < MAX_PULLS && started.elapsed() < MAX_TIME {
            if let Err(status) = pull(&socket, &image).await {
                failures.push(format!("{:?}: {}", status.code(), status.message()));
            }
            pulls += 1;
            // Also a point where the runtime can stop this task if the test panicked.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (failures, pulls)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_flips_apply_within_two_seconds_and_other_pulls_never_fail() {
    let lab = Lab::start();
    lab.push_image("flip/app:v1", "reload-flip");
    lab.push_image("steady/app:v1", "reload-steady");
    let (flip, steady) = (format!("{}/flip", lab.registry), format!("{}/steady", lab.registry));
    let mut config = Config { upstream: lab.containerd_sock.clone(), ..Config::default() };
    config.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    let files = [("10-flip.toml", rule(&flip, "accept")), ("20-steady.toml", rule(&steady, "accept"))];
    let files: Vec<(&str, &str)> = files.iter().map(|(name, text)| (*name, text.as_str())).collect();
    let pullgate = common::pullgate::start_with(config, &files).await;
    let (socket, flip_file) = (pullgate.socket.clone(), pullgate.policy_dir.join("10-flip.toml"));
    let address = pullgate.metrics.expect("metrics listener");
    let image = format!("{flip}/app:v1");
    pull(&socket, &image).await.expect("accepted before any change");

    let stop = Arc::new(AtomicBool::new(false));
    let background = steady_pulls(&socket, format!("{steady}/app:v1"), stop.clone());

    replace(&flip_file, &rule(&flip, "reject"));
    let to_reject = until_outcome(&socket, &image, false).await;

    let failed_before = metrics::scrape(address).await.value(FAILED_RELOADS);
    std::fs::write(&flip_file, "[[rule]\nscope = ").unwrap();
    wait_for_metric(address, FAILED_RELOADS, failed_before + 1.0).await;
    let refused = pull(&socket, &image).await.expect_err("a broken edit must leave the reject rule in force");
    assert!(refused.message().contains("rejects every image"), "{refused:?}");

    replace(&flip_file, &rule(&flip, "accept"));
    let to_accept = until_outcome(&socket, &image, true).await;

    stop.store(true, Ordering::Relaxed);
    let (failures, pulls) = background.await.unwrap();
    assert!(failures.is_empty(), "unrelated pulls failed during reloads: {failures:?}");
    assert!(pulls >= 5, "only {pulls} unrelated pulls ran during the flips");
    eprintln!(
        "accept→reject applied after {to_reject:?}, reject→accept after {to_accept:?}; {pulls} unrelated pulls, none failed"
    );
    pullgate.stop().await;
}

async fn wait_for_metric(address: SocketAddr, series: &str, at_least: f64) {
    let started = Instant::now();
    loop {
        let value = metrics::scrape(address).await.value(series);
        if value >= at_least {
            return;
        }
        assert!(started.elapsed() < LIMIT, "{series} = {value} after {LIMIT:?}, expected {at_least}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// === SIGHUP, with the binary ===

/// Starts `pullgate serve` with metrics on a free port. Its one policy file,
/// `policy.d/all.toml`, is a hard link to `outside/all.toml`: written in place through that
/// name, the change reaches no directory pullgate watches (inotify reports it to the watches
/// on the directory of the name written through), so only SIGHUP can make pullgate load it.
fn spawn_serve(dir: &Path) -> process::Daemon {
    let (policy_dir, outside) = (dir.join("policy.d"), dir.join("outside"));
    std::fs::create_dir_all(&policy_dir).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("all.toml"), rule("*", "reject")).unwrap();
    std::fs::hard_link(outside.join("all.toml"), policy_dir.join("all.toml")).unwrap();
    Serve::in_dir(dir, &dir.join("containerd.sock")).metrics().spawn()
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = spawn_serve(dir.path());
    let (socket, address) = (daemon.socket.clone(), daemon.metrics.expect("metrics address"));
    // A rejected pull never reaches containerd, so none is needed here.
    let refused = raw_pull(&socket).await;
    assert!(refused.contains("rejects every image"), "{refused}");
    assert_eq!(metrics::scrape(address).await.value(RELOADS), 0.0);

    // A new policy, in place, through the unwatched name: no rule covers the image any more.
    std::fs::write(dir.path().join("outside/all.toml"), rule("example.com", "reject")).unwrap();
    // Not a wait for an event, but for one that must not come: past the reload debounce
    // (200 ms), with margin, the policy in force is still the old one.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let before = raw_pull(&socket).await;
    assert!(before.contains("rejects every image"), "reloaded without SIGHUP: {before}");
    assert_eq!(metrics::scrape(address).await.value(RELOADS), 0.0, "reloaded without SIGHUP");

    daemon.signal("HUP");
    wait_for_metric(address, RELOADS, 1.0).await;
    let scraped = metrics::scrape(address).await;
    assert_eq!(scraped.value(RELOADS), 1.0, "one SIGHUP, one reload");
    assert_eq!(scraped.value(FAILED_RELOADS), 0.0);
    // Still serving, with the policy it reloaded.
    let after = raw_pull(&socket).await;
    assert!(after.contains("no policy rule matches the image"), "{after}");
}

/// The refusal message of a PullImage of an arbitrary image.
async fn raw_pull(socket: &Path) -> String {
    use prost::Message;
    let request = cri::pull_request("registry.invalid/app:v1", None).encode_to_vec();
    let response = raw::call(socket, "/runtime.v1.ImageService/PullImage", raw::frame(&request), &[]).await;
    assert_eq!(response.grpc_status(), Some("2"), "{response:?}");
    response.grpc_message()
}

// === a key file that cannot be read, with the binary ===

const LAST_RELOAD_OK: &str = "pullgate_policy_last_reload_success";

/// A trusted key file replaced by a FIFO used to block the reload for good, with the metric
/// still saying 1, so a later revocation never applied. Now: the reload fails at once and says
/// why, the key still in force still decides, and the next valid edit applies.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_file_turned_fifo_fails_the_reload_and_the_next_revocation_applies() {
    let lab = Lab::start();
    let (a, c) = (common::cosign::CosignKey::generate(), common::cosign::CosignKey::generate());
    let digest = lab.push_image("team/app:v1", "reload-fifo");
    a.sign(&lab.registry, "team/app", &digest);
    let dir = tempfile::tempdir().unwrap();
    let (policy_dir, scope) = (dir.path().join("policy.d"), format!("{}/team", lab.registry));
    std::fs::create_dir_all(&policy_dir).unwrap();
    a.write_public_pem(&policy_dir.join("a.pub"));
    c.write_public_pem(&policy_dir.join("c.pub"));
    let signed_by = |key: &str| policy::signed(&scope, &[key]);
    std::fs::write(policy_dir.join("team.toml"), signed_by("a.pub")).unwrap();
    let served = Serve::in_dir(dir.path(), &lab.containerd_sock).insecure(&[&lab.registry]).metrics().spawn();
    let address = served.metrics.expect("metrics address");
    let image = format!("{scope}/app:v1");
    pull(&served.socket, &image).await.expect("signed by A, trusted");

    let key = policy_dir.join("a.pub");
    std::fs::remove_file(&key).unwrap();
    assert!(Command::new("mkfifo").arg(&key).status().unwrap().success());
    served.signal("HUP");
    wait_for_metric(address, FAILED_RELOADS, 1.0).await;
    assert_eq!(metrics::scrape(address).await.value(LAST_RELOAD_OK), 0.0);
    served.wait_for_log(&["policy reload failed", &key.display().to_string(), "FIFO"]);
    pull(&served.socket, &image).await.expect("the policy in force, trusting A, still decides");

    // Revoke A: trust only C. The FIFO stays where it is, now named by no rule.
    replace(&policy_dir.join("team.toml"), &signed_by("c.pub"));
    served.signal("HUP");
    until_outcome(&served.socket, &image, false).await;
    assert_eq!(metrics::scrape(address).await.value(LAST_RELOAD_OK), 1.0);
    let refused = pull(&served.socket, &image).await.expect_err("A is revoked");
    assert!(refused.message().contains("no signature by a trusted key"), "{refused:?}");
}
