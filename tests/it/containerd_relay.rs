//! The relay in front of a real containerd (lab: Debian's containerd + docker-registry).

use crate::common;

use std::time::{Duration, Instant};

use common::cri::{self, spec};
use common::lab::{Containerd, Lab};
use common::raw;
use pullgate::cri::proto::{
    ImageFsInfoRequest, ImageStatusRequest, ListImagesRequest, RemoveImageRequest, VersionRequest,
};

#[tokio::test(flavor = "multi_thread")]
async fn image_service_answers_as_containerd_does() {
    let lab = Lab::start();
    let (first, second) = ("relay/first:v1", "relay/second:v1");
    lab.push_image(first, "relay-first");
    lab.push_image(second, "relay-second");
    let (first, second) = (format!("{}/{first}", lab.registry), format!("{}/{second}", lab.registry));
    let pullgate = common::pullgate::start(&lab.containerd_sock).await;
    let mut direct = cri::images(&lab.containerd_sock);
    let mut via = cri::images(&pullgate.socket);

    let pulled_via = via.pull_image(cri::pull_request(&first, Some("default"))).await.unwrap().into_inner();
    let pulled_direct = direct.pull_image(cri::pull_request(&first, Some("default"))).await.unwrap().into_inner();
    assert_eq!(pulled_via, pulled_direct);
    assert!(pulled_via.image_ref.starts_with("sha256:"));
    direct.pull_image(cri::pull_request(&second, None)).await.unwrap();

    let mut list_via = via.list_images(ListImagesRequest::default()).await.unwrap().into_inner();
    let mut list_direct = direct.list_images(ListImagesRequest::default()).await.unwrap().into_inner();
    // containerd lists from a map: the order may differ between two calls, the content may not.
    list_via.images.sort_by(|a, b| a.id.cmp(&b.id));
    list_direct.images.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(list_via, list_direct);
    assert_eq!(list_via.images.len(), 2, "{list_via:?}");

    for image in [&first, &second, &format!("{}/relay/absent:v1", lab.registry)] {
        let request = ImageStatusRequest { image: spec(image), verbose: true };
        let status_via = via.image_status(request.clone()).await.unwrap().into_inner();
        let status_direct = direct.image_status(request).await.unwrap().into_inner();
        assert_eq!(status_via, status_direct, "ImageStatus of {image}");
    }

    let mut fs_via = via.image_fs_info(ImageFsInfoRequest {}).await.unwrap().into_inner();
    let mut fs_direct = direct.image_fs_info(ImageFsInfoRequest {}).await.unwrap().into_inner();
    // The timestamp says when containerd sampled usage; everything else must agree.
    for usage in fs_via.image_filesystems.iter_mut().chain(fs_direct.image_filesystems.iter_mut()) {
        usage.timestamp = 0;
    }
    assert!(!fs_via.image_filesystems.is_empty());
    assert_eq!(fs_via, fs_direct);

    let removed_via = via.remove_image(RemoveImageRequest { image: spec(&first) }).await.unwrap().into_inner();
    let removed_direct = direct.remove_image(RemoveImageRequest { image: spec(&second) }).await.unwrap().into_inner();
    assert_eq!(removed_via, removed_direct);
    let after = direct.list_images(ListImagesRequest::default()).await.unwrap().into_inner();
    assert!(after.images.is_empty(), "{after:?}");
    pullgate.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_and_unimplemented_methods_keep_containerds_answers() {
    let lab = Lab::start();
    let pullgate = common::pullgate::start(&lab.containerd_sock).await;

    let request = VersionRequest { version: "v1".into() };
    let via = cri::runtime(&pullgate.socket).version(request.clone()).await.unwrap().into_inner();
    let direct = cri::runtime(&lab.containerd_sock).version(request).await.unwrap().into_inner();
    assert_eq!(via, direct);
    assert_eq!(via.runtime_name, "containerd");

    // StreamImages is Unimplemented on containerd 1.6 and served by 2.x; a method no CRI has
    // is Unimplemented on both.
    for (path, unimplemented) in [
        ("/runtime.v1.ImageService/StreamImages", lab.containerd == Containerd::V1_6),
        ("/runtime.v1.ImageService/NoSuchMethod", true),
    ] {
        let via = raw::call(&pullgate.socket, path, raw::frame(b""), &[]).await;
        let direct = raw::call(&lab.containerd_sock, path, raw::frame(b""), &[]).await;
        assert_eq!(via.grpc_status() == Some("12"), unimplemented, "{path}: {via:?}");
        assert_eq!((via.grpc_status(), via.grpc_message()), (direct.grpc_status(), direct.grpc_message()), "{path}");
    }
    pullgate.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn containerd_restart_needs_no_pullgate_restart() {
    let lab = Lab::start();
    let pullgate = common::pullgate::start(&lab.containerd_sock).await;
    let mut via = cri::images(&pullgate.socket);
    via.list_images(ListImagesRequest::default()).await.expect("call while containerd is up");

    lab.stop_containerd();
    let started = Instant::now();
    let error = via.list_images(ListImagesRequest::default()).await.expect_err("containerd is down");
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert_eq!(error.code(), tonic::Code::Unavailable, "{error:?}");
    assert!(error.message().contains(&lab.containerd_sock.display().to_string()), "{}", error.message());

    lab.start_containerd();
    via.list_images(ListImagesRequest::default()).await.expect("first call after containerd restarted");
    pullgate.stop().await;
}
