//! Frames from the kubelet: relayed calls go on to containerd, local ones are collected here.

use std::collections::VecDeque;

use bytes::{BufMut, BytesMut};

use super::limits::*;
use super::local::head_block;
use super::machine::*;
use super::*;
use crate::cri::budget::Held;
use crate::cri::frame::{self, Frame, ProtocolError, flag, kind, reason};
use crate::cri::observe::CallLog;
use crate::cri::proxy;
use crate::metrics::CallOutcome;

impl<L: Local> Machine<L> {
    pub(super) fn on_kubelet_bytes(&mut self, bytes: &mut BytesMut) -> Result<(), ProtocolError> {
        if self.reading == Reading::Preface {
            if bytes.len() < frame::PREFACE.len() {
                return Ok(());
            }
            if &bytes[..frame::PREFACE.len()] != frame::PREFACE {
                return Err(ProtocolError::new(reason::PROTOCOL_ERROR, "not an HTTP/2 connection preface"));
            }
            self.to_containerd.put_slice(&bytes.split_to(frame::PREFACE.len()));
            self.reading = Reading::Frames;
        }
        while let Some(frame) = frame::next(bytes, self.kubelet_max_frame)? {
            self.kubelet_frame(frame)?;
        }
        if !self.spliced() {
            self.to_containerd.clear();
        }
        Ok(())
    }

    fn kubelet_frame(&mut self, frame: Frame) -> Result<(), ProtocolError> {
        if self.kubelet_block.is_some() != (frame.kind == kind::CONTINUATION) {
            return Err(ProtocolError::new(reason::PROTOCOL_ERROR, "header block interrupted"));
        }
        match frame.kind {
            kind::DATA => self.kubelet_data(frame),
            kind::HEADERS | kind::CONTINUATION => {
                if let Some(block) = collect(&mut self.kubelet_block, &frame, MAX_KUBELET_HEADER_BLOCK_BYTES)? {
                    self.kubelet_headers(block)?;
                }
                Ok(())
            }
            kind::RST_STREAM => {
                let code = frame::rst_reason(&frame)?;
                match self.streams.remove(&frame.stream) {
                    Some(Stream::Relayed(mut relayed)) => {
                        self.to_containerd.put_slice(&frame.bytes);
                        end_log(&mut relayed.log, CallOutcome::Aborted);
                    }
                    Some(Stream::Local(call)) => self.forget_local(frame.stream, call, CallOutcome::Aborted),
                    None => tracing::trace!(stream = frame.stream, code, "reset of a finished stream"),
                }
                Ok(())
            }
            kind::SETTINGS => self.kubelet_settings(frame),
            kind::PING if frame.has(flag::ACK) && frame.payload() == CLOSING_PING => {
                if self.phase == Phase::Leaving(ClosingPing::Sent) {
                    self.phase = Phase::Leaving(ClosingPing::Answered);
                }
                Ok(())
            }
            kind::PING if !self.spliced() && !frame.has(flag::ACK) => {
                // Nobody else is left to answer it.
                frame::put_head(&mut self.to_kubelet, frame.payload().len(), kind::PING, flag::ACK, 0);
                self.to_kubelet.put_slice(frame.payload());
                Ok(())
            }
            kind::PING => {
                self.to_containerd.put_slice(&frame.bytes);
                Ok(())
            }
            kind::GOAWAY => {
                self.phase = Phase::KubeletLeft;
                self.to_containerd.put_slice(&frame.bytes);
                Ok(())
            }
            kind::WINDOW_UPDATE => self.kubelet_window_update(frame),
            kind::PUSH_PROMISE => Err(ProtocolError::new(reason::PROTOCOL_ERROR, "PUSH_PROMISE from a client")),
            // PRIORITY is advisory and deprecated (RFC 9113 §5.3.2); unknown types are ignored (§4.1).
            _ => Ok(()),
        }
    }

    fn kubelet_settings(&mut self, frame: Frame) -> Result<(), ProtocolError> {
        if !frame.has(flag::ACK) {
            let settings = frame::settings(&frame)?;
            if let Some(size) = settings.header_table_size {
                self.containerd_hpack.set_allowed(size.min(MAX_HPACK_TABLE_BYTES));
            }
            self.containerd_max_frame = settings.max_frame_size.unwrap_or(self.containerd_max_frame);
            if let Some(window) = settings.initial_window_size {
                let delta = window - self.kubelet_stream_window;
                self.kubelet_stream_window = window;
                for stream in self.streams.values_mut() {
                    if let Stream::Local(call) = stream {
                        frame::grow(&mut call.window, delta)?;
                    }
                }
            }
            self.pump_local();
            if !self.spliced() {
                // Acknowledged by whoever applies them: pullgate alone, now.
                frame::put_head(&mut self.to_kubelet, 0, kind::SETTINGS, flag::ACK, 0);
            }
        }
        self.to_containerd.put_slice(&frame.bytes);
        Ok(())
    }

