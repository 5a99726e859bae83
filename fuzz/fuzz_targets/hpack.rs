//! HTTP/2 frames and HPACK header blocks as the splice relay reads them from the kubelet and
//! containerd: never a panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullgate::cri::{frame, hpack};

fuzz_target!(|bytes: &[u8]| {
    // One decoder across all blocks, as on one connection.
    let mut decoder = hpack::Decoder::default();
    let mut buffer = bytes::BytesMut::from(bytes);
    while let Ok(Some(frame)) = frame::next(&mut buffer, frame::DEFAULT_MAX_FRAME) {
        if let Ok(fragment) = frame.fragment() {
            let _ = decoder.decode(fragment, |_, _| {});
        }
        let _ = frame::settings(&frame);
        let _ = frame::window_increment(&frame);
    }
    let _ = decoder.decode(bytes, |_, _| {});
});
