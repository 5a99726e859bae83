//! pullgate: a CRI image-service proxy that lets containerd pull only images whose signatures
//! the node's policy accepts.
//!
//! The module tree follows a PullImage call:
//!
//! - [`cri`] — the kubelet-facing socket; relays every call to containerd and hands PullImage
//!   to the gate first. Errors become gRPC statuses only in [`cri::status`].
//! - [`reference`] — image names and digests, normalised as containerd does.
//! - [`policy`] — the node's rules: which scope needs which signatures.
//! - [`verify`] — cosign signature checks against a rule's keys and identity; [`verify::keyless`]
//!   verifies sigstore bundles offline (certificates, SCTs, transparency-log proofs, timestamps).
//! - [`decision`] — the interception point: admit, pin or reject a pull.
//! - [`config`], [`telemetry`], [`daemon`], [`cli`] — wiring: configuration, logs, lifecycle.
//! - [`reload`], [`metrics`] — operating it: policy hot reload, Prometheus metrics.
//! - [`explain`] — what `pullgate verify` and `pullgate policy check` print.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod cri;
pub mod daemon;
pub mod decision;
mod error_text;
pub mod explain;
pub mod metrics;
pub mod policy;
pub mod reference;
pub mod registry;
pub mod reload;
pub mod telemetry;
pub mod verify;
