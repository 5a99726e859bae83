//! The connection to containerd's CRI socket.
//!
//! tonic's `Channel` is used purely as an HTTP/2 client: it connects lazily, multiplexes calls
//! over one connection and reconnects after containerd restarts, while bodies and trailers pass
//! through it untouched.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::Status;
use tonic::body::BoxBody;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::{Service, ServiceExt};

#[derive(Clone)]
pub struct Upstream {
    channel: Channel,
    socket: Arc<PathBuf>,
}

impl Upstream {
    pub fn new(socket: &Path, connect_timeout: Duration) -> Upstream {
        let socket = Arc::new(socket.to_owned());
        let target = socket.clone();
        // The URI is never dialled; the connector below decides where bytes go.
        let channel = Endpoint::from_static("http://containerd.invalid")
            .connect_timeout(connect_timeout)
            .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let target = target.clone();
                async move { UnixStream::connect(&*target).await.map(TokioIo::new) }
            }));
        Upstream { channel, socket }
    }

    /// The shared connection, for pullgate's own typed calls to containerd.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Relays one call. A transport failure becomes UNAVAILABLE naming the socket, so the
    /// kubelet retries and the operator sees which containerd is missing.
    pub async fn call(&self, request: http::Request<BoxBody>) -> http::Response<BoxBody> {
        let mut channel = self.channel.clone();
        let result = match channel.ready().await {
            Ok(ready) => ready.call(request).await,
            Err(e) => Err(e),
        };
        result.unwrap_or_else(|e| self.unavailable(&e).into_http())
    }

    fn unavailable(&self, error: &dyn std::error::Error) -> Status {
        Status::unavailable(format!(
            "pullgate: upstream {} unavailable: {}",
            self.socket.display(),
            error_chain(error)
        ))
    }
}

/// tonic's transport errors say little at the top ("transport error"); the cause says why.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
