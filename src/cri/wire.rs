//! gRPC message framing and the one protobuf rewrite pullgate performs.
//!
//! PullImage requests are rewritten at the wire level rather than decoded into prost types and
//! re-encoded: prost drops fields it does not know, and a newer kubelet may send fields that
//! pullgate's copy of the CRI does not have. Only `image.image` is replaced; every other byte of
//! the request is kept as received.

use bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{DecodeContext, WireType, decode_key, encode_key, encode_varint, skip_field};

/// gRPC's length-prefixed frame header: compressed flag (1 byte) + big-endian length (4 bytes).
const FRAME_HEADER_LEN: usize = 5;

/// Field numbers from `runtime.v1`: `PullImageRequest.image` and `ImageSpec.image`.
const PULL_REQUEST_IMAGE_FIELD: u32 = 1;
const IMAGE_SPEC_IMAGE_FIELD: u32 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("request body is not exactly one gRPC message")]
    Framing,
    #[error("compressed gRPC requests are not supported")]
    Compressed,
    #[error("malformed protobuf message")]
    Protobuf,
    #[error("the image field reads differently depending on the protobuf decoder")]
    Ambiguous,
}

/// Returns the message inside a body that must hold exactly one uncompressed gRPC frame.
pub fn unframe(body: &[u8]) -> Result<&[u8], WireError> {
    let (header, message) = body.split_at_checked(FRAME_HEADER_LEN).ok_or(WireError::Framing)?;
    if header[0] != 0 {
        return Err(WireError::Compressed);
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if message.len() != len {
        return Err(WireError::Framing);
    }
    Ok(message)
}

pub fn frame(message: &[u8]) -> Result<Bytes, WireError> {
    let len = u32::try_from(message.len()).map_err(|_| WireError::Framing)?;
    let mut out = BytesMut::with_capacity(FRAME_HEADER_LEN + message.len());
    out.put_u8(0);
    out.put_u32(len);
    out.put_slice(message);
    Ok(out.freeze())
}

/// One top-level field of an encoded message: its number, wire type, and the exact bytes that
/// encode it (key included).
struct RawField<'a> {
    number: u32,
    wire_type: WireType,
    encoded: &'a [u8],
    /// For length-delimited fields, the payload without key and length prefix.
    payload: &'a [u8],
}

fn fields(message: &[u8]) -> Result<Vec<RawField<'_>>, WireError> {
    let mut out = Vec::new();
    let mut rest = message;
    while !rest.is_empty() {
        let start = rest;
        let (number, wire_type) = decode_key(&mut rest).map_err(|_| WireError::Protobuf)?;
        let payload = length_delimited_payload(wire_type, rest)?;
        skip_field(wire_type, number, &mut rest, DecodeContext::default()).map_err(|_| WireError::Protobuf)?;
        let used = start.len() - rest.len();
        out.push(RawField { number, wire_type, encoded: &start[..used], payload });
    }
    Ok(out)
}

fn length_delimited_payload(wire_type: WireType, rest: &[u8]) -> Result<&[u8], WireError> {
    if wire_type != WireType::LengthDelimited {
        return Ok(&[]);
    }
    let mut cursor = rest;
    let len = prost::encoding::decode_varint(&mut cursor).map_err(|_| WireError::Protobuf)?;
    let len = usize::try_from(len).map_err(|_| WireError::Protobuf)?;
    cursor.get(..len).ok_or(WireError::Protobuf)
}

fn put_bytes_field(number: u32, payload: &[u8], out: &mut BytesMut) {
    encode_key(number, WireType::LengthDelimited, out);
    encode_varint(payload.len() as u64, out);
    out.put_slice(payload);
}

/// `image.image` of an encoded `PullImageRequest` as containerd's protobuf library reads it:
/// every field framed by its own wire type, each occurrence of `image` parsed on its own, the
/// last value winning. prost frames some malformed messages differently (it reads a map entry
/// whatever wire type its key claims), so the gate checks that both readings agree before it
/// judges an image: otherwise it could verify one image while containerd pulls another.
pub fn pull_image_name(message: &[u8]) -> Result<String, WireError> {
    let mut name: &[u8] = &[];
    for spec in fields(message)?.iter().filter(|f| f.number == PULL_REQUEST_IMAGE_FIELD) {
        for field in fields(length_delimited(spec)?)?.iter().filter(|f| f.number == IMAGE_SPEC_IMAGE_FIELD) {
            name = length_delimited(field)?;
        }
    }
    String::from_utf8(name.to_vec()).map_err(|_| WireError::Protobuf)
}

fn length_delimited<'a>(field: &RawField<'a>) -> Result<&'a [u8], WireError> {
    if field.wire_type != WireType::LengthDelimited {
        return Err(WireError::Protobuf);
    }
    Ok(field.payload)
}

