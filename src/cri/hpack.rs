//! HPACK decoding (RFC 7541), for the splice relay.
//!
//! The relay must read every header block each side sends, in order, to keep the state the
//! sender's encoder assumes its peer holds; it needs only a few values out of them (the
//! path, the gRPC status) and writes the blocks again as plain literals (`frame::put_literal`).
//! The HPACK crates available decode Huffman strings through a hash map rebuilt for every
//! string, which cost more than the rest of a relayed call together, hence this module.

use std::collections::VecDeque;

/// A header block that does not decode; the connection cannot go on (COMPRESSION_ERROR).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HpackError {
    #[error("header block ends inside a field")]
    Truncated,
    #[error("integer too large")]
    Overflow,
    #[error("index {0} is in neither table")]
    Index(usize),
    #[error("invalid Huffman code")]
    Huffman,
    #[error("dynamic table size {0} above the {1} allowed")]
    TableSize(usize, usize),
}

/// A name and value in the dynamic table.
type Entry = (Box<[u8]>, Box<[u8]>);

/// The decoding side of one direction of a connection.
pub struct Decoder {
    /// Newest first, as HPACK indexes it.
    entries: VecDeque<Entry>,
    size: usize,
    max_size: usize,
    /// What the receiver advertised in SETTINGS_HEADER_TABLE_SIZE.
    allowed: usize,
    name: Vec<u8>,
    value: Vec<u8>,
}

/// An entry's size counts 32 bytes of overhead (RFC 7541 §4.1).
const ENTRY_OVERHEAD: usize = 32;
/// The table size every connection starts with (RFC 9113 §6.5.2).
pub const DEFAULT_TABLE_SIZE: usize = 4096;

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            entries: VecDeque::new(),
            size: 0,
            max_size: DEFAULT_TABLE_SIZE,
            allowed: DEFAULT_TABLE_SIZE,
            name: Vec::new(),
            value: Vec::new(),
        }
    }
}

impl Decoder {
    /// The receiver's SETTINGS_HEADER_TABLE_SIZE: size updates in later blocks may go up to it.
    pub fn set_allowed(&mut self, allowed: usize) {
        self.allowed = allowed;
    }

    /// Decodes `block`, calling `field` with each name and value in order.
    pub fn decode(&mut self, block: &[u8], mut field: impl FnMut(&[u8], &[u8])) -> Result<(), HpackError> {
        let mut rest = block;
        while let Some(&first) = rest.first() {
            if first & 0x80 != 0 {
                // Indexed field (§6.1).
                let index = integer(&mut rest, 7)?;
                let (name, value) = self.get(index)?;
                field(name, value);
            } else if first & 0xc0 == 0x40 {
                // Literal with incremental indexing (§6.2.1).
                self.literal(&mut rest, 6)?;
                field(&self.name, &self.value);
                self.insert();
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update (§6.3).
                let size = integer(&mut rest, 5)?;
                if size > self.allowed {
                    return Err(HpackError::TableSize(size, self.allowed));
                }
                self.max_size = size;
                self.evict(0);
            } else {
                // Literal without indexing or never indexed (§6.2.2, §6.2.3).
                self.literal(&mut rest, 4)?;
                field(&self.name, &self.value);
            }
        }
        Ok(())
    }

    fn get(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        match index {
            0 => Err(HpackError::Index(0)),
            1..=61 => {
                let (name, value) = STATIC_TABLE[index - 1];
                Ok((name.as_bytes(), value.as_bytes()))
            }
            _ => self.entries.get(index - 62).map(|(n, v)| (&n[..], &v[..])).ok_or(HpackError::Index(index)),
        }
    }

    /// Reads a literal's name and value into `self.name` and `self.value`.
    fn literal(&mut self, rest: &mut &[u8], prefix: u8) -> Result<(), HpackError> {
        let index = integer(rest, prefix)?;
        self.name.clear();
        if index == 0 {
            string(rest, &mut self.name)?;
        } else {
            let name = self.get(index)?.0.to_vec();
            self.name = name;
        }
        self.value.clear();
        string(rest, &mut self.value)
    }

