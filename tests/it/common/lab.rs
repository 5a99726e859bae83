//! A throwaway containerd + docker-registry lab for integration tests.
//!
//! Thin wrapper around `tests/lab/lab.sh`: every `Lab` owns a temp dir holding
//! a private containerd (CRI plugin on, its own socket/root/state) and a
//! plain-HTTP registry on 127.0.0.1, optionally a second registry with basic
//! auth. Dropping the `Lab` stops all of it.
//!
//! Tests must fail loudly rather than skip: every failure of the script panics
//! with its stdout/stderr (which include the tail of the failing daemon's log).
//!
//! Needs root (containerd mounts snapshots). The first `Lab` in a process runs
//! `lab.sh install`, which apt-installs whatever of containerd,
//! docker-registry, skopeo and python3 is missing, and builds the peers (containerd 2.x,
//! crictl, cosign) into a cache that outlives the run; `peer` finds them.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// What `push_image_with` puts under the tag (see tests/lab/mkimage.py).
#[derive(Clone, Copy, Debug)]
pub enum Format {
    /// One OCI image manifest (what `push_image` pushes).
    Oci,
    /// An OCI image index listing the host platform's manifest and one other platform's.
    OciIndex,
    /// One Docker schema2 manifest with Docker config and layer media types.
    Docker,
}

/// Which containerd a `Lab` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Containerd {
    /// Debian's containerd 1.6.20, for the smoke subset that must hold on 1.x too
    /// (`Lab::start_1_6`).
    V1_6,
    /// The 2.x release lab.sh builds, pulling CRI images through its transfer service
    /// (2.x's default since 2.1): `Lab::start`'s, as on the nodes operators run today.
    V2Transfer,
    /// 2.x with `use_local_image_pull = true`: the client-side pull 1.x does.
    V2Local,
}

impl Containerd {
    pub const ALL: [Containerd; 3] = [Containerd::V2Transfer, Containerd::V2Local, Containerd::V1_6];

    /// lab.sh's environment for `start`.
    fn env(self) -> [(&'static str, &'static str); 2] {
        match self {
            Containerd::V1_6 => [("LAB_CONTAINERD", "1.6"), ("LAB_LOCAL_PULL", "0")],
            Containerd::V2Transfer => [("LAB_CONTAINERD", "2"), ("LAB_LOCAL_PULL", "0")],
            Containerd::V2Local => [("LAB_CONTAINERD", "2"), ("LAB_LOCAL_PULL", "1")],
        }
    }
}

pub struct Lab {
    pub dir: tempfile::TempDir,
    pub containerd: Containerd,
    /// containerd's gRPC socket (CRI is served here too).
    pub containerd_sock: PathBuf,
    /// `127.0.0.1:PORT` of the open, plain-HTTP registry.
    pub registry: String,
    /// `127.0.0.1:PORT` of the basic-auth registry, for `start_with_auth`.
    pub auth_registry: Option<String>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lab/lab.sh")
}

/// Run `lab.sh ARGS...`, returning stdout; panic with everything on failure.
fn lab_sh(args: &[&str]) -> String {
    lab_sh_env(args, &[])
}

fn lab_sh_env(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .envs(env.iter().copied())
        // Lets lab.sh's watchdog tear the lab down even if this test binary
        // dies without running destructors (abort, SIGKILL, std::process::exit).
        .env("LAB_OWNER_PID", std::process::id().to_string())
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", script().display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        panic!(
            "lab.sh {} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            args.join(" "),
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stdout
}

/// `lab.sh install` once per test process; returns the directory of the peers it built. A
/// failure is remembered and re-reported by every later `Lab::start` in the same process (a
/// plain `Once` would only report "poisoned" after the first panic).
fn install_once() -> PathBuf {
    static INSTALL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let result = INSTALL.get_or_init(|| {
        std::panic::catch_unwind(|| {
            let out = lab_sh(&["install"]);
            let bin = out.lines().find_map(|line| line.strip_prefix("PEER_BIN="));
            PathBuf::from(bin.unwrap_or_else(|| panic!("lab.sh install named no PEER_BIN; stdout:\n{out}")))
        })
        .map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "lab.sh install panicked".into())
        })
    });
    match result {
        Ok(bin) => bin.clone(),
        Err(msg) => panic!("{msg}"),
    }
}

/// The path of a peer `lab.sh install` built: "crictl", "cosign", "containerd2", "ctr2".
pub fn peer(name: &str) -> PathBuf {
    let path = install_once().join(name);
    assert!(path.is_file(), "lab.sh install built no {}", path.display());
    path
}

/// Run `lab.sh push-image ...` and return the digest it prints last.
fn push_args(args: &[&str]) -> String {
    let out = lab_sh(args);
    let digest = out.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "lab.sh push-image printed no digest; stdout was:\n{out}"
    );
    digest.to_string()
}

