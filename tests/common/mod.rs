#![allow(dead_code)]

pub mod pullgate;
pub mod raw;
