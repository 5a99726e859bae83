//! Cosign signature manifests from arbitrary bytes: the first line is the Content-Type the
//! registry claimed, the rest the body. Never a panic, never more layers than the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullgate::verify::signatures::{MAX_SIGNATURE_LAYERS, parse_signature_manifest};

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (content_type, body) = data.split_at(split);
    let body = body.get(1..).unwrap_or_default();
    if let Ok(layers) = parse_signature_manifest(body, &String::from_utf8_lossy(content_type)) {
        assert!(layers.len() <= MAX_SIGNATURE_LAYERS);
    }
});
