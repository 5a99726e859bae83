//! The pullgate binary as systemd runs it: readiness, SIGTERM drain, startup errors, the unit.

use crate::common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
