//! One log event and one count per relayed call, emitted when the call's gRPC status is known.
//!
//! The status of a streamed or unary gRPC response arrives in the trailers, after the body, so
//! the event is written by a body wrapper when trailers pass (or when the body is dropped, for
//! calls the client abandoned).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tonic::Status;
use tonic::body::BoxBody;

use crate::metrics::{CallOutcome, Method, Metrics};

pub struct CallLog {
    method: Method,
    started: Instant,
    metrics: Arc<Metrics>,
}

impl CallLog {
    pub fn start(path: &str, metrics: &Arc<Metrics>) -> CallLog {
        CallLog { method: metrics.method(path), started: Instant::now(), metrics: metrics.clone() }
    }

    /// Attaches the log to a response; a trailers-only response is logged at once.
    pub fn finish(self, response: http::Response<BoxBody>) -> http::Response<BoxBody> {
        if let Some(code) = grpc_status(response.headers()) {
            self.emit(CallOutcome::Code(code));
            return response;
        }
        response.map(|body| BoxBody::new(Observed { inner: body, log: Some(self) }))
    }

    fn emit(self, outcome: CallOutcome) {
        self.metrics.call(&self.method, outcome);
        let micros = self.started.elapsed().as_micros() as u64;
        tracing::info!(method = self.method.path(), duration_us = micros, code = %outcome, "call");
    }
}

/// Only the code: the status message is not needed, so it is not decoded.
fn grpc_status(headers: &HeaderMap) -> Option<tonic::Code> {
    headers.get("grpc-status").map(|value| tonic::Code::from_bytes(value.as_bytes()))
}

struct Observed {
    inner: BoxBody,
    log: Option<CallLog>,
}

impl Body for Observed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(trailers) = frame.trailers_ref()
            && let Some(log) = self.log.take()
        {
            log.emit(grpc_status(trailers).map_or(CallOutcome::Missing, CallOutcome::Code));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        if let Some(log) = self.log.take() {
            log.emit(CallOutcome::Aborted);
        }
    }
}
