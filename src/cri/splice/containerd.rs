//! Frames from containerd, on their way to the kubelet.

use bytes::{BufMut, BytesMut};

use super::limits::*;
use super::machine::*;
use super::*;
use crate::cri::frame::{self, Frame, ProtocolError, flag, kind, reason};
use crate::metrics::CallOutcome;

impl<L: Local> Machine<L> {
    pub(super) fn on_containerd_bytes(&mut self, bytes: &mut BytesMut) -> Result<(), ProtocolError> {
        while let Some(frame) = frame::next(bytes, self.containerd_max_frame)? {
            self.containerd_frame(frame)?;
        }
        self.credit_containerd();
        Ok(())
    }

    fn containerd_frame(&mut self, frame: Frame) -> Result<(), ProtocolError> {
        if self.containerd_block.is_some() != (frame.kind == kind::CONTINUATION) {
            return Err(ProtocolError::new(reason::PROTOCOL_ERROR, "header block interrupted"));
        }
        match frame.kind {
            kind::DATA => {
                let size = frame.payload().len();
                match self.streams.get(&frame.stream) {
                    Some(Stream::Relayed(_)) => {
                        if frame.has(flag::END_STREAM) {
                            self.end_relayed(frame.stream, CallOutcome::Missing);
                        }
                        self.send_blocked(Out::Data { frame: frame.bytes, cost: size, credit: size });
                    }
                    _ => self.containerd_credit += size,
                }
                Ok(())
            }
            kind::HEADERS | kind::CONTINUATION => {
                if let Some(block) = collect(&mut self.containerd_block, &frame, MAX_CONTAINERD_HEADER_BLOCK_BYTES)? {
                    self.containerd_headers(block)?;
                }
                Ok(())
            }
            kind::RST_STREAM => {
                if let Some(Stream::Relayed(mut relayed)) = self.streams.remove(&frame.stream) {
                    end_log(&mut relayed.log, CallOutcome::Aborted);
                    self.send_blocked(Out::Other(frame.bytes));
                }
                Ok(())
            }
            kind::SETTINGS => {
                if !frame.has(flag::ACK) {
                    let settings = frame::settings(&frame)?;
                    if let Some(size) = settings.header_table_size {
                        self.kubelet_hpack.set_allowed(size.min(MAX_HPACK_TABLE_BYTES));
                    }
                    self.kubelet_max_frame = settings.max_frame_size.unwrap_or(self.kubelet_max_frame);
                }
                self.to_kubelet.put_slice(&frame.bytes);
                Ok(())
            }
            kind::PING => {
                self.to_kubelet.put_slice(&frame.bytes);
                Ok(())
            }
            kind::GOAWAY => {
                // Not passed on: its last stream id counts containerd's streams only. Calls
                // containerd has stay with it (those it will not answer are answered when it
                // closes); new ones go as while containerd is lost.
                if self.containerd == Containerd::Spliced {
                    self.containerd = Containerd::Leaving(Dial::Unanswered);
                }
                Ok(())
            }
            kind::WINDOW_UPDATE => {
                frame::window_increment(&frame)?;
                if frame.stream == 0 || matches!(self.streams.get(&frame.stream), Some(Stream::Relayed(_))) {
                    self.to_kubelet.put_slice(&frame.bytes);
                }
                Ok(())
            }
            kind::PUSH_PROMISE => Err(ProtocolError::new(reason::PROTOCOL_ERROR, "PUSH_PROMISE from containerd")),
            _ => Ok(()),
        }
    }

    fn containerd_headers(&mut self, block: Block) -> Result<(), ProtocolError> {
        let mut encoded = Vec::with_capacity(block.bytes.len() + 64);
        let mut code = None;
        self.containerd_hpack
            .decode(&block.bytes, |name, value| {
                if name == b"grpc-status" {
                    code = std::str::from_utf8(value).ok().and_then(|v| v.parse::<i32>().ok());
                }
                frame::put_literal(&mut encoded, name, value);
            })
            .map_err(|error| ProtocolError::new(reason::COMPRESSION_ERROR, format!("containerd headers: {error}")))?;
        let Some(Stream::Relayed(relayed)) = self.streams.get_mut(&block.stream) else { return Ok(()) };
        if relayed.response == Response::Ended {
            return Ok(());
        }
        relayed.response = Response::Begun;
        if block.end_stream {
            let outcome = code.map_or(CallOutcome::Missing, |code| CallOutcome::Code(tonic::Code::from_i32(code)));
            self.end_relayed(block.stream, outcome);
        }
        let mut out = BytesMut::with_capacity(encoded.len() + frame::HEAD_LEN);
        frame::put_header_block(&mut out, block.stream, &encoded, block.end_stream);
        self.send_blocked(Out::Other(out.freeze()));
        Ok(())
    }

    /// Logs a relayed call's end, and forgets it once the kubelet is done with it too.
    fn end_relayed(&mut self, id: u32, outcome: CallOutcome) {
        let Some(Stream::Relayed(relayed)) = self.streams.get_mut(&id) else { return };
        end_log(&mut relayed.log, outcome);
        relayed.response = Response::Ended;
        if relayed.request == Request::Sent {
            self.streams.remove(&id);
        }
    }
}
