//! pullgate: a CRI image-service proxy that lets containerd pull only images whose signatures
//! the node's policy accepts.
//!
//! The module tree follows a PullImage call:
//!
//! - [`cri`] — the kubelet-facing socket; relays every call to containerd and hands PullImage
//!   to the gate first. Errors become gRPC statuses only in [`cri::status`].
//! - [`decision`] — the interception point: admit, pin or reject a pull.
//! - [`config`], [`telemetry`], [`daemon`], [`cli`] — wiring: configuration, logs, lifecycle.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod cri;
pub mod daemon;
pub mod decision;
pub mod telemetry;
