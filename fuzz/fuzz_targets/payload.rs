//! Cosign SimpleSigning payloads from arbitrary bytes: never a panic; an accepted payload
//! names a valid digest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullgate::reference::Digest;
use pullgate::verify::SignedPayload;

fuzz_target!(|data: &[u8]| {
    if let Ok(payload) = SignedPayload::parse(data) {
        assert!(payload.manifest_digest.to_string().parse::<Digest>().is_ok());
    }
});
