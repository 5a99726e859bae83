//! Answers to the calls pullgate keeps: its own handler runs as a task and reports each
//! part of the answer, which is written to the kubelet here.

use bytes::{Bytes, BytesMut};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};

use super::*;

impl<G: PullGate> Splice<G> {
    pub(super) fn answer(&mut self, answer: Answer) {
        let (id, out, last) = match answer {
            Answer::Head { stream, parts, end } => {
                let block = head_block(Some(parts.status), &parts.headers);
                if end {
                    self.end_kept(stream, grpc_outcome(&parts.headers));
                }
                (stream, Out::Other(header_frames(stream, &block, end)), end)
            }
            Answer::Data { stream, data } => {
                let mut out = BytesMut::with_capacity(data.len() + frame::HEAD_LEN);
                frame::put_data(&mut out, stream, &data, false);
                (stream, Out::Data { frame: out.freeze(), cost: data.len(), credit: 0 }, false)
            }
            Answer::Trailers { stream, trailers } => {
                self.end_kept(stream, grpc_outcome(&trailers));
                let block = head_block(None, &trailers);
                (stream, Out::Other(header_frames(stream, &block, true)), true)
            }
            Answer::End { stream } => {
                let mut out = BytesMut::new();
                frame::put_data(&mut out, stream, &[], true);
                (stream, Out::Other(out.freeze()), true)
            }
            Answer::Failed { stream } => {
                self.end_kept(stream, CallOutcome::Aborted);
                (stream, Out::Other(reset(stream)), true)
            }
        };
        let Some(Stream::Kept(kept)) = self.streams.get_mut(&id) else { return };
        kept.waiting.push_back(out);
        if last {
            // A marker: the answer ends after the frames before it.
            kept.waiting.push_back(Out::Other(Bytes::new()));
        }
        self.pump_kept();
    }

    /// Logs a kept call's end with the status it is about to be answered with.
    pub(super) fn end_kept(&mut self, id: u32, outcome: CallOutcome) {
        if let Some(Stream::Kept(kept)) = self.streams.get_mut(&id) {
            end_log(&mut kept.log, outcome);
        }
    }

    /// Answers a kept call with `status` at once, whatever its task was doing.
    pub(super) fn answer_now(&mut self, id: u32, status: tonic::Status) {
        let Some(Stream::Kept(mut kept)) = self.streams.remove(&id) else { return };
        self.kept_bytes -= kept.body.len();
        if let Some(task) = kept.task.take() {
            task.abort();
        }
        end_log(&mut kept.log, CallOutcome::Code(status.code()));
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
        if relayed.answered {
            end_log(&mut relayed.log, CallOutcome::Aborted);
            self.send_blocked(Out::Other(reset(id)));
        } else {
            let status = self.proxy.upstream().unavailable(&std::io::Error::other(why.to_owned()));
            end_log(&mut relayed.log, CallOutcome::Code(status.code()));
            self.send_status(id, status);
        }
    }
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

/// What a kept call's task reports back.
pub(super) enum Answer {
    Head {
        stream: u32,
        parts: http::response::Parts,
        end: bool,
    },
    Data {
        stream: u32,
        data: Bytes,
    },
    Trailers {
        stream: u32,
        trailers: http::HeaderMap,
    },
    /// The body ended without trailers.
    End {
        stream: u32,
    },
    /// The body failed mid-way.
    Failed {
        stream: u32,
    },
}

/// Runs pullgate's own handler for a kept call and reports its answer, frame by frame.
pub(super) async fn answer_kept<G: PullGate>(
    proxy: Arc<Proxy<G>>,
    route: Route,
    request: http::Request<Full<Bytes>>,
    stream: u32,
    events: mpsc::Sender<Answer>,
) {
    // A handler that panics still ends its stream rather than leaving the kubelet waiting.
    let mut guard = Unanswered { stream, events: events.clone(), armed: true };
    let response = proxy.local(route, request).await;
    guard.armed = false;
    let (parts, mut body) = response.into_parts();
    let end = body.is_end_stream();
    if events.send(Answer::Head { stream, parts, end }).await.is_err() || end {
        return;
    }
    let last = loop {
        match body.frame().await {
            None => break Answer::End { stream },
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if events.send(Answer::Data { stream, data }).await.is_err() {
                        return;
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        break Answer::Trailers { stream, trailers };
                    }
                }
            },
            Some(Err(_)) => break Answer::Failed { stream },
        }
    };
    let _ = events.send(last).await;
}

/// Reports a kept call as failed if its handler unwinds before answering.
struct Unanswered {
    stream: u32,
    events: mpsc::Sender<Answer>,
    armed: bool,
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.events.try_send(Answer::Failed { stream: self.stream });
        }
    }
}
