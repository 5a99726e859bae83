//! HTTP/2 frames as the splice relay sees them (RFC 9113 §4, §6): a 9-byte head and a payload,
//! cut out of a read buffer whole so that most of them can be written on unchanged.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// What every HTTP/2 client sends first.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEAD_LEN: usize = 9;
/// The frame size every endpoint accepts until its peer's SETTINGS say more (RFC 9113 §4.2).
pub const DEFAULT_MAX_FRAME: usize = 16_384;
/// The window every connection and stream starts with (RFC 9113 §6.9.2).
pub const DEFAULT_WINDOW: i64 = 65_535;
const MAX_WINDOW: i64 = (1 << 31) - 1;

pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

pub mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
}

/// Error codes (RFC 9113 §7) pullgate sends itself.
pub mod reason {
    pub const NO_ERROR: u32 = 0x0;
    pub const PROTOCOL_ERROR: u32 = 0x1;
    pub const FLOW_CONTROL_ERROR: u32 = 0x3;
    pub const FRAME_SIZE_ERROR: u32 = 0x6;
    pub const REFUSED_STREAM: u32 = 0x7;
    pub const CANCEL: u32 = 0x8;
    pub const COMPRESSION_ERROR: u32 = 0x9;
}

/// A breach of the protocol by a peer: the connection cannot go on.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct ProtocolError {
    pub what: String,
    pub reason: u32,
}

impl ProtocolError {
    pub fn new(reason: u32, what: impl Into<String>) -> ProtocolError {
        ProtocolError { what: what.into(), reason }
    }
}

/// One whole frame; `bytes` holds the head too, so forwarding it is a copy of `bytes`.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub bytes: Bytes,
}

impl Frame {
    pub fn payload(&self) -> &[u8] {
        &self.bytes[HEAD_LEN..]
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The payload without padding (and, for HEADERS, without priority fields): what a
    /// HEADERS or CONTINUATION frame contributes to its header block.
    pub fn fragment(&self) -> Result<&[u8], ProtocolError> {
        let mut payload = self.payload();
        let mut pad = 0;
        if self.kind != kind::CONTINUATION && self.has(flag::PADDED) {
            let (&length, rest) = payload.split_first().ok_or_else(|| malformed("padded frame without padding"))?;
            (pad, payload) = (usize::from(length), rest);
        }
        if self.kind == kind::HEADERS && self.has(flag::PRIORITY) {
            payload = payload.get(5..).ok_or_else(|| malformed("HEADERS too short for its priority"))?;
        }
        let end = payload.len().checked_sub(pad).ok_or_else(|| malformed("padding longer than the frame"))?;
        Ok(&payload[..end])
    }
}

fn malformed(what: &str) -> ProtocolError {
    ProtocolError::new(reason::PROTOCOL_ERROR, what)
}

/// Cuts the next whole frame off `buffer`, if it holds one; `max_len` is the largest payload
/// this side advertised it accepts.
pub fn next(buffer: &mut BytesMut, max_len: usize) -> Result<Option<Frame>, ProtocolError> {
    if buffer.len() < HEAD_LEN {
        return Ok(None);
    }
    let len = (usize::from(buffer[0]) << 16) | (usize::from(buffer[1]) << 8) | usize::from(buffer[2]);
    if len > max_len {
        return Err(ProtocolError::new(reason::FRAME_SIZE_ERROR, format!("a {len}-byte frame (limit {max_len})")));
    }
    if buffer.len() < HEAD_LEN + len {
        buffer.reserve(HEAD_LEN + len - buffer.len());
        return Ok(None);
    }
    let (kind, flags) = (buffer[3], buffer[4]);
    let stream = u32::from_be_bytes([buffer[5], buffer[6], buffer[7], buffer[8]]) & 0x7fff_ffff;
    Ok(Some(Frame { kind, flags, stream, bytes: buffer.split_to(HEAD_LEN + len).freeze() }))
}

pub fn put_head(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len < 1 << 24);
    out.put_uint(len as u64, 3);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream);
}

pub fn put_window_update(out: &mut BytesMut, stream: u32, increment: u32) {
    put_head(out, 4, kind::WINDOW_UPDATE, 0, stream);
    out.put_u32(increment);
}

pub fn put_rst_stream(out: &mut BytesMut, stream: u32, reason: u32) {
    put_head(out, 4, kind::RST_STREAM, 0, stream);
    out.put_u32(reason);
}

pub fn put_goaway(out: &mut BytesMut, last_stream: u32, reason: u32, debug: &str) {
    put_head(out, 8 + debug.len(), kind::GOAWAY, 0, 0);
    out.put_u32(last_stream);
    out.put_u32(reason);
    out.put_slice(debug.as_bytes());
}

