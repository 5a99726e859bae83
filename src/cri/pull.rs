//! PullImage: decode just enough of the request to ask the gate, then forward what it allows.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use prost::Message;
use tonic::body::BoxBody;

use crate::cri::proto::PullImageRequest;
use crate::cri::upstream::Upstream;
use crate::cri::{status, wire};
use crate::decision::{Admission, PullGate, PullRequest, Rejection};

pub const PATH: &str = "/runtime.v1.ImageService/PullImage";

/// A PullImageRequest is an image name, credentials and a pod config: a few KiB. The cap keeps a
/// misbehaving client from making pullgate buffer an unbounded body.
const MAX_REQUEST_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("cannot read PullImage request: {0}")]
    Body(String),
    #[error("cannot read PullImage request: {0}")]
    Wire(#[from] wire::WireError),
    #[error("cannot decode PullImage request: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error(transparent)]
    Rejected(#[from] Rejection),
}

pub async fn handle<G: PullGate>(
    gate: &G,
    upstream: &Upstream,
    request: http::Request<Incoming>,
) -> http::Response<BoxBody> {
    let (parts, body) = request.into_parts();
    match admit(gate, body).await {
        Ok((Admission::Forward, body)) => {
            let body = Full::new(body).map_err(|never| match never {}).boxed_unsync();
            upstream.call(http::Request::from_parts(parts, body)).await
        }
        Err(error) => status::pull_error(&error).into_http(),
    }
}

async fn admit<G: PullGate>(gate: &G, body: Incoming) -> Result<(Admission, Bytes), PullError> {
    let body = Limited::new(body, MAX_REQUEST_BYTES)
        .collect()
        .await
        .map_err(|e| PullError::Body(e.to_string()))?
        .to_bytes();
    let decoded = PullImageRequest::decode(wire::unframe(&body)?)?;
    let admission = gate.admit(&pull_request(&decoded)).await?;
    Ok((admission, body))
}

fn pull_request(decoded: &PullImageRequest) -> PullRequest {
    let namespace = decoded
        .sandbox_config
        .as_ref()
        .and_then(|config| config.metadata.as_ref())
        .map(|metadata| metadata.namespace.clone())
        .filter(|namespace| !namespace.is_empty());
    PullRequest { image: decoded.image.as_ref().map(|spec| spec.image.clone()).unwrap_or_default(), namespace }
}
