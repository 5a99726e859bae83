#![allow(dead_code)]

pub mod cosign;
pub mod cri;
pub mod fake_registry;
pub mod front;
pub mod lab;
pub mod matrix;
pub mod metrics;
pub mod policy;
pub mod private;
pub mod process;
pub mod pullgate;
pub mod raw;
pub mod sigstore;
pub mod store;
