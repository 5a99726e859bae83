//! The registry front (tests/common/front.rs) itself: forwarding, counting, overrides, hostility.

use crate::common;

use std::time::Duration;

use bytes::Bytes;
use common::cri;
use common::front::{self, Client, Front, Hostile, fetch, sha256};
use common::lab::Lab;
use http::StatusCode;
use http_body_util::BodyExt;
use pullgate::cri::proto::ImageStatusRequest;

const PULLGATE_UA: &str = "pullgate/0.1.0";
const CONTAINERD_UA: &str = "containerd/1.6.20~ds1";

#[tokio::test(flavor = "multi_thread")]
async fn forwards_counts_and_overrides_per_client() {
    let lab = Lab::start();
    let good = lab.push_image("x/y:1", "seed");
    let evil = lab.push_image("x/y:evil", "evil");
    let front = Front::start(&lab.registry);
    let addr = front.addr();

    // Forwarding: GET and HEAD by tag give the real manifest.
    let got = fetch(&addr, "GET", "/v2/x/y/manifests/1", PULLGATE_UA).await;
    assert_eq!(got.status, StatusCode::OK, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(sha256(&got.body), good);
    assert_eq!(got.header("docker-content-digest"), good);
    assert_eq!(got.header("content-type"), front::OCI_MANIFEST);
    let head = fetch(&addr, "HEAD", "/v2/x/y/manifests/1", PULLGATE_UA).await;
    assert_eq!((head.status, head.header("docker-content-digest")), (StatusCode::OK, good.as_str()));
    assert_eq!(head.header("content-length"), got.body.len().to_string());
    assert!(head.body.is_empty());

    // Blobs, and a monolithic upload (POST + PUT with query and body) through the front.
    let manifest: serde_json::Value = serde_json::from_slice(&got.body).expect("manifest is JSON");
    let config = manifest["config"]["digest"].as_str().expect("config digest");
    let blob = fetch(&addr, "GET", &format!("/v2/x/y/blobs/{config}"), PULLGATE_UA).await;
    assert_eq!((blob.status, sha256(&blob.body)), (StatusCode::OK, config.to_owned()));
    let started = fetch(&addr, "POST", "/v2/x/y/blobs/uploads/", PULLGATE_UA).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", String::from_utf8_lossy(&started.body));
    let location = started.header("location");
    let location = location.strip_prefix(&format!("http://{addr}")).unwrap_or(location).to_owned();
    let payload = Bytes::from_static(b"uploaded through the front");
    let separator = if location.contains('?') { '&' } else { '?' };
    let put_path = format!("{location}{separator}digest={}", sha256(&payload));
    let put = front::fetch_with_body(&addr, "PUT", &put_path, PULLGATE_UA, payload.clone()).await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&put.body));
    let back = fetch(&addr, "GET", &format!("/v2/x/y/blobs/{}", sha256(&payload)), PULLGATE_UA).await;
    assert_eq!(back.body, payload);

    // Counting: manifest GET, HEAD, two blob GETs; the upload POST/PUT are not reads.
    assert_eq!(front.reads_by_others("x/y"), 4, "{:#?}", front.requests());
    assert_eq!(front.count(|s| s.is_containerd()), 0);
    assert_eq!(front.count(|s| s.method == "PUT"), 1);
    assert_eq!(
        front.requests()[0],
        front::Seen { method: "GET".into(), path: "/v2/x/y/manifests/1".into(), user_agent: PULLGATE_UA.into() }
    );

    // The moving tag: containerd gets the evil manifest for :1, everyone else the real one.
    let (evil_bytes, media_type) = front::manifest(&lab.registry, "x/y", "evil").await;
    assert_eq!(sha256(&evil_bytes), evil);
    front.override_manifest("x/y", "1", evil_bytes.clone(), &media_type, Client::Containerd);
    let to_containerd = fetch(&addr, "GET", "/v2/x/y/manifests/1", CONTAINERD_UA).await;
    assert_eq!(
        (to_containerd.body.clone(), to_containerd.header("docker-content-digest")),
        (evil_bytes, evil.as_str())
    );
    assert_eq!(to_containerd.header("content-type"), media_type);
    let head = fetch(&addr, "HEAD", "/v2/x/y/manifests/1", CONTAINERD_UA).await;
    assert_eq!(head.header("docker-content-digest"), evil);
    assert_eq!(head.header("content-length"), to_containerd.body.len().to_string());
    let to_others = fetch(&addr, "GET", "/v2/x/y/manifests/1", PULLGATE_UA).await;
    assert_eq!(sha256(&to_others.body), good);
    assert_eq!(front.count(|s| s.is_containerd()), 2);
    assert_eq!(front.reads_by_others("x/y"), 5);

    // Blob override, for every client.
    let fake = Bytes::from_static(b"exists nowhere else");
    front.override_blob("x/y", &sha256(&fake), fake.clone());
    for ua in [PULLGATE_UA, CONTAINERD_UA] {
        let got = fetch(&addr, "GET", &format!("/v2/x/y/blobs/{}", sha256(&fake)), ua).await;
        assert_eq!((got.status, got.body), (StatusCode::OK, fake.clone()));
    }
    front.clear_rules();
    let to_containerd = fetch(&addr, "GET", "/v2/x/y/manifests/1", CONTAINERD_UA).await;
    assert_eq!(sha256(&to_containerd.body), good);
}