/// A header block as HEADERS plus CONTINUATION frames of at most the default frame size,
/// which every peer accepts.
pub fn put_header_block(out: &mut BytesMut, stream: u32, block: &[u8], end_stream: bool) {
    let mut chunks = block.chunks(DEFAULT_MAX_FRAME).peekable();
    let mut kind = kind::HEADERS;
    let mut flags = if end_stream { flag::END_STREAM } else { 0 };
    if chunks.peek().is_none() {
        put_head(out, 0, kind, flags | flag::END_HEADERS, stream);
        return;
    }
    while let Some(chunk) = chunks.next() {
        if chunks.peek().is_none() {
            flags |= flag::END_HEADERS;
        }
        put_head(out, chunk.len(), kind, flags, stream);
        out.put_slice(chunk);
        (kind, flags) = (kind::CONTINUATION, 0);
    }
}

/// DATA frames carrying `data`, none larger than the default frame size.
pub fn put_data(out: &mut BytesMut, stream: u32, data: &[u8], end_stream: bool) {
    if data.is_empty() {
        put_head(out, 0, kind::DATA, if end_stream { flag::END_STREAM } else { 0 }, stream);
        return;
    }
    let mut chunks = data.chunks(DEFAULT_MAX_FRAME).peekable();
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        put_head(out, chunk.len(), kind::DATA, if last && end_stream { flag::END_STREAM } else { 0 }, stream);
        out.put_slice(chunk);
    }
}

/// What a SETTINGS frame changes that the relay must follow; the rest only concerns the peers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// The largest dynamic table the sender's decoder keeps, i.e. the peer's encoder may use.
    pub header_table_size: Option<usize>,
    /// The window each new stream starts with for data sent to the sender.
    pub initial_window_size: Option<i64>,
    /// The largest frame the sender accepts.
    pub max_frame_size: Option<usize>,
}

/// The settings of one SETTINGS frame that is not an ACK; a value given twice counts once,
/// the last time.
pub fn settings(frame: &Frame) -> Result<Settings, ProtocolError> {
    let mut payload = frame.payload();
    if frame.stream != 0 || !payload.len().is_multiple_of(6) {
        return Err(malformed("malformed SETTINGS"));
    }
    let mut settings = Settings::default();
    while payload.has_remaining() {
        let (id, value) = (payload.get_u16(), payload.get_u32());
        let out_of_range =
            |reason| ProtocolError::new(reason, format!("SETTINGS value {value} for {id:#x} out of range"));
        match id {
            setting::HEADER_TABLE_SIZE => settings.header_table_size = Some(value as usize),
            setting::INITIAL_WINDOW_SIZE if i64::from(value) > MAX_WINDOW => {
                return Err(out_of_range(reason::FLOW_CONTROL_ERROR));
            }
            setting::INITIAL_WINDOW_SIZE => settings.initial_window_size = Some(i64::from(value)),
            setting::MAX_FRAME_SIZE if !(DEFAULT_MAX_FRAME as u32..1 << 24).contains(&value) => {
                return Err(out_of_range(reason::PROTOCOL_ERROR));
            }
            setting::MAX_FRAME_SIZE => settings.max_frame_size = Some(value as usize),
            _ => {}
        }
    }
    Ok(settings)
}

/// The increment of a WINDOW_UPDATE frame.
pub fn window_increment(frame: &Frame) -> Result<u32, ProtocolError> {
    let payload: [u8; 4] = frame.payload().try_into().map_err(|_| malformed("WINDOW_UPDATE of the wrong size"))?;
    match u32::from_be_bytes(payload) & 0x7fff_ffff {
        0 => Err(malformed("WINDOW_UPDATE of 0")),
        increment => Ok(increment),
    }
}

/// Adds `increment` to a flow-control window, which may never exceed 2^31-1 (RFC 9113 §6.9.1).
pub fn grow(window: &mut i64, increment: i64) -> Result<(), ProtocolError> {
    *window += increment;
    if *window > MAX_WINDOW {
        return Err(ProtocolError::new(reason::FLOW_CONTROL_ERROR, "flow-control window above 2^31-1"));
    }
    Ok(())
}

/// The error code of a RST_STREAM frame.
pub fn rst_reason(frame: &Frame) -> Result<u32, ProtocolError> {
    let payload: [u8; 4] = frame.payload().try_into().map_err(|_| malformed("RST_STREAM of the wrong size"))?;
    Ok(u32::from_be_bytes(payload))
}

/// HPACK (RFC 7541) written the simplest valid way: every field a literal that is not added
/// to the peer's dynamic table, so the table the peer keeps for the other sender's header
/// blocks is never touched by pullgate's.
pub fn put_literal(block: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    // "Literal Header Field without Indexing — New Name" (RFC 7541 §6.2.2), no Huffman coding.
    block.push(0x00);
    put_string(block, name);
    put_string(block, value);
}