fn read_env(dir: &Path) -> HashMap<String, String> {
    let path = dir.join("lab.env");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

impl Lab {
    /// A lab running containerd 2.x with its default pull path (the transfer service).
    pub fn start() -> Lab {
        Self::start_on(Containerd::V2Transfer, None)
    }

    pub fn start_with_auth(user: &str, pass: &str) -> Lab {
        Self::start_on(Containerd::V2Transfer, Some((user, pass)))
    }

    /// A lab running Debian's containerd 1.6.20: only for the smoke subset that must hold on
    /// 1.x too, and for behaviour only 1.x has (schema1 conversion).
    pub fn start_1_6() -> Lab {
        Self::start_on(Containerd::V1_6, None)
    }

    /// A lab running containerd 2.x, pulling through its transfer service or (`local_pull`)
    /// the way 1.x does.
    pub fn start_containerd2(local_pull: bool) -> Lab {
        Self::start_on(if local_pull { Containerd::V2Local } else { Containerd::V2Transfer }, None)
    }

    /// A lab running `containerd`, with a basic-auth registry too when `auth` is given.
    pub fn start_on(containerd: Containerd, auth: Option<(&str, &str)>) -> Lab {
        install_once();
        // Short prefix: the socket path must fit in sun_path (107 bytes).
        let dir = tempfile::Builder::new().prefix("pullgate-lab-").tempdir().expect("create lab temp dir");
        let dir_str = dir.path().to_str().expect("utf-8 temp dir").to_owned();
        let auth_arg = auth.map(|(u, p)| format!("{u}:{p}"));
        let mut args = vec!["start", dir_str.as_str()];
        if let Some(a) = &auth_arg {
            args.extend(["--auth", a.as_str()]);
        }
        // lab.sh cleans up after itself when start fails, so panicking here
        // (and letting `dir` be deleted) leaves nothing behind.
        lab_sh_env(&args, &containerd.env());

        let env = read_env(dir.path());
        let get =
            |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned().unwrap_or_else(|| panic!("lab.env has no {k}"));
        Lab {
            containerd_sock: PathBuf::from(get("CONTAINERD_SOCK")),
            registry: get("REGISTRY"),
            auth_registry: auth.map(|_| get("AUTH_REGISTRY")),
            containerd,
            dir,
        }
    }

    /// Starts a registry serving HTTPS with a certificate for 127.0.0.1 from a lab CA that
    /// containerd trusts (certs.d); returns its address and the CA's PEM file.
    pub fn start_tls_registry(&self) -> (String, PathBuf) {
        lab_sh(&["start-tls-registry", self.dir_str()]);
        let env = read_env(self.dir.path());
        let get =
            |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned().unwrap_or_else(|| panic!("lab.env has no {k}"));
        (get("TLS_REGISTRY"), PathBuf::from(get("TLS_REGISTRY_CA")))
    }

    /// Starts a registry like `start_tls_registry` that also requires a client certificate,
    /// serving what is pushed to `registry`; returns its address, the server CA, and the
    /// client certificate and key files.
    pub fn start_mtls_registry(&self) -> (String, PathBuf, PathBuf, PathBuf) {
        lab_sh(&["start-mtls-registry", self.dir_str()]);
        let env = read_env(self.dir.path());
        let get =
            |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned().unwrap_or_else(|| panic!("lab.env has no {k}"));
        let tls = PathBuf::from(get("MTLS_REGISTRY_DIR"));
        (get("MTLS_REGISTRY"), tls.join("ca.pem"), tls.join("client.pem"), tls.join("client-key.pem"))
    }

    fn dir_str(&self) -> &str {
        self.dir.path().to_str().expect("utf-8 temp dir")
    }

    /// Push a fresh single-layer image to the open registry; returns its
    /// manifest digest (`sha256:...`). Same seed, same digest.
    pub fn push_image(&self, name_tag: &str, seed: &str) -> String {
        self.push_image_to(&self.registry, name_tag, seed, None)
    }

    pub fn push_image_to(&self, registry: &str, name_tag: &str, seed: &str, creds: Option<(&str, &str)>) -> String {
        let creds_arg = creds.map(|(u, p)| format!("{u}:{p}"));
        let mut args = vec!["push-image", self.dir_str(), registry, name_tag, seed];
        if let Some(c) = &creds_arg {
            args.extend(["--creds", c.as_str()]);
        }
        push_args(&args)
    }

    /// Like `push_image`, in the given format; returns the digest of the top-level manifest or
    /// index as the registry serves it.
    pub fn push_image_with(&self, name_tag: &str, seed: &str, format: Format) -> String {
        let mut args = vec!["push-image", self.dir_str(), &self.registry, name_tag, seed];
        match format {
            Format::Oci => {}
            Format::OciIndex => args.push("--index"),
            Format::Docker => args.push("--docker"),
        }
        push_args(&args)
    }

    /// Stop containerd only (registries keep running). Its socket goes away.
    pub fn stop_containerd(&self) {
        lab_sh(&["containerd-stop", self.dir_str()]);
    }

    /// Start containerd again with the same config, socket and state; returns
    /// once it serves CRI again.
    pub fn start_containerd(&self) {
        lab_sh(&["containerd-start", self.dir_str()]);
    }

    /// containerd's whole log (all its runs in this lab).
    pub fn containerd_log(&self) -> String {
        let path = self.dir.path().join("containerd/containerd.log");
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }

    /// The lab's daemon logs, for a failing test to print.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for name in ["containerd/containerd.log", "registry/registry.log", "auth-registry/registry.log"] {
            if let Ok(text) = std::fs::read_to_string(self.dir.path().join(name)) {
                let tail: Vec<&str> = text.lines().rev().take(60).collect();
                s.push_str(&format!("----- {name} (last {} lines) -----\n", tail.len()));
                for line in tail.iter().rev() {
                    s.push_str(line);
                    s.push('\n');
                }
            }
        }
        s
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Never panic in drop (a panic while unwinding aborts the process and
        // hides the original failure); report and let TempDir clean up.
        match Command::new("bash").arg(script()).args(["stop", self.dir_str()]).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "lab.sh stop {} failed ({}): {}",
                self.dir_str(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("could not run lab.sh stop: {e}"),
        }
    }
}