    fn insert(&mut self) {
        let size = self.name.len() + self.value.len() + ENTRY_OVERHEAD;
        self.evict(size);
        if size <= self.max_size {
            self.size += size;
            self.entries.push_front((self.name.as_slice().into(), self.value.as_slice().into()));
        }
    }

    /// Drops the oldest entries until `incoming` more bytes fit (or the table is empty).
    fn evict(&mut self, incoming: usize) {
        while self.size + incoming > self.max_size {
            let Some((name, value)) = self.entries.pop_back() else { break };
            self.size -= name.len() + value.len() + ENTRY_OVERHEAD;
        }
    }
}

/// An integer with an N-bit prefix (§5.1), taken off the front of `rest`.
fn integer(rest: &mut &[u8], prefix: u8) -> Result<usize, HpackError> {
    let (&first, mut tail) = rest.split_first().ok_or(HpackError::Truncated)?;
    let mask = (1usize << prefix) - 1;
    let mut value = usize::from(first) & mask;
    if value == mask {
        let mut shift = 0;
        loop {
            let (&byte, more) = tail.split_first().ok_or(HpackError::Truncated)?;
            tail = more;
            // Four continuation bytes reach 2^28, far beyond any length a peer may use.
            if shift > 21 {
                return Err(HpackError::Overflow);
            }
            value += usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
    }
    *rest = tail;
    Ok(value)
}

/// A string literal (§5.2), Huffman-coded or not, appended to `out`.
fn string(rest: &mut &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
    let huffman = rest.first().ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = integer(rest, 7)?;
    if len > rest.len() {
        return Err(HpackError::Truncated);
    }
    let (bytes, tail) = rest.split_at(len);
    *rest = tail;
    if huffman {
        return huffman_decode(bytes, out);
    }
    out.extend_from_slice(bytes);
    Ok(())
}

/// The length in bits of each symbol's code (RFC 7541 Appendix B), symbols 0-255 and EOS.
/// The code is canonical, so these lengths determine the codes themselves.
const CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28,
    28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12,
    10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6,
    5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22,
    22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22, 21, 20,
    22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28,
    27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28,
    27, 27, 27, 27, 27, 26, 30,
];
const EOS: u16 = 256;
const MAX_CODE_LEN: usize = 30;

/// Canonical decoding tables: for each length, the first code, how many codes there are,
/// and where their symbols start in `symbols` (sorted by length, then value).
struct Canonical {
    first: [u32; MAX_CODE_LEN + 1],
    count: [u32; MAX_CODE_LEN + 1],
    start: [usize; MAX_CODE_LEN + 1],
    symbols: [u16; 257],
}

const CANONICAL: Canonical = {
    let mut table = Canonical {
        first: [0; MAX_CODE_LEN + 1],
        count: [0; MAX_CODE_LEN + 1],
        start: [0; MAX_CODE_LEN + 1],
        symbols: [0; 257],
    };
    let (mut len, mut next, mut code) = (1, 0, 0u32);
    while len <= MAX_CODE_LEN {
        table.first[len] = code;
        table.start[len] = next;
        let mut symbol = 0;
        while symbol < 257 {
            if CODE_LENGTHS[symbol] as usize == len {
                table.symbols[next] = symbol as u16;
                next += 1;
                table.count[len] += 1;
            }
            symbol += 1;
        }
        code = (code + table.count[len]) << 1;
        len += 1;
    }
    table
};

fn huffman_decode(bytes: &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
    let table = &CANONICAL;
    let (mut code, mut len) = (0u32, 0usize);
    for &byte in bytes {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            let offset = code.wrapping_sub(table.first[len]);
            if offset < table.count[len] {
                let symbol = table.symbols[table.start[len] + offset as usize];
                if symbol == EOS {
                    return Err(HpackError::Huffman);
                }
                out.push(symbol as u8);
                (code, len) = (0, 0);
            } else if len == MAX_CODE_LEN {
                return Err(HpackError::Huffman);
            }
        }
    }
    // Padding is at most 7 bits, all ones: the start of EOS (§5.2).
    if len > 7 || code != (1 << len) - 1 {
        return Err(HpackError::Huffman);
    }
    Ok(())
}

