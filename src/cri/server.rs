//! Accepts kubelet connections and serves the proxy until shutdown, then drains.
//!
//! Each connection is spliced to a containerd connection of its own (`splice`); while
//! containerd cannot be reached, it is served by the h2 relay (`serve_connection`) instead.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cri::proxy::Proxy;
use crate::cri::splice;
use crate::decision::PullGate;

/// Settings for the kubelet side, as hyper's HTTP/2 server chose them: the kubelet's requests
/// are small, so a 16 KiB header list and 200 calls in flight per connection are generous.
const MAX_HEADER_LIST_BYTES: u32 = 16 << 10;
const MAX_CONCURRENT_STREAMS: u32 = 200;
const WINDOW_BYTES: u32 = 1 << 20;

/// After `accept` fails (out of descriptors, say), the listener is left alone this long at
/// first, twice as long after each further failure, up to `MAX_ACCEPT_PAUSE`: retrying at once
/// would spin, since the connection that could not be taken is still waiting.
const FIRST_ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Short enough that a kubelet is let in well within a second once descriptors are free again.
const MAX_ACCEPT_PAUSE: Duration = Duration::from_millis(500);
/// Failed accepts and refused connections are logged at most this often, with how many there
/// were since the last line, so an attacker cannot turn them into a flood of log lines.
const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Serves until `shutdown` resolves, then gives in-flight calls up to `grace` to finish.
/// At most `max_connections` are served at once; further ones are closed as they come.
/// Returns whether every call finished within the grace period.
pub async fn run<G: PullGate>(
    listener: UnixListener,
    proxy: Arc<Proxy<G>>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    max_connections: usize,
) -> bool {
    let (draining, drain_seen) = watch::channel(false);
    let mut connections = JoinSet::new();
    let (mut refusals, mut failures) = (Throttled::default(), Throttled::default());
    let mut pause = FIRST_ACCEPT_PAUSE;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    pause = FIRST_ACCEPT_PAUSE;
                    // Finished connections still count until reaped.
                    while connections.try_join_next().is_some() {}
                    if connections.len() >= max_connections {
                        drop(stream);
                        if let Some(refused) = refusals.note() {
                            tracing::warn!(refused, max_connections, "connections refused: max_connections are open");
                        }
                        continue;
                    }
                    connections.spawn(serve(stream, proxy.clone(), drain_seen.clone()));
                }
                Err(error) => {
                    if let Some(failed) = failures.note() {
                        tracing::warn!(%error, failed, pause = ?pause, "accept failed; pausing before the next");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = &mut shutdown => break,
                    }
                    pause = (pause * 2).min(MAX_ACCEPT_PAUSE);
                }
            },
            // Reap finished connections so the set does not grow with every kubelet restart.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!(connections = connections.len(), "draining");
    let _ = draining.send(true);
    tokio::time::timeout(grace, async { while connections.join_next().await.is_some() {} }).await.is_ok()
}

/// Counts events of one kind and says when one is to be logged: the first, then at most one
/// per `LOG_INTERVAL`.
#[derive(Default)]
struct Throttled {
    last: Option<Instant>,
    since: u64,
}

impl Throttled {
    /// The number of events since the last one logged, this one included, when this one is
    /// to be logged.
    fn note(&mut self) -> Option<u64> {
        self.since += 1;
        if self.last.is_some_and(|last| last.elapsed() < LOG_INTERVAL) {
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.since))
    }
}

/// Splices the connection to one of its own to containerd; while containerd cannot be
/// reached, serves it with the h2 relay instead, which answers UNAVAILABLE until containerd
/// is back and then relays as usual.
async fn serve<G: PullGate>(stream: UnixStream, proxy: Arc<Proxy<G>>, draining: watch::Receiver<bool>) {
    match proxy.upstream().dial().await {
        Ok(containerd) => splice::run(stream, containerd, proxy, draining).await,
        Err(error) => {
            tracing::debug!(%error, "containerd unreachable; serving this connection with the h2 relay");
            serve_connection(stream, proxy, draining).await
        }
    }
}

/// Serves one connection until the kubelet closes it or, after a drain begins, until its calls
/// in flight have finished (h2 sends GOAWAY and stops accepting new ones). Once containerd
/// answers again, the connection is closed the same way in a pause between calls, so the
/// kubelet's next one is spliced: a kubelet that connected while containerd was starting
/// would otherwise stay on the slower relay for as long as it runs.
async fn serve_connection<G: PullGate>(stream: UnixStream, proxy: Arc<Proxy<G>>, mut draining: watch::Receiver<bool>) {
    let handshake = h2::server::Builder::new()
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .initial_window_size(WINDOW_BYTES)
        .initial_connection_window_size(WINDOW_BYTES)
        .handshake::<_, Bytes>(stream);
    // gRPC is HTTP/2 only; the kubelet speaks it with prior knowledge.
    let mut connection = match handshake.await {
        Ok(connection) => connection,
        Err(error) => return tracing::debug!(%error, "HTTP/2 handshake failed"),
    };
    let mut shutting_down = false;
    let (mut probes, mut last_call, mut containerd_back) = (splice::probes(), Instant::now(), false);
    loop {
        tokio::select! {
            accepted = connection.accept() => match accepted {
                Some(Ok((request, respond))) => {
                    last_call = Instant::now();
                    tokio::spawn(proxy.clone().handle(request, respond));
                }
                Some(Err(error)) => return tracing::debug!(%error, "connection closed with error"),
                None => return,
            },
            _ = probes.tick(), if !shutting_down => {
                containerd_back = containerd_back || proxy.upstream().dial().await.is_ok();
                if containerd_back && last_call.elapsed() >= splice::QUIET_BEFORE_MOVE {
                    shutting_down = true;
                    connection.graceful_shutdown();
                }
            }
            true = draining.wait_for(|draining| *draining).map(|seen| seen.is_ok()), if !shutting_down => {
                shutting_down = true;
                connection.graceful_shutdown();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttled_logs_the_first_then_once_per_interval_with_the_count() {
        let mut throttled = Throttled::default();
        assert_eq!(throttled.note(), Some(1));
        for _ in 0..1000 {
            assert_eq!(throttled.note(), None);
        }
        throttled.last = Some(Instant::now() - LOG_INTERVAL);
        assert_eq!(throttled.note(), Some(1001));
        assert_eq!(throttled.note(), None);
    }
}
