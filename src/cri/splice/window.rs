//! Towards the kubelet under its flow-control windows: the connection window pullgate
//! keeps for it, and the stream windows of local calls.

use bytes::BufMut;

use super::limits::*;
use super::machine::*;
use super::*;
use crate::cri::frame;
use crate::metrics::CallOutcome;

impl<L: Local> Machine<L> {
    pub(super) fn send_blocked(&mut self, out: Out) {
        if self.blocked.is_empty() && self.fits(&out) {
            self.emit(out);
        } else {
            self.blocked_bytes += out.len();
            self.blocked.push_back(out);
        }
    }

    fn fits(&self, out: &Out) -> bool {
        match out {
            Out::Data { cost, .. } => (*cost as i64) <= self.kubelet_window,
            Out::Other(_) => true,
        }
    }

    fn emit(&mut self, out: Out) {
        match out {
            Out::Data { frame, cost, credit } => {
                self.kubelet_window -= cost as i64;
                self.containerd_credit += credit;
                self.to_kubelet.put_slice(&frame);
            }
            Out::Other(frame) => self.to_kubelet.put_slice(&frame),
        }
    }

    pub(super) fn pump_blocked(&mut self) {
        while let Some(out) = self.blocked.front() {
            if !self.fits(out) {
                break;
            }
            let Some(out) = self.blocked.pop_front() else { break };
            self.blocked_bytes -= out.len();
            self.emit(out);
        }
        self.credit_containerd();
    }

    /// Gives containerd back the credit gathered, once it is worth a frame.
    pub(super) fn credit_containerd(&mut self) {
        if self.containerd_credit >= CREDIT_BATCH {
            if self.spliced() {
                frame::put_window_update(&mut self.to_containerd, 0, self.containerd_credit as u32);
            }
            self.containerd_credit = 0;
        }
    }

    /// Moves answer frames the stream windows allow on towards the kubelet.
    pub(super) fn pump_local(&mut self) {
        let mut done = Vec::new();
        let mut ready = Vec::new();
        for (&id, stream) in &mut self.streams {
            let Stream::Local(call) = stream else { continue };
            while let Some(part) = call.waiting.front() {
                match part {
                    Part::Frame(Out::Data { cost, .. }) if (*cost as i64) > call.window => break,
                    Part::Frame(Out::Data { cost, .. }) => call.window -= *cost as i64,
                    Part::Frame(Out::Other(_)) => {}
                    Part::End => {
                        done.push(id);
                        break;
                    }
                }
                if let Some(Part::Frame(out)) = call.waiting.pop_front() {
                    self.waiting_bytes -= out.len();
                    ready.push(out);
                }
            }
        }
        for id in done {
            if let Some(Stream::Local(call)) = self.streams.remove(&id) {
                self.forget_local(id, call, CallOutcome::Missing);
            }
        }
        for out in ready {
            self.send_blocked(out);
        }
    }
}
