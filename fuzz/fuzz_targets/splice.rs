//! Both peers of a spliced connection driven through the relay's state machine as the input
//! says: neither gets more DATA than its windows allow, windows never overflow, relayed bytes
//! arrive unchanged, containerd never sees a local call, and every stream ends
//! (`pullgate::cri::splice::harness`, also run as a property test in the unit tests).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullgate::cri::splice::harness;

fuzz_target!(|script: &[u8]| {
    if let Err(violation) = harness::run(script) {
        panic!("{violation}");
    }
});
