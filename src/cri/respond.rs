//! Answering the kubelet with a response pullgate made or holds: its own status, a PullImage
//! answer, a health check.

use bytes::Bytes;
use h2::server::SendResponse;
use http_body::Body;
use tonic::Status;

use crate::cri::body::{self, SendError};
use crate::metrics::CallOutcome;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Sends `response`, body and trailers, and returns how the call ended.
pub async fn send<B>(mut respond: SendResponse<Bytes>, response: http::Response<B>) -> CallOutcome
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (parts, response_body) = response.into_parts();
    let ended = response_body.is_end_stream();
    let headers_code = body::grpc_code(&parts.headers);
    let Ok(mut to_kubelet) = respond.send_response(http::Response::from_parts(parts, ()), ended) else {
        return CallOutcome::Aborted;
    };
    if ended {
        return headers_code.map_or(CallOutcome::Missing, CallOutcome::Code);
    }
    match body::send(response_body, &mut to_kubelet).await {
        Ok(code) => code.map_or(CallOutcome::Missing, CallOutcome::Code),
        Err(error) => {
            if let SendError::Source(_) = error {
                to_kubelet.send_reset(error.reason());
            }
            CallOutcome::Aborted
        }
    }
}

/// A trailers-only response carrying `status`.
pub fn status(respond: &mut SendResponse<Bytes>, status: Status) -> CallOutcome {
    let code = status.code();
    let (parts, _) = status.into_http().into_parts();
    match respond.send_response(http::Response::from_parts(parts, ()), true) {
        Ok(_) => CallOutcome::Code(code),
        Err(_) => CallOutcome::Aborted,
    }
}
