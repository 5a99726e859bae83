//! The splice relay's protocol logic, without sockets: bytes and events go in, bytes for each
//! side and local calls to answer come out (see the module comment of `splice` for what it
//! does with them). The driver (`driver.rs`) reads and writes the sockets and runs the tasks;
//! tests and the fuzz harness (`harness.rs`) play both peers instead.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http_body_util::Full;

use super::Local;
use super::limits::*;
use crate::cri::budget::Held;
use crate::cri::frame::{self, Frame, ProtocolError, flag, reason};
use crate::cri::hpack::Decoder;
use crate::cri::observe::CallLog;
use crate::cri::proxy::Route;
use crate::metrics::CallOutcome;

/// The payload of the PING that closes a connection.
pub(super) const CLOSING_PING: &[u8; 8] = b"pullgate";
pub(super) const MAX_STREAM_ID: u32 = 0x7fff_ffff;

/// One side of a spliced connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Kubelet,
    Containerd,
}

/// What happened, for the machine to act on (bytes from a peer go to `received`).
pub enum Event {
    /// The containerd connection is no longer usable (closed, failed); the kubelet's goes on.
    ContainerdLost(String),
    /// A part of a local call's answer, from the task `Action::Answer` started.
    Answer(Answer),
    /// containerd has answered a dial while this connection is without it.
    ContainerdBack,
    /// Time has passed (see `limits::PROBE_INTERVAL`).
    Tick,
    /// Shutdown: no new calls; the connection ends once those in flight have.
    Drain,
}

/// What the machine asks of its driver, besides writing `outbox(peer)`.
// Actions wait in a short queue only until the driver's next turn: boxing would cost an
// allocation per local call for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Action {
    /// Answer a local call: its request is complete. `held` is its share of the shared request
    /// budget, to be kept until the answer is made.
    Answer { stream: u32, route: Route, request: http::Request<Full<Bytes>>, held: Held },
    /// A local call's answer is no longer wanted (the call ended or was reset): stop its task.
    Cancel(u32),
    /// The connection is over.
    Close(Ending),
}

/// How a connection ends.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// Gracefully: once both outboxes are written, the sockets are closed.
    Done,
    /// A peer broke the protocol: what `outbox(Kubelet)` holds now (a GOAWAY saying why) is
    /// written if the socket takes it at once, and the sockets are closed.
    Broken(String),
}

/// What a local call's task reports back.
#[derive(Debug)]
pub enum Answer {
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
    /// The body failed mid-way, or the handler never answered.
    Failed {
        stream: u32,
    },
}

/// How far the kubelet's side of the connection has come.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Phase {
    Open,
    /// pullgate sent GOAWAY: the connection ends once no call is left and the closing PING
    /// has been answered, which proves the kubelet saw the GOAWAY before it.
    Leaving(ClosingPing),
    /// The kubelet sent GOAWAY itself, so it opens no more calls: the connection ends once
    /// no call is left.
    KubeletLeft,
    /// Over; the driver closes the sockets.
    Closed,
}

/// What is next in the kubelet's bytes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Reading {
    Preface,
    Frames,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum ClosingPing {
    Unsent,
    Sent,
    Answered,
}

/// The state of the containerd connection this kubelet connection is spliced to.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Containerd {
    /// Relayed calls go to it.
    Spliced,
    /// It sent GOAWAY: the calls it has are still answered there, new ones go as when lost.
    Leaving(Dial),
    /// Closed or failed (or never there): relayed calls go through the shared upstream
    /// connection, as local calls, until the kubelet is moved to a new connection.
    Lost(Dial),
}

/// Whether containerd answers a dial again, while the connection is without it.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(super) enum Dial {
    Unanswered,
    Answered,
}

/// A header block being collected from HEADERS and CONTINUATION frames.
pub(super) struct Block {
    pub(super) stream: u32,
    pub(super) end_stream: bool,
    pub(super) bytes: Vec<u8>,
}

pub(super) enum Stream {
    Relayed(Relayed),
    // Boxed: a local call carries its request and answer state, a relayed one a few words.
    Local(Box<LocalCall>),
}

/// A call spliced through to containerd.
pub(super) struct Relayed {
    pub(super) log: Option<CallLog>,
    pub(super) request: Request,
    pub(super) response: Response,
}

/// The kubelet's side of a relayed call.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Request {
    Sending,
    Sent,
}

/// containerd's side of a relayed call.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Response {
    Awaited,
    /// Its headers have gone to the kubelet.
    Begun,
    /// Its last frame has gone to the kubelet (or is queued for it).
    Ended,
}

