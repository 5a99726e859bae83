//! The one relay: each kubelet connection spliced to a containerd connection of its own.
//!
//! Relayed calls cost the kubelet one extra hop of wake-ups and copies, nothing more: their
//! DATA, PING, SETTINGS and stream-level WINDOW_UPDATE frames are copied from one socket to
//! the other as they arrive, and only header blocks are decoded and written again. Ending
//! HTTP/2 at pullgate (with the h2 crate, as an earlier relay did) costs about twice the
//! wake-ups per call, which on a small node was most of the latency pullgate added.
//!
//! Without containerd (it could not be reached when the kubelet connected, or its connection
//! was lost) the kubelet's connection goes on: pullgate answers SETTINGS and PING itself and
//! answers every call locally, passing CRI calls through the shared upstream connection
//! (UNAVAILABLE naming the socket while containerd is down), until containerd is back and the
//! kubelet is moved to a new, spliced connection. One reading of the kubelet's frames serves both, so
//! every client gets the same answers either way.
//!
//! Calls pullgate answers itself (PullImage, health: "local" calls) never reach this containerd
//! connection: their frames are collected here and the call is handed to `Local::answer`, whose
//! answer is written back on the kubelet's stream. This module knows nothing of the gate behind
//! that trait. Three things make that safe on a spliced connection:
//!
//! - **Header compression.** Each sender's HPACK state lives in its peer's decoder, so blocks
//!   cannot be dropped or injected as they are. Every block is decoded here and written again
//!   as literals that never enter the receiver's dynamic table.
//! - **Flow control towards containerd.** Bytes the kubelet sends on a local call use up its
//!   connection window although containerd never sees them, so pullgate gives that credit back
//!   itself; containerd's own WINDOW_UPDATEs go through unchanged.
//! - **Flow control towards the kubelet.** pullgate's answers use the kubelet's connection
//!   window, which containerd cannot know about, so on this side pullgate keeps the window
//!   itself: it reads the kubelet's connection WINDOW_UPDATEs, holds frames the window has no
//!   room for, and credits containerd for what it has passed on.
//!
//! Streams keep their ids on both connections; ids of local calls are simply never used
//! towards containerd, which HTTP/2 allows.
//!
//! The protocol logic is a state machine without sockets (`machine.rs`, with the frames of each
//! side in `kubelet.rs` and `containerd.rs`, local calls in `local.rs`, the kubelet's windows in
//! `window.rs`); `driver.rs` is the loop that reads and writes the sockets and runs the local
//! calls' tasks. Every bound is in `limits.rs`.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use tokio::net::UnixStream;

use crate::cri::budget::Budget;
use crate::cri::proxy::Route;
use crate::metrics::Metrics;

mod containerd;
mod driver;
#[cfg(any(test, feature = "fuzzing"))]
pub mod harness;
mod kubelet;
pub mod limits;
mod local;
pub mod machine;
mod window;

#[cfg(test)]
mod tests;

pub use driver::run;

/// What the relay needs of the rest of pullgate: answers to the calls it does not splice
/// through (PullImage through the gate, health, refusals, and every call while containerd is
/// away), and the few shared things those calls use.
pub trait Local: Send + Sync + 'static {
    /// pullgate's own answer to a call routed as `route`.
    fn answer(
        self: Arc<Self>,
        route: Route,
        request: http::Request<Full<Bytes>>,
    ) -> impl Future<Output = http::Response<tonic::body::BoxBody>> + Send;

    /// UNAVAILABLE naming containerd's socket, for calls containerd can no longer answer.
    fn unavailable(&self, why: &str) -> tonic::Status;

    /// A connection of containerd's own, to splice a kubelet connection to.
    fn dial(&self) -> impl Future<Output = std::io::Result<UnixStream>> + Send;

    /// What the requests of local calls may hold, all connections together.
    fn budget(&self) -> &Arc<Budget>;

    fn metrics(&self) -> &Arc<Metrics>;
}