fn put_string(block: &mut Vec<u8>, string: &[u8]) {
    // The length as an integer with a 7-bit prefix (RFC 7541 §5.1); the H bit stays clear.
    let mut len = string.len();
    if len < 0x7f {
        block.push(len as u8);
    } else {
        block.push(0x7f);
        len -= 0x7f;
        while len >= 0x80 {
            block.push((len & 0x7f) as u8 | 0x80);
            len >>= 7;
        }
        block.push(len as u8);
    }
    block.extend_from_slice(string);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_of(bytes: &[u8]) -> Frame {
        next(&mut BytesMut::from(bytes), DEFAULT_MAX_FRAME).unwrap().unwrap()
    }

    #[test]
    fn frames_are_cut_whole_and_only_when_complete() {
        let mut out = BytesMut::new();
        put_data(&mut out, 3, b"hello", true);
        put_window_update(&mut out, 0, 77);
        let mut partial = BytesMut::from(&out[..10]);
        assert!(next(&mut partial, DEFAULT_MAX_FRAME).unwrap().is_none());
        let data = next(&mut out, DEFAULT_MAX_FRAME).unwrap().unwrap();
        assert_eq!((data.kind, data.stream, data.payload()), (kind::DATA, 3, &b"hello"[..]));
        assert!(data.has(flag::END_STREAM));
        let update = next(&mut out, DEFAULT_MAX_FRAME).unwrap().unwrap();
        assert_eq!(window_increment(&update).unwrap(), 77);
        assert!(out.is_empty());
    }

    #[test]
    fn a_frame_above_the_limit_is_refused_before_it_is_buffered() {
        let mut buffer = BytesMut::new();
        put_head(&mut buffer, 1 << 20, kind::DATA, 0, 1);
        let error = next(&mut buffer, DEFAULT_MAX_FRAME).unwrap_err();
        assert_eq!(error.reason, reason::FRAME_SIZE_ERROR);
        assert!(buffer.capacity() < DEFAULT_MAX_FRAME, "no room was made for it");
    }

    #[test]
    fn padding_and_priority_are_not_part_of_the_fragment() {
        // HEADERS, PADDED|PRIORITY|END_HEADERS: pad length 2, 5 bytes of priority, "ab", 2 of padding.
        let payload = [2, 0, 0, 0, 0, 16, b'a', b'b', 0, 0];
        let mut bytes = BytesMut::new();
        put_head(&mut bytes, payload.len(), kind::HEADERS, flag::PADDED | flag::PRIORITY | flag::END_HEADERS, 1);
        bytes.put_slice(&payload);
        assert_eq!(frame_of(&bytes).fragment().unwrap(), b"ab");
        let mut lying = BytesMut::new();
        put_head(&mut lying, 2, kind::HEADERS, flag::PADDED, 1);
        lying.put_slice(&[9, b'a']);
        assert!(frame_of(&lying).fragment().is_err());
    }

    #[test]
    fn large_blocks_are_split_into_continuations() {
        let block = vec![7u8; DEFAULT_MAX_FRAME * 2 + 10];
        let mut out = BytesMut::new();
        put_header_block(&mut out, 5, &block, true);
        let frames: Vec<Frame> = std::iter::from_fn(|| next(&mut out, DEFAULT_MAX_FRAME).unwrap()).collect();
        let kinds: Vec<(u8, u8)> = frames.iter().map(|f| (f.kind, f.flags)).collect();
        assert_eq!(
            kinds,
            [(kind::HEADERS, flag::END_STREAM), (kind::CONTINUATION, 0), (kind::CONTINUATION, flag::END_HEADERS)]
        );
        assert_eq!(frames.iter().map(|f| f.payload().len()).sum::<usize>(), block.len());
    }

    #[test]
    fn literals_decode_and_leave_the_dynamic_table_alone() {
        let mut block = Vec::new();
        put_literal(&mut block, b":status", b"200");
        put_literal(&mut block, b"grpc-message", &[b'x'; 300]);
        let mut decoder = crate::cri::hpack::Decoder::default();
        let mut decoded = Vec::new();
        decoder.decode(&block, |name, value| decoded.push((name.to_vec(), value.to_vec()))).unwrap();
        assert_eq!(decoded[0], (b":status".to_vec(), b"200".to_vec()));
        assert_eq!(decoded[1].1, vec![b'x'; 300]);
        // Index 62 would be the first dynamic entry: there is none.
        assert!(decoder.decode(&[0x80 | 62], |_, _| {}).is_err());
    }

    #[test]
    fn settings_out_of_range_are_refused() {
        let mut bytes = BytesMut::new();
        put_head(&mut bytes, 6, kind::SETTINGS, 0, 0);
        bytes.put_u16(setting::MAX_FRAME_SIZE);
        bytes.put_u32(100);
        assert!(settings(&frame_of(&bytes)).is_err());
    }
}
