//! The pullgate binary as a separate process (benchmarks, memory checks), with its own config.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
}

/// Writes a config and policy under `dir` and starts `bin serve` on it; returns once the
/// socket is bound. `policy` is the TOML of one policy file; `files` are extra files (keys)
/// for the policy directory.
pub fn start(
    bin: &str,
    dir: &Path,
    upstream: &Path,
    policy: &str,
    files: &[(&str, &str)],
    insecure: &[String],
) -> Daemon {
    let policy_dir = dir.join("policy.d");
    std::fs::create_dir_all(&policy_dir).expect("policy dir");
    std::fs::write(policy_dir.join("policy.toml"), policy).expect("policy");
    for (name, content) in files {
        std::fs::write(policy_dir.join(name), content).expect("policy file");
    }
    let socket = dir.join("pullgate.sock");
    let config = format!(
        "listen = {socket:?}\nupstream = {upstream:?}\npolicy_dir = {policy_dir:?}\n[registry]\ninsecure = {insecure:?}\n[log]\nlevel = \"warn\"\n"
    );
    std::fs::write(dir.join("pullgate.toml"), config).expect("config");
    let child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(dir.join("pullgate.toml"))
        .stderr(Stdio::null())
        .spawn()
        .expect("start pullgate");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "pullgate did not bind its socket");
        std::thread::sleep(Duration::from_millis(10));
    }
    Daemon { child, socket }
}

impl Daemon {
    /// A `/proc/<pid>/status` field in KiB, e.g. "VmRSS:" or "VmHWM:".
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("proc status");
        let line = status.lines().find(|l| l.starts_with(field)).expect("status field");
        line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("status value")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
