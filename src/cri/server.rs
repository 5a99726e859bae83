//! Accepts kubelet connections and serves the proxy until shutdown, then drains.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::UnixListener;

use crate::cri::proxy::Proxy;
use crate::decision::PullGate;

/// Serves until `shutdown` resolves, then gives in-flight calls up to `grace` to finish.
/// Returns whether every call finished within the grace period.
pub async fn run<G: PullGate>(
    listener: UnixListener,
    proxy: Arc<Proxy<G>>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> bool {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => serve_connection(&graceful, stream, proxy.clone()),
                // Accept errors (e.g. EMFILE) are per-connection; the listener stays usable.
                Err(error) => tracing::warn!(%error, "accept failed"),
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let in_flight = graceful.count();
    tracing::info!(connections = in_flight, "draining");
    tokio::time::timeout(grace, graceful.shutdown()).await.is_ok()
}

fn serve_connection<G: PullGate>(graceful: &GracefulShutdown, stream: tokio::net::UnixStream, proxy: Arc<Proxy<G>>) {
    let service = hyper::service::service_fn(move |request| proxy.clone().handle(request));
    // gRPC is HTTP/2 only; the kubelet speaks it with prior knowledge.
    let connection =
        hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service);
    let connection = graceful.watch(connection);
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "connection closed with error");
        }
    });
}
