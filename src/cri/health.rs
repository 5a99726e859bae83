//! The standard `grpc.health.v1.Health` service on pullgate's own socket.
//!
//! pullgate binds its socket only once the policy has loaded, and a failed reload keeps the
//! last good policy in force, so while this answers a policy is loaded; what can still fail is
//! containerd. SERVING therefore means containerd answers a CRI call now. That answer is
//! cached for a second, so a tight health-check loop does not become a load on containerd.
//! Once shutdown begins the answer is NOT_SERVING, and Watch calls end so they do not hold up
//! the drain.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt, stream};
use tokio::sync::{Mutex, watch};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::cri::proto::VersionRequest;
use crate::cri::proto::runtime_service_client::RuntimeServiceClient;
use crate::cri::upstream::Upstream;

/// Paths of the health service's methods start with this.
pub const PREFIX: &str = "/grpc.health.v1.Health/";

/// The names a client may ask about: the whole server (""), and the CRI services it serves.
const SERVICES: &[&str] = &["", "runtime.v1.ImageService", "runtime.v1.RuntimeService"];
/// How long one answer from containerd stands for; also how often a Watch looks again.
const CACHE_TTL: Duration = Duration::from_secs(1);
/// containerd answers Version from memory; one that takes longer is not answering.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// `stopping` turns true when shutdown begins.
pub fn server(upstream: &Upstream, stopping: watch::Receiver<bool>) -> HealthServer<Health> {
    let probe = Probe { channel: upstream.channel(), last: Mutex::new(None), stopping };
    HealthServer::new(Health { probe: Arc::new(probe) })
}

pub struct Health {
    probe: Arc<Probe>,
}

struct Probe {
    channel: Channel,
    /// Held across the call to containerd, so concurrent checks share one call.
    last: Mutex<Option<(Instant, ServingStatus)>>,
    stopping: watch::Receiver<bool>,
}

// === impl Probe ===

impl Probe {
    async fn status(&self) -> ServingStatus {
        if *self.stopping.borrow() {
            return ServingStatus::NotServing;
        }
        let mut last = self.last.lock().await;
        if let Some((at, status)) = *last
            && at.elapsed() < CACHE_TTL
        {
            return status;
        }
        let status = self.ask_upstream().await;
        *last = Some((Instant::now(), status));
        status
    }

    async fn ask_upstream(&self) -> ServingStatus {
        let mut client = RuntimeServiceClient::new(self.channel.clone());
        match tokio::time::timeout(PROBE_TIMEOUT, client.version(VersionRequest::default())).await {
            Ok(Ok(_)) => ServingStatus::Serving,
            Ok(Err(status)) => {
                tracing::debug!(code = ?status.code(), message = status.message(), "upstream health probe failed");
                ServingStatus::NotServing
            }
            Err(_) => {
                tracing::debug!(timeout = ?PROBE_TIMEOUT, "upstream health probe timed out");
                ServingStatus::NotServing
            }
        }
    }
}

// === impl Health ===

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl tonic_health::pb::health_server::Health for Health {
    async fn check(&self, request: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        if !SERVICES.contains(&request.get_ref().service.as_str()) {
            return Err(Status::not_found("pullgate: unknown service"));
        }
        Ok(Response::new(answer(self.probe.status().await)))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, request: Request<HealthCheckRequest>) -> Result<Response<WatchStream>, Status> {
        if !SERVICES.contains(&request.get_ref().service.as_str()) {
            // The protocol keeps the call open: the service might become known later.
            let unknown = stream::once(async { Ok(answer(ServingStatus::ServiceUnknown)) }).chain(stream::pending());
            return Ok(Response::new(Box::pin(unknown)));
        }
        let mut stopping = self.probe.stopping.clone();
        let stopped = async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
        };
        let last_word = stream::once(async { Ok(answer(ServingStatus::NotServing)) });
        Ok(Response::new(Box::pin(changes(self.probe.clone()).take_until(stopped).chain(last_word))))
    }
}

/// The current status at once, then each change, for as long as the client listens.
fn changes(probe: Arc<Probe>) -> impl Stream<Item = Result<HealthCheckResponse, Status>> + Send {
    stream::unfold((probe, None), |(probe, last)| async move {
        loop {
            if last.is_some() {
                tokio::time::sleep(CACHE_TTL).await;
            }
            let status = probe.status().await;
            if Some(status) != last {
                return Some((Ok(answer(status)), (probe, Some(status))));
            }
        }
    })
}

fn answer(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse { status: status.into() }
}
