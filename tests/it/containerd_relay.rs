//! The relay in front of a real containerd that goes away and comes back. (What each CRI call
//! answers through the relay, compared with containerd's own answer, is runtime_service's.)

use crate::common;

use std::time::{Duration, Instant};

use common::cri;
use common::lab::Lab;
use pullgate::cri::proto::ListImagesRequest;

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
