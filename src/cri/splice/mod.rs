//! The fast path: one kubelet connection spliced to one containerd connection of its own.
//!
//! Relayed calls cost the kubelet one extra hop of wake-ups and copies, nothing more: their
//! DATA, PING, SETTINGS and stream-level WINDOW_UPDATE frames are copied from one socket to
//! the other as they arrive, and only header blocks are decoded and written again. Ending
//! HTTP/2 at pullgate (with the h2 crate, as an earlier relay did) costs about twice the
//! wake-ups per call, which on a small node was most of the latency pullgate added.
//!
//! Without containerd (it could not be reached when the kubelet connected, or its connection
//! was lost) the kubelet's connection goes on: pullgate answers SETTINGS and PING itself and
//! keeps every call, passing CRI calls through the shared upstream connection (UNAVAILABLE
//! naming the socket while containerd is down), until containerd is back and the kubelet is
//! moved to a new, spliced connection. One reading of the kubelet's frames serves both, so
//! every client gets the same answers either way.
//!
//! Calls pullgate answers itself (PullImage, health) never reach this containerd connection:
//! their frames are kept here and the call is handed to `Proxy::local`, whose answer is
//! written back on the kubelet's stream. Three things make that safe on a spliced connection:
//!
//! - **Header compression.** Each sender's HPACK state lives in its peer's decoder, so blocks
//!   cannot be dropped or injected as they are. Every block is decoded here and written again
//!   as literals that never enter the receiver's dynamic table.
//! - **Flow control towards containerd.** Bytes the kubelet sends on a kept call use up its
//!   connection window although containerd never sees them, so pullgate gives that credit back
//!   itself; containerd's own WINDOW_UPDATEs go through unchanged.
//! - **Flow control towards the kubelet.** pullgate's answers use the kubelet's connection
//!   window, which containerd cannot know about, so on this side pullgate keeps the window
//!   itself: it reads the kubelet's connection WINDOW_UPDATEs, holds frames the window has no
//!   room for, and credits containerd for what it has passed on.
//!
//! Streams keep their ids on both connections; ids of kept calls are simply never used
//! towards containerd, which HTTP/2 allows.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::FutureExt;
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::net::unix::{ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use crate::cri::budget::Held;
use crate::cri::frame::{self, Frame, ProtocolError, flag, kind, reason};
use crate::cri::hpack::Decoder;
use crate::cri::observe::CallLog;
use crate::cri::proxy::{self, Proxy, Route};
use crate::decision::PullGate;
use crate::metrics::CallOutcome;

mod containerd;
mod kept;
mod kubelet;
mod window;

use kept::Answer;

/// A kubelet's metadata is a few hundred bytes; 16 KiB is what hyper's HTTP/2 server allows.
const MAX_HEADER_LIST_BYTES: usize = 16 << 10;
/// A header block is collected whole before it is decoded; past this the kubelet is not
/// sending headers but a flood. Four times `MAX_HEADER_LIST_BYTES`, which covers any HPACK
/// encoding of a list within it (Huffman's longest code is under 4 bytes an octet). Every
/// connection may hold one, so this is kept small.
const MAX_KUBELET_HEADER_BLOCK_BYTES: usize = 4 * MAX_HEADER_LIST_BYTES;
/// The same for containerd, whose answers pullgate trusts more (`upstream`'s header list limit).
const MAX_CONTAINERD_HEADER_BLOCK_BYTES: usize = 1 << 20;
/// PullImage and health requests are small; see `pull::MAX_REQUEST_BYTES`.
const MAX_LOCAL_REQUEST_BYTES: usize = (1 << 20) + 5;
/// Requests of kept calls buffered on one connection at once, all calls together.
const MAX_KEPT_BYTES: usize = 4 << 20;
/// Calls in flight on one connection; the kubelet runs a few dozen at most.
const MAX_STREAMS: usize = 1000;
/// Of those, calls pullgate answers itself (PullImage, health, refusals): the kubelet pulls a
/// few images at once (one by default) and checks health now and then. Each costs a task and
/// an answer in memory, so a client flooding cheap requests gets REFUSED_STREAM past this.
/// While the connection is without containerd every call is kept, so this bounds them all
/// then; gRPC clients retry a REFUSED_STREAM by themselves, as the call was never started.
const MAX_KEPT_STREAMS: usize = 64;
/// Dynamic tables larger than this are refused: the default is 4 KiB.
const MAX_HPACK_TABLE_BYTES: usize = 64 << 10;
/// Read no more from a side while this much is waiting to be written to the other. Calls
/// pullgate answers itself are refused (REFUSED_STREAM) while this much waits for the
/// kubelet, counting answers its flow-control window holds back, which pullgate cannot stop
/// reading for: the WINDOW_UPDATEs that release them come from that same socket.
const HIGH_WATER: usize = 256 << 10;
/// Read no more from the kubelet while this much pullgate has written for it is unsent: a
/// client that sends calls and never reads the answers (or the resets of calls refused) stops
/// being read itself. A kubelet reads as fast as it is written to, so only one that does not
/// read ever gets here; small, as everything read past it costs work for nobody.
const MAX_UNSENT_TO_KUBELET: usize = 64 << 10;
/// containerd is credited for the bytes passed on once this many have gathered.
const CREDIT_BATCH: usize = 16 << 10;
/// A read of this much from the kubelet is taken as one of a flood, after which the connection
/// lets others run: a kubelet's calls are a few hundred bytes each.
const FULL_READ: usize = frame::DEFAULT_MAX_FRAME;
/// While a connection is without containerd, how often pullgate looks whether it is back.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Ticks every `PROBE_INTERVAL`, for connections that wait for containerd to come back.
fn probes() -> tokio::time::Interval {
    let mut probes = tokio::time::interval(PROBE_INTERVAL);
    probes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    probes
}
/// Once containerd is back, the kubelet is moved to a new, spliced connection (a GOAWAY) in a
/// pause between calls this long, so no call of a client that does not retry races it.
const QUIET_BEFORE_MOVE: Duration = Duration::from_millis(250);
/// The payload of the PING that closes a connection.
const CLOSING_PING: &[u8; 8] = b"pullgate";
const MAX_STREAM_ID: u32 = 0x7fff_ffff;
/// Answers of kept calls in flight to the connection task.
const EVENTS: usize = 64;

/// Serves one kubelet connection over `containerd` until either side closes it, a side
/// breaks the protocol, or a drain that `draining` announces has finished.
/// `containerd` is None when it could not be reached: the connection then starts as one that
/// has lost containerd (see `upstream_lost`).
pub async fn run<G: PullGate>(
    mut kubelet: UnixStream,
    mut containerd: Option<UnixStream>,
    proxy: Arc<Proxy<G>>,
    mut draining: watch::Receiver<bool>,
) {
    let (events, mut answers) = mpsc::channel(EVENTS);
    let mut splice = Splice::new(proxy, events);
    if containerd.is_none() {
        splice.start_without_containerd();
    }
    let (mut kubelet_read, mut kubelet_write) = kubelet.split();
    let (mut containerd_read, mut containerd_write) = containerd.as_mut().map(UnixStream::split).unzip();
    let mut drain_seen = false;
    let mut probes = probes();
    let ended = loop {
        if let Err(error) = flush(&mut kubelet_write, &mut splice.to_kubelet) {
            break format!("writing to the kubelet: {error}");
        }
        if !splice.containerd_lost
            && let Some(containerd_write) = containerd_write.as_mut()
            && let Err(error) = flush(containerd_write, &mut splice.to_containerd)
        {
            splice.upstream_lost(&format!("writing to containerd: {error}"));
            continue;
        }
        if splice.finished() {
            break String::new();
        }
        let containerd_open = !splice.containerd_lost;
        let outcome = tokio::select! {
            biased;
            ready = kubelet_write.writable(), if !splice.to_kubelet.is_empty() => {
                ready.map(|()| Step::Go).map_err(Side::kubelet)
            }
            ready = writable(containerd_write.as_ref()), if containerd_open && !splice.to_containerd.is_empty() => {
                ready.map(|()| Step::Go).map_err(Side::containerd)
            }
            read = read(containerd_read.as_mut(), &mut splice.from_containerd),
                if containerd_open && splice.kubelet_backlog() < HIGH_WATER =>
            {
                match read {
                    Ok(0) => Err(Side::ContainerdGone("containerd closed the connection".to_owned())),
                    Ok(_) => splice.on_containerd_bytes().map(|()| Step::Go).map_err(Side::Containerd),
                    Err(error) => Err(Side::containerd(error)),
                }
            }
            read = read(Some(&mut kubelet_read), &mut splice.from_kubelet),
                if splice.to_containerd.len() < HIGH_WATER && splice.to_kubelet.len() < MAX_UNSENT_TO_KUBELET =>
            {
                match read {
                    Ok(0) => Ok(Step::Closed("the kubelet closed the connection")),
                    Ok(read) => splice
                        .on_kubelet_bytes()
                        .map(|()| if read >= FULL_READ { Step::Yield } else { Step::Go })
                        .map_err(Side::Kubelet),
                    Err(error) => Err(Side::kubelet(error)),
                }
            }
            Some(answer) = answers.recv() => { splice.answer(answer); Ok(Step::Go) }
            _ = probes.tick(), if splice.without_containerd() && !splice.going_away => {
                splice.probe().await;
                Ok(Step::Go)
            }
            true = draining.wait_for(|draining| *draining).map(|seen| seen.is_ok()), if !drain_seen => {
                drain_seen = true;
                splice.drain();
                Ok(Step::Go)
            }
        };
        match outcome {
            Ok(Step::Go) => {}
            // A read that filled the buffer is one of many: the other connections on this
            // worker get their turn before the next.
            Ok(Step::Yield) => tokio::task::yield_now().await,
            Ok(Step::Closed(why)) => break why.to_owned(),
            Err(Side::Kubelet(error)) => {
                frame::put_goaway(&mut splice.to_kubelet, splice.last_stream, error.reason, &error.what);
                let _ = flush(&mut kubelet_write, &mut splice.to_kubelet);
                break format!("the kubelet broke the protocol: {error}");
            }
            Err(Side::Containerd(error)) => splice.upstream_lost(&format!("containerd broke the protocol: {error}")),
            Err(Side::ContainerdGone(why)) => splice.upstream_lost(&why),
            Err(Side::Io(error)) => break error,
        }
    };
    splice.abandon();
    if !ended.is_empty() {
        tracing::debug!(reason = %ended, "spliced connection closed");
    }
}

enum Step {
    Go,
    Yield,
    Closed(&'static str),
}

enum Side {
    Kubelet(ProtocolError),
    Containerd(ProtocolError),
    /// The containerd connection is no longer usable; the kubelet's can go on for kept calls.
    ContainerdGone(String),
    Io(String),
}

impl Side {
    fn kubelet(error: std::io::Error) -> Side {
        Side::Io(format!("kubelet socket: {error}"))
    }

    fn containerd(error: std::io::Error) -> Side {
        Side::ContainerdGone(format!("containerd socket: {error}"))
    }
}

/// Reads from a side there is (a side there is not never has anything to read).
async fn read(from: Option<&mut ReadHalf<'_>>, buffer: &mut BytesMut) -> std::io::Result<usize> {
    let Some(from) = from else { return std::future::pending().await };
    buffer.reserve(frame::DEFAULT_MAX_FRAME + frame::HEAD_LEN);
    from.read_buf(buffer).await
}

async fn writable(to: Option<&WriteHalf<'_>>) -> std::io::Result<()> {
    match to {
        Some(to) => to.writable().await,
        None => std::future::pending().await,
    }
}

/// Writes what the socket takes now; the rest waits for it to become writable.
fn flush(to: &mut WriteHalf<'_>, buffer: &mut BytesMut) -> std::io::Result<()> {
    while !buffer.is_empty() {
        match to.try_write(buffer) {
            Ok(written) => buffer.advance(written),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// A header block being collected from HEADERS and CONTINUATION frames.
struct Block {
    stream: u32,
    end_stream: bool,
    bytes: Vec<u8>,
}

enum Stream {
    Relayed(Relayed),
    // Boxed: a kept call carries its request and answer state, a relayed one three words.
    Kept(Box<Kept>),
}

struct Relayed {
    log: Option<CallLog>,
    /// The kubelet has ended its side.
    sent: bool,
    /// containerd's response headers have gone to the kubelet.
    answered: bool,
}

struct Kept {
    /// Routed (`proxy::route`) when the call starts; a relayed path is kept only while this
    /// connection is without containerd, and then goes through the shared upstream connection.
    path: String,
    log: Option<CallLog>,
    headers: http::HeaderMap,
    body: BytesMut,
    /// The body's share of the bytes all connections may hold (`Proxy::budget`), kept until
    /// the call's task has answered.
    held: Held,
    task: Option<AbortHandle>,
    /// What the kubelet lets pullgate send on this stream.
    window: i64,
    /// Frames of the answer beyond `window`, in order.
    waiting: VecDeque<Out>,
}

/// A frame for the kubelet and what it costs in flow control.
enum Out {
    Data { frame: Bytes, cost: usize, credit: usize },
    Other(Bytes),
}

struct Splice<G> {
    proxy: Arc<Proxy<G>>,
    events: mpsc::Sender<Answer>,
    from_kubelet: BytesMut,
    from_containerd: BytesMut,
    to_kubelet: BytesMut,
    to_containerd: BytesMut,
    /// The kubelet's header blocks, as containerd's decoder would read them.
    kubelet_hpack: Decoder,
    /// containerd's header blocks, as the kubelet's decoder would read them.
    containerd_hpack: Decoder,
    kubelet_block: Option<Block>,
    containerd_block: Option<Block>,
    preface_seen: bool,
    streams: HashMap<u32, Stream>,
    last_stream: u32,
    /// The largest frame each side may send: what the other side advertised.
    kubelet_max_frame: usize,
    containerd_max_frame: usize,
    /// The kubelet's connection window, which pullgate keeps (see the module comment).
    kubelet_window: i64,
    /// The kubelet's initial stream window, for answers to kept calls.
    kubelet_stream_window: i64,
    /// Frames for the kubelet that its connection window has no room for yet, in order.
    blocked: VecDeque<Out>,
    blocked_bytes: usize,
    /// containerd bytes passed on (or dropped) and not yet credited back.
    containerd_credit: usize,
    /// Set once pullgate or the kubelet sent GOAWAY: the connection ends when its calls have.
    going_away: bool,
    /// The kubelet sent GOAWAY itself, so it opens no more calls.
    kubelet_left: bool,
    /// pullgate's closing PING: sent, and answered. Its answer proves the kubelet has seen
    /// the GOAWAY before it, so no call can still be on its way.
    closing_ping: (bool, bool),
    /// containerd's connection closed or failed; calls to relay go through the shared upstream
    /// connection instead (see `upstream_lost`).
    containerd_lost: bool,
    /// containerd sent GOAWAY: calls it has are still answered here, new ones go as when lost.
    containerd_leaving: bool,
    /// containerd has answered a dial again while this connection is without it.
    containerd_back: bool,
    /// When the kubelet last started a call.
    last_call: Instant,
    /// Bytes of kept requests held in memory on this connection.
    kept_bytes: usize,
}

impl<G: PullGate> Splice<G> {
    fn new(proxy: Arc<Proxy<G>>, events: mpsc::Sender<Answer>) -> Splice<G> {
        Splice {
            proxy,
            events,
            from_kubelet: BytesMut::with_capacity(32 << 10),
            from_containerd: BytesMut::with_capacity(32 << 10),
            to_kubelet: BytesMut::with_capacity(32 << 10),
            to_containerd: BytesMut::with_capacity(32 << 10),
            kubelet_hpack: Decoder::default(),
            containerd_hpack: Decoder::default(),
            kubelet_block: None,
            containerd_block: None,
            preface_seen: false,
            streams: HashMap::new(),
            last_stream: 0,
            kubelet_max_frame: frame::DEFAULT_MAX_FRAME,
            containerd_max_frame: frame::DEFAULT_MAX_FRAME,
            kubelet_window: frame::DEFAULT_WINDOW,
            kubelet_stream_window: frame::DEFAULT_WINDOW,
            blocked: VecDeque::new(),
            blocked_bytes: 0,
            containerd_credit: 0,
            going_away: false,
            kubelet_left: false,
            closing_ping: (false, false),
            containerd_lost: false,
            containerd_leaving: false,
            containerd_back: false,
            last_call: Instant::now(),
            kept_bytes: 0,
        }
    }

    fn kept_streams(&self) -> usize {
        self.streams.values().filter(|stream| matches!(stream, Stream::Kept(_))).count()
    }

    fn kubelet_backlog(&self) -> usize {
        self.to_kubelet.len() + self.blocked_bytes
    }

    /// After a GOAWAY, the connection is over once no call is left and none can still come.
    fn finished(&mut self) -> bool {
        if !self.going_away || !self.streams.is_empty() {
            return false;
        }
        if !self.kubelet_left && !self.closing_ping.0 {
            self.closing_ping.0 = true;
            frame::put_head(&mut self.to_kubelet, 8, kind::PING, 0, 0);
            self.to_kubelet.put_slice(CLOSING_PING);
        }
        (self.kubelet_left || self.closing_ping.1)
            && self.to_kubelet.is_empty()
            && (self.containerd_lost || self.to_containerd.is_empty())
    }

    /// Starts a graceful close (RFC 9113 §6.8): the kubelet opens no new calls here, and
    /// those already sent are still served, since the GOAWAY names the largest stream id.
    fn go_away(&mut self, why: &str) {
        if !self.going_away {
            self.going_away = true;
            frame::put_goaway(&mut self.to_kubelet, MAX_STREAM_ID, reason::NO_ERROR, why);
        }
    }

    /// containerd's connection is gone. The kubelet's stays: sending it GOAWAY would fail the
    /// next call of clients that do not retry, such as tonic's. Its calls are relayed through
    /// the shared upstream connection from now on (UNAVAILABLE naming the socket while
    /// containerd is down), until containerd is back and the kubelet can be moved to a new,
    /// spliced connection (`probe`).
    pub(super) fn upstream_lost(&mut self, why: &str) {
        tracing::debug!(reason = %why, "spliced containerd connection lost");
        self.containerd_lost = true;
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
        self.containerd_lost = true;
        frame::put_head(&mut self.to_kubelet, 0, kind::SETTINGS, 0, 0);
    }

    fn without_containerd(&self) -> bool {
        self.containerd_lost || self.containerd_leaving
    }

    /// While without containerd: once it answers again and the kubelet pauses between calls,
    /// GOAWAY moves the kubelet to a new connection, which is spliced again.
    async fn probe(&mut self) {
        if !self.without_containerd() || self.going_away {
            return;
        }
        if !self.containerd_back {
            if self.proxy.upstream().dial().await.is_err() {
                return;
            }
            self.containerd_back = true;
        }
        if self.last_call.elapsed() >= QUIET_BEFORE_MOVE {
            self.go_away("containerd is back; reconnect");
        }
    }

    /// Shutdown: no new calls; the connection ends once the calls in flight have.
    fn drain(&mut self) {
        self.go_away("pullgate is shutting down");
    }

    /// The connection is gone: kept calls still running are of no use to anyone.
    fn abandon(&mut self) {
        for (_, stream) in self.streams.drain() {
            match stream {
                Stream::Kept(mut kept) => {
                    if let Some(task) = kept.task.take() {
                        task.abort();
                    }
                    end_log(&mut kept.log, CallOutcome::Aborted);
                }
                Stream::Relayed(mut relayed) => end_log(&mut relayed.log, CallOutcome::Aborted),
            }
        }
    }
}

impl Out {
    fn len(&self) -> usize {
        match self {
            Out::Data { frame, .. } | Out::Other(frame) => frame.len(),
        }
    }
}

fn header_frames(stream: u32, block: &[u8], end_stream: bool) -> Bytes {
    let mut out = BytesMut::with_capacity(block.len() + frame::HEAD_LEN);
    frame::put_header_block(&mut out, stream, block, end_stream);
    out.freeze()
}

fn end_log(log: &mut Option<CallLog>, outcome: CallOutcome) {
    if let Some(log) = log.take() {
        log.end(outcome);
    }
}

fn grpc_outcome(headers: &http::HeaderMap) -> CallOutcome {
    crate::cri::body::grpc_code(headers).map_or(CallOutcome::Missing, CallOutcome::Code)
}

/// Adds a HEADERS or CONTINUATION frame to the block being collected; returns the block once
/// it is complete.
fn collect(current: &mut Option<Block>, frame: &Frame, limit: usize) -> Result<Option<Block>, ProtocolError> {
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
