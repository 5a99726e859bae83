//! One log event and one count per call, emitted when the call has ended and its gRPC status
//! (from the response headers or trailers) is known.

use std::sync::Arc;
use std::time::Instant;

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

    pub fn end(self, outcome: CallOutcome) {
        self.metrics.call(&self.method, outcome);
        let micros = self.started.elapsed().as_micros() as u64;
        tracing::info!(method = self.method.path(), duration_us = micros, code = %outcome, "call");
    }
}