/// RFC 7541 Appendix A.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    fn decode(decoder: &mut Decoder, block: &[u8]) -> Result<Vec<(String, String)>, HpackError> {
        let mut fields = Vec::new();
        decoder.decode(block, |n, v| {
            fields.push((String::from_utf8_lossy(n).into_owned(), String::from_utf8_lossy(v).into_owned()))
        })?;
        Ok(fields)
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    /// RFC 7541 C.4: three requests on one connection, Huffman-coded, sharing a dynamic table.
    #[test]
    fn the_rfc_request_examples_decode_in_sequence() {
        let mut decoder = Decoder::default();
        let first = decode(&mut decoder, &hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff")).unwrap();
        let expected = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")];
        assert_eq!(first, pairs(&expected));
        let second = decode(&mut decoder, &hex("8286 84be 5886 a8eb 1064 9cbf")).unwrap();
        let mut expected = expected.to_vec();
        expected.push(("cache-control", "no-cache"));
        assert_eq!(second, pairs(&expected));
        assert_eq!(decoder.size, 110);
    }

    #[test]
    fn huffman_strings_decode_as_the_reference_encoder_wrote_them() {
        let mut samples: Vec<Vec<u8>> = vec![
            b"/runtime.v1.ImageService/ImageStatus".to_vec(),
            b"grpc-go/1.59.0".to_vec(),
            b"application/grpc".to_vec(),
            (0..=255u8).collect(),
        ];
        let mut seed = 7u32;
        for len in 0..200 {
            samples.push(
                (0..len)
                    .map(|_| {
                        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                        (seed >> 16) as u8
                    })
                    .collect(),
            );
        }
        for sample in samples {
            let mut encoded = Vec::new();
            httlib_huffman::encode(&sample, &mut encoded).unwrap();
            let mut decoded = Vec::new();
            huffman_decode(&encoded, &mut decoded).unwrap();
            assert_eq!(decoded, sample);
        }
    }

    #[test]
    fn bad_huffman_is_refused() {
        let mut out = Vec::new();
        // 30 ones: EOS itself.
        assert_eq!(huffman_decode(&[0xff, 0xff, 0xff, 0xfc], &mut out), Err(HpackError::Huffman));
        // 'a' (00011) padded with zeros instead of ones.
        assert_eq!(huffman_decode(&[0b0001_1000], &mut out), Err(HpackError::Huffman));
        // A whole byte of padding.
        assert_eq!(huffman_decode(&[0b0001_1111, 0xff], &mut out), Err(HpackError::Huffman));
    }

    #[test]
    fn the_table_evicts_the_oldest_and_honours_size_updates() {
        let mut decoder = Decoder::default();
        decoder.set_allowed(100);
        // Size update to 100, then two literals with indexing (each 32 + 1 + 10 = 43 bytes).
        let mut block = vec![0x3f, 0x45];
        for name in [b"a", b"b", b"c"] {
            block.extend_from_slice(&[0x40, 0x01, name[0], 0x0a]);
            block.extend_from_slice(b"0123456789");
        }
        decode(&mut decoder, &block).unwrap();
        assert_eq!(decoder.entries.len(), 2, "the third entry evicts the first");
        assert_eq!(decode(&mut decoder, &[0x80 | 62]).unwrap(), pairs(&[("c", "0123456789")]));
        assert_eq!(decode(&mut decoder, &[0x80 | 63]).unwrap(), pairs(&[("b", "0123456789")]));
        assert_eq!(decode(&mut decoder, &[0x80 | 64]), Err(HpackError::Index(64)));
        assert_eq!(decode(&mut decoder, &[0x3f, 0x46]), Err(HpackError::TableSize(101, 100)));
    }

    /// A small linear congruential generator: the same "random" bytes on every run.
    struct Lcg(u32);

    impl Lcg {
        fn byte(&mut self) -> u8 {
            self.0 = self.0.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (self.0 >> 16) as u8
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.byte()).collect()
        }
    }

    /// What the dynamic table must satisfy after any block, decoded or refused: its size is
    /// the sum of its entries' sizes, within its maximum, itself within what was allowed.
    fn assert_table_consistent(decoder: &Decoder) {
        let sum: usize = decoder.entries.iter().map(|(n, v)| n.len() + v.len() + ENTRY_OVERHEAD).sum();
        assert_eq!(decoder.size, sum, "table size out of step with its entries");
        assert!(decoder.size <= decoder.max_size, "table {} above its maximum {}", decoder.size, decoder.max_size);
        assert!(
            decoder.max_size <= decoder.allowed,
            "maximum {} above the allowed {}",
            decoder.max_size,
            decoder.allowed
        );
    }

    #[test]
    fn malformed_blocks_fail_and_leave_the_table_consistent() {
        let mut decoder = Decoder::default();
        for block in [&[0x80][..], &[0x40], &[0x40, 0x05, b'a'], &[0x7f, 0xff, 0xff, 0xff, 0xff, 0xff], &[0x0f]] {
            assert!(decode(&mut decoder, block).is_err(), "{block:?}");
        }
        let mut random = Lcg(1);
        for _ in 0..20_000 {
            let len = usize::from(random.byte()) % 40;
            let _ = decode(&mut decoder, &random.bytes(len));
            assert_table_consistent(&decoder);
        }
    }

    /// An integer with an N-bit prefix (§5.1), the first byte's other bits set to `flags`.
    fn put_integer(value: usize, prefix: u8, flags: u8, out: &mut Vec<u8>) {
        let mask = (1usize << prefix) - 1;
        if value < mask {
            out.push(flags | value as u8);
            return;
        }
        out.push(flags | mask as u8);
        let mut rest = value - mask;
        while rest >= 0x80 {
            out.push((rest & 0x7f) as u8 | 0x80);
            rest >>= 7;
        }
        out.push(rest as u8);
    }

    fn put_string(bytes: &[u8], huffman: bool, out: &mut Vec<u8>) {
        if huffman {
            let mut encoded = Vec::new();
            httlib_huffman::encode(bytes, &mut encoded).unwrap();
            put_integer(encoded.len(), 7, 0x80, out);
            out.extend_from_slice(&encoded);
        } else {
            put_integer(bytes.len(), 7, 0, out);
            out.extend_from_slice(bytes);
        }
    }

    /// Random fields, written as literals with indexing (new names, Huffman or not, some longer
    /// than a one-byte length) and then referred to by their dynamic-table index, decode to
    /// exactly what was written, block after block on one decoder.
    #[test]
    fn random_fields_round_trip_through_the_dynamic_table() {
        let mut decoder = Decoder::default();
        let mut random = Lcg(3);
        for _ in 0..2_000 {
            let count = usize::from(random.byte() % 6);
            let mut fields = Vec::new();
            let mut block = Vec::new();
            for _ in 0..count {
                let (name_len, value_len) = (usize::from(random.byte() % 20), usize::from(random.byte()) * 2 % 300);
                let (name, value) = (random.bytes(name_len), random.bytes(value_len));
                block.push(0x40);
                put_string(&name, random.byte() & 1 == 1, &mut block);
                put_string(&value, random.byte() & 1 == 1, &mut block);
                fields.push((name, value));
            }
            // The newest entry is index 62 while it fits the table.
            if let Some((name, value)) = fields.last().cloned()
                && name.len() + value.len() + ENTRY_OVERHEAD <= DEFAULT_TABLE_SIZE
            {
                block.push(0x80 | 62);
                fields.push((name, value));
            }
            let mut decoded = Vec::new();
            decoder.decode(&block, |n, v| decoded.push((n.to_vec(), v.to_vec()))).unwrap();
            assert_eq!(decoded, fields);
            assert_table_consistent(&decoder);
        }
    }
}
