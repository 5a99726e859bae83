//! PullImage: decode just enough of the request to ask the gate, then forward what it allows.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use prost::Message;
use tonic::Status;
use tonic::body::BoxBody;

use crate::cri::proto::{AuthConfig, PullImageRequest, PullImageResponse};
use crate::cri::store::StoreError;
use crate::cri::tagger::{TagError, Tagger};
use crate::cri::upstream::Upstream;
use crate::cri::{status, wire};
use crate::decision::{Admission, PullGate, PullRequest, Rejection};
use crate::registry::Credentials;

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
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("containerd pulled the verified digest, but {0}")]
    Tag(#[from] TagError),
    #[error("unreadable PullImage response from containerd: {0}")]
    Response(String),
}

/// The CRI edge's view of a pull in progress: where to forward and how to tag.
pub struct Puller<'a> {
    pub upstream: &'a Upstream,
    pub tagger: &'a Tagger,
}

impl Puller<'_> {
    pub async fn handle<G, B>(&self, gate: &G, request: http::Request<B>) -> http::Response<BoxBody>
    where
        G: PullGate,
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        let (admission, body) = match admit(gate, body).await {
            Ok(admitted) => admitted,
            Err(error) => return status::pull_error(&error).into_http(),
        };
        let result = match admission {
            Admission::Forward => Ok(self.forward(parts, body).await),
            Admission::Pinned { pinned, tag } => self.pinned(parts, &body, &pinned, tag.as_deref()).await,
        };
        result.unwrap_or_else(|error| status::pull_error(&error).into_http())
    }

    async fn forward(&self, parts: http::request::Parts, body: Bytes) -> http::Response<BoxBody> {
        let body = Full::new(body).map_err(|never| match never {}).boxed_unsync();
        self.upstream.call(http::Request::from_parts(parts, body)).await
    }

    /// Forwards the pull as `pinned` (repo@digest), checks that containerd stored exactly that
    /// digest (see `cri::store`) and, when the request named `tag` (repo:tag), points it at
    /// that content.
    async fn pinned(
        &self,
        mut parts: http::request::Parts,
        body: &[u8],
        pinned: &str,
        tag: Option<&str>,
    ) -> Result<http::Response<BoxBody>, PullError> {
        let rewritten = wire::frame(&wire::rewrite_pull_image(wire::unframe(body)?, pinned)?)?;
        // The client's length was for the body it sent; the rewritten one is longer, and
        // containerd resets a stream whose body and content-length disagree.
        parts.headers.remove(http::header::CONTENT_LENGTH);
        let (response, tagged) = match tag {
            Some(tag) => tokio::join!(self.forward(parts, rewritten), self.tagger.points_at(tag, pinned)),
            None => (self.forward(parts, rewritten).await, false),
        };
        let (parts, body) = response.into_parts();
        let collected = body.collect().await.map_err(|status| PullError::Response(status.message().to_owned()))?;
        let trailers = collected.trailers().cloned();
        let data = collected.to_bytes();
        let code = Status::from_header_map(trailers.as_ref().unwrap_or(&parts.headers)).map(|s| s.code());
        if code == Some(tonic::Code::Ok) {
            let pulled = PullImageResponse::decode(wire::unframe(&data)?)?;
            // Before the tag: a tag is only ever written onto checked content.
            self.tagger.store().check(pinned, &pulled.image_ref).await?;
            if let Some(tag) = tag.filter(|_| !tagged) {
                self.tagger.tag(tag, pinned, &pulled.image_ref).await?;
            }
        }
        Ok(http::Response::from_parts(parts, replay(data, trailers)))
    }
}

/// Rebuilds a buffered response body, trailers included. Without trailers (a trailers-only
/// answer such as UNAVAILABLE, its status in the head) the body must report its end at once:
/// otherwise the head goes out without END_STREAM and an empty DATA frame ends the stream,
/// which grpc-go clients (the kubelet's) read as INTERNAL "server closed the stream without
/// sending trailers" instead of the status.
fn replay(data: Bytes, trailers: Option<http::HeaderMap>) -> BoxBody {
    let body = Full::new(data).map_err(|never| match never {});
    match trailers {
        Some(trailers) => body.with_trailers(std::future::ready(Some(Ok(trailers)))).boxed_unsync(),
        None => body.boxed_unsync(),
    }
}

async fn admit<G, B>(gate: &G, body: B) -> Result<(Admission, Bytes), PullError>
where
    G: PullGate,
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let body =
        Limited::new(body, MAX_REQUEST_BYTES).collect().await.map_err(|e| PullError::Body(e.to_string()))?.to_bytes();
    let message = wire::unframe(&body)?;
    let pull = pull_request(&PullImageRequest::decode(message)?);
    // containerd will read the image by wire types; judging prost's reading could verify one
    // image and let containerd pull another (see `wire::pull_image_name`).
    if wire::pull_image_name(message)? != pull.image {
        return Err(wire::WireError::Ambiguous.into());
    }
    let admission = gate.admit(&pull).await?;
    Ok((admission, body))
}

fn pull_request(decoded: &PullImageRequest) -> PullRequest {
    let namespace = decoded
        .sandbox_config
        .as_ref()
        .and_then(|config| config.metadata.as_ref())
        .map(|metadata| metadata.namespace.clone())
        .filter(|namespace| !namespace.is_empty());
    let image = decoded.image.as_ref().map(|spec| spec.image.clone()).unwrap_or_default();
    PullRequest { image, namespace, credentials: credentials(decoded.auth.as_ref()) }
}

fn credentials(auth: Option<&AuthConfig>) -> Credentials {
    let Some(auth) = auth else { return Credentials::anonymous() };
    Credentials {
        username: auth.username.clone(),
        password: auth.password.clone(),
        auth: auth.auth.clone(),
        identity_token: auth.identity_token.clone(),
        registry_token: auth.registry_token.clone(),
        server_address: auth.server_address.clone(),
    }
}
