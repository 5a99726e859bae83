//! The pullgate binary as systemd runs it: readiness, SIGTERM drain, startup errors, the unit.

use crate::common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cosign::{CosignKey, unused_public_pem};
use common::cri;
use common::lab::Lab;
use common::raw::{self, Delay, RecordingUpstream};

const BIN: &str = env!("CARGO_BIN_EXE_pullgate");

fn spawn_serve(listen: &Path, upstream: &Path, notify: Option<&Path>) -> Child {
    let policy_dir = listen.parent().unwrap().join("policy.d");
    std::fs::create_dir_all(&policy_dir).unwrap();
    std::fs::write(policy_dir.join("all.toml"), "[[rule]]\nscope = \"*\"\nrequire = \"accept\"\n").unwrap();
    let mut command = Command::new(BIN);
    command.env("PULLGATE_POLICY_DIR", &policy_dir);
    command.args(["serve", "--listen"]).arg(listen).arg("--upstream").arg(upstream);
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    if let Some(notify) = notify {
        command.env("NOTIFY_SOCKET", notify);
    }
    command.spawn().expect("spawn pullgate")
}

fn send_sigterm(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "pullgate did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn signals_ready_then_drains_in_flight_calls_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (listen, upstream_socket) = (dir.path().join("run/pg.sock"), dir.path().join("up.sock"));
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let upstream = RecordingUpstream::start_delayed(&upstream_socket, Delay(Duration::from_millis(800)));
    let mut child = spawn_serve(&listen, &upstream_socket, Some(&notify_path));

    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("no sd_notify message from pullgate");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));

    let socket = listen.clone();
    let in_flight =
        tokio::spawn(
            async move { raw::call(&socket, "/runtime.v1.ImageService/ListImages", raw::frame(b""), &[]).await },
        );
    // SIGTERM once the call is in flight: it has reached the upstream, which holds it 800 ms.
    let started = std::time::Instant::now();
    while upstream.arrived.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "the call never reached the upstream");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    send_sigterm(&child);
    let response = in_flight.await.unwrap();
    assert_eq!(response.grpc_status(), Some("5"), "in-flight call was cut: {response:?}");
    let status = tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(10))).await.unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(!listen.exists(), "socket left behind");
}

#[test]
fn unknown_config_key_fails_startup_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pullgate.toml");
    std::fs::write(&config, "listen = \"/tmp/x.sock\"\nupstraem = \"/tmp/y.sock\"\n").unwrap();
    let output = Command::new(BIN).args(["serve", "--config"]).arg(&config).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("upstraem"), "{stderr}");
}

#[test]
fn refuses_a_socket_another_process_serves() {
    let dir = tempfile::tempdir().unwrap();
    let listen = dir.path().join("pg.sock");
    let _held = std::os::unix::net::UnixListener::bind(&listen).unwrap();
    let mut child = spawn_serve(&listen, &dir.path().join("up.sock"), None);
    let status = wait_exit(&mut child, Duration::from_secs(5));
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("in use by another live process"), "{stderr}");
    assert!(!stderr.contains('\x1b'), "colour codes in a log that is not a terminal: {stderr:?}");
}

#[test]
fn a_log_level_that_is_no_level_fails_startup() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pullgate.toml");
    std::fs::write(&config, "[log]\nlevel = \"verbose\"\n").unwrap();
    let output = Command::new(BIN).args(["serve", "--config"]).arg(&config).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("\"verbose\" is not a level"), "{stderr}");
}

