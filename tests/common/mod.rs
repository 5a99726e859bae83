#![allow(dead_code)]

pub mod cri;
pub mod lab;
pub mod pullgate;
pub mod raw;
