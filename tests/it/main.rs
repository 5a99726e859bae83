//! The integration suite, one crate so it links once: each module tests one promise of
//! pullgate against the real containerd, the real registry and the real tools of the field
//! where it can (see `common` for the lab, fronts and helpers).

mod common;

mod bundles;
mod cli;
mod containerd2;
mod containerd_relay;
mod docs_examples;
mod front_selftest;
mod health;
mod hostile;
mod hostile_clients;
mod install;
mod keyless;
mod keyless_images;
mod keyless_policy_json;
mod keyless_threshold;
mod kubelet_client;
mod lifecycle;
mod media_types;
mod metrics;
mod mirrors;
mod peers;
mod pinning;
mod properties;
mod redteam;
mod reference_diff;
mod registry_auth;
mod registry_http;
mod registry_names;
mod registry_tls;
mod relay;
mod reload;
mod round_trips;
mod rule_choice;
mod runtime_service;
mod splice;
mod stalled_registries;
mod verification;
