//! `pullgate serve`: config → policy → sockets → proxy, reloader, metrics → readiness → signal
//! → bounded drain.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;

use crate::config::Config;
use crate::cri::proxy::Proxy;
use crate::cri::upstream::Upstream;
use crate::cri::{server, socket};
use crate::decision::Gate;
use crate::metrics::{self, Metrics};
use crate::policy::{Policy, PolicyError, SharedPolicy};
use crate::registry::hosts::SharedHosts;
use crate::registry::{BuildError, HttpRegistry};
use crate::reload::{Reloader, Trigger};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("cannot set up the registry client: {0}")]
    Registry(#[from] BuildError),
    #[error(transparent)]
    Socket(#[from] socket::SocketError),
    #[error("cannot serve metrics on {address}: {source}")]
    MetricsListen { address: SocketAddr, source: std::io::Error },
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
    #[error("shutdown grace period expired with calls still in flight")]
    DrainTimeout,
}

/// Everything `serve` needs that can fail before the socket is bound, built in one place so
/// `pullgate verify` and `policy check` see exactly what the daemon would.
pub struct Prepared {
    pub policy: SharedPolicy,
    /// containerd's host directory as the registry client routes by it; reloaded with the policy.
    pub hosts: SharedHosts,
    pub gate: Gate<HttpRegistry>,
    pub metrics: Arc<Metrics>,
    /// Asks the running daemon to load the policy again, as SIGHUP does.
    pub reload: Trigger,
}

/// The sockets `run` serves, bound before readiness is signalled so a bad address stops
/// startup instead of a running daemon.
pub struct Listeners {
    pub cri: UnixListener,
    pub metrics: Option<TcpListener>,
}

pub fn prepare(config: &Config) -> Result<Prepared, DaemonError> {
    let policy = Policy::load(&config.policy_dir, config.policy_json.as_deref())?;
    if policy.is_empty() {
        tracing::warn!(policy_dir = %config.policy_dir.display(), "policy has no rules: every pull will be rejected");
    }
    for warning in crate::policy::lint::warnings(&policy, &config.policy_dir, config.policy_json.as_deref()) {
        tracing::warn!(file = %warning.file.display(), "{}", warning.message);
    }
    let policy = SharedPolicy::new(policy);
    let metrics = Metrics::new();
    let registry = Arc::new(HttpRegistry::new(&config.registry)?.with_metrics(metrics.clone()));
    let hosts = registry.hosts();
    for problem in hosts.current().problems() {
        tracing::warn!(%problem, "registry host directory unusable; pulls from the registries it serves are refused until it is fixed");
    }
    let gate =
        Gate::configured(policy.clone(), registry, &config.registry, &config.cache).with_metrics(metrics.clone());
    Ok(Prepared { policy, hosts, gate, metrics, reload: Trigger::default() })
}

pub async fn bind(config: &Config) -> Result<Listeners, DaemonError> {
    let cri = socket::bind(&config.listen).await?;
    let metrics = match config.metrics.listen {
        Some(address) => {
            let listener = TcpListener::bind(address).await;
            Some(listener.map_err(|source| DaemonError::MetricsListen { address, source })?)
        }
        None => None,
    };
    Ok(Listeners { cri, metrics })
}

pub async fn serve(config: Config) -> Result<(), DaemonError> {
    let prepared = prepare(&config)?;
    let listeners = bind(&config).await?;
    let terminate = terminate_signal()?;
    reload_on_hangup(prepared.reload.clone())?;
    tracing::info!(listen = %config.listen.display(), upstream = %config.upstream.display(), "serving");
    notify_ready();
    run(config, prepared, listeners, terminate).await
}

/// The server body, separate from process concerns so tests can run it with their own shutdown.
pub async fn run(
    config: Config,
    prepared: Prepared,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let upstream = Upstream::new(&config.upstream, config.connect_timeout);
    // Dropped (and so stopped) once the CRI server has drained.
    let mut background = JoinSet::new();
    let reloader = Reloader::new(&config, prepared.policy, prepared.hosts, prepared.metrics.clone(), prepared.reload);
    background.spawn(reloader.run());
    if let Some(listener) = listeners.metrics {
        if let Ok(address) = listener.local_addr() {
            tracing::info!(%address, "serving metrics");
        }
        background.spawn(metrics::endpoint::serve(listener, prepared.metrics.clone()));
    }
    let (stopping, stopping_seen) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = stopping.send(true);
    };
    let proxy = Proxy::new(prepared.gate, upstream, prepared.metrics, stopping_seen);
    let drained = server::run(listeners.cri, proxy, shutdown, config.shutdown_grace, config.max_connections).await;
    drop(background);
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

/// SIGHUP asks for a policy reload, as is usual for daemons.
fn reload_on_hangup(trigger: Trigger) -> Result<(), DaemonError> {
    let mut hangup = signal(SignalKind::hangup()).map_err(DaemonError::Signal)?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading the policy");
            trigger.request();
        }
    });
    Ok(())
}

/// Tells systemd (Type=notify) that the socket is bound and calls are being served.
fn notify_ready() {
    if let Err(error) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(%error, "sd_notify READY failed");
    }
}