/// Replaces `image.image` in an encoded `PullImageRequest`, keeping every other field byte for
/// byte. Several occurrences of the `image` field are merged first, as protobuf parsers would.
pub fn rewrite_pull_image(message: &[u8], new_image: &str) -> Result<Vec<u8>, WireError> {
    let top = fields(message)?;
    let mut spec = BytesMut::new();
    for field in top.iter().filter(|f| f.number == PULL_REQUEST_IMAGE_FIELD) {
        if field.wire_type != WireType::LengthDelimited {
            return Err(WireError::Protobuf);
        }
        spec.put_slice(field.payload);
    }
    let new_spec = rewrite_image_spec(&spec, new_image)?;
    let mut out = BytesMut::with_capacity(message.len() + new_image.len());
    put_bytes_field(PULL_REQUEST_IMAGE_FIELD, &new_spec, &mut out);
    for field in top.iter().filter(|f| f.number != PULL_REQUEST_IMAGE_FIELD) {
        out.put_slice(field.encoded);
    }
    Ok(out.to_vec())
}

fn rewrite_image_spec(spec: &[u8], new_image: &str) -> Result<BytesMut, WireError> {
    let mut out = BytesMut::with_capacity(spec.len() + new_image.len());
    put_bytes_field(IMAGE_SPEC_IMAGE_FIELD, new_image.as_bytes(), &mut out);
    for field in fields(spec)?.iter().filter(|f| f.number != IMAGE_SPEC_IMAGE_FIELD) {
        out.put_slice(field.encoded);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::proto::{AuthConfig, ImageSpec, PullImageRequest};
    use prost::Message;

    fn request(image: &str) -> PullImageRequest {
        PullImageRequest {
            image: Some(ImageSpec { image: image.into(), runtime_handler: "runc".into(), ..Default::default() }),
            auth: Some(AuthConfig { username: "u".into(), password: "p".into(), ..Default::default() }),
            sandbox_config: None,
        }
    }

    #[test]
    fn frame_round_trip() {
        let framed = frame(b"abc").unwrap();
        assert_eq!(&framed[..], &[0, 0, 0, 0, 3, b'a', b'b', b'c']);
        assert_eq!(unframe(&framed).unwrap(), b"abc");
    }

    #[test]
    fn unframe_rejects_bad_bodies() {
        assert_eq!(unframe(&[0, 0, 0]), Err(WireError::Framing));
        assert_eq!(unframe(&[0, 0, 0, 0, 4, 1]), Err(WireError::Framing));
        assert_eq!(unframe(&[0, 0, 0, 0, 1, 1, 2]), Err(WireError::Framing));
        assert_eq!(unframe(&[1, 0, 0, 0, 1, 1]), Err(WireError::Compressed));
    }

    #[test]
    fn rewrite_replaces_only_the_image() {
        let original = request("example.com/app:1").encode_to_vec();
        let rewritten = rewrite_pull_image(&original, "example.com/app@sha256:00").unwrap();
        let decoded = PullImageRequest::decode(&rewritten[..]).unwrap();
        assert_eq!(decoded, request("example.com/app@sha256:00"));
    }

    #[test]
    fn rewrite_keeps_unknown_fields() {
        let mut original = request("a/b:c").encode_to_vec();
        // Field 99 (unknown to pullgate's CRI), length-delimited "xyz".
        let mut unknown = BytesMut::new();
        put_bytes_field(99, b"xyz", &mut unknown);
        original.extend_from_slice(&unknown);
        let rewritten = rewrite_pull_image(&original, "a/b@sha256:11").unwrap();
        assert!(rewritten.ends_with(&unknown), "unknown field lost");
    }

    #[test]
    fn image_name_is_read_by_wire_types() {
        let encoded = request("example.com/app:1").encode_to_vec();
        assert_eq!(pull_image_name(&encoded).as_deref(), Ok("example.com/app:1"));
        assert_eq!(pull_image_name(&[]).as_deref(), Ok(""));
        let mut twice = encoded.clone();
        twice.extend(request("example.com/other:2").encode_to_vec());
        assert_eq!(pull_image_name(&twice).as_deref(), Ok("example.com/other:2"));
    }

    // Found by the wire_rewrite fuzz target: inside `image`, an annotations entry (field 2)
    // whose key claims a 64-bit value. Go's protobuf skips it as 8 bytes and sees no image;
    // prost reads it as an empty map entry and then finds an `image` field in those 8 bytes.
    #[test]
    fn prost_and_wire_readings_can_differ() {
        let spec = [0x11, 0x00, 0x0a, 0x05, b'e', b'v', b'i', b'l', b'!'];
        let mut message = vec![0x0a, spec.len() as u8];
        message.extend_from_slice(&spec);
        let prost_image = PullImageRequest::decode(&message[..]).unwrap().image.unwrap().image;
        assert_eq!(prost_image, "evil!");
        assert_eq!(pull_image_name(&message).as_deref(), Ok(""));
    }

    #[test]
    fn rewrite_rejects_garbage() {
        assert_eq!(rewrite_pull_image(&[0x0a, 0x05, 0x01], "x"), Err(WireError::Protobuf));
        assert_eq!(rewrite_pull_image(&[0x08, 0x01], "x"), Err(WireError::Protobuf));
    }
}
