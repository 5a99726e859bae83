//! Calls pullgate answers itself: their requests are collected here, handed to the driver to
//! answer (`Action::Answer`), and the parts of the answer written to the kubelet under the
//! stream's flow-control window.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use http_body_util::Full;

use super::limits::*;
use super::machine::*;
use super::*;
use crate::cri::frame::{self, reason};
use crate::cri::proxy;
use crate::metrics::CallOutcome;

impl<L: Local> Machine<L> {
    pub(super) fn answer(&mut self, answer: Answer) {
        let (id, out, last) = match answer {
            Answer::Head { stream, parts, end } => {
                let block = head_block(Some(parts.status), &parts.headers);
                if end {
                    self.end_local_log(stream, grpc_outcome(&parts.headers));
                }
                (stream, Out::Other(header_frames(stream, &block, end)), end)
            }
            Answer::Data { stream, data } => {
                let mut out = BytesMut::with_capacity(data.len() + frame::HEAD_LEN);
                frame::put_data(&mut out, stream, &data, false);
                (stream, Out::Data { frame: out.freeze(), cost: data.len(), credit: 0 }, false)
            }
            Answer::Trailers { stream, trailers } => {
                self.end_local_log(stream, grpc_outcome(&trailers));
                let block = head_block(None, &trailers);
                (stream, Out::Other(header_frames(stream, &block, true)), true)
            }
            Answer::End { stream } => {
                let mut out = BytesMut::new();
                frame::put_data(&mut out, stream, &[], true);
                (stream, Out::Other(out.freeze()), true)
            }
            Answer::Failed { stream } => {
                self.end_local_log(stream, CallOutcome::Aborted);
                (stream, Out::Other(reset(stream)), true)
            }
        };
        let Some(Stream::Local(call)) = self.streams.get_mut(&id) else { return };
        self.waiting_bytes += out.len();
        call.waiting.push_back(Part::Frame(out));
        if last {
            call.waiting.push_back(Part::End);
        }
        self.pump_local();
    }

    /// Logs a local call's end with the status it is about to be answered with.
    fn end_local_log(&mut self, id: u32, outcome: CallOutcome) {
        if let Some(Stream::Local(call)) = self.streams.get_mut(&id) {
            end_log(&mut call.log, outcome);
        }
    }

    /// Hands a local call whose request is complete to the driver to answer.
    pub(super) fn start_local(&mut self, id: u32) {
        let Some(Stream::Local(call)) = self.streams.get_mut(&id) else { return };
        let LocalState::Receiving(collected) = std::mem::replace(&mut call.state, LocalState::Answering) else {
            return;
        };
        self.local_bytes -= collected.body.capacity();
        let mut request = http::Request::new(Full::new(Bytes::from(collected.body)));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = call.path.parse().unwrap_or_else(|_| http::Uri::from_static("/"));
        *request.headers_mut() = collected.headers;
        // Derived from the path here, never defaulted: a call whose route were lost must not
        // become a relayed one (for PullImage, an unverified pull).
        let route = proxy::route(&call.path);
        self.actions.push_back(Action::Answer { stream: id, route, request, held: collected.held });
    }

    /// Forgets a local call taken out of `streams`: what it held is given back, its task stopped.
    pub(super) fn forget_local(&mut self, id: u32, mut call: Box<LocalCall>, outcome: CallOutcome) {
        match call.state {
            LocalState::Receiving(collected) => self.local_bytes -= collected.body.capacity(),
            LocalState::Answering => self.actions.push_back(Action::Cancel(id)),
        }
        self.waiting_bytes -= waiting_len(&call.waiting);
        end_log(&mut call.log, outcome);
    }

    /// Answers a local call with `status` at once, whatever its task was doing.
    pub(super) fn answer_now(&mut self, id: u32, status: tonic::Status) {
        let Some(Stream::Local(call)) = self.streams.remove(&id) else { return };
        self.forget_local(id, call, CallOutcome::Code(status.code()));
        self.send_status(id, status);
    }

    /// A trailers-only response carrying `status`.
    pub(super) fn send_status(&mut self, id: u32, status: tonic::Status) {
        let (parts, _) = status.into_http().into_parts();
        let block = head_block(Some(parts.status), &parts.headers);
        self.send_blocked(Out::Other(header_frames(id, &block, true)));
    }

    /// Ends a relayed call that containerd can no longer answer: UNAVAILABLE naming the
    /// socket, as calls are answered while containerd is down, or a reset once containerd's
    /// own answer has begun.
    pub(super) fn answer_unavailable(&mut self, id: u32, why: &str) {
        let Some(Stream::Relayed(mut relayed)) = self.streams.remove(&id) else { return };
        match relayed.response {
            Response::Awaited => {
                let status = self.local.unavailable(why);
                end_log(&mut relayed.log, CallOutcome::Code(status.code()));
                self.send_status(id, status);
            }
            Response::Begun => {
                end_log(&mut relayed.log, CallOutcome::Aborted);
                self.send_blocked(Out::Other(reset(id)));
            }
            // Its answer is complete and queued; only the kubelet's side was still open.
            Response::Ended => {}
        }
    }
}

/// Makes room in `collected.body` for `more` bytes, taking what its capacity grows by from the
/// shared budget first: the count is of memory held, not of bytes received. Grows by doubling
/// (so a request arriving in many frames is not copied for each), but never past what a request
/// may be. Returns how much the capacity grew, or None when the request is too large or the
/// budget has no room.
pub(super) fn grow_body(collected: &mut Collected, more: usize) -> Option<usize> {
    let body = &mut collected.body;
    let needed = body.len() + more;
    if needed > MAX_LOCAL_REQUEST_BYTES {
        return None;
    }
    if needed <= body.capacity() {
        return Some(0);
    }
    let capacity = needed.max(body.capacity() * 2).min(MAX_LOCAL_REQUEST_BYTES);
    let grown = capacity - body.capacity();
    if !collected.held.take(grown) {
        return None;
    }
    body.reserve_exact(capacity - body.len());
    Some(grown)
}

pub(super) fn waiting_len(waiting: &VecDeque<Part>) -> usize {
    waiting.iter().map(|part| if let Part::Frame(out) = part { out.len() } else { 0 }).sum()
}

/// A response head (`status` given) or trailers (`status` None) as a header block of literals.
pub(super) fn head_block(status: Option<http::StatusCode>, headers: &http::HeaderMap) -> Vec<u8> {
    let mut block = Vec::new();
    if let Some(status) = status {
        frame::put_literal(&mut block, b":status", status.as_str().as_bytes());
    }
    for (name, value) in headers {
        frame::put_literal(&mut block, name.as_str().as_bytes(), value.as_bytes());
    }
    block
}

/// RST_STREAM(CANCEL) for `stream`.
fn reset(stream: u32) -> Bytes {
    let mut out = BytesMut::new();
    frame::put_rst_stream(&mut out, stream, reason::CANCEL);
    out.freeze()
}