/// The moving-tag recipe end to end with the real containerd (proves certs.d, the containerd
/// User-Agent match, and that the evil image's blobs are reachable).
#[tokio::test(flavor = "multi_thread")]
async fn containerd_pulls_the_override_through_the_front() {
    let lab = Lab::start();
    lab.push_image("x/y:1", "seed");
    let evil = lab.push_image("x/y:evil", "evil");
    let front = Front::start(&lab.registry);
    front.trust_in(&lab);
    let (evil_bytes, media_type) = front::manifest(&lab.registry, "x/y", "evil").await;
    front.override_manifest("x/y", "1", evil_bytes, &media_type, Client::Containerd);

    let image = format!("{}/x/y:1", front.addr());
    let mut images = cri::images(&lab.containerd_sock);
    let pulled = images.pull_image(cri::pull_request(&image, None)).await;
    let pulled = pulled.unwrap_or_else(|e| panic!("containerd pull of {image}: {e}\n{}", lab.logs()));
    let status = images
        .image_status(ImageStatusRequest { image: cri::spec(&pulled.into_inner().image_ref), verbose: false })
        .await
        .expect("image status")
        .into_inner();
    let repo_digests = status.image.expect("pulled image is known").repo_digests;
    assert_eq!(repo_digests, vec![format!("{}/x/y@{evil}", front.addr())]);
    assert!(front.count(|s| s.is_containerd() && s.reads_repo("x/y")) >= 3, "{:#?}", front.requests());
    assert_eq!(front.reads_by_others("x/y"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_behaviours() {
    // Nothing listens on port 1: anything not hostile is a 502 from the front.
    let front = Front::start("127.0.0.1:1");
    let addr = front.addr();
    assert_eq!(fetch(&addr, "GET", "/v2/", PULLGATE_UA).await.status, StatusCode::BAD_GATEWAY);

    let n = 20 << 20;
    front.hostile("/v2/big/", Hostile::OversizedManifest(n));
    let got = fetch(&addr, "GET", "/v2/big/manifests/1", PULLGATE_UA).await;
    assert_eq!((got.status, got.header("content-length")), (StatusCode::OK, n.to_string().as_str()));
    assert_eq!(got.body.len(), n);
    assert!(got.body.starts_with(br#"{"schemaVersion":2,"junk":"aaa"#) && got.body.ends_with(b"aa\"}"));
    assert_eq!(got.header("docker-content-digest"), sha256(&got.body));
    assert_eq!(fetch(&addr, "GET", "/v2/small/manifests/1", PULLGATE_UA).await.status, StatusCode::BAD_GATEWAY);

    front.hostile("/v2/endless/", Hostile::EndlessBody);
    let response = front::send(&addr, "GET", "/v2/endless/manifests/1", PULLGATE_UA, Bytes::new()).await;
    assert_eq!(response.headers().get("transfer-encoding").map(|v| v.as_bytes()), Some(&b"chunked"[..]));
    let mut body = response.into_body();
    let mut read = 0;
    while read <= 10 << 20 {
        let frame =
            tokio::time::timeout(Duration::from_secs(5), body.frame()).await.expect("endless body keeps coming");
        read += frame.expect("body not ended").expect("body frame").into_data().map_or(0, |d| d.len());
    }
    drop(body);

    front.hostile("/v2/stall/", Hostile::StallAfterHeaders);
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        front::send(&addr, "GET", "/v2/stall/manifests/1", PULLGATE_UA, Bytes::new()),
    )
    .await
    .expect("stall: headers arrive");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let next = tokio::time::timeout(Duration::from_millis(1500), body.frame()).await;
    assert!(next.is_err(), "stall: no body for 1.5 s, got {next:?}");

    front.hostile("/v2/sigs/", Hostile::SignatureLayers(1000));
    let got = fetch(&addr, "GET", "/v2/sigs/manifests/sha256-abc.sig", PULLGATE_UA).await;
    assert_eq!(got.header("docker-content-digest"), sha256(&got.body));
    let manifest: serde_json::Value = serde_json::from_slice(&got.body).expect("signature manifest is JSON");
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1000);
    assert!(layers.iter().all(|l| l["mediaType"] == front::SIMPLESIGNING));
    assert_ne!(layers[0]["digest"], layers[1]["digest"]);

    front.hostile("/v2/html/", Hostile::Body(200, "text/html".into(), Bytes::from_static(b"<html>login</html>")));
    let got = fetch(&addr, "GET", "/v2/html/manifests/1", PULLGATE_UA).await;
    assert_eq!(
        (got.status, got.header("content-type"), &got.body[..]),
        (StatusCode::OK, "text/html", &b"<html>login</html>"[..])
    );
    // The newest rule for a prefix wins.
    front.hostile("/v2/html/", Hostile::Body(418, "text/plain".into(), Bytes::from_static(b"teapot")));
    assert_eq!(fetch(&addr, "HEAD", "/v2/html/manifests/1", PULLGATE_UA).await.status, StatusCode::IM_A_TEAPOT);

    assert_eq!(front.count(|s| s.path.starts_with("/v2/big/")), 1);
    assert_eq!(front.requests().len(), 8);
    drop(front);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(tokio::net::TcpStream::connect(&addr).await.is_err(), "dropped front still accepts");
}
