//! `pullgate serve`: config → policy → socket → proxy → readiness → signal → bounded drain.

use std::future::Future;
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::config::Config;
use crate::cri::proxy::Proxy;
use crate::cri::upstream::Upstream;
use crate::cri::{server, socket};
use crate::decision::Gate;
use crate::policy::{Policy, PolicyError, SharedPolicy};
use crate::registry::{BuildError, HttpRegistry};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("cannot set up the registry client: {0}")]
    Registry(#[from] BuildError),
    #[error(transparent)]
    Socket(#[from] socket::SocketError),
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
    #[error("shutdown grace period expired with calls still in flight")]
    DrainTimeout,
}

/// Everything `serve` needs that can fail before the socket is bound, built in one place so
/// `pullgate verify` and `policy check` see exactly what the daemon would.
pub struct Prepared {
    pub policy: SharedPolicy,
    pub gate: Gate<HttpRegistry>,
}

pub fn prepare(config: &Config) -> Result<Prepared, DaemonError> {
    let policy = Policy::load(&config.policy_dir, config.policy_json.as_deref())?;
    if policy.is_empty() {
        tracing::warn!(policy_dir = %config.policy_dir.display(), "policy has no rules: every pull will be rejected");
    }
    let policy = SharedPolicy::new(policy);
    let registry = Arc::new(HttpRegistry::new(&config.registry)?);
    let gate = Gate::new(policy.clone(), registry, config.registry.timeout);
    Ok(Prepared { policy, gate })
}

pub async fn serve(config: Config) -> Result<(), DaemonError> {
    let prepared = prepare(&config)?;
    let listener = socket::bind(&config.listen).await?;
    let terminate = terminate_signal()?;
    tracing::info!(listen = %config.listen.display(), upstream = %config.upstream.display(), "serving");
    notify_ready();
    run(config, prepared, listener, terminate).await
}

/// The server body, separate from process concerns so tests can run it with their own shutdown.
pub async fn run(
    config: Config,
    prepared: Prepared,
    listener: UnixListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let upstream = Upstream::new(&config.upstream, config.connect_timeout);
    let proxy = Proxy::new(prepared.gate, upstream);
    let drained = server::run(listener, proxy, shutdown, config.shutdown_grace).await;
    let _ = std::fs::remove_file(&config.listen);
    if drained { Ok(()) } else { Err(DaemonError::DrainTimeout) }
}

fn terminate_signal() -> Result<impl Future<Output = ()>, DaemonError> {
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    })
}

/// Tells systemd (Type=notify) that the socket is bound and calls are being served.
fn notify_ready() {
    if let Err(error) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(%error, "sd_notify READY failed");
    }
}
