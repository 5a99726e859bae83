//! Runs pullgate in-process on a socket in a temp dir.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pullgate::config::Config;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Running {
    pub socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

pub async fn start(upstream: &Path) -> Running {
    start_with(Config { upstream: upstream.to_owned(), ..Config::default() }).await
}

pub async fn start_with(mut config: Config) -> Running {
    let dir = tempfile::tempdir().expect("temp dir");
    config.listen = dir.path().join("pullgate.sock");
    config.shutdown_grace = Duration::from_secs(5);
    let listener = pullgate::cri::socket::bind(&config.listen).await.expect("bind pullgate socket");
    let socket = config.listen.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        pullgate::daemon::run(config, listener, shutdown).await.expect("pullgate ran");
    });
    Running { socket, stop: Some(stop), task: Some(task), _dir: dir }
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
