//! The connection to containerd's CRI socket.
//!
//! Relayed calls go over a plain hyper HTTP/2 connection, dialled lazily and redialled after
//! containerd restarts; bodies and trailers pass through it untouched. tonic's `Channel` would
//! do the same but routes every request through a buffer task, a hop that showed up as added
//! latency on every passthrough call. pullgate's own typed calls (tagging) use a `Channel`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::UnixStream;
use tokio::sync::Mutex;
use tonic::Status;
use tonic::body::BoxBody;
use tonic::transport::{Channel, Endpoint, Uri};

#[derive(Clone)]
pub struct Upstream {
    channel: Channel,
    socket: Arc<PathBuf>,
    connect_timeout: Duration,
    /// The live relay connection; `None` until the first call or after it closed.
    sender: Arc<Mutex<Option<SendRequest<BoxBody>>>>,
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
        Upstream { channel, socket, connect_timeout, sender: Arc::default() }
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
        let mut sender = match self.sender().await {
            Ok(sender) => sender,
            Err(error) => return self.unavailable(&error).into_http(),
        };
        match sender.send_request(with_authority(request)).await {
            Ok(response) => response.map(|body| body.map_err(|e| Status::from_error(Box::new(e))).boxed_unsync()),
            Err(error) => self.unavailable(&error).into_http(),
        }
    }

    /// The current connection, or a new one when there is none or containerd closed it.
    async fn sender(&self) -> Result<SendRequest<BoxBody>, std::io::Error> {
        let mut current = self.sender.lock().await;
        if let Some(sender) = current.as_ref().filter(|sender| !sender.is_closed()) {
            return Ok(sender.clone());
        }
        *current = None;
        let stream = tokio::time::timeout(self.connect_timeout, UnixStream::connect(&*self.socket))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream connection closed");
            }
        });
        *current = Some(sender.clone());
        Ok(sender)
    }

    fn unavailable(&self, error: &dyn std::error::Error) -> Status {
        Status::unavailable(format!(
            "pullgate: upstream {} unavailable: {}",
            self.socket.display(),
            crate::error_text::with_causes(error)
        ))
    }
}

/// HTTP/2 needs an authority; the kubelet's is meaningless to containerd, so a fixed one is used.
fn with_authority(request: http::Request<BoxBody>) -> http::Request<BoxBody> {
    let (mut parts, body) = request.into_parts();
    let mut uri = http::uri::Parts::from(std::mem::take(&mut parts.uri));
    uri.scheme = Some(http::uri::Scheme::HTTP);
    uri.authority = Some(http::uri::Authority::from_static("containerd"));
    // A kubelet path is always a valid URI path; the fallback keeps the call well-formed anyway.
    parts.uri = http::Uri::from_parts(uri).unwrap_or_else(|_| http::Uri::from_static("http://containerd/"));
    http::Request::from_parts(parts, body)
}
