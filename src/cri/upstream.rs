//! The connection to containerd's CRI socket.
//!
//! Relayed calls go over one HTTP/2 connection made with the h2 crate, dialled lazily and
//! redialled once containerd has closed it (a restart). pullgate's own typed calls (tagging,
//! health probes) use a tonic `Channel` over a second connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use h2::SendStream;
use h2::client::{ResponseFuture, SendRequest};
use http_body::Body;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::sync::Mutex;
use tonic::Status;
use tonic::body::BoxBody;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::cri::body::{self, RecvBody};

/// containerd's answers are trusted, but still bounded: an error message of this size is
/// already absurd.
const MAX_HEADER_LIST_BYTES: u32 = 1 << 20;
/// Windows as hyper's HTTP/2 client sets them, so large answers (ListImages) stream without
/// waiting on window updates.
const STREAM_WINDOW_BYTES: u32 = 2 << 20;
const CONNECTION_WINDOW_BYTES: u32 = 5 << 20;

#[derive(Clone)]
pub struct Upstream {
    channel: Channel,
    socket: Arc<PathBuf>,
    connect_timeout: Duration,
    /// The live relay connection; `None` until the first call.
    connection: Arc<Mutex<Option<Connection>>>,
}

#[derive(Clone)]
struct Connection {
    sender: SendRequest<Bytes>,
    /// Set when the connection's driver ends, i.e. containerd closed it or it failed.
    closed: Arc<AtomicBool>,
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
        Upstream { channel, socket, connect_timeout, connection: Arc::default() }
    }

    /// The shared connection, for pullgate's own typed calls to containerd.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A connection of its own to containerd, for the splice relay.
    pub async fn dial(&self) -> std::io::Result<UnixStream> {
        tokio::time::timeout(self.connect_timeout, UnixStream::connect(&*self.socket))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
    }

    /// Starts a call: sends the request headers, and ends the request stream at once when
    /// `end_of_stream`. A failure becomes UNAVAILABLE naming the socket, so the kubelet retries
    /// and the operator sees which containerd is missing.
    async fn open(
        &self,
        parts: http::request::Parts,
        end_of_stream: bool,
    ) -> Result<(ResponseFuture, SendStream<Bytes>), Status> {
        let request = with_authority(http::Request::from_parts(parts, ()));
        let sender = self.sender().await.map_err(|error| self.unavailable(&error))?;
        let mut sender = sender.ready().await.map_err(|error| self.unavailable(&error))?;
        sender.send_request(request, end_of_stream).map_err(|error| self.unavailable(&error))
    }

    /// One whole call with a body already in memory (a PullImage pullgate has decided on): the
    /// body is sent before the answer is awaited, which only suits bodies that cannot block.
    pub async fn call(&self, request: http::Request<BoxBody>) -> http::Response<BoxBody> {
        let (parts, request_body) = request.into_parts();
        let end = request_body.is_end_stream();
        let (response, mut send) = match self.open(parts, end).await {
            Ok(opened) => opened,
            Err(status) => return status.into_http(),
        };
        if !end && let Err(error) = body::send(request_body, &mut send).await {
            return self.unavailable(&error).into_http();
        }
        match response.await {
            Ok(response) => response.map(|stream| {
                RecvBody::new(stream).map_err(|error| Status::from_error(Box::new(error))).boxed_unsync()
            }),
            Err(error) => self.unavailable(&error).into_http(),
        }
    }

    /// The current connection, or a new one when there is none or containerd closed it.
    async fn sender(&self) -> Result<SendRequest<Bytes>, std::io::Error> {
        let mut current = self.connection.lock().await;
        if let Some(connection) = current.as_ref().filter(|c| !c.closed.load(Ordering::Acquire)) {
            return Ok(connection.sender.clone());
        }
        *current = None;
        let dial = async {
            let stream = UnixStream::connect(&*self.socket).await?;
            h2::client::Builder::new()
                .initial_window_size(STREAM_WINDOW_BYTES)
                .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
                .max_header_list_size(MAX_HEADER_LIST_BYTES)
                .handshake::<_, Bytes>(stream)
                .await
                .map_err(std::io::Error::other)
        };
        let (sender, driver) = tokio::time::timeout(self.connect_timeout, dial)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
        let closed = Arc::new(AtomicBool::new(false));
        let flag = closed.clone();
        tokio::spawn(async move {
            if let Err(error) = driver.await {
                tracing::debug!(%error, "upstream connection closed");
            }
            flag.store(true, Ordering::Release);
        });
        *current = Some(Connection { sender: sender.clone(), closed });
        Ok(sender)
    }

    pub fn unavailable(&self, error: &dyn std::error::Error) -> Status {
        Status::unavailable(format!(
            "pullgate: upstream {} unavailable: {}",
            self.socket.display(),
            crate::error_text::with_causes(error)
        ))
    }
}

/// HTTP/2 needs an authority; the kubelet's is meaningless to containerd, so a fixed one is used.
fn with_authority(request: http::Request<()>) -> http::Request<()> {
    let (mut parts, body) = request.into_parts();
    let mut uri = http::uri::Parts::from(std::mem::take(&mut parts.uri));
    uri.scheme = Some(http::uri::Scheme::HTTP);
    uri.authority = Some(http::uri::Authority::from_static("containerd"));
    // A kubelet path is always a valid URI path; the fallback keeps the call well-formed anyway.
    parts.uri = http::Uri::from_parts(uri).unwrap_or_else(|_| http::Uri::from_static("http://containerd/"));
    http::Request::from_parts(parts, body)
}
