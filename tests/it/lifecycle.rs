//! The pullgate binary as systemd runs it: readiness, SIGTERM drain, startup errors, the unit.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::cosign::{CosignKey, unused_public_pem};
use common::cri;
use common::lab::Lab;
use common::policy;
use common::process::{self, Serve};
use common::raw::{self, Delay, RecordingUpstream};

/// pullgate as systemd starts it, accepting every image.
fn serve(upstream: &Path) -> Serve {
    Serve::new(upstream).files(&[("all.toml", &policy::accept("*"))])
}

#[tokio::test(flavor = "multi_thread")]
async fn signals_ready_then_drains_in_flight_calls_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (listen, upstream_socket) = (dir.path().join("run/pg.sock"), dir.path().join("up.sock"));
    let upstream = RecordingUpstream::start_delayed(&upstream_socket, Delay(Duration::from_millis(800)));
    // Returns once pullgate has sent READY=1 to its NOTIFY_SOCKET, and fails if it never does.
    let mut daemon = serve(&upstream_socket).listen(&listen).spawn();

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
    daemon.signal("TERM");
    let response = in_flight.await.unwrap();
    assert_eq!(response.grpc_status(), Some("5"), "in-flight call was cut: {response:?}");
    let status = tokio::task::spawn_blocking(move || daemon.wait_exit(Duration::from_secs(10))).await.unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(!listen.exists(), "socket left behind");
}

#[test]
fn unknown_config_key_fails_startup_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pullgate.toml");
    std::fs::write(&config, "listen = \"/tmp/x.sock\"\nupstraem = \"/tmp/y.sock\"\n").unwrap();
    let run = process::run(&["serve", "--config", config.to_str().unwrap()], "");
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("upstraem"), "{}", run.stderr);
}

#[test]
fn refuses_a_socket_another_process_serves() {
    let dir = tempfile::tempdir().unwrap();
    let listen = dir.path().join("pg.sock");
    let _held = std::os::unix::net::UnixListener::bind(&listen).unwrap();
    let (status, stderr) =
        serve(&dir.path().join("up.sock")).listen(&listen).text_log().spawn_to_exit(Duration::from_secs(5));
    assert!(!status.success());
    assert!(stderr.contains("in use by another live process"), "{stderr}");
    assert!(!stderr.contains('\x1b'), "colour codes in a log that is not a terminal: {stderr:?}");
}

#[test]
fn a_log_level_that_is_no_level_fails_startup() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pullgate.toml");
    std::fs::write(&config, "[log]\nlevel = \"verbose\"\n").unwrap();
    let run = process::run(&["serve", "--config", config.to_str().unwrap()], "");
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("\"verbose\" is not a level"), "{}", run.stderr);
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
    let rules = format!(
        "[[rule]]\nscope = \"{r}/audit\"\nrequire = \"signed\"\nkeys = [\"a.pub\"]\nmode = \"audit\"\n\n\
         [[rule]]\nscope = \"{r}/enforce\"\nrequire = \"signed\"\nkeys = [\"a.pub\"]\n\n\
         [[rule]]\nscope = \"{r}/open\"\nrequire = \"accept\"\n\n\
         [[rule]]\nscope = \"{r}/pair\"\nrequire = \"signed\"\nkeys = [\"a.pub\", \"b.pub\"]\nthreshold = 2\n",
        r = lab.registry
    );
    let policy = policy_dir.join("rules.toml");
    let mut daemon = Serve::in_dir(dir.path(), &lab.containerd_sock)
        .files(&[("a.pub", &signer.public_pem()), ("b.pub", &unused_public_pem()), ("rules.toml", &rules)])
        .insecure(&[&lab.registry])
        .config("[log]\nlevel = \"warn\"")
        .spawn();
    let pull = |repo: &str| {
        let (socket, image) = (daemon.socket.clone(), format!("{}/{repo}:v1", lab.registry));
        async move { cri::images(&socket).pull_image(cri::pull_request(&image, Some("default"))).await }
    };
    pull("audit/app").await.expect("an audit rule lets the pull through");
    pull("enforce/app").await.expect_err("the enforced rule refuses");
    pull("open/app").await.expect("the accept rule lets the pull through");
    let short = pull("pair/app").await.expect_err("one of two keys is not enough");
    let b_pub = policy_dir.join("b.pub").display().to_string();
    assert!(short.message().contains(&format!("only 1 of 2 required keys signed; missing: {b_pub}")), "{short:?}");
    daemon.signal("TERM");
    let status = tokio::task::block_in_place(|| daemon.wait_exit(Duration::from_secs(10)));
    let stderr = daemon.log_text();
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
    let unit = unit.replace("/usr/local/bin/pullgate", process::BIN);
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
