//! Frames from the kubelet: relayed calls go on to containerd, kept ones are collected here.

use std::collections::VecDeque;

use bytes::{BufMut, BytesMut};
use http_body_util::Full;

use super::*;

impl<G: PullGate> Splice<G> {
    pub(super) fn on_kubelet_bytes(&mut self) -> Result<(), ProtocolError> {
        if !self.preface_seen {
            if self.from_kubelet.len() < frame::PREFACE.len() {
                return Ok(());
            }
            if &self.from_kubelet[..frame::PREFACE.len()] != frame::PREFACE {
                return Err(ProtocolError::new(reason::PROTOCOL_ERROR, "not an HTTP/2 connection preface"));
            }
            self.to_containerd.put_slice(&self.from_kubelet.split_to(frame::PREFACE.len()));
            self.preface_seen = true;
        }
        while let Some(frame) = frame::next(&mut self.from_kubelet, self.kubelet_max_frame)? {
            self.kubelet_frame(frame)?;
        }
        if self.containerd_lost {
            self.to_containerd.clear();
        }
        Ok(())
    }

    pub(super) fn kubelet_frame(&mut self, frame: Frame) -> Result<(), ProtocolError> {
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
                    Some(Stream::Kept(mut kept)) => {
                        self.kept_bytes -= kept.body.len();
                        if let Some(task) = kept.task.take() {
                            task.abort();
                        }
                        end_log(&mut kept.log, CallOutcome::Aborted);
                    }
                    None => tracing::trace!(stream = frame.stream, code, "reset of a finished stream"),
                }
                Ok(())
            }
            kind::SETTINGS => {
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
                            if let Stream::Kept(kept) = stream {
                                frame::grow(&mut kept.window, delta)?;
                            }
                        }
                    }
                    self.pump_kept();
                    if self.containerd_lost {
                        // Acknowledged by whoever applies them: pullgate alone, now.
                        frame::put_head(&mut self.to_kubelet, 0, kind::SETTINGS, flag::ACK, 0);
                    }
                }
                self.to_containerd.put_slice(&frame.bytes);
                Ok(())
            }
            kind::PING if frame.has(flag::ACK) && frame.payload() == CLOSING_PING => {
                self.closing_ping.1 = true;
                Ok(())
            }
            kind::PING if self.containerd_lost && !frame.has(flag::ACK) => {
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
                (self.going_away, self.kubelet_left) = (true, true);
                self.to_containerd.put_slice(&frame.bytes);
                Ok(())
            }
            kind::WINDOW_UPDATE => {
                let increment = i64::from(frame::window_increment(&frame)?);
                if frame.stream == 0 {
                    frame::grow(&mut self.kubelet_window, increment)?;
                    self.pump_blocked();
                    return Ok(());
                }
                match self.streams.get_mut(&frame.stream) {
                    Some(Stream::Relayed(_)) => self.to_containerd.put_slice(&frame.bytes),
                    Some(Stream::Kept(kept)) => {
                        frame::grow(&mut kept.window, increment)?;
                        self.pump_kept();
                    }
                    None => {}
                }
                Ok(())
            }
            kind::PUSH_PROMISE => Err(ProtocolError::new(reason::PROTOCOL_ERROR, "PUSH_PROMISE from a client")),
            // PRIORITY is advisory and deprecated (RFC 9113 §5.3.2); unknown types are ignored (§4.1).
            _ => Ok(()),
        }
    }

    pub(super) fn kubelet_data(&mut self, frame: Frame) -> Result<(), ProtocolError> {
        let size = frame.payload().len();
        let mut over_budget = false;
        match self.streams.get_mut(&frame.stream) {
            Some(Stream::Relayed(relayed)) => {
                relayed.sent |= frame.has(flag::END_STREAM);
                if relayed.sent && relayed.log.is_none() {
                    // containerd had already answered.
                    self.streams.remove(&frame.stream);
                }
                self.to_containerd.put_slice(&frame.bytes);
                return Ok(());
            }
            Some(Stream::Kept(kept)) if kept.task.is_none() => {
                let fragment = frame.fragment()?;
                if kept.held.take(fragment.len()) {
                    kept.body.put_slice(fragment);
                    self.kept_bytes += fragment.len();
                } else {
                    over_budget = true;
                }
                if size > 0 && !frame.has(flag::END_STREAM) {
                    frame::put_window_update(&mut self.to_kubelet, frame.stream, size as u32);
                }
            }
            Some(Stream::Kept(_)) => {}
            None if frame.stream > self.last_stream => {
                return Err(ProtocolError::new(reason::PROTOCOL_ERROR, "DATA on a stream never opened"));
            }
            None => {}
        }
        // containerd never sees these bytes, so the credit it would give back comes from here.
        if size > 0 {
            frame::put_window_update(&mut self.to_kubelet, 0, size as u32);
        }
        let Some(Stream::Kept(kept)) = self.streams.get(&frame.stream) else { return Ok(()) };
        if over_budget || kept.body.len() > MAX_LOCAL_REQUEST_BYTES || self.kept_bytes > MAX_KEPT_BYTES {
            let status = tonic::Status::resource_exhausted(format!(
                "pullgate: the request is larger than {MAX_LOCAL_REQUEST_BYTES} bytes, or this connection has \
                 {MAX_KEPT_BYTES} bytes of requests in flight, or all connections together have {}",
                self.proxy.budget().limit()
            ));
            self.answer_now(frame.stream, status);
            frame::put_rst_stream(&mut self.to_kubelet, frame.stream, reason::NO_ERROR);
        } else if frame.has(flag::END_STREAM) {
            self.start_kept(frame.stream);
        }
        Ok(())
    }

    pub(super) fn kubelet_headers(&mut self, block: Block) -> Result<(), ProtocolError> {
        let id = block.stream;
        let mut path = None;
        let mut fields = Vec::new();
        let mut encoded = Vec::with_capacity(block.bytes.len() + 64);
        let mut list_bytes = 0;
        let without_containerd = self.without_containerd();
        // Decided at the first regular field, once the pseudo-fields (the path) are in.
        let mut keep_fields = None;
        self.kubelet_hpack
            .decode(&block.bytes, |name, value| {
                list_bytes += name.len() + value.len() + 32;
                if list_bytes > MAX_HEADER_LIST_BYTES {
                    return;
                }
                if name == b":path" {
                    // A second :path makes the request malformed; routed as "", it is refused
                    // rather than judged by one path and served by the other.
                    let value = if path.is_some() { Default::default() } else { String::from_utf8_lossy(value) };
                    path = Some(value.into_owned());
                }
                frame::put_literal(&mut encoded, name, value);
                // Only calls not spliced through need their headers as a map.
                if !name.starts_with(b":")
                    && *keep_fields.get_or_insert_with(|| without_containerd || path.as_deref().is_some_and(kept_here))
                {
                    fields.push((name.to_vec(), value.to_vec()));
                }
            })
            .map_err(|error| ProtocolError::new(reason::COMPRESSION_ERROR, format!("kubelet headers: {error}")))?;
        let new = id > self.last_stream;
        if new {
            if id.is_multiple_of(2) {
                return Err(ProtocolError::new(reason::PROTOCOL_ERROR, "a client opened an even stream"));
            }
            self.last_stream = id;
        }
        if list_bytes > MAX_HEADER_LIST_BYTES {
            // Decoded all the same: the kubelet's compression state goes on from this block.
            let head = kept::head_block(Some(http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE), &Default::default());
            frame::put_header_block(&mut self.to_kubelet, id, &head, true);
            if let Some(Stream::Relayed(_)) = self.streams.remove(&id) {
                frame::put_rst_stream(&mut self.to_containerd, id, reason::CANCEL);
            }
            return Ok(());
        }
        if !new {
            // Trailers from the kubelet; gRPC clients send none, but they are legal.
            match self.streams.get_mut(&id) {
                Some(Stream::Relayed(relayed)) if block.end_stream => {
                    relayed.sent = true;
                    frame::put_header_block(&mut self.to_containerd, id, &encoded, true);
                }
                Some(Stream::Kept(_)) if block.end_stream => self.start_kept(id),
                _ => {}
            }
            return Ok(());
        }
        let path = path.unwrap_or_default();
        let kept = self.without_containerd() || !proxy::relayed(&path);
        // Answers pullgate makes are bounded by refusing new ones while many are being made or
        // earlier ones wait (see `HIGH_WATER`); answers containerd makes are bounded by
        // reading no more from it.
        let busy = kept && (self.kept_streams() >= MAX_KEPT_STREAMS || self.kubelet_backlog() >= HIGH_WATER);
        if self.kubelet_left || self.streams.len() >= MAX_STREAMS || busy {
            frame::put_rst_stream(&mut self.to_kubelet, id, reason::REFUSED_STREAM);
            return Ok(());
        }
        let log = Some(CallLog::start(&path, self.proxy.metrics()));
        self.last_call = Instant::now();
        if kept {
            let headers = fields
                .into_iter()
                .filter_map(|(name, value)| {
                    Some((http::HeaderName::from_bytes(&name).ok()?, http::HeaderValue::from_bytes(&value).ok()?))
                })
                .collect();
            let kept = Kept {
                path,
                log,
                headers,
                body: BytesMut::new(),
                held: Held::new(self.proxy.budget()),
                task: None,
                window: self.kubelet_stream_window,
                waiting: VecDeque::new(),
            };
            self.streams.insert(id, Stream::Kept(Box::new(kept)));
            if block.end_stream {
                self.start_kept(id);
            }
        } else {
            frame::put_header_block(&mut self.to_containerd, id, &encoded, block.end_stream);
            self.streams.insert(id, Stream::Relayed(Relayed { log, sent: block.end_stream, answered: false }));
        }
        Ok(())
    }

    /// Hands a kept call whose request is complete to pullgate's own handler.
    pub(super) fn start_kept(&mut self, id: u32) {
        let Some(Stream::Kept(kept)) = self.streams.get_mut(&id) else { return };
        if kept.task.is_some() {
            return;
        }
        self.kept_bytes -= kept.body.len();
        let mut request = http::Request::new(Full::new(std::mem::take(&mut kept.body).freeze()));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = kept.path.parse().unwrap_or_else(|_| http::Uri::from_static("/"));
        *request.headers_mut() = std::mem::take(&mut kept.headers);
        // Derived from the path here, never defaulted: a call whose route were lost must not
        // become a relayed one (for PullImage, an unverified pull).
        let route = proxy::route(&kept.path);
        let (proxy, events) = (self.proxy.clone(), self.events.clone());
        let held = std::mem::replace(&mut kept.held, Held::new(proxy.budget()));
        let task = tokio::spawn(async move {
            kept::answer_kept(proxy, route, request, id, events).await;
            drop(held);
        });
        kept.task = Some(task.abort_handle());
    }
}

/// Calls to `path` are answered by pullgate, not spliced through to containerd.
fn kept_here(path: &str) -> bool {
    !proxy::relayed(path)
}
