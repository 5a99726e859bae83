//! Routes each incoming call: PullImage through the gate, health checks to pullgate's own
//! health service, everything else straight upstream.

use std::future::poll_fn;
use std::sync::Arc;

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
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

    pub async fn handle(self: Arc<Self>, request: http::Request<RecvStream>, respond: SendResponse<Bytes>) {
        let path = request.uri().path();
        let log = CallLog::start(path, &self.metrics);
        if path == pull::PATH {
            let puller = pull::Puller { upstream: &self.upstream, tagger: &self.tagger };
            answer(respond, puller.handle(&self.gate, request.map(RecvBody::new)), log).await;
        } else if path.starts_with(health::PREFIX) {
            let health = self.health.clone().oneshot(request.map(RecvBody::new));
            answer(respond, async move { health.await.unwrap_or_else(|never| match never {}) }, log).await;
        } else {
            // Relayed without looking inside: bodies, metadata and trailers go as they are.
            relay::relay(&self.upstream, request, respond, log).await;
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
