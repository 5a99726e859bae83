//! The pullgate binary as systemd runs it: readiness, SIGTERM drain, startup errors, the unit.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

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
