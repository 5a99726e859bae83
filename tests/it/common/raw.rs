//! A bare HTTP/2 gRPC client and server for checking what crosses pullgate byte for byte.

use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{UnixListener, UnixStream};

pub fn frame(message: &[u8]) -> Bytes {
    let mut out = vec![0u8];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out.into()
}

#[derive(Debug)]
pub struct RawResponse {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: HeaderMap,
}

impl RawResponse {
    /// The grpc-status, from trailers or (trailers-only responses) headers.
    pub fn grpc_status(&self) -> Option<&str> {
        self.trailers.get("grpc-status").or_else(|| self.headers.get("grpc-status")).and_then(|v| v.to_str().ok())
    }

    pub fn grpc_message(&self) -> String {
        let raw = self.trailers.get("grpc-message").or_else(|| self.headers.get("grpc-message"));
        raw.and_then(|v| v.to_str().ok()).map(percent_decode).unwrap_or_default()
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends one gRPC call with a raw body and returns everything that came back.
pub async fn call(socket: &Path, path: &str, body: Bytes, metadata: &[(&str, &str)]) -> RawResponse {
    let stream = UnixStream::connect(socket).await.expect("connect to socket");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.expect("h2 handshake");
    tokio::spawn(connection);
    let mut request = Request::post(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (key, value) in metadata {
        request = request.header(*key, *value);
    }
    let response = sender.send_request(request.body(Full::new(body)).unwrap()).await.expect("send request");
    collect(response).await
}

/// Everything of a response: headers, body and trailers.
pub async fn collect(response: Response<hyper::body::Incoming>) -> RawResponse {
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.expect("read body");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    RawResponse { headers: parts.headers, body: collected.to_bytes(), trailers }
}

/// What the recording upstream saw for one call.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// An upstream that records each call and answers with the request body echoed back, a custom
/// header, and trailers carrying a non-OK status with details.
pub struct RecordingUpstream {
    pub calls: Arc<Mutex<Vec<Recorded>>>,
    /// Connections accepted so far.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    /// Calls that have reached the upstream, counted as they arrive (before any `Delay`), so a
    /// test can wait for a call to be in flight instead of sleeping.
    pub arrived: Arc<std::sync::atomic::AtomicUsize>,
}

/// How long the recording upstream waits before answering; lets tests hold a call in flight.
#[derive(Clone, Copy, Default)]
pub struct Delay(pub std::time::Duration);

pub const ECHO_DETAILS: &str = "CAUSBnVwc3RyZWFt";

impl RecordingUpstream {
    pub fn start(socket: &Path) -> RecordingUpstream {
        Self::start_delayed(socket, Delay::default())
    }

    pub fn start_delayed(socket: &Path, delay: Delay) -> RecordingUpstream {
        let listener = UnixListener::bind(socket).expect("bind recording upstream");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let arrived = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (recorded, accepted, arrivals) = (calls.clone(), connections.clone(), arrived.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (recorded, arrivals) = (recorded.clone(), arrivals.clone());
                let service = hyper::service::service_fn(move |request| {
                    arrivals.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    answer(recorded.clone(), delay, request)
                });
                let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service);
                tokio::spawn(connection);
            }
        });
        RecordingUpstream { calls, connections, arrived }
    }
}

type EchoBody =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>>>;

async fn answer(
    calls: Arc<Mutex<Vec<Recorded>>>,
    delay: Delay,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<EchoBody>, std::convert::Infallible> {
    let (parts, body) = request.into_parts();
    tokio::time::sleep(delay.0).await;
    let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    calls.lock().unwrap().push(Recorded {
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        body: body.clone(),
    });
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("5"));
    trailers.insert("grpc-message", HeaderValue::from_static("echo%20not%20found"));
    trailers.insert("grpc-status-details-bin", HeaderValue::from_static(ECHO_DETAILS));
    trailers.insert("x-upstream-trailer", HeaderValue::from_static("kept"));
    let frames = vec![Ok(Frame::data(body)), Ok(Frame::trailers(trailers))];
    let response = Response::builder()
        .header("content-type", "application/grpc")
        .header("x-upstream-header", "kept")
        .body(StreamBody::new(futures_util::stream::iter(frames)))
        .unwrap();
    Ok(response)
}

/// pullgate in front of a recording upstream, both on sockets in the returned temp dir.
pub async fn pullgate_before_recorder(
    delay: Delay,
) -> (tempfile::TempDir, RecordingUpstream, super::pullgate::Running) {
    let dir = tempfile::tempdir().unwrap();
    let upstream_socket = dir.path().join("upstream.sock");
    let upstream = RecordingUpstream::start_delayed(&upstream_socket, delay);
    let pullgate = super::pullgate::start(&upstream_socket).await;
    (dir, upstream, pullgate)
}