    fn kubelet_window_update(&mut self, frame: Frame) -> Result<(), ProtocolError> {
        let increment = i64::from(frame::window_increment(&frame)?);
        if frame.stream == 0 {
            frame::grow(&mut self.kubelet_window, increment)?;
            self.pump_blocked();
            return Ok(());
        }
        match self.streams.get_mut(&frame.stream) {
            Some(Stream::Relayed(_)) => self.to_containerd.put_slice(&frame.bytes),
            Some(Stream::Local(call)) => {
                frame::grow(&mut call.window, increment)?;
                self.pump_local();
            }
            None => {}
        }
        Ok(())
    }

    fn kubelet_data(&mut self, frame: Frame) -> Result<(), ProtocolError> {
        let size = frame.payload().len();
        let mut refused = false;
        match self.streams.get_mut(&frame.stream) {
            Some(Stream::Relayed(relayed)) => {
                if frame.has(flag::END_STREAM) {
                    relayed.request = Request::Sent;
                    if relayed.response == Response::Ended {
                        self.streams.remove(&frame.stream);
                    }
                }
                self.to_containerd.put_slice(&frame.bytes);
                return Ok(());
            }
            Some(Stream::Local(call)) => {
                if let LocalState::Receiving(collected) = &mut call.state {
                    let fragment = frame.fragment()?;
                    match local::grow_body(collected, fragment.len()) {
                        Some(grown) => {
                            self.local_bytes += grown;
                            collected.body.extend_from_slice(fragment);
                        }
                        None => refused = true,
                    }
                    if size > 0 && !frame.has(flag::END_STREAM) {
                        frame::put_window_update(&mut self.to_kubelet, frame.stream, size as u32);
                    }
                }
            }
            None if frame.stream > self.last_stream => {
                return Err(ProtocolError::new(reason::PROTOCOL_ERROR, "DATA on a stream never opened"));
            }
            None => {}
        }
        // containerd never sees these bytes, so the credit it would give back comes from here.
        if size > 0 {
            frame::put_window_update(&mut self.to_kubelet, 0, size as u32);
        }
        let Some(Stream::Local(call)) = self.streams.get(&frame.stream) else { return Ok(()) };
        let LocalState::Receiving(_) = call.state else { return Ok(()) };
        if refused || self.local_bytes > MAX_LOCAL_BYTES {
            let status = tonic::Status::resource_exhausted(format!(
                "pullgate: the request is larger than {MAX_LOCAL_REQUEST_BYTES} bytes, or this connection has \
                 {MAX_LOCAL_BYTES} bytes of requests in flight, or all connections together have {}",
                self.local.budget().limit()
            ));
            self.answer_now(frame.stream, status);
            frame::put_rst_stream(&mut self.to_kubelet, frame.stream, reason::NO_ERROR);
        } else if frame.has(flag::END_STREAM) {
            self.start_local(frame.stream);
        }
        Ok(())
    }

