//! One log event per relayed call, emitted when the call's gRPC status is known.
//!
//! The status of a streamed or unary gRPC response arrives in the trailers, after the body, so
//! the event is written by a body wrapper when trailers pass (or when the body is dropped, for
//! calls the client abandoned).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tonic::Status;
use tonic::body::BoxBody;

pub struct CallLog {
    method: String,
    started: Instant,
}

impl CallLog {
    pub fn start(method: &str) -> CallLog {
        CallLog { method: method.to_owned(), started: Instant::now() }
    }

    /// Attaches the log to a response; a trailers-only response is logged at once.
    pub fn finish(self, response: http::Response<BoxBody>) -> http::Response<BoxBody> {
        if let Some(code) = grpc_status(response.headers()) {
            self.emit(&code);
            return response;
        }
        response.map(|body| BoxBody::new(Observed { inner: body, log: Some(self) }))
    }

    fn emit(self, code: &str) {
        let micros = self.started.elapsed().as_micros() as u64;
        tracing::info!(method = %self.method, duration_us = micros, code, "call");
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<String> {
    let code = Status::from_header_map(headers)?.code();
    Some(format!("{code:?}"))
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
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(trailers) = frame.trailers_ref() {
                let code = grpc_status(trailers).unwrap_or_else(|| "Missing".to_owned());
                if let Some(log) = self.log.take() {
                    log.emit(&code);
                }
            }
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
            log.emit("Aborted");
        }
    }
}
