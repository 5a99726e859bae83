//! Routes each incoming call: PullImage through the gate, everything else straight upstream.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use tonic::Status;
use tonic::body::BoxBody;

use crate::cri::observe::CallLog;
use crate::cri::pull;
use crate::cri::tagger::Tagger;
use crate::cri::upstream::Upstream;
use crate::decision::PullGate;

pub struct Proxy<G> {
    gate: G,
    upstream: Upstream,
    tagger: Tagger,
}

impl<G: PullGate> Proxy<G> {
    pub fn new(gate: G, upstream: Upstream) -> Arc<Self> {
        let tagger = Tagger::new(upstream.channel());
        Arc::new(Proxy { gate, upstream, tagger })
    }

    pub async fn handle(self: Arc<Self>, request: http::Request<Incoming>) -> Result<http::Response<BoxBody>, Infallible> {
        let log = CallLog::start(request.uri().path());
        let response = if request.uri().path() == pull::PATH {
            pull::Puller { upstream: &self.upstream, tagger: &self.tagger }.handle(&self.gate, request).await
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
