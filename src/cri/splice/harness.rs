//! Both peers of a spliced connection, played against the state machine without sockets, for
//! the unit tests, the property test and the `splice` fuzz target. The kubelet and containerd
//! here keep to the protocol (within the windows they were given, whole header blocks); the
//! script of what they do and when comes from the caller (`run` reads it from bytes).
//!
//! What is checked after every step, whatever the script:
//! - neither peer receives more DATA than the windows it granted allow, on the connection or
//!   on a stream, and pullgate's own record of the kubelet's window never goes negative;
//! - containerd never sees a call pullgate answers itself;
//! - relayed DATA arrives unchanged, in order, on both sides;
//! - what pullgate holds for a kubelet that does not read stays bounded.
//!
//! And at the end, once both peers and pullgate's handler have finished what they started,
//! every stream the kubelet opened has ended.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::Full;
use tokio::net::UnixStream;

use super::Local;
use super::limits::{MAX_UNSENT_TO_KUBELET, MAX_WAITING_ANSWER_BYTES, QUIET_BEFORE_MOVE};
use super::machine::{Action, Answer, Ending, Event, Machine, Peer};
use crate::cri::budget::{Budget, Held};
use crate::cri::frame::{self, Frame, flag, kind, reason, setting};
use crate::cri::hpack::Decoder;
use crate::cri::proxy::{self, Route};
use crate::metrics::Metrics;

/// The paths the kubelet calls: relayed, answered by pullgate, and refused.
pub const PATHS: [&str; 4] = [
    "/runtime.v1.ImageService/ImageStatus",
    "/runtime.v1.ImageService/PullImage",
    "/grpc.health.v1.Health/Check",
    "/containerd.services.images.v1.Images/List",
];
const MAX_WINDOW: i64 = (1 << 31) - 1;
/// pullgate may hold this much for a kubelet that does not read: its outgoing buffer, frames
/// its connection window holds back (bounded by reading no more from containerd past
/// `HIGH_WATER`) and local answers its stream windows hold back, each past its bound by at
/// most what one step adds.
const MAX_HELD_FOR_KUBELET: usize = MAX_UNSENT_TO_KUBELET + MAX_WAITING_ANSWER_BYTES + (1 << 20);

/// A breach of one of the invariants above.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Violation(pub String);

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), Violation> {
    if ok { Ok(()) } else { Err(Violation(what())) }
}

/// pullgate's side of the fake: what the machine needs, and nothing it would do with sockets.
pub struct FakeLocal {
    budget: Arc<Budget>,
    metrics: Arc<Metrics>,
}

impl FakeLocal {
    pub fn new(budget: usize) -> Arc<FakeLocal> {
        Arc::new(FakeLocal { budget: Budget::new(budget), metrics: Metrics::new() })
    }
}

impl Local for FakeLocal {
    async fn answer(self: Arc<Self>, _: Route, _: http::Request<Full<Bytes>>) -> http::Response<tonic::body::BoxBody> {
        tonic::Status::internal("the harness answers local calls itself").into_http()
    }

    fn unavailable(&self, why: &str) -> tonic::Status {
        tonic::Status::unavailable(format!("pullgate: upstream /fake.sock unavailable: {why}"))
    }

    async fn dial(&self) -> std::io::Result<UnixStream> {
        Err(std::io::Error::other("the harness has no sockets"))
    }

    fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

/// One side of a stream as a peer sees it.
#[derive(Debug, Default)]
pub struct Side {
    /// DATA payload sent and received, in order.
    pub sent: Vec<u8>,
    pub received: Vec<u8>,
    /// What this peer may still send on the stream.
    pub send_window: i64,
    /// What this peer still lets the other send on the stream.
    pub recv_window: i64,
    /// This peer has ended its side (END_STREAM).
    pub send_ended: bool,
    /// The other peer's side has ended (END_STREAM or RST_STREAM).
    pub recv_ended: bool,
    pub reset: bool,
    /// A header block (response headers) was received.
    pub headers: usize,
    /// grpc-status of the last header block received, if any.
    pub status: Option<String>,
    /// This peer has sent its response headers.
    pub head_sent: bool,
}

/// A peer's connection state: windows, streams, and the bytes on their way.
#[derive(Default)]
pub struct Endpoint {
    pub streams: BTreeMap<u32, Side>,
    pub conn_send: i64,
    pub conn_recv: i64,
    /// The stream window this peer grants (its SETTINGS) and the one it was granted.
    pub initial_recv: i64,
    pub initial_send: i64,
    /// Bytes written and not yet delivered to pullgate, and bytes from pullgate not yet read.
    pub outgoing: BytesMut,
    pub incoming: BytesMut,
    /// A GOAWAY was received, and sent.
    pub goaway: bool,
    /// The error code of the last GOAWAY received.
    pub goaway_reason: Option<u32>,
    pub left: bool,
    decoder: Decoder,
}

impl Endpoint {
    fn new(initial_recv: i64) -> Endpoint {
        Endpoint {
            conn_send: frame::DEFAULT_WINDOW,
            conn_recv: frame::DEFAULT_WINDOW,
            initial_recv,
            initial_send: frame::DEFAULT_WINDOW,
            ..Endpoint::default()
        }
    }

    fn settings(&mut self, initial_window: i64) {
        let mut payload = BytesMut::new();
        payload.put_u16(setting::INITIAL_WINDOW_SIZE);
        payload.put_u32(initial_window as u32);
        frame::put_head(&mut self.outgoing, payload.len(), kind::SETTINGS, 0, 0);
        self.outgoing.put_slice(&payload);
    }

    pub fn stream(&mut self, id: u32) -> &mut Side {
        let (send, recv) = (self.initial_send, self.initial_recv);
        self.streams.entry(id).or_insert_with(|| Side { send_window: send, recv_window: recv, ..Side::default() })
    }

    /// Sends up to `len` bytes of DATA on `id`, within the windows; ends the side if asked.
    pub fn data(&mut self, id: u32, len: usize, end: bool, fill: u8) {
        if !self.streams.contains_key(&id) {
            return;
        }
        let conn = self.conn_send;
        let side = self.stream(id);
        if side.send_ended || side.reset {
            return;
        }
        let len = len.min(conn.max(0) as usize).min(side.send_window.max(0) as usize).min(frame::DEFAULT_MAX_FRAME);
        let payload: Vec<u8> = (0..len).map(|i| fill.wrapping_add(i as u8)).collect();
        side.sent.extend_from_slice(&payload);
        side.send_window -= len as i64;
        side.send_ended |= end;
        self.conn_send -= len as i64;
        frame::put_data(&mut self.outgoing, id, &payload, end);
    }

    pub fn window_update(&mut self, id: u32, increment: u32) {
        let increment = increment.clamp(1, 1 << 30);
        if id != 0 && !self.streams.contains_key(&id) {
            return;
        }
        let window = if id == 0 { &mut self.conn_recv } else { &mut self.stream(id).recv_window };
        if *window + i64::from(increment) > MAX_WINDOW {
            return;
        }
        *window += i64::from(increment);
        frame::put_window_update(&mut self.outgoing, id, increment);
    }

    pub fn reset(&mut self, id: u32) {
        if !self.streams.contains_key(&id) {
            return;
        }
        let side = self.stream(id);
        if side.reset || (side.send_ended && side.recv_ended) {
            return;
        }
        (side.reset, side.send_ended, side.recv_ended) = (true, true, true);
        frame::put_rst_stream(&mut self.outgoing, id, reason::CANCEL);
    }

    pub fn headers(&mut self, id: u32, fields: &[(&str, &str)], end: bool) {
        let mut block = Vec::new();
        for (name, value) in fields {
            frame::put_literal(&mut block, name.as_bytes(), value.as_bytes());
        }
        self.stream(id).send_ended |= end;
        frame::put_header_block(&mut self.outgoing, id, &block, end);
    }

