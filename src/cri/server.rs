//! Accepts kubelet connections and serves them until shutdown, then drains.
//!
//! Each connection is spliced to a containerd connection of its own (`splice`), or served
//! without one while containerd cannot be reached.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Sleep;

use crate::cri::splice::{self, Local};

/// After `accept` fails (out of descriptors, say), the listener is left alone this long at
/// first, twice as long after each further failure, up to `MAX_ACCEPT_PAUSE`, or until one of
/// our connections ends and so frees its descriptors: retrying at once would spin, since the
/// connection that could not be taken is still waiting.
const FIRST_ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Short enough that a kubelet is let in well within a second once descriptors are free again,
/// even when they were freed by something other than one of our connections.
const MAX_ACCEPT_PAUSE: Duration = Duration::from_millis(500);
/// Failed accepts and refused connections are logged at most this often, with how many there
/// were since the last line, so an attacker cannot turn them into a flood of log lines.
const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Serves until `shutdown` resolves, then gives in-flight calls up to `grace` to finish.
/// At most `max_connections` are served at once; further ones are closed as they come.
/// Returns whether every call finished within the grace period.
pub async fn run<L: Local>(
    listener: UnixListener,
    local: Arc<L>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    max_connections: usize,
) -> bool {
    let (draining, drain_seen) = watch::channel(false);
    let mut connections = JoinSet::new();
    let (mut refusals, mut failures) = (Throttled::default(), Throttled::default());
    let mut pause = FIRST_ACCEPT_PAUSE;
    // Set while the listener is left alone after a failed accept.
    let mut paused: Option<Pin<Box<Sleep>>> = None;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept(), if paused.is_none() => match accepted {
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
                    connections.spawn(serve(stream, local.clone(), drain_seen.clone()));
                }
                Err(error) => {
                    if let Some(failed) = failures.note() {
                        tracing::warn!(%error, failed, pause = ?pause, "accept failed; pausing before the next");
                    }
                    paused = Some(Box::pin(tokio::time::sleep(pause)));
                    pause = (pause * 2).min(MAX_ACCEPT_PAUSE);
                }
            },
            () = pause_over(&mut paused) => paused = None,
            // Reap finished connections so the set does not grow with every kubelet restart; the
            // descriptors a finished one held are free again, so a pause can end.
            Some(_) = connections.join_next(), if !connections.is_empty() => paused = None,
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!(connections = connections.len(), "draining");
    let _ = draining.send(true);
    tokio::time::timeout(grace, async { while connections.join_next().await.is_some() {} }).await.is_ok()
}

/// Resolves when the pause after a failed accept is over; never while there is none.
async fn pause_over(paused: &mut Option<Pin<Box<Sleep>>>) {
    match paused {
        Some(sleep) => sleep.await,
        None => std::future::pending().await,
    }
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

/// Splices the connection to one of its own to containerd, or starts it without containerd
/// when it cannot be reached (see `splice`).
async fn serve<L: Local>(stream: UnixStream, local: Arc<L>, draining: watch::Receiver<bool>) {
    let containerd = match local.dial().await {
        Ok(containerd) => Some(containerd),
        Err(error) => {
            tracing::debug!(%error, "containerd unreachable; this connection starts without it");
            None
        }
    };
    splice::run(stream, containerd, local, draining).await
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
