//! Typed CRI clients over a Unix socket, for comparing pullgate with containerd directly.

use std::path::Path;

use hyper_util::rt::TokioIo;
use pullgate::cri::proto::image_service_client::ImageServiceClient;
use pullgate::cri::proto::runtime_service_client::RuntimeServiceClient;
use pullgate::cri::proto::{ImageSpec, PodSandboxConfig, PodSandboxMetadata, PullImageRequest};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

pub fn channel(socket: &Path) -> Channel {
    let socket = socket.to_owned();
    Endpoint::from_static("http://cri.invalid").connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
        let socket = socket.clone();
        async move { UnixStream::connect(socket).await.map(TokioIo::new) }
    }))
}

pub fn images(socket: &Path) -> ImageServiceClient<Channel> {
    ImageServiceClient::new(channel(socket))
}

pub fn runtime(socket: &Path) -> RuntimeServiceClient<Channel> {
    RuntimeServiceClient::new(channel(socket))
}

pub fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec { image: image.to_owned(), ..Default::default() })
}

/// A PullImage as the kubelet sends it for a pod in `namespace`.
pub fn pull_request(image: &str, namespace: Option<&str>) -> PullImageRequest {
    let sandbox_config = namespace.map(|namespace| PodSandboxConfig {
        metadata: Some(PodSandboxMetadata { name: "pod".into(), namespace: namespace.into(), ..Default::default() }),
        ..Default::default()
    });
    PullImageRequest { image: spec(image), auth: None, sandbox_config }
}
