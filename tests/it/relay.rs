//! The relay against an in-process recording upstream: what goes in comes out, byte for byte.

use crate::common;
use common::policy;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cosign::{self, CosignKey};
use common::lab::Lab;
use common::raw;
use prost::Message;
use pullgate::config::Config;
use pullgate::cri::proto::{AuthConfig, ImageSpec, PodSandboxConfig, PodSandboxMetadata, PullImageRequest};

#[tokio::test]
async fn unknown_method_is_relayed_byte_for_byte() {
    let (_dir, upstream, pullgate) = raw::pullgate_before_recorder(raw::Delay::default()).await;

    // Not valid protobuf: proves the passthrough path never decodes.
    let body = raw::frame(&[0xff, 0x00, 0x13, 0x37]);
    let path = "/runtime.v1.ImageService/StreamImages";
    let response = raw::call(&pullgate.socket, path, body.clone(), &[("x-request-id", "r-1")]).await;

    let calls = upstream.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].path, path);
    assert_eq!(calls[0].body, body);
    assert_eq!(calls[0].headers["x-request-id"], "r-1");
    assert_eq!(response.body, body);
    assert_eq!(response.headers["x-upstream-header"], "kept");
    assert_eq!(response.grpc_status(), Some("5"));
    assert_eq!(response.grpc_message(), "echo not found");
    assert_eq!(response.trailers["grpc-status-details-bin"], raw::ECHO_DETAILS);
    assert_eq!(response.trailers["x-upstream-trailer"], "kept");
    pullgate.stop().await;
}

#[tokio::test]
async fn pull_request_keeps_fields_pullgate_does_not_know() {
    let (_dir, upstream, pullgate) = raw::pullgate_before_recorder(raw::Delay::default()).await;

    let mut message = PullImageRequest {
        image: Some(ImageSpec { image: "example.com/app:1".into(), ..Default::default() }),
        ..Default::default()
    }
    .encode_to_vec();
    // Field 42, length-delimited: a field a future CRI might add.
    message.extend_from_slice(&[0xd2, 0x02, 0x03, b'n', b'e', b'w']);
    let body = raw::frame(&message);
    raw::call(&pullgate.socket, "/runtime.v1.ImageService/PullImage", body.clone(), &[]).await;

    let calls = upstream.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].body, body, "PullImage body changed on the way");
    pullgate.stop().await;
}

/// Under a `signed` rule the request is rewritten: what reaches containerd names the verified
/// digest (`repo@digest`), and every other field, known or not, is kept byte for byte.
#[tokio::test(flavor = "multi_thread")]
async fn a_verified_pull_reaches_containerd_pinned_with_every_other_field_kept() {
    let lab = Lab::start();
    let key = CosignKey::generate();
    let digest = cosign::push_signed(&lab, &key, &lab.registry, "relay/signed:v1", "relay-signed");
    let dir = tempfile::tempdir().expect("temp dir");
    let upstream = raw::RecordingUpstream::start(&dir.path().join("upstream.sock"));
    let mut config = Config { upstream: dir.path().join("upstream.sock"), ..Config::default() };
    config.registry.insecure = vec![lab.registry.clone()];
    let policy = policy::signed(&format!("{}/relay", lab.registry), &["a.pub"]);
    let pem = key.public_pem();
    let pullgate = common::pullgate::start_with(config, &[("a.pub", &pem), ("policy.toml", &policy)]).await;

    let spec = |image: String| ImageSpec {
        image,
        annotations: [("io.kubernetes.cri.pullgate-test".to_owned(), "annotated".to_owned())].into(),
        user_specified_image: format!("{}/relay/signed:v1", lab.registry),
        runtime_handler: "runc".into(),
        image_ref: String::new(),
    };
    let sandbox = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "pod".into(),
            uid: "uid-1".into(),
            namespace: "ns".into(),
            attempt: 2,
        }),
        hostname: "pod-host".into(),
        labels: [("app".to_owned(), "relay".to_owned())].into(),
        annotations: [("pod-annotation".to_owned(), "kept".to_owned())].into(),
        ..Default::default()
    };
    let request = |image: String| PullImageRequest {
        image: Some(spec(image)),
        auth: Some(AuthConfig { server_address: lab.registry.clone(), ..Default::default() }),
        sandbox_config: Some(sandbox.clone()),
    };
    // Field 42, length-delimited: a field a future CRI might add.
    let unknown = [0xd2, 0x02, 0x03, b'n', b'e', b'w'];
    let mut message = request(format!("{}/relay/signed:v1", lab.registry)).encode_to_vec();
    message.extend_from_slice(&unknown);
    // Sent with a content-length, as hyper sends a body of known size: the rewritten body is
    // longer, so that header must not reach containerd as the client wrote it.
    let response = raw::call(&pullgate.socket, "/runtime.v1.ImageService/PullImage", raw::frame(&message), &[]).await;
    // The recorder's own answer (NotFound) comes back: the request got past verification.
    assert_eq!(response.grpc_message(), "echo not found", "{:?}", response.trailers);

    // (The tagger's images-API lookups reach the recorder too; only the pull matters here.)
    let calls = upstream.calls.lock().unwrap().clone();
    let pulls: Vec<_> = calls.iter().filter(|call| call.path == "/runtime.v1.ImageService/PullImage").collect();
    assert_eq!(pulls.len(), 1, "{calls:?}");
    let mut expected = request(format!("{}/relay/signed@{digest}", lab.registry)).encode_to_vec();
    expected.extend_from_slice(&unknown);
    assert_eq!(pulls[0].body, raw::frame(&expected), "containerd did not get the pinned request, other fields kept");
    pullgate.stop().await;
}

