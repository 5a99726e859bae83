//! What becomes of each call, by its path (`route`), and pullgate's own answers to the calls
//! the splice relay hands over (`Local`): PullImage through the gate, health checks from
//! pullgate's health service, refusals for anything outside the CRI, and CRI calls made while
//! a connection is without containerd (through the shared upstream connection). Every other
//! CRI call is spliced through to containerd by `splice` and never comes here.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::watch;
use tonic_health::pb::health_server::HealthServer;
use tower::ServiceExt;

use crate::cri::budget::Budget;
use crate::cri::health::{self, Health};
use crate::cri::pull;
use crate::cri::splice::Local;
use crate::cri::tagger::Tagger;
use crate::cri::upstream::Upstream;
use crate::decision::PullGate;
use crate::metrics::Metrics;

/// Bytes of requests to calls pullgate answers itself (PullImage, health) held at once, all
/// connections together. A kubelet's PullImage request is a few KiB, so this is room for
/// hundreds at once, and for eight of the largest allowed; however many connections a client
/// opens, together they hold no more: the count is of the memory their buffers hold
/// (`splice::local::grow_body`), not only of the bytes received.
const MAX_LOCAL_REQUEST_BYTES_TOTAL: usize = 8 << 20;

pub struct Proxy<G> {
    gate: G,
    upstream: Upstream,
    tagger: Tagger,
    health: HealthServer<Health>,
    metrics: Arc<Metrics>,
    budget: Arc<Budget>,
}

impl<G: PullGate> Proxy<G> {
    /// `stopping` turns true when shutdown begins; health checks then answer NOT_SERVING.
    pub fn new(gate: G, upstream: Upstream, metrics: Arc<Metrics>, stopping: watch::Receiver<bool>) -> Arc<Self> {
        let tagger = Tagger::new(upstream.channel());
        let health = health::server(&upstream, stopping);
        let budget = Budget::new(MAX_LOCAL_REQUEST_BYTES_TOTAL);
        Arc::new(Proxy { gate, upstream, tagger, health, metrics, budget })
    }
}

impl<G: PullGate> Local for Proxy<G> {
    /// pullgate's own answer to a call it does not splice through (see `route`): PullImage,
    /// health, refusals, and CRI calls while the connection is without containerd.
    async fn answer(
        self: Arc<Self>,
        route: Route,
        request: http::Request<http_body_util::Full<Bytes>>,
    ) -> http::Response<tonic::body::BoxBody> {
        match route {
            Route::Pull => {
                let puller = pull::Puller { upstream: &self.upstream, tagger: &self.tagger };
                puller.handle(&self.gate, request).await
            }
            Route::Health => {
                let health = self.health.clone().oneshot(request);
                health.await.unwrap_or_else(|never| match never {})
            }
            Route::Refused(status) => status.into_http(),
            Route::Relay => {
                self.upstream.call(request.map(|body| body.map_err(|never| match never {}).boxed_unsync())).await
            }
        }
    }

    fn unavailable(&self, why: &str) -> tonic::Status {
        self.upstream.unavailable(&std::io::Error::other(why.to_owned()))
    }

    async fn dial(&self) -> std::io::Result<tokio::net::UnixStream> {
        self.upstream.dial().await
    }

    fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

/// What becomes of a call, by its path.
#[derive(Debug)]
pub enum Route {
    /// PullImage: through the gate.
    Pull,
    /// pullgate's own health service.
    Health,
    /// Answered with this status and never forwarded.
    Refused(tonic::Status),
    /// A CRI call other than PullImage: it goes to containerd.
    Relay,
}

/// The services relayed to containerd: the CRI, which is all the kubelet asks of this socket.
/// Methods are not listed, so a newer kubelet's new calls still pass.
const RELAYED_SERVICES: &[&str] = &["runtime.v1.RuntimeService", "runtime.v1.ImageService"];

/// Routes `path`, read as containerd's gRPC server reads it: the service is everything between
/// the leading slash and the last one, the method what follows. Only the CRI is relayed;
/// containerd's own API on the same socket (`containerd.services.*`: pull, import, tag, run
/// without any check), the deprecated `runtime.v1alpha2` CRI (whose PullImage would pass the
/// gate by another name) and anything else are refused before anything is opened to containerd.
pub fn route(path: &str) -> Route {
    if path == pull::PATH {
        return Route::Pull;
    }
    if path.starts_with(health::PREFIX) {
        return Route::Health;
    }
    if relayed(path) {
        return Route::Relay;
    }
    let refusal = match path.strip_prefix('/').and_then(|name| name.rsplit_once('/')) {
        Some((service, _)) => format!(
            "pullgate: service {service} is not served on this socket, which serves the CRI ({}) only",
            RELAYED_SERVICES.join(", ")
        ),
        None => format!("pullgate: malformed method path {path:?}; this socket serves the CRI only"),
    };
    Route::Refused(tonic::Status::permission_denied(refusal))
}

/// Whether `route` relays `path`, decided without building the refusal of one it does not:
/// a client flooding refused calls costs little each.
pub fn relayed(path: &str) -> bool {
    let Some((service, method)) = path.strip_prefix('/').and_then(|name| name.rsplit_once('/')) else {
        return false;
    };
    path != pull::PATH && RELAYED_SERVICES.contains(&service) && !method.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(path: &str) -> tonic::Status {
        match route(path) {
            Route::Refused(status) => status,
            other => panic!("{path:?} routed as {other:?}"),
        }
    }

    #[test]
    fn pull_image_is_gated_and_health_is_local() {
        assert!(matches!(route("/runtime.v1.ImageService/PullImage"), Route::Pull));
        assert!(matches!(route("/grpc.health.v1.Health/Check"), Route::Health));
        assert!(matches!(route("/grpc.health.v1.Health/Watch"), Route::Health));
    }

    #[test]
    fn relayed_agrees_with_route() {
        for path in [
            "/runtime.v1.ImageService/PullImage",
            "/runtime.v1.ImageService/ImageStatus",
            "/runtime.v1.RuntimeService/Version",
            "/grpc.health.v1.Health/Check",
            "/containerd.services.images.v1.Images/List",
            "/runtime.v1alpha2.ImageService/ImageStatus",
            "/runtime.v1.ImageService/",
            "runtime.v1.ImageService/ImageStatus",
            "",
        ] {
            assert_eq!(relayed(path), matches!(route(path), Route::Relay), "{path:?}");
        }
    }

    #[test]
    fn the_cri_is_relayed_including_methods_pullgate_does_not_know() {
        for path in [
            "/runtime.v1.ImageService/ImageStatus",
            "/runtime.v1.ImageService/ListImages",
            "/runtime.v1.ImageService/RemoveImage",
            "/runtime.v1.RuntimeService/Version",
            "/runtime.v1.RuntimeService/RunPodSandbox",
            "/runtime.v1.RuntimeService/GetContainerEvents",
            "/runtime.v1.ImageService/StreamImages",
            "/runtime.v1.RuntimeService/SomeMethodOfANewerKubelet",
        ] {
            assert!(matches!(route(path), Route::Relay), "{path:?}");
        }
    }

    #[test]
    fn containerd_s_own_api_is_refused_naming_the_service() {
        for (path, service) in [
            ("/containerd.services.images.v1.Images/Create", "containerd.services.images.v1.Images"),
            ("/containerd.services.images.v1.Images/Update", "containerd.services.images.v1.Images"),
            ("/containerd.services.transfer.v1.Transfer/Transfer", "containerd.services.transfer.v1.Transfer"),
            ("/containerd.services.content.v1.Content/Write", "containerd.services.content.v1.Content"),
            ("/containerd.services.tasks.v1.Tasks/Create", "containerd.services.tasks.v1.Tasks"),
            ("/containerd.services.leases.v1.Leases/Create", "containerd.services.leases.v1.Leases"),
            ("/containerd.services.version.v1.Version/Version", "containerd.services.version.v1.Version"),
            ("/runtime.v1alpha2.ImageService/PullImage", "runtime.v1alpha2.ImageService"),
            ("/runtime.v1alpha2.RuntimeService/Version", "runtime.v1alpha2.RuntimeService"),
            (
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                "grpc.reflection.v1alpha.ServerReflection",
            ),
            ("/some.Other/PullImage", "some.Other"),
        ] {
            let status = refusal(path);
            assert_eq!(status.code(), tonic::Code::PermissionDenied, "{path:?}");
            assert!(status.message().contains(service), "{path:?}: {}", status.message());
        }
    }

    /// containerd's server strips one leading slash if there is one and splits at the last
    /// slash, so each of these would reach a CRI method there, or an unknown one, under a name
    /// pullgate does not serve.
    #[test]
    fn paths_that_are_not_exactly_a_cri_method_are_refused() {
        for path in [
            "",
            "/",
            "runtime.v1.ImageService/PullImage",
            "runtime.v1.ImageService/ImageStatus",
            "//runtime.v1.ImageService/PullImage",
            "/runtime.v1.ImageService/",
            "/runtime.v1.ImageService",
            "/runtime.v1.ImageService/x/runtime.v1.ImageService/PullImage",
            "/x/runtime.v1.ImageService/ImageStatus",
            "/runtime.v1.imageservice/ImageStatus",
            "/grpc.health.v1.Health",
        ] {
            assert_eq!(refusal(path).code(), tonic::Code::PermissionDenied, "{path:?}");
        }
    }
}
