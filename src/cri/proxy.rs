//! Routes each incoming call: PullImage through the gate, health checks to pullgate's own
//! health service, everything else straight upstream.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::watch;
use tonic::Status;
use tonic::body::BoxBody;
use tonic_health::pb::health_server::HealthServer;
use tower::ServiceExt;

use crate::cri::health::{self, Health};
use crate::cri::observe::CallLog;
use crate::cri::pull;
use crate::cri::tagger::Tagger;
use crate::cri::upstream::Upstream;
use crate::decision::PullGate;
use crate::metrics::Metrics;

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

    pub async fn handle(
        self: Arc<Self>,
        request: http::Request<Incoming>,
    ) -> Result<http::Response<BoxBody>, Infallible> {
        let path = request.uri().path();
        let log = CallLog::start(path, &self.metrics);
        let response = if path == pull::PATH {
            pull::Puller { upstream: &self.upstream, tagger: &self.tagger }.handle(&self.gate, request).await
        } else if path.starts_with(health::PREFIX) {
            let Ok(response) = self.health.clone().oneshot(request).await;
            response
        } else {
            self.passthrough(request).await
        };
        Ok(log.finish(response))
    }

    /// Relays the call without looking inside: bodies, metadata and trailers go as they are.
    async fn passthrough(&self, request: http::Request<Incoming>) -> http::Response<BoxBody> {
        let request = request.map(|body| body.map_err(|e| Status::from_error(Box::new(e))).boxed_unsync());
        self.upstream.call(request).await
    }
}
