//! Answering the kubelet: with a response pullgate made or holds (its own status, a PullImage
//! answer, a health check) or one relayed from containerd.
//!
//! Each call is logged and counted just before its last frame is queued, so metrics and logs
//! already show a call when the kubelet sees it end.

use bytes::Bytes;
use h2::server::SendResponse;
use http_body::Body;
use tonic::Status;

use crate::cri::body::{self, SendError};
use crate::cri::observe::CallLog;
use crate::metrics::CallOutcome;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Sends `response`, body and trailers.
pub async fn send<B>(mut respond: SendResponse<Bytes>, response: http::Response<B>, log: CallLog)
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (parts, response_body) = response.into_parts();
    let ended = response_body.is_end_stream();
    let mut log = Some(log);
    let mut end = |outcome| {
        if let Some(log) = log.take() {
            log.end(outcome);
        }
    };
    if ended {
        end(outcome(body::grpc_code(&parts.headers)));
    }
    let Ok(mut to_kubelet) = respond.send_response(http::Response::from_parts(parts, ()), ended) else {
        return end(CallOutcome::Aborted);
    };
    if ended {
        return;
    }
    if let Err(error) = body::send(response_body, &mut to_kubelet, |code| end(outcome(code))).await {
        if let SendError::Source(_) = error {
            to_kubelet.send_reset(error.reason());
        }
        end(CallOutcome::Aborted);
    }
}

/// A trailers-only response carrying `status`.
pub fn status(respond: &mut SendResponse<Bytes>, status: Status, log: CallLog) {
    log.end(CallOutcome::Code(status.code()));
    let (parts, _) = status.into_http().into_parts();
    // Fails only when the kubelet has already reset the stream: nobody is left to tell.
    let _ = respond.send_response(http::Response::from_parts(parts, ()), true);
}

fn outcome(code: Option<tonic::Code>) -> CallOutcome {
    code.map_or(CallOutcome::Missing, CallOutcome::Code)
}