    /// Reads up to `limit` bytes of what pullgate wrote, and acts on every whole frame.
    fn read(&mut self, from: &mut BytesMut, limit: usize, who: &str) -> Result<Vec<Frame>, Violation> {
        let taken = from.split_to(limit.min(from.len()));
        self.incoming.put_slice(&taken);
        let mut frames = Vec::new();
        loop {
            let next = frame::next(&mut self.incoming, (1 << 24) - 1);
            let Some(frame) = next.map_err(|error| Violation(format!("{who} got a bad frame: {error}")))? else {
                break;
            };
            self.take(&frame, who)?;
            frames.push(frame);
        }
        Ok(frames)
    }

    /// The flow-control and stream bookkeeping every peer does on a frame it receives.
    fn take(&mut self, frame: &Frame, who: &str) -> Result<(), Violation> {
        let id = frame.stream;
        match frame.kind {
            kind::DATA => {
                let len = frame.payload().len() as i64;
                self.conn_recv -= len;
                check(self.conn_recv >= 0, || format!("{who} got DATA beyond its connection window"))?;
                let side = self.stream(id);
                side.recv_window -= len;
                check(side.recv_window >= 0, || format!("{who} got DATA beyond stream {id}'s window"))?;
                check(!side.recv_ended || side.reset, || format!("{who} got DATA on stream {id} after its end"))?;
                side.received.extend_from_slice(frame.payload());
                side.recv_ended |= frame.has(flag::END_STREAM);
            }
            kind::HEADERS | kind::CONTINUATION => {
                check(frame.has(flag::END_HEADERS), || format!("{who}: pullgate split a header block"))?;
                let fragment = frame.fragment().map_err(|error| Violation(format!("{who}: {error}")))?;
                let mut status = None;
                let mut path = None;
                self.decoder
                    .decode(fragment, |name, value| match name {
                        b"grpc-status" => status = Some(String::from_utf8_lossy(value).into_owned()),
                        b":path" => path = Some(String::from_utf8_lossy(value).into_owned()),
                        _ => {}
                    })
                    .map_err(|error| Violation(format!("{who} cannot decode pullgate's headers: {error}")))?;
                if let Some(path) = path {
                    check(proxy::relayed(&path), || format!("{who} was sent a call to {path}"))?;
                }
                let side = self.stream(id);
                check(!side.recv_ended || side.reset, || format!("{who} got HEADERS on stream {id} after its end"))?;
                side.headers += 1;
                side.status = status.or(side.status.take());
                side.recv_ended |= frame.has(flag::END_STREAM);
            }
            kind::RST_STREAM => {
                let side = self.stream(id);
                (side.reset, side.recv_ended, side.send_ended) = (true, true, true);
            }
            kind::SETTINGS if !frame.has(flag::ACK) => {
                let settings = frame::settings(frame).map_err(|error| Violation(format!("{who}: {error}")))?;
                if let Some(window) = settings.initial_window_size {
                    let delta = window - self.initial_send;
                    self.initial_send = window;
                    for side in self.streams.values_mut() {
                        side.send_window += delta;
                    }
                }
                frame::put_head(&mut self.outgoing, 0, kind::SETTINGS, flag::ACK, 0);
            }
            kind::PING if !frame.has(flag::ACK) => {
                frame::put_head(&mut self.outgoing, 8, kind::PING, flag::ACK, 0);
                self.outgoing.put_slice(frame.payload());
            }
            kind::GOAWAY => {
                self.goaway = true;
                let code = frame.payload().get(4..8).and_then(|code| code.try_into().ok());
                self.goaway_reason = code.map(u32::from_be_bytes);
            }
            kind::WINDOW_UPDATE => {
                let increment =
                    i64::from(frame::window_increment(frame).map_err(|e| Violation(format!("{who}: {e}")))?);
                let window = if id == 0 { &mut self.conn_send } else { &mut self.stream(id).send_window };
                *window += increment;
                check(*window <= MAX_WINDOW, || format!("{who}'s send window on stream {id} overflowed"))?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// A local call started by the machine, as the harness answers it.
struct Task {
    held: Option<Held>,
    stage: Stage,
    /// DATA of the answer sent so far, to compare with what the kubelet gets.
    sent: Vec<u8>,
}

#[derive(PartialEq, Eq)]
enum Stage {
    Started,
    Answering,
    Done,
}

/// A spliced connection with both peers played by the harness.
pub struct Harness {
    pub machine: Machine<FakeLocal>,
    pub kubelet: Endpoint,
    pub containerd: Endpoint,
    tasks: BTreeMap<u32, Task>,
    next_stream: u32,
    now: Instant,
    pub ending: Option<Ending>,
    /// The containerd connection is still there (the harness delivers its bytes).
    spliced: bool,
    /// containerd has read the connection preface.
    preface_read: bool,
}

impl Harness {
    /// A connection whose kubelet grants `kubelet_window` per stream and whose containerd
    /// grants `containerd_window`; `containerd` false starts it without containerd.
    pub fn new(containerd: bool, kubelet_window: u32, containerd_window: u32, budget: usize) -> Harness {
        let now = Instant::now();
        let mut kubelet = Endpoint::new(i64::from(kubelet_window));
        kubelet.outgoing.put_slice(frame::PREFACE);
        kubelet.settings(i64::from(kubelet_window));
        let mut containerd_end = Endpoint::new(i64::from(containerd_window));
        if containerd {
            containerd_end.settings(i64::from(containerd_window));
        }
        Harness {
            machine: Machine::new(FakeLocal::new(budget), containerd, now),
            kubelet,
            containerd: containerd_end,
            tasks: BTreeMap::new(),
            next_stream: 1,
            now,
            ending: None,
            spliced: containerd,
            preface_read: false,
        }
    }

    /// Opens a call to `PATHS[path % 4]`; returns its stream id. A kubelet that has sent or
    /// received GOAWAY opens none (RFC 9113 §6.8).
    pub fn open(&mut self, path: usize, end: bool) -> u32 {
        let id = self.next_stream;
        if self.kubelet.left || self.kubelet.goaway {
            return id;
        }
        self.next_stream += 2;
        let fields =
            [(":method", "POST"), (":scheme", "http"), (":path", PATHS[path % PATHS.len()]), (":authority", "x")];
        self.kubelet.headers(id, &fields, end);
        self.kubelet.stream(id);
        id
    }

    /// Delivers up to `limit` bytes each peer has written, as far as pullgate reads them.
    pub fn deliver(&mut self, limit: usize) -> Result<(), Violation> {
        if self.machine.reads(Peer::Kubelet) && !self.kubelet.outgoing.is_empty() {
            let mut chunk = self.kubelet.outgoing.split_to(limit.min(self.kubelet.outgoing.len()));
            self.machine.received(Peer::Kubelet, &mut chunk, self.now);
            // What a partial frame left behind is read again first, as the driver's buffer does.
            chunk.unsplit(std::mem::take(&mut self.kubelet.outgoing));
            self.kubelet.outgoing = chunk;
        }
        if self.spliced && self.machine.reads(Peer::Containerd) && !self.containerd.outgoing.is_empty() {
            let mut chunk = self.containerd.outgoing.split_to(limit.min(self.containerd.outgoing.len()));
            self.machine.received(Peer::Containerd, &mut chunk, self.now);
            chunk.unsplit(std::mem::take(&mut self.containerd.outgoing));
            self.containerd.outgoing = chunk;
        }
        self.act()
    }

    /// The kubelet reads up to `limit` bytes.
    pub fn kubelet_reads(&mut self, limit: usize) -> Result<(), Violation> {
        let outbox = self.machine.outbox(Peer::Kubelet);
        self.kubelet.read(outbox, limit, "the kubelet")?;
        self.check_relayed()
    }

    /// containerd reads up to `limit` bytes.
    pub fn containerd_reads(&mut self, limit: usize) -> Result<(), Violation> {
        if !self.machine.spliced() {
            self.spliced = false;
            self.containerd.incoming.clear();
            return Ok(());
        }
        let outbox = self.machine.outbox(Peer::Containerd);
        if !self.preface_read {
            if outbox.len() < frame::PREFACE.len() {
                return Ok(());
            }
            let preface = outbox.split_to(frame::PREFACE.len());
            check(preface == frame::PREFACE, || "containerd got no connection preface".to_owned())?;
            self.preface_read = true;
        }
        self.containerd.read(outbox, limit, "containerd")?;
        self.check_relayed()
    }

    /// containerd answers `id` a step further: headers, `len` bytes of DATA, or trailers.
    pub fn containerd_answers(&mut self, id: u32, step: u8, len: usize) {
        let Some(side) = self.containerd.streams.get(&id) else { return };
        if side.send_ended || !self.spliced {
            return;
        }
        match (step % 3, side.head_sent) {
            (0, false) => {
                let fields = [(":status", "200"), ("content-type", "application/grpc")];
                self.containerd.headers(id, &fields, false);
                self.containerd.stream(id).head_sent = true;
            }
            (1, true) => self.containerd.data(id, len, false, id as u8),
            (2, true) => self.containerd.headers(id, &[("grpc-status", "0")], true),
            _ => {}
        }
    }

    /// pullgate's handler answers local call `id` a step further.
    pub fn local_answers(&mut self, id: u32, step: u8, len: usize) {
        if !self.machine.takes_answers() {
            return;
        }
        let Some(task) = self.tasks.get_mut(&id) else { return };
        let answer = match (&task.stage, step % 3) {
            (Stage::Started, _) => {
                task.held = None;
                task.stage = Stage::Answering;
                let (parts, ()) = http::Response::builder()
                    .header("content-type", "application/grpc")
                    .body(())
                    .unwrap_or_default()
                    .into_parts();
                Answer::Head { stream: id, parts, end: false }
            }
            (Stage::Answering, 1) => {
                let data: Vec<u8> = (0..len).map(|i| (id as u8).wrapping_mul(3).wrapping_add(i as u8)).collect();
                task.sent.extend_from_slice(&data);
                Answer::Data { stream: id, data: data.into() }
            }
            (Stage::Answering, 2) => {
                task.stage = Stage::Done;
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                Answer::Trailers { stream: id, trailers }
            }
            _ => return,
        };
        self.machine.handle(Event::Answer(answer), self.now);
    }

    pub fn handle(&mut self, event: Event) -> Result<(), Violation> {
        if let Event::ContainerdLost(_) = event {
            self.spliced = false;
        }
        self.machine.handle(event, self.now);
        self.act()
    }

    pub fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// Carries out the machine's actions, and checks what it holds.
    fn act(&mut self) -> Result<(), Violation> {
        while let Some(action) = self.machine.next_action() {
            match action {
                Action::Answer { stream, held, .. } => {
                    let task = Task { held: Some(held), stage: Stage::Started, sent: Vec::new() };
                    self.tasks.insert(stream, task);
                }
                Action::Cancel(stream) => {
                    self.tasks.remove(&stream);
                }
                Action::Close(ending) => self.ending = Some(ending),
            }
        }
        let window = self.machine.kubelet_window;
        check((0..=MAX_WINDOW).contains(&window), || format!("pullgate's view of the kubelet's window is {window}"))?;
        let held = self.machine.kubelet_backlog() + self.machine.waiting_bytes;
        check(held <= MAX_HELD_FOR_KUBELET, || format!("pullgate holds {held} bytes for the kubelet"))
    }

    /// Relayed DATA arrives unchanged and in order, both ways; local answers arrive unchanged.
    fn check_relayed(&self) -> Result<(), Violation> {
        for (id, seen) in &self.containerd.streams {
            let Some(kubelet) = self.kubelet.streams.get(id) else {
                return Err(Violation(format!("containerd saw stream {id}, which the kubelet never opened")));
            };
            check(kubelet.sent.starts_with(&seen.received), || format!("stream {id}'s request changed on the way"))?;
            check(seen.sent.starts_with(&kubelet.received), || format!("stream {id}'s answer changed on the way"))?;
        }
        for (id, task) in &self.tasks {
            if let Some(kubelet) = self.kubelet.streams.get(id) {
                check(task.sent.starts_with(&kubelet.received), || format!("local answer {id} changed on the way"))?;
            }
        }
        Ok(())
    }

    /// Lets both peers and the handler finish everything they started, generously, and checks
    /// that every stream then ended.
    pub fn settle(&mut self) -> Result<(), Violation> {
        for _ in 0..64 {
            let ids: Vec<u32> = self.kubelet.streams.keys().copied().collect();
            for &id in &ids {
                let side = self.kubelet.stream(id);
                let consumed = (i64::from(u32::MAX >> 2)).min(MAX_WINDOW - side.recv_window);
                if !side.send_ended {
                    self.kubelet.data(id, 0, true, 0);
                }
                if !self.kubelet.stream(id).recv_ended && consumed > 0 {
                    self.kubelet.window_update(id, consumed as u32);
                }
            }
            let conn = MAX_WINDOW - self.kubelet.conn_recv;
            if conn > 0 {
                self.kubelet.window_update(0, conn as u32);
            }
            let ids: Vec<u32> = self.containerd.streams.keys().copied().collect();
            for id in ids {
                let side = self.containerd.stream(id);
                if side.recv_window < frame::DEFAULT_WINDOW {
                    self.containerd.window_update(id, frame::DEFAULT_WINDOW as u32);
                }
                for step in 0..3 {
                    self.containerd_answers(id, step, 0);
                }
            }
            if self.containerd.conn_recv < frame::DEFAULT_WINDOW {
                self.containerd.window_update(0, frame::DEFAULT_WINDOW as u32);
            }
            let ids: Vec<u32> = self.tasks.keys().copied().collect();
            for id in ids {
                for step in 0..3 {
                    self.local_answers(id, step, 0);
                }
            }
            self.deliver(usize::MAX)?;
            self.containerd_reads(usize::MAX)?;
            self.kubelet_reads(usize::MAX)?;
            self.deliver(usize::MAX)?;
            if self.ending.is_some() {
                break;
            }
        }
        if matches!(self.ending, Some(Ending::Broken(_))) {
            return Ok(());
        }
        // What pullgate wrote before it closed reaches the kubelet (the driver writes it all).
        self.kubelet_reads(usize::MAX)?;
        for (id, side) in &self.kubelet.streams {
            check(side.recv_ended, || format!("stream {id} never ended"))?;
        }
        // A relayed call neither side reset, on a connection that kept containerd, arrived whole.
        for (id, seen) in self.containerd.streams.iter().filter(|_| self.spliced) {
            let kubelet = &self.kubelet.streams[id];
            if !seen.reset && !kubelet.reset {
                check(kubelet.sent == seen.received, || format!("stream {id}'s request arrived in part"))?;
                check(seen.sent == kubelet.received, || format!("stream {id}'s answer arrived in part"))?;
            }
        }
        Ok(())
    }
}

/// Plays a connection as `script` says, checking the invariants after every step and that
/// every stream ends once everyone finishes. Used by the fuzz target and the property test.
pub fn run(script: &[u8]) -> Result<(), Violation> {
    let mut bytes = script.iter().copied();
    let mut next = move || bytes.next();
    let (Some(start), Some(kubelet_window), Some(containerd_window)) = (next(), next(), next()) else {
        return Ok(());
    };
    // Windows from 0 (a client that never reads) up to larger than the default.
    let window = |byte: u8| u32::from(byte) * 1024;
    // containerd's no smaller than the default: a kubelet may send that much before it has read
    // containerd's SETTINGS, and a real containerd allows for it.
    let containerd_window = frame::DEFAULT_WINDOW as u32 + window(containerd_window);
    let mut harness = Harness::new(start % 4 != 0, window(kubelet_window), containerd_window, 4 << 20);
    while let Some(op) = next() {
        let a = next().unwrap_or(0);
        let b = next().unwrap_or(0);
        // One of the streams the kubelet opened; 0 (nothing is done on it) before any.
        let stream = |harness: &Harness, pick: u8| {
            let ids: Vec<u32> = harness.kubelet.streams.keys().copied().collect();
            ids.get(usize::from(pick) % ids.len().max(1)).copied().unwrap_or(0)
        };
        let len = usize::from(b) * 97;
        match op % 16 {
            0 => {
                harness.open(usize::from(a), b % 2 == 0);
            }
            1 => {
                let id = stream(&harness, a);
                harness.kubelet.data(id, len, b % 3 == 0, a);
            }
            2 => harness.kubelet.window_update(0, u32::from(a) * 512 + 1),
            3 => {
                let id = stream(&harness, a);
                harness.kubelet.window_update(id, u32::from(b) * 256 + 1);
            }
            4 => harness.kubelet_reads(usize::from(a) * 64)?,
            5 => harness.containerd_reads(usize::from(a) * 128)?,
            6 | 7 => {
                let id = stream(&harness, a);
                harness.containerd_answers(id, b, len);
            }
            8 => {
                let id = stream(&harness, a);
                if harness.spliced && harness.containerd.streams.contains_key(&id) {
                    harness.containerd.window_update(id, u32::from(b) * 256 + 1);
                } else if harness.spliced {
                    harness.containerd.window_update(0, u32::from(b) * 256 + 1);
                }
            }
            9 => {
                let id = stream(&harness, a);
                harness.kubelet.reset(id);
            }
            10 => {
                let id = stream(&harness, a);
                if harness.spliced && harness.containerd.streams.contains_key(&id) {
                    harness.containerd.reset(id);
                }
            }
            11 => match a % 4 {
                0 if harness.spliced => {
                    frame::put_goaway(&mut harness.containerd.outgoing, 0, reason::NO_ERROR, "bye");
                }
                1 => harness.handle(Event::ContainerdLost("lost".to_owned()))?,
                2 => {
                    harness.advance(QUIET_BEFORE_MOVE * u32::from(b % 3));
                    harness.handle(Event::ContainerdBack)?;
                }
                _ => {
                    harness.advance(QUIET_BEFORE_MOVE);
                    harness.handle(Event::Tick)?;
                }
            },
            12 | 13 => {
                let ids: Vec<u32> = harness.tasks.keys().copied().collect();
                if let Some(&id) = ids.get(usize::from(a) % ids.len().max(1)) {
                    harness.local_answers(id, b, len);
                }
            }
            14 => match a % 3 {
                0 => harness.handle(Event::Drain)?,
                1 => {
                    frame::put_head(&mut harness.kubelet.outgoing, 8, kind::PING, 0, 0);
                    harness.kubelet.outgoing.put_slice(b"kubelet!");
                }
                _ => {
                    frame::put_goaway(&mut harness.kubelet.outgoing, 0, reason::NO_ERROR, "");
                    harness.kubelet.left = true;
                }
            },
            _ => harness.deliver(usize::from(a) * 64 + 1)?,
        }
        harness.act()?;
        if harness.ending.is_some() {
            break;
        }
    }
    harness.settle()
}
