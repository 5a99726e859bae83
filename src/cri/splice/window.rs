//! Towards the kubelet under its flow-control windows: the connection window pullgate
//! keeps for it, and the stream windows of kept calls.

use super::*;

impl<G: PullGate> Splice<G> {
    pub(super) fn send_blocked(&mut self, out: Out) {
        if self.blocked.is_empty() && self.fits(&out) {
            self.emit(out);
        } else {
            self.blocked_bytes += out.len();
            self.blocked.push_back(out);
        }
    }

    pub(super) fn fits(&self, out: &Out) -> bool {
        match out {
            Out::Data { cost, .. } => (*cost as i64) <= self.kubelet_window,
            Out::Other(_) => true,
        }
    }

    pub(super) fn emit(&mut self, out: Out) {
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
            let out = self.blocked.pop_front().expect("front exists");
            self.blocked_bytes -= out.len();
            self.emit(out);
        }
        if self.containerd_credit >= CREDIT_BATCH {
            frame::put_window_update(&mut self.to_containerd, 0, self.containerd_credit as u32);
            self.containerd_credit = 0;
        }
    }

    /// Moves answer frames the stream windows allow on towards the kubelet.
    pub(super) fn pump_kept(&mut self) {
        let mut done = Vec::new();
        let mut ready = Vec::new();
        for (&id, stream) in &mut self.streams {
            let Stream::Kept(kept) = stream else { continue };
            while let Some(out) = kept.waiting.front() {
                match out {
                    Out::Data { cost, .. } if (*cost as i64) > kept.window => break,
                    Out::Data { cost, .. } => kept.window -= *cost as i64,
                    Out::Other(frame) if frame.is_empty() => {
                        done.push(id);
                        kept.waiting.clear();
                        break;
                    }
                    Out::Other(_) => {}
                }
                ready.push(kept.waiting.pop_front().expect("front exists"));
            }
        }
        for id in done {
            if let Some(Stream::Kept(mut kept)) = self.streams.remove(&id) {
                end_log(&mut kept.log, CallOutcome::Missing);
            }
        }
        for out in ready {
            self.send_blocked(out);
        }
    }
}