/// A call pullgate answers itself.
pub(super) struct LocalCall {
    /// Routed (`proxy::route`) when the call starts; a relayed path is local only while this
    /// connection is without containerd, and then goes through the shared upstream connection.
    pub(super) path: String,
    pub(super) log: Option<CallLog>,
    pub(super) state: LocalState,
    /// What the kubelet lets pullgate send on this stream.
    pub(super) window: i64,
    /// Parts of the answer beyond `window`, in order.
    pub(super) waiting: VecDeque<Part>,
}

pub(super) enum LocalState {
    /// The request is still arriving.
    Receiving(Collected),
    /// The request is with the driver's task (`Action::Answer`).
    Answering,
}

/// A local call's request, as far as it has come.
pub(super) struct Collected {
    pub(super) headers: http::HeaderMap,
    /// Grown by hand (`local.rs`) so that its capacity, not only its length, is what `held`
    /// and the connection's count hold.
    pub(super) body: Vec<u8>,
    /// The body's share of the bytes all connections may hold (`Local::budget`).
    pub(super) held: Held,
}

/// A part of a local call's answer waiting for the stream's window.
pub(super) enum Part {
    Frame(Out),
    /// The answer ends after the frames before it.
    End,
}

/// A frame for the kubelet and what it costs in flow control.
pub(super) enum Out {
    /// `cost` is what it takes of the kubelet's windows, `credit` what containerd is to be
    /// given back once it has gone (0 for local answers, which containerd never sent).
    Data {
        frame: Bytes,
        cost: usize,
        credit: usize,
    },
    Other(Bytes),
}

/// The protocol state of one kubelet connection and the containerd connection spliced to it.
pub struct Machine<L> {
    pub(super) local: Arc<L>,
    pub(super) to_kubelet: BytesMut,
    pub(super) to_containerd: BytesMut,
    /// The kubelet's header blocks, as containerd's decoder would read them.
    pub(super) kubelet_hpack: Decoder,
    /// containerd's header blocks, as the kubelet's decoder would read them.
    pub(super) containerd_hpack: Decoder,
    pub(super) kubelet_block: Option<Block>,
    pub(super) containerd_block: Option<Block>,
    pub(super) reading: Reading,
    pub(super) phase: Phase,
    pub(super) containerd: Containerd,
    pub(super) streams: HashMap<u32, Stream>,
    pub(super) last_stream: u32,
    /// The largest frame each side may send: what the other side advertised.
    pub(super) kubelet_max_frame: usize,
    pub(super) containerd_max_frame: usize,
    /// The kubelet's connection window, which pullgate keeps (see the module comment).
    pub(super) kubelet_window: i64,
    /// The kubelet's initial stream window, for answers to local calls.
    pub(super) kubelet_stream_window: i64,
    /// Frames for the kubelet that its connection window has no room for yet, in order.
    pub(super) blocked: VecDeque<Out>,
    pub(super) blocked_bytes: usize,
    /// Bytes of local answers waiting for their stream windows, all calls together.
    pub(super) waiting_bytes: usize,
    /// containerd bytes passed on (or dropped) and not yet credited back.
    pub(super) containerd_credit: usize,
    /// When the kubelet last started a call.
    pub(super) last_call: Instant,
    /// The time of the event being handled.
    pub(super) now: Instant,
    /// Memory held by requests of local calls on this connection (their buffers' capacity).
    pub(super) local_bytes: usize,
    pub(super) actions: VecDeque<Action>,
}

impl<L: Local> Machine<L> {
    /// A connection spliced to containerd, or, when `containerd` is false (it could not be
    /// reached), one that starts without it.
    pub fn new(local: Arc<L>, containerd: bool, now: Instant) -> Machine<L> {
        let mut machine = Machine {
            local,
            to_kubelet: BytesMut::with_capacity(32 << 10),
            to_containerd: BytesMut::with_capacity(32 << 10),
            kubelet_hpack: Decoder::default(),
            containerd_hpack: Decoder::default(),
            kubelet_block: None,
            containerd_block: None,
            reading: Reading::Preface,
            phase: Phase::Open,
            containerd: Containerd::Spliced,
            streams: HashMap::new(),
            last_stream: 0,
            kubelet_max_frame: frame::DEFAULT_MAX_FRAME,
            containerd_max_frame: frame::DEFAULT_MAX_FRAME,
            kubelet_window: frame::DEFAULT_WINDOW,
            kubelet_stream_window: frame::DEFAULT_WINDOW,
            blocked: VecDeque::new(),
            blocked_bytes: 0,
            waiting_bytes: 0,
            containerd_credit: 0,
            last_call: now,
            now,
            local_bytes: 0,
            actions: VecDeque::new(),
        };
        if !containerd {
            machine.start_without_containerd();
        }
        machine
    }

    /// What is to be written to `peer`; the driver takes from the front what it has written.
    pub fn outbox(&mut self, peer: Peer) -> &mut BytesMut {
        match peer {
            Peer::Kubelet => &mut self.to_kubelet,
            Peer::Containerd => &mut self.to_containerd,
        }
    }

