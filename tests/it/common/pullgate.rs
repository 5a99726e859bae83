//! Runs pullgate in-process on a socket in a temp dir, with a policy written by the test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pullgate::config::Config;
use pullgate::registry::hosts::SharedHosts;
use pullgate::reload::Trigger;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Lets every image through unverified: for tests of the relay itself.
pub const ACCEPT_ALL: &str = "[[rule]]\nscope = \"*\"\nrequire = \"accept\"\n";

pub struct Running {
    pub socket: PathBuf,
    pub policy_dir: PathBuf,
    /// Where `/metrics` is served, when the config asked for it (port 0 picks a free one).
    pub metrics: Option<SocketAddr>,
    /// Reloads the policy, as SIGHUP does for the binary.
    pub reload: Trigger,
    /// containerd's host directory as pullgate routes by it, replaced at each reload.
    pub hosts: SharedHosts,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

pub async fn start(upstream: &Path) -> Running {
    let config = Config { upstream: upstream.to_owned(), ..Config::default() };
    start_with(config, &[("policy.toml", ACCEPT_ALL)]).await
}

/// Starts pullgate with `config`, its `policy_dir` replaced by a temp dir holding `files`
/// (name, content): policy files and the keys they reference.
pub async fn start_with(mut config: Config, files: &[(&str, &str)]) -> Running {
    let dir = tempfile::tempdir().expect("temp dir");
    config.listen = dir.path().join("pullgate.sock");
    config.shutdown_grace = Duration::from_secs(5);
    config.policy_dir = dir.path().join("policy.d");
    std::fs::create_dir_all(&config.policy_dir).expect("policy dir");
    for (name, content) in files {
        std::fs::write(config.policy_dir.join(name), content).expect("write policy file");
    }
    let prepared = pullgate::daemon::prepare(&config).expect("policy and registry set up");
    let listeners = pullgate::daemon::bind(&config).await.expect("bind pullgate's sockets");
    let metrics = listeners.metrics.as_ref().map(|listener| listener.local_addr().expect("metrics address"));
    let (socket, policy_dir, reload) = (config.listen.clone(), config.policy_dir.clone(), prepared.reload.clone());
    let hosts = prepared.hosts.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        pullgate::daemon::run(config, prepared, listeners, shutdown).await.expect("pullgate ran");
    });
    Running { socket, policy_dir, metrics, reload, hosts, stop: Some(stop), task: Some(task), _dir: dir }
}

impl Running {
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("pullgate task");
        }
    }
}
