//! The splice relay: each kubelet connection gets a containerd connection of its own, calls
//! pullgate answers itself share it with relayed ones, and losing containerd degrades the
//! connection instead of breaking it.

use crate::common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use common::cri;
use common::lab::Lab;
use common::raw;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pullgate::config::Config;
use pullgate::cri::proto::{ImageStatusRequest, ListImagesRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// `message` with metadata `key: n`, which the client's HPACK encoder adds to its table.
fn with_metadata<T>(message: T, key: &'static str, n: usize) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(key, n.to_string().parse().unwrap());
    request
}

/// A kubelet's sandbox config is small; this one is not, so that the kept PullImage requests
/// of one connection together far exceed every flow-control window on the way.
fn with_large_sandbox_config(
    mut request: pullgate::cri::proto::PullImageRequest,
) -> pullgate::cri::proto::PullImageRequest {
    let config = request.sandbox_config.get_or_insert_with(Default::default);
    config.annotations = HashMap::from([("filler".to_owned(), "x".repeat(70 << 10))]);
    request
}

#[tokio::test(flavor = "multi_thread")]
async fn kept_and_relayed_calls_interleave_on_one_connection() {
    const STATUS_CALLS: usize = 100;
    const REFUSED_PULLS: usize = 40;
    let lab = Lab::start();
    lab.push_image("splice/app:v1", "splice");
    let policy = format!(
        "[[rule]]\nscope = \"refused.example\"\nrequire = \"reject\"\n\n[[rule]]\nscope = \"{}\"\nrequire = \"accept\"\n",
        lab.registry
    );
    let config = Config { upstream: lab.containerd_sock.clone(), ..Config::default() };
    let pullgate = common::pullgate::start_with(config, &[("policy.toml", &policy)]).await;
    // One channel, so one connection, as the kubelet has.
    let images = cri::images(&pullgate.socket);
    let accepted = format!("{}/splice/app:v1", lab.registry);

    // The first call on the connection is one pullgate keeps: the header fields its client
    // adds to its compression table are never seen by containerd, yet later calls refer to
    // them. Distinct metadata per call keeps adding entries and evicting old ones.
    let first = cri::pull_request("refused.example/first:v1", Some("ns"));
    let refused_first = images.clone().pull_image(with_metadata(first, "x-first-call", 0)).await;
    assert!(refused_first.is_err(), "{refused_first:?}");

    let started = Instant::now();
    let statuses = (0..STATUS_CALLS).map(|n| {
        let mut client = images.clone();
        let request = ImageStatusRequest { image: cri::spec(&accepted), verbose: false };
        let request = with_metadata(request, "x-status-call", n);
        tokio::spawn(async move { client.image_status(request).await.map(|_| ()) })
    });
    let refused = (0..REFUSED_PULLS).map(|n| {
        let mut client = images.clone();
        let request = with_large_sandbox_config(cri::pull_request(&format!("refused.example/app:{n}"), Some("ns")));
        let request = with_metadata(request, "x-pull-call", n);
        tokio::spawn(async move { client.pull_image(request).await.map(|_| ()) })
    });
    let both =
        async { tokio::join!(futures_util::future::join_all(statuses), futures_util::future::join_all(refused)) };
    let (statuses, refused) = tokio::time::timeout(Duration::from_secs(30), both).await.expect("calls stalled");
    let mut pull = images.clone();
    let pulled = pull.pull_image(with_large_sandbox_config(cri::pull_request(&accepted, Some("ns")))).await;
    eprintln!("{STATUS_CALLS} ImageStatus and {REFUSED_PULLS} refused pulls in {:?}", started.elapsed());

    for status in statuses {
        status.expect("task").expect("ImageStatus through the shared connection");
    }
    for pull in refused {
        let status = pull.expect("task").expect_err("a pull the policy rejects");
        assert!(status.message().contains("rejects every image in its scope"), "{}", status.message());
    }
    let pulled = pulled.expect("the accepted pull after them").into_inner();
    assert!(pulled.image_ref.starts_with("sha256:"), "{pulled:?}");
    // And the connection is still in step with containerd for what comes after.
    let listed = pull.list_images(ListImagesRequest::default()).await.expect("ListImages").into_inner();
    assert!(listed.images.iter().any(|image| image.repo_tags.contains(&accepted)), "{listed:?}");
    pullgate.stop().await;
}

#[tokio::test]
async fn each_client_connection_gets_its_own_upstream_connection() {
    let (_dir, upstream, pullgate) = raw::pullgate_before_recorder(raw::Delay::default()).await;
    let before = upstream.connections.load(Ordering::SeqCst);
    // raw::call dials a new connection for every call.
    for _ in 0..3 {
        let response = raw::call(&pullgate.socket, "/runtime.v1.ImageService/ImageStatus", raw::frame(b""), &[]).await;
        assert_eq!(response.grpc_status(), Some("5"));
    }
    assert_eq!(upstream.connections.load(Ordering::SeqCst) - before, 3);
    pullgate.stop().await;
}

/// A client connection held open by hand, so the test sees when pullgate closes it.
struct Held {
    sender: hyper::client::conn::http2::SendRequest<Full<bytes::Bytes>>,
    closed: tokio::task::JoinHandle<()>,
}

async fn hold(socket: &std::path::Path) -> Held {
    let stream = UnixStream::connect(socket).await.expect("connect");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.expect("handshake");
    let closed = tokio::spawn(async move {
        let _ = connection.await;
    });
    Held { sender, closed }
}

impl Held {
    /// ImageStatus of nothing: (grpc-status, grpc-message).
    async fn image_status(&mut self) -> (String, String) {
        let request = hyper::Request::post("http://localhost/runtime.v1.ImageService/ImageStatus")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(raw::frame(&prost::Message::encode_to_vec(&ImageStatusRequest {
                image: cri::spec("splice.example/none:v1"),
                verbose: false,
            }))))
            .unwrap();
        let response = raw::collect(self.sender.send_request(request).await.expect("send")).await;
        (response.grpc_status().unwrap_or_default().to_owned(), response.grpc_message())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn losing_containerd_degrades_the_connection_and_its_return_moves_the_client() {
    let lab = Lab::start();
    let config = Config { upstream: lab.containerd_sock.clone(), ..Config::default() };
    let pullgate = common::pullgate::start_with(config, &[("policy.toml", common::pullgate::ACCEPT_ALL)]).await;
    let mut held = hold(&pullgate.socket).await;
    assert_eq!(held.image_status().await.0, "0", "spliced ImageStatus");

    lab.stop_containerd();
    let socket = lab.containerd_sock.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (code, message) = held.image_status().await;
        if code == "14" {
            assert!(message.contains(&socket), "UNAVAILABLE without the socket: {message}");
            break;
        }
        assert!(Instant::now() < deadline, "still answered {code} {message} with containerd stopped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!held.closed.is_finished(), "the connection was closed instead of degraded");

    lab.start_containerd();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, message) = held.image_status().await;
        if code == "0" {
            break;
        }
        assert!(Instant::now() < deadline, "containerd back, but the old connection answers {code} {message}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Left idle, the connection is closed gracefully so the client redials a spliced one.
    tokio::time::timeout(Duration::from_secs(5), &mut held.closed).await.expect("GOAWAY once containerd was back").ok();
    let mut fresh = hold(&pullgate.socket).await;
    assert_eq!(fresh.image_status().await.0, "0");
    pullgate.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_made_while_containerd_is_down_moves_once_it_is_back() {
    let lab = Lab::start();
    let config = Config { upstream: lab.containerd_sock.clone(), ..Config::default() };
    let pullgate = common::pullgate::start_with(config, &[("policy.toml", common::pullgate::ACCEPT_ALL)]).await;
    lab.stop_containerd();
    let mut held = hold(&pullgate.socket).await;
    let (code, message) = held.image_status().await;
    assert_eq!(code, "14", "{message}");
    assert!(message.contains(&lab.containerd_sock.display().to_string()), "{message}");

    lab.start_containerd();
    let (code, message) = held.image_status().await;
    assert_eq!(code, "0", "the connection without containerd redials it: {message}");
    tokio::time::timeout(Duration::from_secs(5), &mut held.closed).await.expect("GOAWAY once containerd was back").ok();
    let mut fresh = hold(&pullgate.socket).await;
    assert_eq!(fresh.image_status().await.0, "0");
    pullgate.stop().await;
}

#[tokio::test]
async fn a_protocol_error_closes_that_connection_only() {
    let (_dir, _upstream, pullgate) = raw::pullgate_before_recorder(raw::Delay::default()).await;
    let mut other = hold(&pullgate.socket).await;

    let mut broken = UnixStream::connect(&pullgate.socket).await.unwrap();
    let mut bytes = BytesMut::from(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..]);
    bytes.put_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // empty SETTINGS
    // HEADERS, END_HEADERS, stream 1: an index into a dynamic table that is empty.
    bytes.put_slice(&[0, 0, 1, 1, 4, 0, 0, 0, 1, 0x80 | 70]);
    broken.write_all(&bytes).await.unwrap();
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), broken.read_to_end(&mut received))
        .await
        .expect("pullgate closed the broken connection")
        .unwrap();
    let goaway = find_goaway(&received).expect("a GOAWAY before the close");
    assert_eq!(goaway, 0x9, "COMPRESSION_ERROR");

    assert_eq!(other.image_status().await.0, "5", "the other connection still relays");
    pullgate.stop().await;
}

/// The error code of the first GOAWAY frame in `bytes` (a server's frames, no preface).
fn find_goaway(mut bytes: &[u8]) -> Option<u32> {
    while bytes.len() >= 9 {
        let len = (usize::from(bytes[0]) << 16) | (usize::from(bytes[1]) << 8) | usize::from(bytes[2]);
        if bytes.len() < 9 + len {
            return None;
        }
        if bytes[3] == 0x7 && len >= 8 {
            return Some(u32::from_be_bytes([bytes[13], bytes[14], bytes[15], bytes[16]]));
        }
        bytes = &bytes[9 + len..];
    }
    None
}