#[tokio::test]
async fn missing_upstream_fails_fast_with_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let upstream_socket = dir.path().join("nobody-here.sock");
    let pullgate = common::pullgate::start(&upstream_socket).await;

    let started = Instant::now();
    let response = raw::call(&pullgate.socket, "/runtime.v1.ImageService/ListImages", raw::frame(&[]), &[]).await;
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert_eq!(response.grpc_status(), Some("14"), "{response:?}");
    assert!(response.grpc_message().contains("nobody-here.sock"), "{}", response.grpc_message());
    pullgate.stop().await;
}

#[tokio::test]
async fn malformed_pull_request_is_refused_without_reaching_upstream() {
    let (_dir, upstream, pullgate) = raw::pullgate_before_recorder(raw::Delay::default()).await;

    let response =
        raw::call(&pullgate.socket, "/runtime.v1.ImageService/PullImage", Bytes::from_static(&[0, 0, 0, 0, 9, 1]), &[])
            .await;
    assert_eq!(response.grpc_status(), Some("3"), "{response:?}");
    assert!(upstream.calls.lock().unwrap().is_empty());
    pullgate.stop().await;
}

#[tokio::test]
async fn a_large_body_is_relayed_whole_in_both_directions() {
    let (_dir, upstream, pullgate) = raw::pullgate_before_recorder(raw::Delay::default()).await;

    // Larger than every flow-control window on the way (1 MiB towards pullgate, 2 MiB towards
    // the upstream), so the relay has to wait for window updates in both directions.
    let message: Vec<u8> = (0..5 * 1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    let body = raw::frame(&message);
    let response = raw::call(&pullgate.socket, "/runtime.v1.ImageService/ListImages", body.clone(), &[]).await;

    assert_eq!(upstream.calls.lock().unwrap()[0].body.len(), body.len());
    assert!(upstream.calls.lock().unwrap()[0].body == body, "request body changed on the way");
    assert!(response.body == body, "echoed body changed on the way back");
    assert_eq!(response.grpc_status(), Some("5"));
    pullgate.stop().await;
}

#[tokio::test]
async fn a_call_the_client_abandons_is_cancelled_upstream() {
    // The upstream records a call only once it has answered; a cancelled call never is.
    let (_dir, upstream, pullgate) = raw::pullgate_before_recorder(raw::Delay(Duration::from_millis(600))).await;

    let call = raw::call(&pullgate.socket, "/runtime.v1.ImageService/ListImages", raw::frame(&[]), &[]);
    assert!(tokio::time::timeout(Duration::from_millis(150), call).await.is_err(), "answered before the delay");
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(upstream.calls.lock().unwrap().is_empty(), "the abandoned call still ran to the end upstream");

    // The same call left alone is answered and recorded, so the check above can fail.
    raw::call(&pullgate.socket, "/runtime.v1.ImageService/ListImages", raw::frame(&[]), &[]).await;
    assert_eq!(upstream.calls.lock().unwrap().len(), 1);
    pullgate.stop().await;
}

#[tokio::test]
async fn oversized_metadata_is_refused_before_it_reaches_the_upstream() {
    let (_dir, upstream, pullgate) = raw::pullgate_before_recorder(raw::Delay::default()).await;
    let stream = tokio::net::UnixStream::connect(&pullgate.socket).await.unwrap();
    let (client, connection) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    // 64 KiB of metadata: four times the header list pullgate accepts from the kubelet.
    let request = http::Request::post("http://localhost/runtime.v1.ImageService/ListImages")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-padding", "a".repeat(64 * 1024))
        .body(())
        .unwrap();
    let (response, mut body) = client.send_request(request, false).unwrap();
    let _ = body.send_data(raw::frame(&[]), true);
    match tokio::time::timeout(Duration::from_secs(5), response).await.expect("no answer within 5s") {
        Ok(response) => assert_eq!(response.status(), 431, "{response:?}"),
        Err(error) => assert!(error.is_reset() || error.is_go_away(), "{error}"),
    }
    assert!(upstream.calls.lock().unwrap().is_empty(), "the oversized call was relayed");

    // The daemon keeps serving.
    raw::call(&pullgate.socket, "/runtime.v1.ImageService/ListImages", raw::frame(&[]), &[]).await;
    assert_eq!(upstream.calls.lock().unwrap().len(), 1);
    pullgate.stop().await;
}