    /// Takes the whole frames at the front of `bytes`, read from `peer`; a partial frame is
    /// left there for the next read to complete.
    pub fn received(&mut self, peer: Peer, bytes: &mut BytesMut, now: Instant) {
        self.now = now;
        if self.phase == Phase::Closed {
            bytes.clear();
            return;
        }
        match peer {
            Peer::Kubelet => {
                if let Err(error) = self.on_kubelet_bytes(bytes) {
                    frame::put_goaway(&mut self.to_kubelet, self.last_stream, error.reason, &error.what);
                    self.close(Ending::Broken(format!("the kubelet broke the protocol: {error}")));
                }
            }
            Peer::Containerd if self.spliced() => {
                if let Err(error) = self.on_containerd_bytes(bytes) {
                    self.containerd_lost(&format!("containerd broke the protocol: {error}"));
                }
            }
            Peer::Containerd => bytes.clear(),
        }
        self.finish_if_done();
    }

    /// The next thing the driver is to do, in order.
    pub fn next_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn handle(&mut self, event: Event, now: Instant) {
        self.now = now;
        if self.phase == Phase::Closed {
            return;
        }
        match event {
            Event::ContainerdLost(why) => self.containerd_lost(&why),
            Event::Answer(answer) => self.answer(answer),
            Event::ContainerdBack => self.containerd_back(),
            Event::Tick => self.move_if_back(),
            Event::Drain => self.go_away("pullgate is shutting down"),
        }
        self.finish_if_done();
    }

    /// Whether the driver is to read from `peer` now: not from a side that is gone, nor while
    /// much waits to be written to the other side (or, for the kubelet, to itself).
    pub fn reads(&self, peer: Peer) -> bool {
        match peer {
            Peer::Containerd => self.spliced() && self.kubelet_backlog() < HIGH_WATER,
            Peer::Kubelet => self.to_containerd.len() < HIGH_WATER && self.to_kubelet.len() < MAX_UNSENT_TO_KUBELET,
        }
    }

    /// Whether the containerd socket is still written to and read from.
    pub fn spliced(&self) -> bool {
        !matches!(self.containerd, Containerd::Lost(_))
    }

    /// Whether the driver is to take answer parts of local calls now (see
    /// `limits::MAX_WAITING_ANSWER_BYTES`).
    pub fn takes_answers(&self) -> bool {
        self.waiting_bytes < MAX_WAITING_ANSWER_BYTES
    }

    /// Whether the driver is to send `Event::Tick`s: the connection waits for containerd to
    /// come back.
    pub fn probing(&self) -> bool {
        self.phase_open() && self.without_containerd()
    }

    /// Whether the driver is to dial containerd at the next tick, to see if it is back
    /// (`Event::ContainerdBack`).
    pub fn dials(&self) -> bool {
        self.phase_open()
            && matches!(self.containerd, Containerd::Leaving(Dial::Unanswered) | Containerd::Lost(Dial::Unanswered))
    }

    fn phase_open(&self) -> bool {
        self.phase == Phase::Open
    }

    pub(super) fn without_containerd(&self) -> bool {
        self.containerd != Containerd::Spliced
    }

    pub(super) fn local_streams(&self) -> usize {
        self.streams.values().filter(|stream| matches!(stream, Stream::Local(_))).count()
    }

    pub(super) fn kubelet_backlog(&self) -> usize {
        self.to_kubelet.len() + self.blocked_bytes
    }

    pub(super) fn close(&mut self, ending: Ending) {
        self.phase = Phase::Closed;
        self.actions.push_back(Action::Close(ending));
    }

    /// After a GOAWAY, the connection is over once no call is left and none can still come,
    /// and every frame for the kubelet has been let through its window: a call is forgotten
    /// as soon as its last frame is queued, which may be before the window lets it go.
    fn finish_if_done(&mut self) {
        if !self.streams.is_empty() || !self.blocked.is_empty() {
            return;
        }
        match self.phase {
            Phase::Leaving(ClosingPing::Unsent) => {
                self.phase = Phase::Leaving(ClosingPing::Sent);
                frame::put_head(&mut self.to_kubelet, 8, frame::kind::PING, 0, 0);
                self.to_kubelet.extend_from_slice(CLOSING_PING);
            }
            Phase::Leaving(ClosingPing::Answered) | Phase::KubeletLeft => self.close(Ending::Done),
            _ => {}
        }
    }

    /// Starts a graceful close (RFC 9113 §6.8): the kubelet opens no new calls here, and
    /// those already sent are still served, since the GOAWAY names the largest stream id.
    pub(super) fn go_away(&mut self, why: &str) {
        if self.phase_open() {
            self.phase = Phase::Leaving(ClosingPing::Unsent);
            frame::put_goaway(&mut self.to_kubelet, MAX_STREAM_ID, reason::NO_ERROR, why);
        }
    }

