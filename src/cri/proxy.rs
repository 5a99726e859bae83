//! Routes each incoming call: PullImage through the gate, health checks to pullgate's own
//! health service, everything else straight upstream.

use std::future::poll_fn;
use std::sync::Arc;

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http_body_util::BodyExt;
use tokio::sync::watch;
use tonic_health::pb::health_server::HealthServer;
use tower::ServiceExt;

use crate::cri::body::RecvBody;
use crate::cri::health::{self, Health};
use crate::cri::observe::CallLog;
use crate::cri::tagger::Tagger;
use crate::cri::upstream::Upstream;
use crate::cri::{pull, relay, respond};
use crate::decision::PullGate;
use crate::metrics::{CallOutcome, Metrics};

pub struct Proxy<G> {
    gate: G,
    upstream: Upstream,
    tagger: Tagger,
    health: HealthServer<Health>,
    metrics: Arc<Metrics>,
}

impl<G: PullGate> Proxy<G> {
    /// `stopping` turns true when shutdown begins; health checks then answer NOT_SERVING.
    pub fn new(gate: G, upstream: Upstream, metrics: Arc<Metrics>, stopping: watch::Receiver<bool>) -> Arc<Self> {
        let tagger = Tagger::new(upstream.channel());
        let health = health::server(&upstream, stopping);
        Arc::new(Proxy { gate, upstream, tagger, health, metrics })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// pullgate's own answer to a call it does not relay (see `route`), for the splice relay.
    pub async fn local(
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

    pub async fn handle(self: Arc<Self>, request: http::Request<RecvStream>, mut respond: SendResponse<Bytes>) {
        let path = request.uri().path();
        let log = CallLog::start(path, &self.metrics);
        match route(path) {
            Route::Pull => {
                let puller = pull::Puller { upstream: &self.upstream, tagger: &self.tagger };
                answer(respond, puller.handle(&self.gate, request.map(RecvBody::new)), log).await;
            }
            Route::Health => {
                let health = self.health.clone().oneshot(request.map(RecvBody::new));
                answer(respond, async move { health.await.unwrap_or_else(|never| match never {}) }, log).await;
            }
            Route::Refused(status) => respond::status(&mut respond, status, log),
            // Relayed without looking inside: bodies, metadata and trailers go as they are.
            Route::Relay => relay::relay(&self.upstream, request, respond, log).await,
        }
    }
}

/// Sends the answer pullgate works out, unless the kubelet gives up first: then the work (a
/// verification, say) is dropped rather than finished for nobody.
async fn answer(
    mut respond: SendResponse<Bytes>,
    answer: impl Future<Output = http::Response<tonic::body::BoxBody>>,
    log: CallLog,
) {
    let response = tokio::select! {
        response = answer => response,
        _ = poll_fn(|cx| respond.poll_reset(cx)) => return log.end(CallOutcome::Aborted),
    };
    respond::send(respond, response, log).await
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
    /// Everything else goes to containerd.
    Relay,
}

/// Routes `path` as containerd's gRPC server will read it: by its last two segments, with or
/// without a leading slash. So a PullImage under any other name (the runtime.v1alpha2 service,
/// which containerd 1.6 still serves with the same request message, or a path without its
/// slash) is refused rather than relayed past the gate.
pub fn route(path: &str) -> Route {
    let Some(name) = path.strip_prefix('/') else {
        return Route::Refused(tonic::Status::invalid_argument(format!("pullgate: malformed method path {path:?}")));
    };
    if name.rsplit('/').next() == Some("PullImage") && path != pull::PATH {
        return Route::Refused(tonic::Status::unimplemented(format!(
            "pullgate: {path} is not served; images are pulled through {}, where they are verified",
            pull::PATH
        )));
    }
    match path {
        pull::PATH => Route::Pull,
        _ if path.starts_with(health::PREFIX) => Route::Health,
        _ => Route::Relay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_pull_image_is_gated_or_refused() {
        assert!(matches!(route("/runtime.v1.ImageService/PullImage"), Route::Pull));
        for path in [
            "/runtime.v1alpha2.ImageService/PullImage",
            "runtime.v1.ImageService/PullImage",
            "/some.Other/PullImage",
            "",
        ] {
            assert!(matches!(route(path), Route::Refused(_)), "{path:?}");
        }
        assert!(matches!(route("/runtime.v1.ImageService/ImageStatus"), Route::Relay));
        assert!(matches!(route("/runtime.v1.ImageService/StreamImages"), Route::Relay));
        assert!(matches!(route("/grpc.health.v1.Health/Check"), Route::Health));
    }
}