/// With `level = "warn"`, a refusal an audit rule lets through still leaves a trace: one
/// WARN event naming the image, the digest, the rule at file:line and the reason. Enforced
/// refusals likewise, a threshold one naming the key that did not sign; an acceptance is INFO
/// and does not show.
#[tokio::test(flavor = "multi_thread")]
async fn every_refusal_is_logged_at_warn_an_audited_one_too() {
    let lab = Lab::start();
    let audited = lab.push_image("audit/app:v1", "audit-warn");
    let enforced = lab.push_image("enforce/app:v1", "enforce-warn");
    lab.push_image("open/app:v1", "open-warn");
    // Signed by one of the two keys its rule requires.
    let pair = lab.push_image("pair/app:v1", "pair-warn");
    let signer = CosignKey::generate();
    signer.sign(&lab.registry, "pair/app", &pair);
    let dir = tempfile::tempdir().unwrap();
    let policy_dir = dir.path().join("policy.d");
    std::fs::create_dir_all(&policy_dir).unwrap();
    std::fs::write(policy_dir.join("a.pub"), signer.public_pem()).unwrap();
    std::fs::write(policy_dir.join("b.pub"), unused_public_pem()).unwrap();
    let rules = format!(
        "[[rule]]\nscope = \"{r}/audit\"\nrequire = \"signed\"\nkeys = [\"a.pub\"]\nmode = \"audit\"\n\n\
         [[rule]]\nscope = \"{r}/enforce\"\nrequire = \"signed\"\nkeys = [\"a.pub\"]\n\n\
         [[rule]]\nscope = \"{r}/open\"\nrequire = \"accept\"\n\n\
         [[rule]]\nscope = \"{r}/pair\"\nrequire = \"signed\"\nkeys = [\"a.pub\", \"b.pub\"]\nthreshold = 2\n",
        r = lab.registry
    );
    let policy = policy_dir.join("rules.toml");
    std::fs::write(&policy, rules).unwrap();
    let listen = dir.path().join("pg.sock");
    let config = dir.path().join("pullgate.toml");
    let text = format!(
        "listen = {listen:?}\nupstream = {:?}\npolicy_dir = {policy_dir:?}\n[registry]\ninsecure = [{:?}]\n\
         [log]\nlevel = \"warn\"\nformat = \"json\"\n",
        lab.containerd_sock, lab.registry
    );
    std::fs::write(&config, text).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pullgate");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !listen.exists() {
        assert!(Instant::now() < deadline, "pullgate did not bind its socket");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pull = |repo: &str| {
        let (socket, image) = (listen.clone(), format!("{}/{repo}:v1", lab.registry));
        async move { cri::images(&socket).pull_image(cri::pull_request(&image, Some("default"))).await }
    };
    pull("audit/app").await.expect("an audit rule lets the pull through");
    pull("enforce/app").await.expect_err("the enforced rule refuses");
    pull("open/app").await.expect("the accept rule lets the pull through");
    let short = pull("pair/app").await.expect_err("one of two keys is not enough");
    let b_pub = policy_dir.join("b.pub").display().to_string();
    assert!(short.message().contains(&format!("only 1 of 2 required keys signed; missing: {b_pub}")), "{short:?}");
    send_sigterm(&child);
    let (status, stderr) = tokio::task::spawn_blocking(move || {
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        (wait_exit(&mut child, Duration::from_secs(10)), stderr)
    })
    .await
    .unwrap();
    assert!(status.success(), "{status}: {stderr}");
    let decisions: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["message"] == "decision")
        .collect();
    let rule_at = |line: usize| format!("{}:{line}", policy.display());
    let a_pub = policy_dir.join("a.pub").display().to_string();
    let expected = [
        ("audit", "audit/app", audited, rule_at(2), "no-signatures", a_pub.clone()),
        ("enforce", "enforce/app", enforced, rule_at(8), "no-signatures", a_pub),
        ("enforce", "pair/app", pair, rule_at(17), "threshold", b_pub),
    ];
    assert_eq!(decisions.len(), expected.len(), "only the refusals, at WARN:\n{stderr}");
    for (event, (mode, repo, digest, file, code, missing)) in decisions.iter().zip(expected) {
        assert_eq!(event["level"], "WARN", "{event}");
        assert_eq!(event["mode"], mode, "{event}");
        assert_eq!(event["image"], format!("{}/{repo}:v1", lab.registry), "{event}");
        assert_eq!(event["digest"], digest, "{event}");
        assert_eq!(event["file"], file, "{event}");
        assert_eq!((&event["reason_code"], &event["missing_keys"]), (&code.into(), &missing.into()), "{event}");
        assert!(event["reason"].as_str().is_some_and(|reason| !reason.is_empty()), "{event}");
    }
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/pullgate.service")).unwrap();
    assert!(unit.contains("Type=notify"));
    // verify checks that ExecStart exists, so point it at the binary under test.
    let unit = unit.replace("/usr/local/bin/pullgate", BIN);
    let path = dir.path().join("pullgate.service");
    std::fs::write(&path, unit).unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .expect("systemd-analyze is needed (apt package systemd)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Unknown keys are only warnings for systemd, so any output counts as a failure.
    assert!(output.status.success() && stderr.trim().is_empty(), "{stderr}");
}