    fn kubelet_headers(&mut self, block: Block) -> Result<(), ProtocolError> {
        let id = block.stream;
        let decoded = self.decode_kubelet_headers(&block)?;
        let new = id > self.last_stream;
        if new {
            if id.is_multiple_of(2) {
                return Err(ProtocolError::new(reason::PROTOCOL_ERROR, "a client opened an even stream"));
            }
            self.last_stream = id;
        }
        if decoded.too_large {
            // Decoded all the same: the kubelet's compression state goes on from this block.
            let head = head_block(Some(http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE), &Default::default());
            frame::put_header_block(&mut self.to_kubelet, id, &head, true);
            match self.streams.remove(&id) {
                Some(Stream::Relayed(_)) => frame::put_rst_stream(&mut self.to_containerd, id, reason::CANCEL),
                Some(Stream::Local(call)) => self.forget_local(id, call, CallOutcome::Aborted),
                None => {}
            }
            return Ok(());
        }
        if !new {
            self.kubelet_trailers(id, block.end_stream, &decoded.encoded);
            return Ok(());
        }
        let path = decoded.path.unwrap_or_default();
        let local = self.without_containerd() || !proxy::relayed(&path);
        // Answers pullgate makes are bounded by refusing new ones while many are being made or
        // earlier ones wait (see `HIGH_WATER`); answers containerd makes are bounded by
        // reading no more from it.
        let busy = local && (self.local_streams() >= MAX_LOCAL_STREAMS || self.kubelet_backlog() >= HIGH_WATER);
        if self.phase == Phase::KubeletLeft || self.streams.len() >= MAX_STREAMS || busy {
            frame::put_rst_stream(&mut self.to_kubelet, id, reason::REFUSED_STREAM);
            return Ok(());
        }
        let log = Some(CallLog::start(&path, self.local.metrics()));
        self.last_call = self.now;
        if local {
            let headers = decoded
                .fields
                .into_iter()
                .filter_map(|(name, value)| {
                    Some((http::HeaderName::from_bytes(&name).ok()?, http::HeaderValue::from_bytes(&value).ok()?))
                })
                .collect();
            let collected = Collected { headers, body: Vec::new(), held: Held::new(self.local.budget()) };
            let call = LocalCall {
                path,
                log,
                state: LocalState::Receiving(collected),
                window: self.kubelet_stream_window,
                waiting: VecDeque::new(),
            };
            self.streams.insert(id, Stream::Local(Box::new(call)));
            if block.end_stream {
                self.start_local(id);
            }
        } else {
            frame::put_header_block(&mut self.to_containerd, id, &decoded.encoded, block.end_stream);
            let request = if block.end_stream { Request::Sent } else { Request::Sending };
            self.streams.insert(id, Stream::Relayed(Relayed { log, request, response: Response::Awaited }));
        }
        Ok(())
    }

    /// Trailers from the kubelet; gRPC clients send none, but they are legal.
    fn kubelet_trailers(&mut self, id: u32, end_stream: bool, encoded: &[u8]) {
        if !end_stream {
            return;
        }
        match self.streams.get_mut(&id) {
            Some(Stream::Relayed(relayed)) if relayed.request == Request::Sending => {
                relayed.request = Request::Sent;
                if relayed.response == Response::Ended {
                    self.streams.remove(&id);
                }
                frame::put_header_block(&mut self.to_containerd, id, encoded, true);
            }
            Some(Stream::Local(_)) => self.start_local(id),
            _ => {}
        }
    }

    /// Decodes a header block of the kubelet's and writes it again as literals (see the module
    /// comment of `splice`), keeping the regular fields only for calls that are not relayed.
    fn decode_kubelet_headers(&mut self, block: &Block) -> Result<Decoded, ProtocolError> {
        let mut decoded = Decoded {
            path: None,
            fields: Vec::new(),
            encoded: Vec::with_capacity(block.bytes.len() + 64),
            too_large: false,
        };
        let mut list_bytes = 0;
        let without_containerd = self.without_containerd();
        // Decided at the first regular field, once the pseudo-fields (the path) are in.
        let mut keep_fields = None;
        self.kubelet_hpack
            .decode(&block.bytes, |name, value| {
                list_bytes += name.len() + value.len() + 32;
                if list_bytes > MAX_HEADER_LIST_BYTES {
                    decoded.too_large = true;
                    return;
                }
                if name == b":path" {
                    // A second :path makes the request malformed; routed as "", it is refused
                    // rather than judged by one path and served by the other.
                    let value =
                        if decoded.path.is_some() { Default::default() } else { String::from_utf8_lossy(value) };
                    decoded.path = Some(value.into_owned());
                }
                frame::put_literal(&mut decoded.encoded, name, value);
                if !name.starts_with(b":")
                    && *keep_fields
                        .get_or_insert_with(|| without_containerd || decoded.path.as_deref().is_some_and(is_local))
                {
                    decoded.fields.push((name.to_vec(), value.to_vec()));
                }
            })
            .map_err(|error| ProtocolError::new(reason::COMPRESSION_ERROR, format!("kubelet headers: {error}")))?;
        Ok(decoded)
    }
}

/// A kubelet header block, decoded and written again.
struct Decoded {
    path: Option<String>,
    /// Regular fields, for local calls only.
    fields: Vec<(Vec<u8>, Vec<u8>)>,
    /// The block as literals, for containerd.
    encoded: Vec<u8>,
    /// The list is over `MAX_HEADER_LIST_BYTES`.
    too_large: bool,
}

/// Calls to `path` are answered by pullgate, not spliced through to containerd.
fn is_local(path: &str) -> bool {
    !proxy::relayed(path)
}