    /// containerd's connection is gone. The kubelet's stays: sending it GOAWAY would fail the
    /// next call of clients that do not retry, such as tonic's. Its calls are answered through
    /// the shared upstream connection from now on (UNAVAILABLE naming the socket while
    /// containerd is down), until containerd is back and the kubelet can be moved to a new,
    /// spliced connection (`move_if_back`).
    fn containerd_lost(&mut self, why: &str) {
        if let Containerd::Lost(_) = self.containerd {
            return;
        }
        tracing::debug!(reason = %why, "spliced containerd connection lost");
        let dial = match self.containerd {
            Containerd::Leaving(dial) => dial,
            _ => Dial::Unanswered,
        };
        self.containerd = Containerd::Lost(dial);
        self.to_containerd.clear();
        let relayed: Vec<u32> =
            self.streams.iter().filter(|(_, s)| matches!(s, Stream::Relayed(_))).map(|(&id, _)| id).collect();
        for id in relayed {
            self.answer_unavailable(id, why);
        }
    }

    /// A connection made while containerd cannot be reached: pullgate is the kubelet's only
    /// peer until the kubelet moves to a new connection, so it sends the server's SETTINGS
    /// itself. It asks for the defaults, which are what pullgate's own handling keeps to.
    fn start_without_containerd(&mut self) {
        self.containerd = Containerd::Lost(Dial::Unanswered);
        frame::put_head(&mut self.to_kubelet, 0, frame::kind::SETTINGS, 0, 0);
    }

    fn containerd_back(&mut self) {
        match &mut self.containerd {
            Containerd::Leaving(dial) | Containerd::Lost(dial) => *dial = Dial::Answered,
            Containerd::Spliced => {}
        }
        self.move_if_back();
    }

    /// While without containerd: once it answers again and the kubelet pauses between calls,
    /// GOAWAY moves the kubelet to a new connection, which is spliced again.
    fn move_if_back(&mut self) {
        let back = matches!(self.containerd, Containerd::Leaving(Dial::Answered) | Containerd::Lost(Dial::Answered));
        if back && self.now.saturating_duration_since(self.last_call) >= QUIET_BEFORE_MOVE {
            self.go_away("containerd is back; reconnect");
        }
    }

    /// The connection is gone: calls still open are logged as aborted, and their tasks stopped.
    pub fn abandon(&mut self) {
        for (id, stream) in std::mem::take(&mut self.streams) {
            match stream {
                Stream::Local(mut call) => {
                    if let LocalState::Answering = call.state {
                        self.actions.push_back(Action::Cancel(id));
                    }
                    end_log(&mut call.log, CallOutcome::Aborted);
                }
                Stream::Relayed(mut relayed) => end_log(&mut relayed.log, CallOutcome::Aborted),
            }
        }
    }
}

impl Out {
    pub(super) fn len(&self) -> usize {
        match self {
            Out::Data { frame, .. } | Out::Other(frame) => frame.len(),
        }
    }
}

pub(super) fn header_frames(stream: u32, block: &[u8], end_stream: bool) -> Bytes {
    let mut out = BytesMut::with_capacity(block.len() + frame::HEAD_LEN);
    frame::put_header_block(&mut out, stream, block, end_stream);
    out.freeze()
}

pub(super) fn end_log(log: &mut Option<CallLog>, outcome: CallOutcome) {
    if let Some(log) = log.take() {
        log.end(outcome);
    }
}

pub(super) fn grpc_outcome(headers: &http::HeaderMap) -> CallOutcome {
    crate::cri::body::grpc_code(headers).map_or(CallOutcome::Missing, CallOutcome::Code)
}

/// Adds a HEADERS or CONTINUATION frame to the block being collected; returns the block once
/// it is complete.
pub(super) fn collect(
    current: &mut Option<Block>,
    frame: &Frame,
    limit: usize,
) -> Result<Option<Block>, ProtocolError> {
    let fragment = frame.fragment()?;
    let block = match current.take() {
        None => {
            if frame.stream == 0 {
                return Err(ProtocolError::new(reason::PROTOCOL_ERROR, "HEADERS on stream 0"));
            }
            Block { stream: frame.stream, end_stream: frame.has(flag::END_STREAM), bytes: fragment.to_vec() }
        }
        Some(mut block) => {
            if block.stream != frame.stream {
                return Err(ProtocolError::new(reason::PROTOCOL_ERROR, "CONTINUATION on another stream"));
            }
            block.bytes.extend_from_slice(fragment);
            block
        }
    };
    if block.bytes.len() > limit {
        return Err(ProtocolError::new(reason::PROTOCOL_ERROR, "header block too large"));
    }
    if frame.has(flag::END_HEADERS) {
        return Ok(Some(block));
    }
    *current = Some(block);
    Ok(None)
}
