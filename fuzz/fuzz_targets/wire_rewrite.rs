//! The PullImage rewrite on arbitrary bytes: never a panic, and for every request the gate
//! would admit (prost reads it, and reads the same image as containerd's wire-type framing),
//! the rewrite succeeds and containerd will read exactly the pinned image; on canonical
//! encodings nothing else changes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use pullgate::cri::proto::{ImageSpec, PullImageRequest};
use pullgate::cri::wire::{pull_image_name, rewrite_pull_image};

const PINNED: &str =
    "registry.example/team/app@sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b";

/// The request with `image.image` set to `image`.
fn with_image(mut request: PullImageRequest, image: &str) -> PullImageRequest {
    request.image.get_or_insert_with(ImageSpec::default).image = image.to_owned();
    request
}

fuzz_target!(|data: &[u8]| {
    let rewritten = rewrite_pull_image(data, PINNED);
    let Ok(original) = PullImageRequest::decode(data) else { return };
    let prost_image = original.image.as_ref().map(|spec| spec.image.clone()).unwrap_or_default();
    if pull_image_name(data).ok() != Some(prost_image) {
        return; // refused by the gate as ambiguous
    }
    let rewritten = rewritten.unwrap_or_else(|e| panic!("an admissible request is refused: {e}"));
    assert_eq!(pull_image_name(&rewritten).as_deref(), Ok(PINNED));
    // prost frames malformed map entries differently from containerd (see `pull_image_name`),
    // so it may misread bytes the rewrite keeps opaque; "nothing else changes" is therefore
    // checked on the canonical encoding of what prost read.
    let canonical = rewrite_pull_image(&original.encode_to_vec(), PINNED).expect("canonical encoding refused");
    assert_eq!(PullImageRequest::decode(&canonical[..]).ok(), Some(with_image(original, PINNED)));
});
